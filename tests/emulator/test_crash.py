"""``kill -9`` of ``infra apply`` at moments through its run, then one more apply, on each emulator.

Counted through the cloud's own API afterwards: exactly the declared members, one instance each
(no duplicate from a create whose answer died with the process, no leaked instance), and a
healthy cluster.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter

import boto3
import pytest

from tests.emulator.conftest import REPO, Emulator, infra_command, wait_for
from tests.emulator.test_gce import instances as gce_instances

pytestmark = pytest.mark.e2e

#: Seconds after the start of ``infra apply`` at which it is killed: while it pushes images,
#: while it creates the members, while it waits for their health.
MOMENTS = (1.2, 2.2, 3.2)


def crash_then_apply(emu: Emulator, stack: str, after: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen([*infra_command(), "apply", stack, "--yes"], env=emu.env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(after)  # the moment of the crash is the point of the test, not a wait for a condition
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return emu.infra("apply", stack, "--yes", INFRA_AWS_HEALTH_TIMEOUT="60")


@pytest.mark.parametrize("after", MOMENTS)
def test_gce_a_killed_apply_leaves_no_duplicate_and_no_leak(gce: Emulator, after: float) -> None:
    again = crash_then_apply(gce, "stacks/etcd-gcp.py", after)
    assert again.returncode == 0, again.stdout + again.stderr
    members = Counter(str(i["labels"]["infra-member"]) for i in gce_instances(gce))  # type: ignore[index]
    assert members == Counter({"etcd-0": 1, "etcd-1": 1, "etcd-2": 1, "prometheus-0": 1})
    wait_for("3 healthy members", lambda: gce.healthy("stacks/etcd-gcp.py"))


@pytest.mark.parametrize("after", MOMENTS[:2])
def test_ec2_a_killed_apply_leaves_no_duplicate_and_no_leak(ec2: Emulator, after: float) -> None:
    again = crash_then_apply(ec2, "stacks/etcd-aws.py", after)
    assert again.returncode == 0, again.stdout + again.stderr
    client = boto3.client("ec2", region_name="us-east-1", endpoint_url=ec2.url,
                          aws_access_key_id=ec2.exports["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=ec2.exports["AWS_SECRET_ACCESS_KEY"])
    live = [i for r in client.describe_instances()["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] in ("pending", "running")]
    members = Counter({t["Key"]: t["Value"] for t in i.get("Tags", [])}.get("infra-member") for i in live)
    assert members == Counter({"etcd-0": 1, "etcd-1": 1, "etcd-2": 1, "prometheus-0": 1})
