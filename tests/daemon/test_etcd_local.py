"""The daemon on stacks/etcd-local.py: a killed etcd member is healed with no CLI call, and a
stack whose etcd lost quorum is reported on every pass with nothing deleted.

Real etcd (3 members, mutual TLS) and Prometheus processes on the local provider.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from tests.daemon.conftest import Harness, is_event, is_pass, report

STACK = Path(__file__).resolve().parents[2] / "stacks" / "etcd-local.py"


def _members(h: Harness) -> dict[str, dict[str, Any]]:
    return {m["member"]: m for g in h.status(STACK)["groups"] for m in g["members"]}


def test_daemon_heals_a_killed_etcd_member(harness: Harness) -> None:
    harness.track(STACK)
    d = harness.daemon(STACK, interval=1)
    d.wait_for(is_pass("ok", observed=4), timeout=120, what="the etcd stack converged")
    before = _members(harness)
    victim = before["etcd-1"]

    os.kill(harness.service_pid(victim["name"], "etcd"), signal.SIGKILL)
    killed = time.monotonic()
    mark = len(d.events())
    i, change = d.wait_for(is_event("change", member="etcd-1", result="applied"), after=mark, timeout=120,
                           what="the daemon replacing etcd-1")
    assert change["reason"] == "unhealthy" and change["action"] == "replace"
    d.wait_for(is_pass("ok", observed=4), after=i, timeout=120, what="a converged pass after the heal")
    report(f"heal (etcd-local, 3 members, interval 1s): kill etcd-1 → converged pass in "
           f"{time.monotonic() - killed:.2f}s")

    after = _members(harness)
    assert all(m["healthy"] is True for m in after.values()), after
    assert after["etcd-0"]["id"] == before["etcd-0"]["id"] and after["etcd-2"]["id"] == before["etcd-2"]["id"]
    assert after["etcd-1"]["id"] != victim["id"]
    done = {e["member"] for e in d.events()[mark:] if e.get("event") == "change" and e["result"] == "applied"}
    assert done == {"etcd-1"}, "only the killed member was replaced"
    assert d.terminate() == 0


def test_lost_quorum_is_reported_every_pass_and_nothing_is_deleted(harness: Harness) -> None:
    harness.track(STACK)
    d = harness.daemon(STACK, interval=1, extra=("--backoff-max", "2"))
    d.wait_for(is_pass("ok", observed=4), timeout=120, what="the etcd stack converged")
    before = _members(harness)

    for member in ("etcd-1", "etcd-2"):  # a majority of 3, at once
        os.kill(harness.service_pid(before[member]["name"], "etcd"), signal.SIGKILL)
    mark = len(d.events())
    after = mark
    reports = []
    for _ in range(3):
        after, e = d.wait_for(is_pass(), after=after, timeout=60, what="a pass after the majority died")
        reports.append(e)
        after += 1
    assert [e["result"] for e in reports] == ["quorum_lost"] * 3, reports
    assert all("quorum" in e["error"].lower() for e in reports)
    assert all(e["level"] == "error" for e in reports)
    later = d.events()[mark:]
    assert not [e for e in later if e.get("event") in ("change.start", "change")], "no change may start without quorum"
    # the pending replacements were planned, and refused before any was attempted (at plan time)
    assert all(e["planned"] + e["held"] >= 2 and e["error_type"] == "QuorumLostError" and e["applied"] == 0 for e in reports)
    assert d.metric("infra_passes_total", stack="etcd-local", result="quorum_lost") >= 3

    now = _members(harness)
    assert {k: v["id"] for k, v in now.items()} == {k: v["id"] for k, v in before.items()}, "nothing deleted"
    assert now["etcd-0"]["status"] == "running"
    assert d.terminate() == 0
