"""``infra apply stacks/etcd-aws.py`` against ``infra emulator aws``: bootstrap, heal, destroy.

The real CLI against the real emulator (moto's EC2 and EBS with the emulator's fidelity fixes,
instances booted as local process groups on 127.79.x addresses), no linuxkit installed, real etcd
and Prometheus, and ``INFRA_NETWORK_ALLOW=127.0.0.0/8``.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request

import boto3
import pytest

from tests.emulator.conftest import Emulator, wait_for

pytestmark = pytest.mark.e2e

STACK = "stacks/etcd-aws.py"
ETCD = ["127.79.0.10", "127.79.0.11", "127.79.16.10"]


def client(emu: Emulator) -> object:
    return boto3.client("ec2", region_name="us-east-1", endpoint_url=emu.url,
                        aws_access_key_id=emu.exports["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=emu.exports["AWS_SECRET_ACCESS_KEY"])


def live(emu: Emulator) -> list[dict[str, object]]:
    ec2 = client(emu)
    out = []
    for res in ec2.describe_instances()["Reservations"]:  # type: ignore[attr-defined]
        out.extend(i for i in res["Instances"] if i["State"]["Name"] in ("pending", "running"))
    return out


def test_etcd_aws_on_the_emulator_bootstraps_heals_and_is_destroyed(ec2: Emulator) -> None:
    applied = ec2.ok("apply", STACK, "--yes", INFRA_AWS_HEALTH_TIMEOUT="60")
    assert "no linuxkit: registering the LinuxKit YAML" in applied.stderr and "2 images pushed" in applied.stdout
    assert sorted(m["address"] for m in ec2.machines() if m["address"] in ETCD) == sorted(ETCD)
    wait_for("3 healthy etcd members over mutual TLS", lambda: ec2.healthy(STACK))
    assert ec2.infra("plan", STACK, "--detailed-exitcode").returncode == 0

    (prom,) = [m for m in ec2.machines() if m["address"] not in ETCD]

    def scraped() -> dict[str, str] | None:
        with urllib.request.urlopen(f"http://{prom['address']}:9090/api/v1/targets", timeout=5) as resp:
            targets = json.loads(resp.read())["data"]["activeTargets"]
        up = {t["labels"]["member"]: t["health"] for t in targets if t["labels"].get("job") == "etcd"}
        return up if len(up) == 3 and set(up.values()) == {"up"} else None

    wait_for("Prometheus (ec2_sd at the emulator) to scrape every etcd member", scraped)

    assert ec2.etcdctl(STACK, "put", "/kept", "across-the-heal").returncode == 0
    victim = ec2.machine_at("127.79.16.10")
    os.kill(int(victim["processes"]["services"]["etcd"]["pid"]), signal.SIGKILL)
    iid = next(str(i["InstanceId"]) for i in live(ec2) if i["PrivateIpAddress"] == "127.79.16.10")
    console = client(ec2).get_console_output(InstanceId=iid)["Output"]  # type: ignore[attr-defined]
    assert "==> etcd.log <==" in console  # the services' logs
    wait_for("the plan to see the dead member", lambda: ec2.infra("plan", STACK, "--detailed-exitcode").returncode == 2)
    ec2.ok("apply", STACK, "--yes", INFRA_AWS_HEALTH_TIMEOUT="60")
    wait_for("3 healthy members after the heal", lambda: ec2.healthy(STACK))
    replaced = next(i for i in live(ec2) if i["PrivateIpAddress"] == "127.79.16.10")
    assert replaced["InstanceId"] != iid  # a new instance at the member's fixed address
    got = ec2.etcdctl(STACK, "get", "/kept", "--print-value-only", "--endpoints=https://127.79.16.10:2379")
    assert got.stdout.strip() == "across-the-heal", got.stderr

    ec2.ok("destroy", STACK, "--yes", "--images")
    assert live(ec2) == []
    wait_for("no machine left running", lambda: not ec2.processes() or None, timeout=30)


def test_the_ec2_emulator_refuses_networks_outside_loopback(ec2: Emulator) -> None:
    import botocore.exceptions

    with pytest.raises(botocore.exceptions.ClientError, match="loopback addresses only"):
        client(ec2).create_vpc(CidrBlock="10.0.0.0/16")  # type: ignore[attr-defined]
