"""Membership changes and rolls of etcd on the GCE emulator, and the daemon healing it.

A copy of ``stacks/etcd-gcp.py`` (its ``size`` and etcd ``flags`` edited as a user would) applied
through the real CLI against ``infra emulator gcp``: 3 → 5 → 3 members one at a time, a rolling
flag change under a continuous writer with no acknowledged write lost and a majority answering
throughout, and ``infra daemon`` replacing a member whose etcd was killed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from plugins.etcd.client import EtcdClient
from plugins.etcd.role import stack_client
from tests.emulator.conftest import REPO, Emulator, infra_command, wait_for
from tests.etcd.test_cluster import QuorumWatch, Writer

pytestmark = pytest.mark.e2e


def stack_copy(gce: Emulator, *, size: int = 3, flags: str = "") -> str:
    """stacks/etcd-gcp.py with the etcd group's size and flags changed; its path."""
    text = (REPO / "stacks" / "etcd-gcp.py").read_text()
    text, n = re.subn(r'(name="etcd",\s+size=)3', rf"\g<1>{size}", text, count=1)
    assert n == 1, "stacks/etcd-gcp.py no longer declares etcd's size where this test expects it"
    if flags:
        assert '    version="3.4.23",\n' in text, "stacks/etcd-gcp.py no longer sets etcd's version as expected"
        text = text.replace('    version="3.4.23",\n', f'    version="3.4.23",\n    flags={flags},\n', 1)
    path = gce.root / "etcd-gcp.py"
    path.write_text(text)
    return str(path)


def endpoints(gce: Emulator, stack: str) -> list[str]:
    return gce.shell_env(stack)["ETCDCTL_ENDPOINTS"].split(",")


def client(gce: Emulator, stack: str) -> EtcdClient:
    return stack_client(Path(gce.shell_env(stack)["ETCDCTL_CACERT"]).parent.parent, "etcd", timeout=3)


def test_three_to_five_to_three_on_the_emulator(gce: Emulator) -> None:
    stack = stack_copy(gce)
    gce.ok("apply", stack, "--yes")
    wait_for("3 healthy", lambda: gce.healthy(stack, 3))
    grown = stack_copy(gce, size=5)
    gce.ok("apply", grown, "--yes")
    wait_for("5 healthy", lambda: gce.healthy(grown, 5))
    assert len(gce.etcdctl(grown, "member", "list").stdout.strip().splitlines()) == 5
    shrunk = stack_copy(gce, size=3)
    gce.ok("apply", shrunk, "--yes")
    wait_for("3 healthy after the shrink", lambda: gce.healthy(shrunk, 3))
    assert len(gce.etcdctl(shrunk, "member", "list").stdout.strip().splitlines()) == 3
    assert sorted(m["address"] for m in gce.machines() if m["address"].startswith("127.128.15.")) == [
        "127.128.15.2", "127.128.15.3", "127.128.15.4"]
    gce.ok("destroy", shrunk, "--yes")


def test_a_rolling_flag_change_under_writes_loses_nothing_on_the_emulator(gce: Emulator) -> None:
    stack = stack_copy(gce)
    gce.ok("apply", stack, "--yes")
    wait_for("3 healthy", lambda: gce.healthy(stack, 3))
    etcd = client(gce, stack)
    writer = Writer(etcd, endpoints(gce, stack))
    watch = QuorumWatch(etcd, endpoints(gce, stack))
    threads = [threading.Thread(target=writer.run), threading.Thread(target=watch.run)]
    for t in threads:
        t.start()
    try:
        wait_for("the writer to get going", lambda: len(writer.acked) > 5, timeout=30, every=0.1)
        rolled = stack_copy(gce, flags='{"snapshot-count": 5000}')
        plan = gce.infra("plan", rolled, "--detailed-exitcode")
        assert plan.returncode == 2 and plan.stdout.count("spec changed") == 3, plan.stdout
        gce.ok("apply", rolled, "--yes")
        done = len(writer.acked)
        wait_for("writes after the roll", lambda: len(writer.acked) > done + 5, timeout=30, every=0.1)
    finally:
        writer.stop.set()
        watch.stop.set()
        for t in threads:
            t.join(timeout=30)
    assert watch.polls > 5 and watch.violations == [], watch.violations
    stored = etcd.get_prefix(endpoints(gce, rolled)[0], "w/")
    lost = {k: v for k, v in writer.acked.items() if stored.get(k) != v}
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {sorted(lost)[:5]}"
    assert gce.infra("plan", rolled, "--detailed-exitcode").returncode == 0
    gce.ok("destroy", rolled, "--yes")


def test_the_daemon_heals_a_killed_member_on_the_emulator(gce: Emulator) -> None:
    stack = stack_copy(gce)
    gce.ok("apply", stack, "--yes")
    wait_for("3 healthy", lambda: gce.healthy(stack, 3))
    daemon = subprocess.Popen([*infra_command(), "daemon", stack, "--interval", "2", "--metrics-addr", "none"],
                              env=gce.env(), cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=open(gce.root / "daemon.log", "w"))  # noqa: SIM115
    try:
        victim = gce.machine_at("127.128.15.3")
        os.kill(int(victim["processes"]["services"]["etcd"]["pid"]), signal.SIGKILL)
        started = time.monotonic()

        def replaced() -> bool:
            machine = gce.machine_at("127.128.15.3")
            return machine["id"] != victim["id"] and gce.healthy(stack, 3)

        wait_for("the daemon to replace the killed member", replaced, timeout=120)
        print(f"daemon healed a killed member on the GCE emulator in {time.monotonic() - started:.1f}s")
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
    assert code == 0, (gce.root / "daemon.log").read_text()
    gce.ok("destroy", stack, "--yes")
