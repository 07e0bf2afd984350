"""``infra apply stacks/etcd-gcp.py`` against ``infra emulator gcp`` gives a working etcd cluster here.

The real CLI against the real emulator (a child process), with no linuxkit installed (the
emulator boots the images' LinuxKit YAML), real etcd and Prometheus processes on the emulated
instances' loopback addresses (127.128.15.x), and ``INFRA_NETWORK_ALLOW=127.0.0.0/8``.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request

import pytest

from tests.emulator.conftest import Emulator, wait_for

pytestmark = pytest.mark.e2e

STACK = "stacks/etcd-gcp.py"
ETCD = ["127.128.15.2", "127.128.15.3", "127.128.15.4"]


def prometheus_up(gce: Emulator) -> dict[str, str]:
    (prom,) = [m for m in gce.machines() if "prometheus" in (m.get("services") and json.dumps(m["services"]))]
    with urllib.request.urlopen(f"http://{prom['address']}:9090/api/v1/targets", timeout=5) as resp:
        targets = json.loads(resp.read())["data"]["activeTargets"]
    return {t["labels"].get("member", ""): t["health"] for t in targets if t["labels"].get("job") == "etcd"}


def instances(gce: Emulator) -> list[dict[str, object]]:
    """The stack's instances, as the emulator's Compute API lists them."""
    listed = gce.call("/_admin/instances")["instances"]
    return [i for i in listed if (i.get("labels") or {}).get("infra-stack") == "etcd-gcp"]


def victim_name(gce: Emulator, address: str) -> str:
    (name,) = [str(i["name"]) for i in instances(gce)
               if i["networkInterfaces"][0]["networkIP"] == address]  # type: ignore[index]
    return name


def test_etcd_gcp_on_the_emulator_is_a_working_cluster_healed_by_infra(gce: Emulator) -> None:
    applied = gce.ok("apply", STACK, "--yes")
    assert "no linuxkit: registering the LinuxKit YAML" in applied.stderr
    assert "2 images pushed" in applied.stdout
    assert sorted(m["address"] for m in gce.machines() if m["address"] in ETCD) == ETCD

    wait_for("3 healthy etcd members over mutual TLS", lambda: gce.healthy(STACK))
    assert os.environ["INFRA_NETWORK_ALLOW"] and gce.exports["INFRA_NETWORK_ALLOW"] == "127.0.0.0/8"
    up = wait_for("Prometheus to scrape every etcd member", lambda: (lambda t: t if t and set(t.values()) == {"up"}
                                                                     and len(t) == 3 else None)(prometheus_up(gce)))
    assert set(up) == {"etcd-0", "etcd-1", "etcd-2"}
    assert gce.infra("plan", STACK, "--detailed-exitcode").returncode == 0  # nothing to do

    assert gce.etcdctl(STACK, "put", "/kept", "across-the-heal").returncode == 0
    victim = gce.machine_at(ETCD[1])
    os.kill(int(victim["processes"]["services"]["etcd"]["pid"]), signal.SIGKILL)
    plan = wait_for("the plan to see the dead member", lambda: (lambda p: p if p.returncode == 2 else None)(
        gce.infra("plan", STACK, "--detailed-exitcode")))
    assert "etcd-1" in plan.stdout and "unhealthy" in plan.stdout
    gce.ok("apply", STACK, "--yes")
    wait_for("3 healthy members after the heal", lambda: gce.healthy(STACK))
    got = gce.etcdctl(STACK, "get", "/kept", "--print-value-only", f"--endpoints=https://{ETCD[1]}:2379")
    assert got.stdout.strip() == "across-the-heal", got.stderr  # the replaced member has the data

    console = gce.call(f"/compute/v1/projects/my-project/zones/us-central1-b/instances/"
                       f"{victim_name(gce, ETCD[1])}/serialPort")["contents"]
    assert "==> etcd.log <==" in console  # the services' logs, as a VM's serial console

    for address in ETCD[:2]:  # two of three: the quorum is lost
        os.kill(int(gce.machine_at(address)["processes"]["services"]["etcd"]["pid"]), signal.SIGKILL)
    before = sorted(i["name"] for i in instances(gce))
    refused = gce.infra("apply", STACK, "--yes")
    assert refused.returncode == 1 and "quorum" in (refused.stdout + refused.stderr).lower()
    assert sorted(i["name"] for i in instances(gce)) == before  # nothing deleted, nothing created

    gce.ok("destroy", STACK, "--yes")
    wait_for("no machine left running", lambda: not gce.processes() or None, timeout=30)
    assert instances(gce) == []


def test_throttling_and_lost_answers_through_the_emulator_still_converge(gce: Emulator) -> None:
    """30% of Compute calls answered 429/503 (half of the failed inserts after taking effect)."""
    gce.call("/_admin/config", {"fault_rate": 0.3, "fault_after_share": 0.5, "seed": 11})
    for _ in range(3):  # a pass may stop on a fault it could not retry past; the next one carries on
        if gce.infra("apply", STACK, "--yes").returncode == 0:
            break
    else:
        raise AssertionError("three applies under 30% faults did not converge")
    members = sorted(str(i["labels"]["infra-member"]) for i in instances(gce))  # type: ignore[index]
    assert members == ["etcd-0", "etcd-1", "etcd-2", "prometheus-0"]  # no duplicate, nothing leaked
    wait_for("3 healthy etcd members", lambda: gce.healthy(STACK))
