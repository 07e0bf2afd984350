"""The ``qemu`` provider end to end: ``stacks/etcd-qemu.py`` as four QEMU VMs on this machine.

The real CLI (subprocesses, as a user runs it) in the suite's private network namespace, the
Debian images infra builds, QEMU under software emulation: 3 etcd members healthy over mutual TLS
inside their VMs, Prometheus in its VM scraping them through the provider's discovery, a killed VM
seen DEAD and healed with the data intact, and a destroy that leaves no QEMU, no dnsmasq, no host
process and no bridge. Also: outside a private namespace the provider refuses before anything
starts. Slow: marked ``vm``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import urllib.request
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from tests.emulator.conftest import infra_command, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.vm]

REPO = Path(__file__).resolve().parents[2]
STACK = "stacks/etcd-qemu.py"


class Cli:
    def __init__(self, tmp: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("INFRA_GCP", "INFRA_AWS", "AWS_"))}
        self.env.update({"INFRA_STATE_DIR": str(tmp / "state"), "INFRA_NETWORK_ALLOW": "127.0.0.0/8,10.77.0.0/24",
                         "NO_COLOR": "1", "COLUMNS": "200"})
        self.root = tmp / "state" / "qemu"

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*infra_command(), *args], capture_output=True, text=True, env=self.env, cwd=REPO,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)

    def ok(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        done = self.run(*args, timeout=timeout)
        assert done.returncode == 0, f"infra {' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def healthy(self) -> bool:
        env = dict(line.split(" ", 1)[1].split("=", 1) for line in self.ok("env", STACK).stdout.splitlines())
        env = {k: shlex.split(v)[0] for k, v in env.items()}
        out = subprocess.run(["etcdctl", "endpoint", "health", "--cluster"], env={"PATH": os.environ["PATH"], **env},
                             capture_output=True, text=True, timeout=60, check=False)
        return (out.stdout + out.stderr).count("is healthy") == 3

    def etcdctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(line.split(" ", 1)[1].split("=", 1) for line in self.ok("env", STACK).stdout.splitlines())
        env = {k: shlex.split(v)[0] for k, v in env.items()}
        if any(a.startswith("--endpoints") for a in args):
            env.pop("ETCDCTL_ENDPOINTS", None)
        return subprocess.run(["etcdctl", *args], env={"PATH": os.environ["PATH"], **env}, capture_output=True,
                              text=True, timeout=60, check=False)

    def records(self) -> list[dict[str, object]]:
        return [json.loads(p.read_text()) for p in sorted(self.root.glob("instances/*/instance.json"))]


def leftovers(root: Path) -> list[str]:
    """QEMU, dnsmasq and host processes of this provider root, and its bridge."""
    found = [" ".join(p.info["cmdline"] or [])[:120] for p in psutil.process_iter(["cmdline"])
             if str(root) in " ".join(p.info["cmdline"] or [])]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return found + (["bridge infra-qemu"] if "infra-qemu" in links else [])


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("INFRA_NETWORK_ALLOW", "127.0.0.0/8,10.77.0.0/24")  # this test asks Prometheus itself
    if shutil.which("qemu-system-x86_64") is None or shutil.which("dnsmasq") is None:
        pytest.fail("QEMU or dnsmasq is missing: scripts/install.sh --vm installs them", pytrace=False)
    return Cli(tmp_path)


def test_etcd_qemu_is_a_cluster_of_local_vms_healed_by_infra(cli: Cli) -> None:
    try:
        applied = cli.ok("apply", STACK, "--yes")
        assert "from Debian packages" in applied.stderr and "2 images pushed" in applied.stdout
        wait_for("3 healthy members in VMs", cli.healthy, timeout=180)
        by_group = {str(r["labels"]["infra-member"]): str(r["address"]) for r in cli.records()}  # type: ignore[index]
        assert sorted(by_group) == ["etcd-0", "etcd-1", "etcd-2", "prometheus-0"]
        assert all(a.startswith("10.77.0.") for a in by_group.values())
        assert not [p for p in psutil.process_iter(["name"]) if p.info["name"] == "etcd"]  # inside the VMs only

        def scraped() -> dict[str, str] | None:
            with urllib.request.urlopen(f"http://{by_group['prometheus-0']}:9090/api/v1/targets", timeout=5) as r:
                active = json.loads(r.read())["data"]["activeTargets"]
            up = {t["labels"].get("member", ""): t["health"] for t in active if t["labels"].get("job") == "etcd"}
            return up if len(up) == 3 and set(up.values()) == {"up"} else None

        wait_for("Prometheus in its VM to scrape the 3 members", scraped, timeout=180)
        console = (cli.root / "instances").glob("*etcd-0*/console.log")
        text = next(console).read_text(errors="replace")
        assert "Linux version" in text and "] user-data:" in text

        assert cli.etcdctl("put", "/kept", "across-the-heal").returncode == 0
        (victim,) = [p for p in psutil.process_iter(["cmdline"])
                     if "qemu-system" in " ".join(p.info["cmdline"] or []) and "etcd-1" in " ".join(p.info["cmdline"])]
        victim.kill()
        status = wait_for("the dead VM in the plan", lambda: (lambda p: p if p.returncode == 2 else None)(
            cli.run("plan", STACK, "--detailed-exitcode")), timeout=60)
        assert "etcd-1" in status.stdout
        cli.ok("apply", STACK, "--yes")
        wait_for("3 healthy members after the heal", cli.healthy, timeout=180)
        healed = {str(r["labels"]["infra-member"]): str(r["address"]) for r in cli.records()}  # type: ignore[index]
        got = cli.etcdctl("get", "/kept", "--print-value-only", f"--endpoints=https://{healed['etcd-1']}:2379")
        assert got.stdout.strip() == "across-the-heal", got.stderr
    finally:
        cli.run("destroy", STACK, "--yes", "--images")
    assert wait_for("nothing left", lambda: not leftovers(cli.root) or None, timeout=30)
    assert not list((cli.root / "images").glob("*/disk.raw"))


def test_the_qemu_provider_refuses_outside_a_private_namespace(tmp_path: Path) -> None:
    """A namespace with a way out: validate names the reason, apply exits 1 and boots nothing."""
    script = ("ip link set lo up && ip link add eth0 type bridge && ip link set eth0 up && "
              "ip addr add 192.0.2.10/24 dev eth0 && ip route add default via 192.0.2.1 && "
              f"INFRA_STATE_DIR={tmp_path / 'state'} INFRA_NETWORK_ALLOW=127.0.0.0/8 "
              f"{shlex.join(infra_command())} apply {STACK} --yes")
    done = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                          check=False, cwd=REPO)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "private network namespace" in done.stdout + done.stderr
    assert not list((tmp_path / "state").glob("qemu/instances/*"))
