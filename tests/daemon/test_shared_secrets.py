"""Stack secrets every writer sees: one CA per stack in the coordinating etcd, whichever machine acts.

Two "machines" are two state directories (and two environments) on this one; the coordinating etcd
is a real single-member etcd (``coord_etcd``); the cloud they share is ``infra emulator gcp``.
Through the real CLI:

* two first-time writers on two machines at the same moment end with one CA, stored encrypted;
* an etcd stack applied from one machine is reached with etcdctl from the other (credentials made
  there, signed by the same CA), and the other's plan is empty (no member judged unhealthy for TLS);
* a stack whose CA exists on one machine only is refused until ``infra secrets push`` moves it;
* with the coordinating etcd down, a writer changes nothing and says why.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.daemon.conftest import CoordEtcd, Harness, is_event, is_pass, report
from tests.emulator.conftest import launch, wait_for

pytestmark = pytest.mark.e2e

INFRA = shutil.which("infra") or "infra"
STACK = "stacks/etcd-gcp.py"
REPO = Path(__file__).resolve().parents[2]


def key_file(path: Path) -> Path:
    path.write_text(base64.b64encode(os.urandom(32)).decode())
    path.chmod(0o600)
    return path


class Machine:
    """One machine's view: its own state directory, the shared coordination and key."""

    def __init__(self, root: Path, coordination: str, key: Path, extra: dict[str, str] | None = None) -> None:
        self.state = root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("INFRA_GCP", "INFRA_GCS"))}
        self.env.update({"INFRA_STATE_DIR": str(root), "INFRA_COORDINATION": coordination,
                         "INFRA_SECRETS_KEY": str(key), "NO_COLOR": "1", "COLUMNS": "200", **(extra or {})})
        self.env["PATH"] = os.pathsep.join(p for p in self.env["PATH"].split(os.pathsep) if "linuxkit" not in p)

    def infra(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([INFRA, *args], env=self.env, capture_output=True, text=True, cwd=REPO,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)

    def shell_env(self, stack: str) -> dict[str, str]:
        out = self.infra("env", stack)
        assert out.returncode == 0, out.stderr
        return dict(shlex.split(line)[1].split("=", 1) for line in out.stdout.splitlines())

    def etcdctl(self, stack: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ["PATH"], **self.shell_env(stack)}
        return subprocess.run(["etcdctl", *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_two_first_time_writers_on_two_machines_make_one_ca(coord_etcd: CoordEtcd, tmp_path: Path) -> None:
    key = key_file(tmp_path / "infra.key")
    for round_ in range(3):
        machines = [Machine(tmp_path / f"round{round_}-{m}", coord_etcd.url, key) for m in "ab"]
        stack = tmp_path / f"pair{round_}.py"
        stack.write_text("from plugins.etcd import Etcd\nfrom reconciler import Stack\n"
                         f"stack = Stack(name='pair{round_}', groups=[Etcd(name='etcd', size=0)])\n")
        results: dict[int, subprocess.CompletedProcess[str]] = {}
        barrier = threading.Barrier(2)

        def run(i: int, machines: list[Machine] = machines, stack: Path = stack,
                barrier: threading.Barrier = barrier,
                results: dict[int, subprocess.CompletedProcess[str]] = results) -> None:
            barrier.wait()
            results[i] = machines[i].infra("env", str(stack))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cas = []
        for i, machine in enumerate(machines):
            assert results[i].returncode == 0, results[i].stderr
            pki = machine.state / "stacks" / f"pair{round_}" / "pki"
            cas.append((pki / "ca.crt").read_bytes())
            assert not (pki / "ca.key").exists()  # the key lives only in the shared store
        assert cas[0] == cas[1], f"round {round_}: two CAs"
        stored = coord_etcd.get(f"/infra/secrets/pair{round_}/ca")
        assert stored and "BEGIN" not in stored  # encrypted at rest


def test_an_etcd_stack_is_one_cluster_with_one_ca_from_any_machine(coord_etcd: CoordEtcd, tmp_path: Path) -> None:
    emu = launch("gcp", tmp_path)
    key = key_file(tmp_path / "infra.key")
    try:
        a = Machine(tmp_path / "machine-a", coord_etcd.url, key, emu.exports)
        b = Machine(tmp_path / "machine-b", coord_etcd.url, key, emu.exports)
        applied = a.infra("apply", STACK, "--yes")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        wait_for("3 healthy members seen from machine A",
                 lambda: a.etcdctl(STACK, "endpoint", "health", "--cluster").stderr.count("is healthy") == 3)
        assert a.etcdctl(STACK, "put", "/written-on", "a").returncode == 0
        # Machine B: its own operator certificate, signed by the same CA; the cluster answers it.
        health = b.etcdctl(STACK, "endpoint", "health", "--cluster")
        assert health.stderr.count("is healthy") == 3, health.stdout + health.stderr
        assert b.etcdctl(STACK, "get", "/written-on", "--print-value-only").stdout.strip() == "a"
        ca_of = {m: (m.state / "stacks/etcd-gcp/pki/ca.crt").read_bytes() for m in (a, b)}
        assert ca_of[a] == ca_of[b]
        assert not (b.state / "stacks/etcd-gcp/pki/ca.key").exists()
        plan = b.infra("plan", STACK, "--detailed-exitcode")
        assert plan.returncode == 0, plan.stdout + plan.stderr  # healthy over TLS from B: nothing to replace
        destroyed = b.infra("destroy", STACK, "--yes")
        assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    finally:
        emu.proc.terminate()
        emu.proc.wait(timeout=60)


def test_a_local_ca_is_refused_until_pushed_and_a_dead_coordinator_changes_nothing(
    coord_etcd: CoordEtcd, tmp_path: Path
) -> None:
    key = key_file(tmp_path / "infra.key")
    stack = tmp_path / "solo.py"
    stack.write_text("from plugins.etcd import Etcd\nfrom reconciler import Stack\n"
                     "stack = Stack(name='solo', groups=[Etcd(name='etcd', size=0)])\n")
    local = Machine(tmp_path / "machine-a", "file", key)
    local.infra("env", str(stack))  # makes the CA on this machine only
    ca = (tmp_path / "machine-a/stacks/solo/pki/ca.crt").read_bytes()
    shared = Machine(tmp_path / "machine-a", coord_etcd.url, key)
    refused = shared.infra("env", str(stack))
    assert refused.returncode == 1 and "infra secrets push" in refused.stderr and "this machine only" in refused.stderr
    pushed = shared.infra("secrets", "push", str(stack))
    assert pushed.returncode == 0, pushed.stderr
    other = Machine(tmp_path / "machine-b", coord_etcd.url, key)
    other.infra("env", str(stack))
    assert (tmp_path / "machine-b/stacks/solo/pki/ca.crt").read_bytes() == ca

    wrong = Machine(tmp_path / "machine-c", coord_etcd.url, key_file(tmp_path / "other.key"))
    out = wrong.infra("env", str(stack))
    assert out.returncode == 1 and "does not decrypt" in out.stderr

    one = tmp_path / "one.py"
    one.write_text("from plugins.etcd import Etcd\nfrom reconciler import Stack\n"
                   "stack = Stack(name='one', groups=[Etcd(name='etcd', size=1)])\n")
    dead = Machine(tmp_path / "machine-d", "etcd://127.0.0.1:9", key)
    out = dead.infra("apply", str(one), "--yes")
    assert out.returncode == 1 and "coordinating etcd" in out.stderr, out.stdout + out.stderr
    assert not list((tmp_path / "machine-d").glob("local/instances/*"))  # nothing created


def small_gcp_stack(path: Path, name: str) -> Path:
    """One ``command`` member on the gcp provider (the image built from its own document)."""
    path.write_text(f'''"""A small stack of tests/daemon on the GCE emulator."""
import os

from reconciler import Group, Stack

stack = Stack(
    name={name!r},
    provider="gcp",
    provider_config={{"project": os.environ["INFRA_GCP_PROJECT"], "zones": ["us-central1-a"],
                      "image_bucket": os.environ["INFRA_GCP_IMAGE_BUCKET"]}},
    groups=[Group(name="web", size=1, role="command", machine_type="e2-small", config={{
        "command": ["python3", "-m", "http.server", "8080", "--bind", "{{address}}"],
        "health": "none", "files": {{"index.html": "{name}"}}}})],
)
''')
    return path


TTL, INTERVAL = 3, 1.0


def machine_dir(emu: Any, address: str) -> Path:
    """The emulator's directory of the machine at ``address`` (its ``config/`` is /run/config)."""
    for record in (emu.root / "emulator-state" / "machines" / "instances").glob("*/instance.json"):
        if json.loads(record.read_text()).get("address") == address:
            return record.parent
    raise AssertionError(f"no machine at {address}")


def peer_serial(emu: Any, address: str) -> int:
    pem = (machine_dir(emu, address) / "config" / "etcd" / "peer.crt").read_bytes()
    return int(x509.load_pem_x509_certificate(pem).serial_number)


def test_three_machines_split_the_stacks_and_heal_a_dead_leaders_etcd_stack_with_the_same_ca(
    harness: Harness, coord_etcd: CoordEtcd, tmp_path: Path
) -> None:
    """Three daemons on three "machines" (own state directory, own host name) share six stacks on
    the GCE emulator, two each; the one leading stacks/etcd-gcp.py is killed while a member dies:
    the two others lead all six within the lease TTL + one interval, and the new leader heals the
    member with the stack's one CA. etcdctl works from every machine before and after."""
    emu = launch("gcp", tmp_path)
    key = Path(harness.env["INFRA_SECRETS_KEY"])
    stacks = [REPO / STACK, *(small_gcp_stack(tmp_path / f"web{i}.py", f"web{i}") for i in range(5))]
    names = {"etcd-gcp", *(f"web{i}" for i in range(5))}
    machines = {m: Machine(tmp_path / f"machine-{m}", coord_etcd.url, key, emu.exports) for m in "abc"}
    lock = ("--lock", coord_etcd.url, "--lock-ttl", str(TTL))

    def leaders() -> dict[str, dict[str, object]]:
        return {n: json.loads(v) for n in names if (v := coord_etcd.get(f"/infra/leader/{n}"))}

    try:
        daemons = {m: harness.daemon(*stacks, interval=INTERVAL, extra=lock, env=machines[m].env,
                                     host=f"machine-{m}") for m in "abc"}
        wait_for("each machine leading two stacks", lambda: sorted(
            Counter(str(v["host"]) for v in leaders().values()).items()) == [
            ("machine-a", 2), ("machine-b", 2), ("machine-c", 2)], timeout=120)
        wait_for("the etcd cluster healthy from every machine", lambda: all(
            m.etcdctl(STACK, "endpoint", "health", "--cluster").stderr.count("is healthy") == 3
            for m in machines.values()), timeout=180)
        assert machines["b"].etcdctl(STACK, "put", "/kept", "through-the-takeover").returncode == 0
        owner = str(leaders()["etcd-gcp"]["host"])[-1]
        survivors = [m for m in daemons if m != owner]
        before = {i["name"]: i["id"] for i in emu.call("/_admin/instances")["instances"]}

        daemons[owner].proc.kill()
        killed = time.monotonic()
        victim = emu.machine_at("127.128.15.3")
        old_peer = peer_serial(emu, "127.128.15.3")
        os.kill(int(victim["processes"]["services"]["etcd"]["pid"]), signal.SIGKILL)
        wait_for("the two other machines leading all six stacks", lambda: (
            len(led := leaders()) == 6 and {str(v["host"])[-1] for v in led.values()} == set(survivors)), timeout=30)
        took = time.monotonic() - killed
        report(f"three machines, six GCE stacks: after kill -9 of one daemon its stacks were led again in "
               f"{took:.1f}s (TTL {TTL}s, interval {INTERVAL:g}s)")
        assert took <= TTL + INTERVAL + 1.5, f"the takeover took {took:.1f}s"
        wait_for("three stacks each on the two machines left", lambda: sorted(
            Counter(str(v["host"]) for v in leaders().values()).values()) == [3, 3], timeout=30)

        wait_for("the killed member healed by the new leader", lambda: all(
            m.etcdctl(STACK, "endpoint", "health", "--cluster").stderr.count("is healthy") == 3
            for m in machines.values()), timeout=180)
        after = {i["name"]: i["id"] for i in emu.call("/_admin/instances")["instances"]}
        replaced = {n for n in before if after.get(n) != before[n]}
        assert len(replaced) == 1 and "etcd" in next(iter(replaced)), replaced  # the killed member only: none for TLS
        for m in machines.values():
            got = m.etcdctl(STACK, "get", "/kept", "--print-value-only")
            assert got.stdout.strip() == "through-the-takeover", got.stderr
        # The killed member's certificate, minted by the dead leader's machine, was revoked by the
        # heir (the records are shared): the new member's revocation list names it.
        crl = x509.load_pem_x509_crl((machine_dir(emu, "127.128.15.3") / "config" / "etcd" / "revoked.crl").read_bytes())
        assert crl.get_revoked_certificate_by_serial_number(old_peer) is not None
        assert peer_serial(emu, "127.128.15.3") != old_peer
    finally:
        for d in harness.daemons:
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGTERM)
                d.proc.wait(timeout=60)
        for path in stacks:
            machines["a"].infra("destroy", str(path), "--yes")
        emu.proc.terminate()
        emu.proc.wait(timeout=60)


def test_a_person_on_another_machine_gets_the_daemons_lock_and_pause(
    harness: Harness, coord_etcd: CoordEtcd, tmp_path: Path
) -> None:
    """One coordination setting for every command: with INFRA_COORDINATION, 'infra apply' on machine
    B is refused while machine A's daemon leads the stack (naming it), and 'infra pause' on B
    stops A's daemon from changing anything until 'infra resume'."""
    stack = harness.stack_file("shared", size=2, provider="memory")
    lock = ("--lock", coord_etcd.url, "--lock-ttl", "3")
    key = Path(harness.env["INFRA_SECRETS_KEY"])
    a = Machine(tmp_path / "machine-a", coord_etcd.url, key)
    b = Machine(tmp_path / "machine-b", coord_etcd.url, key)
    d = harness.daemon(stack, interval=1.0, extra=lock, env=a.env)
    d.wait_for(is_pass("ok", observed=2), timeout=60, what="A's daemon converging the stack")

    refused = b.infra("apply", str(stack), "--yes")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "being changed elsewhere" in refused.stderr and f"pid {d.pid}" in refused.stderr

    mark = len(d.events())  # before the pause: the daemon may log it before the command returns
    paused = b.infra("pause", str(stack), "--reason", "maintenance from machine B")
    assert paused.returncode == 0, paused.stderr
    d.wait_for(is_event("paused"), after=mark, timeout=30, what="A's daemon seeing B's pause")
    assert coord_etcd.get("/infra/pauses/shared") and "machine B" in (coord_etcd.get("/infra/pauses/shared") or "")
    assert not (b.state / "stacks" / "shared" / "pause.json").exists()  # shared, not B's alone
    assert b.infra("resume", str(stack)).returncode == 0
    d.wait_for(is_event("resumed"), after=mark, timeout=30, what="A's daemon seeing the resume")
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=60) == 0
