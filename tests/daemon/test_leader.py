"""Several daemons, one leader per stack, through a lease in a coordinating etcd.

The coordinating etcd is a plain single-member etcd on a 127.0.0.x loopback address (fixture
``coord_etcd``), never the cluster being managed. Both daemons share one state directory, as
two daemons on one machine would; the stack is local-provider web servers.
"""

from __future__ import annotations

import json
import os
import signal
import time

from tests.daemon.conftest import CoordEtcd, Harness, is_event, is_pass, report

TTL = 3
INTERVAL = 1.0


def _etcd_args(coord: CoordEtcd) -> tuple[str, ...]:
    return ("--lock", coord.url, "--lock-ttl", str(TTL))


def test_two_daemons_one_leader_and_hand_over_when_the_leader_dies(harness: Harness, coord_etcd: CoordEtcd) -> None:
    stack = harness.stack_file("duo", size=2)
    a = harness.daemon(stack, interval=INTERVAL, extra=_etcd_args(coord_etcd))
    a.wait_for(is_event("lock", leader=True), timeout=30, what="daemon A leading")
    a.wait_for(is_pass("ok", observed=2), timeout=60, what="A converging the stack")
    b = harness.daemon(stack, interval=INTERVAL, extra=_etcd_args(coord_etcd))
    _, standby = b.wait_for(is_event("standby"), timeout=30, what="daemon B standing by")
    assert f"pid {a.pid} " in standby["holder"] and "infra daemon" in standby["holder"]
    holder = json.loads(coord_etcd.get("/infra/leader/duo") or "{}")
    assert holder["pid"] == a.pid

    # A few intervals: only A passes and changes; B only stands by.
    mark = len(a.events())
    a.wait_for(is_pass("ok"), after=mark, timeout=30, what="another pass of A")
    a.wait_for(is_pass("ok"), after=mark + 1, timeout=30, what="a third pass of A")
    assert not [e for e in b.events() if e.get("event") in ("pass", "change", "change.start")]
    assert a.metric("infra_leader", stack="duo") == 1
    assert b.metric("infra_leader", stack="duo") == 0
    out = harness.infra("apply", str(stack), "--yes", timeout=60)
    assert out.returncode == 1 and f"locked by pid {a.pid}" in out.stderr  # the leader holds the file lock too

    ids = {m["member"]: m["id"] for g in harness.status(stack)["groups"] for m in g["members"]}
    a.proc.kill()
    a.proc.wait(timeout=10)
    killed = time.monotonic()
    b.wait_for(is_event("lock", leader=True), timeout=TTL + INTERVAL + 15, what="B taking over")
    handover = time.monotonic() - killed
    report(f"etcd lock hand-over after SIGKILL of the leader (TTL {TTL}s, interval {INTERVAL:g}s): {handover:.2f}s")
    assert handover <= TTL + INTERVAL + 2.5, f"hand-over took {handover:.1f}s (TTL {TTL} + interval {INTERVAL})"
    _, first = b.wait_for(is_pass(), timeout=30, what="B's first pass")
    assert first["result"] == "ok" and first["observed"] == 2, "B found A's instances: nothing to redo"
    now = {m["member"]: m["id"] for g in harness.status(stack)["groups"] for m in g["members"]}
    assert now == ids, "no duplicate or replaced instance after the hand-over"
    assert b.metric("infra_leader", stack="duo") == 1

    assert b.terminate() == 0
    assert coord_etcd.get("/infra/leader/duo") is None, "a clean exit revokes the lease at once"


def test_a_second_daemon_on_the_file_lock_waits_and_takes_over(harness: Harness) -> None:
    stack = harness.stack_file("pair", size=2, provider="memory")
    a = harness.daemon(stack, interval=INTERVAL)
    a.wait_for(is_pass("ok"), timeout=30, what="daemon A converged")
    b = harness.daemon(stack, interval=INTERVAL)
    _, standby = b.wait_for(is_event("standby"), timeout=30, what="daemon B standing by")
    assert f"pid {a.pid} " in standby["holder"] and standby["lock"] == "file"
    a.wait_for(is_pass("ok"), after=len(a.events()), timeout=30, what="another pass of A")
    assert not [e for e in b.events() if e.get("event") in ("pass", "change.start")]
    a.proc.kill()
    a.proc.wait(timeout=10)
    b.wait_for(is_event("lock", leader=True), timeout=15, what="B taking over the file lock")
    b.wait_for(is_pass(), timeout=30, what="B's first pass")
    assert b.terminate() == 0


