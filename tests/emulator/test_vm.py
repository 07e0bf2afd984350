"""The emulators with ``--machines vm``: the cloud stacks' members are QEMU virtual machines.

The real ``infra emulator gcp|aws --machines vm`` (a child process, in the suite's private network
namespace: the only place VM mode runs), the real CLI, Debian images built by infra
(``INFRA_IMAGE_BUILDER=debian``, which the emulator exports) and pushed, and QEMU under software
emulation. Each VM boots the pushed disk through its bootloader, gets its address by DHCP and
its user-data from the metadata server at 169.254.169.254, and runs etcd or Prometheus inside
itself: no etcd runs on this machine. Slow (four VMs boot under TCG on two cores): marked ``vm``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest

from reconciler.kit.vmnet import in_private_namespace
from tests.emulator.conftest import Emulator, start, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.vm]


@pytest.fixture(autouse=True)
def _needs_qemu() -> None:
    if shutil.which("qemu-system-x86_64") is None or shutil.which("dnsmasq") is None:
        pytest.fail("QEMU or dnsmasq is missing: scripts/install.sh --vm installs them", pytrace=False)
    assert in_private_namespace()[0], "the suite must run in its private network namespace (as root)"


def qemus(emulator: Emulator) -> list[psutil.Process]:
    return [p for p in emulator.processes() if "qemu-system" in " ".join(p.cmdline())]


def host_etcds() -> list[str]:
    """etcd processes of this machine serving the stacks' VM addresses (there must be none)."""
    out = []
    for p in psutil.process_iter(["name", "cmdline"]):
        line = " ".join(p.info["cmdline"] or [])
        if p.info["name"] == "etcd" and ("10.128.15." in line or "10.0.0." in line or "10.0.16." in line):
            out.append(line)
    return out


def targets(address: str) -> dict[str, str]:
    """Prometheus's etcd targets (member → health), asked of the Prometheus VM."""
    with urllib.request.urlopen(f"http://{address}:9090/api/v1/targets", timeout=5) as resp:
        active = json.loads(resp.read())["data"]["activeTargets"]
    return {t["labels"].get("member", ""): t["health"] for t in active if t["labels"].get("job") == "etcd"}


def all_up(address: str) -> dict[str, str] | None:
    found = targets(address)
    return found if len(found) == 3 and set(found.values()) == {"up"} else None


def kill_vm(emulator: Emulator, address: str) -> None:
    """kill -9 the QEMU process of the VM at ``address`` (found through its MAC, which is the address's)."""
    mac = "52:54:" + ":".join(f"{int(b):02x}" for b in address.split("."))
    (victim,) = [p for p in qemus(emulator) if f"mac={mac}" in " ".join(p.cmdline())]
    victim.kill()
    # the emulator reaps it (a crashed guest: the instance stays RUNNING)
    wait_for("the emulator to reap the killed VM", lambda: not psutil.pid_exists(victim.pid) or None, timeout=20)


def check_stack(emulator: Emulator, stack: str, etcd: list[str], prometheus: Callable[[], str],
                console: Callable[[str], str]) -> None:
    """What both clouds must show; ``console`` reads an instance's serial console by address,
    ``prometheus`` finds the Prometheus VM's address."""
    applied = emulator.ok("apply", stack, "--yes", timeout=600)
    assert "from Debian packages" in applied.stderr and "2 images pushed" in applied.stdout
    wait_for("3 healthy etcd members over mutual TLS, inside VMs", lambda: emulator.healthy(stack), timeout=180)
    assert len(qemus(emulator)) == 4  # three etcd members and Prometheus
    assert host_etcds() == []  # etcd runs in the VMs, not here
    prometheus_address = prometheus()
    wait_for("Prometheus (in its VM) to scrape every etcd member", lambda: all_up(prometheus_address), timeout=180)
    text = wait_for("the console", lambda: (lambda t: t if "] services started" in t else None)(
        console(etcd[0])), timeout=60)
    assert "Linux version" in text and "] user-data:" in text  # the kernel's boot, then infra's init
    assert emulator.infra("plan", stack, "--detailed-exitcode").returncode == 0

    assert emulator.etcdctl(stack, "put", "/kept", "across-the-heal").returncode == 0
    kill_vm(emulator, etcd[1])
    wait_for("the plan to see the killed VM", lambda: (lambda p: p if p.returncode == 2 else None)(
        emulator.infra("plan", stack, "--detailed-exitcode")), timeout=120)
    emulator.ok("apply", stack, "--yes", timeout=600)
    wait_for("3 healthy members after the heal", lambda: emulator.healthy(stack), timeout=180)
    got = emulator.etcdctl(stack, "get", "/kept", "--print-value-only", f"--endpoints=https://{etcd[1]}:2379")
    assert got.stdout.strip() == "across-the-heal", got.stderr  # the new VM has the data
    assert len(qemus(emulator)) == 4

    emulator.ok("destroy", stack, "--yes", "--images", timeout=300)
    wait_for("no QEMU process left", lambda: not qemus(emulator) or None, timeout=60)


