"""``infra daemon`` on real processes: healing, stack-file edits, backoff, metrics, locks, SIGTERM.

Each test drives ``infra daemon`` as a subprocess with ``INFRA_STATE_DIR`` in a temporary
directory and reads its JSON log lines; the local provider's instances are real process groups.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from reconciler.engine.state import StateDir
from tests.daemon.conftest import INFRA, Harness, is_event, is_pass, replace_text, report, set_size


def _members(h: Harness, stack_file: Path) -> dict[str, dict[str, object]]:
    doc = h.status(stack_file)
    return {m["member"]: m for g in doc["groups"] for m in g["members"]}


def test_heals_a_killed_member_without_any_cli_call(harness: Harness) -> None:
    stack = harness.stack_file("heal", size=2)
    d = harness.daemon(stack, interval=1)
    d.wait_for(is_pass("ok", observed=2), timeout=60, what="a converged pass")
    before = _members(harness, stack)
    victim = before["web-1"]
    pid = harness.service_pid(str(victim["name"]), "web")

    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    after_kill = len(d.events())
    i, change = d.wait_for(is_event("change", member="web-1", result="applied"), after=after_kill, timeout=60,
                           what="the daemon replacing the killed member")
    d.wait_for(is_pass("ok", observed=2), after=i, timeout=60, what="a converged pass after healing")
    heal_seconds = time.monotonic() - killed
    report(f"heal (local provider, command role, interval 1s): kill → converged pass in {heal_seconds:.2f}s")

    assert change["reason"] == "unhealthy"
    assert change["action"] == "replace"
    now = _members(harness, stack)
    assert set(now) == {"web-0", "web-1"}
    assert all(m["healthy"] is True for m in now.values())
    assert now["web-0"]["id"] == before["web-0"]["id"], "the healthy member was left alone"
    address = now["web-1"]["address"]
    with urllib.request.urlopen(f"http://{address}:8080/", timeout=5) as resp:
        assert b"hello from infra" in resp.read()

    # /metrics and /healthz saw it all.
    assert d.metric("infra_changes_applied_total", stack="heal", action="replace", reason="unhealthy") == 1
    assert d.metric("infra_changes_applied_total", stack="heal", action="create", reason="missing") == 2
    assert d.metric("infra_passes_total", stack="heal", result="ok") >= 2
    assert d.metric("infra_drift_detected_total", stack="heal") >= 2
    assert d.metric("infra_instances_observed", stack="heal", group="web") == 2
    assert d.metric("infra_leader", stack="heal") == 1
    assert d.metric("infra_pass_duration_seconds_count", stack="heal") >= 3
    code, body = d.get("/healthz")
    assert code == 200 and json.loads(body)["healthy"] is True
    assert d.terminate() == 0


def test_stack_edits_are_picked_up_and_a_broken_edit_keeps_the_last_good_version(harness: Harness) -> None:
    stack = harness.stack_file("edit", size=1)
    d = harness.daemon(stack, interval=2)
    d.wait_for(is_pass("ok", observed=1), timeout=60, what="a converged pass")

    set_size(stack, 2)
    mark = len(d.events())
    i, _ = d.wait_for(is_event("reload", result="ok"), after=mark, timeout=30, what="a reload of the edited file")
    i, created = d.wait_for(is_event("change", member="web-1", result="applied"), after=i, timeout=60,
                            what="web-1 created after the edit")
    assert created["action"] == "create" and created["reason"] == "missing"
    d.wait_for(is_pass("ok", observed=2), after=i, timeout=60, what="a converged pass at size 2")

    good = stack.read_text()
    web0 = str(_members(harness, stack)["web-0"]["name"])
    try:
        replace_text(stack, good.replace("size=2", "size=5") + "\nthis is not python (\n")
        mark = len(d.events())
        _, bad = d.wait_for(is_event("reload", result="error"), after=mark, timeout=30, what="the broken edit logged")
        assert "syntax error" in bad["error"] and "last good version" in bad["msg"]

        # Still reconciling the last good version (size 2): kill a member and watch it healed.
        os.kill(harness.service_pid(web0, "web"), signal.SIGKILL)
        mark = len(d.events())
        i, _ = d.wait_for(is_event("change", member="web-0", result="applied"), after=mark, timeout=60,
                               what="the last good version healing web-0")
        _, converged = d.wait_for(is_pass("ok"), after=i, timeout=60, what="a converged pass")
        assert converged["observed"] == 2, "the broken edit's size=5 must not have been used"
        assert not [e for e in d.events()[mark:] if e.get("event") == "change" and e.get("action") == "create"]
        assert d.metric("infra_stack_reloads_total", stack="edit", result="ok") == 1
        assert d.metric("infra_stack_reloads_total", stack="edit", result="error") == 1
    finally:
        replace_text(stack, good)
    assert d.terminate() == 0


def test_errors_back_off_exponentially_and_a_healthy_pass_resets_it(harness: Harness) -> None:
    stack = harness.stack_file("flaky", size=3, provider="memory", provider_config={"error_rate": 1.0})
    d = harness.daemon(stack, interval=1, extra=("--backoff-max", "4"))
    failed = []
    after = 0
    for _ in range(4):
        after, e = d.wait_for(is_pass("error"), after=after, timeout=30, what="a failed pass")
        failed.append(e)
        after += 1
    assert [e["next_in"] for e in failed] == [1, 2, 4, 4]
    assert [e["failures"] for e in failed] == [1, 2, 3, 4]
    assert "simulated transient failure" in failed[0]["error"]
    assert d.metric("infra_provider_errors_total", stack="flaky", call="list", type="TransientError") >= 4
    assert d.metric("infra_backoff_seconds", stack="flaky") == 4

    stack.write_text(stack.read_text().replace("'error_rate': 1.0", "'error_rate': 0.0"))
    i, _ = d.wait_for(is_event("reload", result="ok"), after=after, timeout=30, what="the fixed stack reloaded")
    i, applied = d.wait_for(is_pass("applied"), after=i, timeout=30, what="a pass creating the members")
    assert applied["create"] == 3 and applied["next_in"] == 0  # requeue_after=0: come back at once
    _, ok = d.wait_for(is_pass("ok"), after=i, timeout=30, what="a healthy pass")
    assert ok["next_in"] == 1 and ok["observed"] == 3  # back to the interval
    assert d.metric("infra_backoff_seconds", stack="flaky") == 0
    assert d.terminate() == 0


def test_apply_while_the_daemon_runs_fails_fast_naming_it(harness: Harness) -> None:
    stack = harness.stack_file("locked", size=1)
    d = harness.daemon(stack, interval=1)
    d.wait_for(is_pass("ok", observed=1), timeout=60, what="a converged pass")
    for command in ("apply", "destroy"):
        out = harness.infra(command, str(stack), "--yes", timeout=60)
        assert out.returncode == 1, out
        assert f"stack 'locked' is locked by pid {d.pid}" in out.stderr
        assert "infra daemon" in out.stderr
    assert _members(harness, stack)["web-0"]["healthy"] is True
    assert d.terminate() == 0
    out = harness.infra("apply", str(stack), "--yes")
    assert out.returncode == 0, out.stderr  # the daemon released the lock on exit
    assert "No changes" in out.stdout


def test_sigterm_finishes_the_change_in_flight_and_exits_0(harness: Harness) -> None:
    # One change at a time, each taking ~2 s to become healthy: SIGTERM lands mid-change.
    stack = harness.stack_file("term", size=3, slow_start=2.0)
    d = harness.daemon(stack, interval=1, extra=("--concurrency", "1", "--grace", "60"))
    d.wait_for(is_event("change.start", member="web-0"), timeout=60, what="the first change starting")
    d.proc.send_signal(signal.SIGTERM)
    code = d.proc.wait(timeout=60)
    events = d.events()
    assert code == 0, d.tail()

    done = [e for e in events if e.get("event") == "change"]
    started = [e for e in events if e.get("event") == "change.start"]
    assert [e["member"] for e in started] == ["web-0"], "no change may start after SIGTERM"
    assert [(e["member"], e["result"]) for e in done] == [("web-0", "applied")], "the change in flight finished"
    interrupted = [e for e in events if e.get("event") == "pass"]
    assert interrupted[-1]["result"] == "interrupted" and interrupted[-1]["skipped"] == 2
    assert events[-1]["event"] == "stop" and "cleanly" in events[-1]["msg"]

    members = _members(harness, stack)
    assert list(members) == ["web-0"] and members["web-0"]["healthy"] is True, "no half-done change"
    lock = StateDir("term", harness.state).lock()
    lock.acquire()  # released: nobody holds it any more
    lock.release()


def test_a_change_outlasting_the_grace_time_exits_1_and_says_so(harness: Harness) -> None:
    stack = harness.stack_file("slow", size=1, slow_start=20.0)
    d = harness.daemon(stack, interval=1, extra=("--grace", "1"))
    d.wait_for(is_event("change.start", member="web-0"), timeout=60, what="the change starting")
    d.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    code = d.proc.wait(timeout=30)
    waited = time.monotonic() - sent
    assert code == 1, d.tail()
    assert waited < 15, f"the daemon waited {waited:.1f}s for a 20s change with --grace 1"
    last = d.events()[-1]
    assert last["event"] == "stop" and "grace time of 1s is over" in last["msg"] and last["stacks"] == ["slow"]


def test_healthz_and_metrics_endpoints(harness: Harness) -> None:
    stack = harness.stack_file("probe", size=2, provider="memory")
    d = harness.daemon(stack, interval=1)
    d.wait_for(is_pass("ok"), timeout=30, what="a converged pass")
    code, body = d.get("/healthz")
    doc = json.loads(body)
    assert code == 200 and doc["healthy"] is True and doc["stacks"]["probe"]["leader"] is True
    code, text = d.get("/metrics")
    assert code == 200
    for family in ("infra_passes_total", "infra_pass_duration_seconds_bucket", "infra_changes_applied_total",
                   "infra_drift_detected_total", "infra_instances_observed", "infra_leader",
                   "process_resident_memory_bytes"):
        assert family in text, family
    code, _ = d.get("/nope")
    assert code == 404
    passes = d.metric("infra_passes_total", stack="probe", result="ok")
    d.wait_for(is_pass("ok"), after=len(d.events()), timeout=30, what="another pass")
    assert d.metric("infra_passes_total", stack="probe", result="ok") > passes
    assert d.terminate() == 0


def test_healthz_fails_while_a_pass_is_stuck(harness: Harness) -> None:
    # Every provider call sleeps 4 s; with --stuck-after 1 the running pass counts as stuck.
    stack = harness.stack_file("stuck", size=1, provider="memory", provider_config={"latency": 4.0})
    d = harness.daemon(stack, interval=1, extra=("--stuck-after", "1"))
    d.wait_for(is_event("lock", leader=True), timeout=30, what="the daemon leading")
    deadline = time.monotonic() + 20
    while True:
        code, body = d.get("/healthz")
        if code == 503:
            break
        assert time.monotonic() < deadline, f"/healthz never turned 503: {body}"
        time.sleep(0.2)
    doc = json.loads(body)
    assert doc["healthy"] is False
    assert "no progress in the running pass" in doc["stacks"]["stuck"]["problem"]
    assert d.terminate() == 0


def test_text_logs_by_default_and_a_busy_metrics_port_is_a_clear_error(harness: Harness) -> None:
    stack = harness.stack_file("text", size=1, provider="memory")
    log = harness.root / "text.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(INFRA), "daemon", str(stack), "--interval", "1", "--metrics-addr",
                                 "127.0.0.1:0"], env=harness.env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "pass: no changes" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        text = log.read_text()
        assert "[text] created web/web-0" in text and "(missing)" in text
        assert "[text] pass: no changes (1 instances observed)" in text and "result=ok" in text
        assert not text.lstrip().startswith("{")
        port = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", text)
        assert port, text
        busy = harness.infra("daemon", str(stack), "--metrics-addr", f"127.0.0.1:{port.group(1)}", timeout=60)
        assert busy.returncode == 1 and "cannot listen" in busy.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_a_stack_that_fails_to_load_at_start_is_a_clear_error(harness: Harness, tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from reconciler import Stack\nstack = Stack(name='Bad Name')\n")
    out = harness.infra("daemon", str(bad), "--metrics-addr", "127.0.0.1:0", timeout=60)
    assert out.returncode == 1
    assert "bad.py" in out.stderr and "not a valid name" in out.stderr