def test_a_leader_that_cannot_reach_etcd_stops_writing(harness: Harness, coord_etcd: CoordEtcd) -> None:
    stack = harness.stack_file("cut", size=1)
    d = harness.daemon(stack, interval=INTERVAL, extra=_etcd_args(coord_etcd))
    d.wait_for(is_pass("ok", observed=1), timeout=60, what="a converged pass")
    name = next(m["name"] for g in harness.status(stack)["groups"] for m in g["members"])

    coord_etcd.proc.send_signal(signal.SIGSTOP)  # etcd hangs: keepalives time out
    try:
        mark = len(d.events())
        d.wait_for(lambda e: e.get("event") == "lock" and "leadership lost" in e.get("msg", ""), after=mark,
                   timeout=TTL + 10, what="the leader giving up")
        assert d.metric("infra_leader", stack="cut") == 0
        d.wait_for(is_event("standby"), after=mark, timeout=30, what="the daemon standing by")
        os.kill(harness.service_pid(str(name), "web"), signal.SIGKILL)
        lost = len(d.events())
        time.sleep(3 * INTERVAL)
        writes = [e for e in d.events()[lost:] if e.get("event") in ("pass", "change.start", "change")]
        assert not writes, f"a daemon unsure of leading must not write: {writes}"
    finally:
        coord_etcd.proc.send_signal(signal.SIGCONT)
    mark = len(d.events())
    d.wait_for(is_event("lock", leader=True), after=mark, timeout=TTL + 20, what="leading again")
    i, healed = d.wait_for(is_event("change", member="web-0"), after=mark, timeout=60, what="the member healed")
    assert healed["result"] == "applied" and healed["reason"] == "unhealthy"
    d.wait_for(is_pass("ok", observed=1), after=i, timeout=60, what="a converged pass")
    assert d.terminate() == 0


def test_etcd_lock_over_mutual_tls(harness: Harness, coord_etcd_tls: CoordEtcd) -> None:
    stack = harness.stack_file("tls", size=1, provider="memory")
    files = coord_etcd_tls.tls
    d = harness.daemon(stack, interval=INTERVAL, extra=(
        *_etcd_args(coord_etcd_tls), "--lock-cacert", files["cacert"], "--lock-cert", files["cert"],
        "--lock-key", files["key"]))
    d.wait_for(is_event("lock", leader=True), timeout=30, what="leading through the TLS etcd")
    d.wait_for(is_pass("ok", observed=1), timeout=30, what="a converged pass")
    holder = json.loads(coord_etcd_tls.get("/infra/leader/tls") or "{}")
    assert holder["pid"] == d.pid

    # Without a client certificate the etcd refuses us: the second daemon never leads or writes.
    other = harness.stack_file("tls2", size=1, provider="memory")
    e = harness.daemon(other, interval=INTERVAL, extra=(*_etcd_args(coord_etcd_tls), "--lock-cacert", files["cacert"]))
    _, standby = e.wait_for(is_event("standby"), timeout=30, what="a daemon without a client certificate")
    assert "unreachable" in standby["holder"] or "failed" in standby["holder"]
    assert not [x for x in e.events() if x.get("event") == "pass"]
    assert files["key"] not in e.log_path.read_text(), "no key path or material in the logs"
    assert d.terminate() == 0 and e.terminate() == 0


def test_bad_lock_urls_are_refused(harness: Harness) -> None:
    stack = harness.stack_file("url", size=1, provider="memory")
    for lock, message in (("zookeeper://x:1", "expected 'file' or 'etcd://HOST:PORT'"),
                          ("etcd://h:notaport", "port is not a number")):
        out = harness.infra("daemon", str(stack), "--lock", lock, "--metrics-addr", "none", timeout=60)
        assert out.returncode == 1 and message in out.stderr, out.stderr
    out = harness.infra("daemon", str(stack), "--lock", "file", "--lock-cacert", "/etc/hostname",
                        "--metrics-addr", "none", timeout=60)
    assert out.returncode == 1 and "apply only to --lock etcd://" in out.stderr