def in_vm_mode(cloud: str, tmp_path: Path, stack: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """The emulator in VM mode; this test may reach its subnet (the suite's namespace only)."""
    for emulator in start(cloud, tmp_path, stack, "--machines", "vm"):
        monkeypatch.setenv("INFRA_NETWORK_ALLOW", emulator.exports["INFRA_NETWORK_ALLOW"])
        yield emulator


@pytest.fixture
def gce_vm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    yield from in_vm_mode("gcp", tmp_path, "stacks/etcd-gcp.py", monkeypatch)


def test_etcd_gcp_on_vms_is_a_cluster_of_virtual_machines_healed_by_infra(gce_vm: Emulator) -> None:
    etcd = ["10.128.15.2", "10.128.15.3", "10.128.15.4"]
    assert gce_vm.exports["INFRA_NETWORK_ALLOW"] == "127.0.0.0/8,10.128.0.0/20"
    assert gce_vm.exports["INFRA_IMAGE_BUILDER"] == "debian"

    def console(address: str) -> str:
        listed = gce_vm.call("/_admin/instances")["instances"]
        (inst,) = [i for i in listed if i["networkInterfaces"][0]["networkIP"] == address]
        zone = str(inst["zone"]).rsplit("/", 1)[-1]
        return str(gce_vm.call(f"/compute/v1/projects/my-project/zones/{zone}/instances/{inst['name']}/serialPort")
                   ["contents"])

    def prometheus() -> str:
        listed = gce_vm.call("/_admin/instances")["instances"]
        (inst,) = [i for i in listed if (i.get("labels") or {}).get("infra-group") == "prometheus"]
        return str(inst["networkInterfaces"][0]["networkIP"])

    check_stack(gce_vm, "stacks/etcd-gcp.py", etcd, prometheus, console)


def test_vm_mode_is_refused_outside_a_private_network_namespace(tmp_path: Path) -> None:
    """A namespace with a way out (here: a default route through another device) is refused,
    and nothing is created in it."""
    script = ("ip link set lo up && ip link add eth0 type bridge && ip link set eth0 up && "
              "ip addr add 192.0.2.10/24 dev eth0 && ip route add default via 192.0.2.1 && "
              f"exec infra emulator gcp --machines vm --port 0 --state {tmp_path / 'state'}")
    done = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "private network namespace" in done.stderr and "default route" in done.stderr
    assert "# ready" not in done.stdout and "INFRA_GCP_ENDPOINT" not in done.stdout


def test_the_emulator_runs_a_command_in_a_namespace_of_its_own(tmp_path: Path) -> None:
    """``infra emulator gcp --machines vm -- COMMAND``: COMMAND sees the exports and the bridge, in
    a namespace that ends with it."""
    probe = "echo endpoint=$INFRA_GCP_ENDPOINT builder=$INFRA_IMAGE_BUILDER; ip -o -4 addr show dev infra-gce"
    done = subprocess.run(["infra", "emulator", "gcp", "--machines", "vm", "--port", "0", "--state",
                           str(tmp_path / "state"), "--", "sh", "-c", probe + "; exit 7"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 7, done.stderr
    assert "endpoint=http://10.128.0.1:" in done.stdout and "builder=debian" in done.stdout
    assert "10.128.0.1/20" in done.stdout
    here = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    assert "infra-gce" not in here  # it lived in the command's own namespace


@pytest.fixture
def ec2_vm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    yield from in_vm_mode("aws", tmp_path, "stacks/etcd-aws.py", monkeypatch)


def test_etcd_aws_on_vms_is_a_cluster_of_virtual_machines_healed_by_infra(ec2_vm: Emulator) -> None:
    import boto3

    assert ec2_vm.exports["INFRA_NETWORK_ALLOW"] == "127.0.0.0/8,10.0.0.0/16"
    api = boto3.client("ec2", region_name="us-east-1", endpoint_url=ec2_vm.url,
                       aws_access_key_id=ec2_vm.exports["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key=ec2_vm.exports["AWS_SECRET_ACCESS_KEY"])

    def instance(**filters: str) -> dict[str, Any]:
        found = [i for r in api.describe_instances(Filters=[{"Name": k.replace("_", "-"), "Values": [v]}
                                                             for k, v in filters.items()])["Reservations"]
                 for i in r["Instances"] if i["State"]["Name"] == "running"]
        assert len(found) == 1, found
        return found[0]

    def console(address: str) -> str:
        return str(api.get_console_output(InstanceId=instance(private_ip_address=address)["InstanceId"])["Output"])

    def prometheus() -> str:
        return str(instance(**{"tag:infra-group": "prometheus"})["PrivateIpAddress"])

    check_stack(ec2_vm, "stacks/etcd-aws.py", ["10.0.0.10", "10.0.0.11", "10.0.16.10"], prometheus, console)
