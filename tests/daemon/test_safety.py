"""The daemon under the new safety rules: a pause holds every change, and one failed probe
replaces nothing.

* ``infra pause`` while the daemon runs: a member killed meanwhile stays dead through several
  passes (the daemon observes, plans and reports it as held); ``infra resume`` and it is healed.
* A member whose health check fails for one pass or two (under ``unhealthy_after``) is not
  replaced: the daemon remembers when it first saw it fail, and it recovered before that long.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from tests.daemon.conftest import Harness, is_event, is_pass, replace_text

SERVER = """
import http.server, os, sys
address, port, flag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(500 if os.path.exists(flag) else 200)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((address, port), H).serve_forever()
"""


def _members(harness: Harness, stack: Path) -> dict[str, dict[str, object]]:
    return {m["member"]: m for g in harness.status(stack)["groups"] for m in g["members"]}


def test_a_pause_holds_the_daemon_and_resume_heals(harness: Harness) -> None:
    stack = harness.stack_file("pausing", size=2)
    d = harness.daemon(stack, interval=0.5)
    d.wait_for(is_pass("ok", observed=2), timeout=60, what="the stack converged")
    mark = len(d.events())  # before the pause: the daemon may log it before the command returns
    paused = harness.infra("pause", str(stack), "--reason", "disk swap on the host")
    assert paused.returncode == 0, paused.stderr
    d.wait_for(is_event("paused"), after=mark, timeout=30, what="the daemon seeing the pause")
    before = _members(harness, stack)
    os.kill(harness.service_pid(str(before["web-1"]["name"]), "web"), signal.SIGKILL)
    after = mark
    for _ in range(4):  # several passes see the dead member and hold its replacement
        after, _e = d.wait_for(is_pass(), after=after, timeout=30, what="a pass while paused")
        after += 1
    later = d.events()[mark:]
    assert not [e for e in later if e.get("event") in ("change.start", "change")], "a paused stack was changed"
    assert _members(harness, stack)["web-1"]["id"] == before["web-1"]["id"]
    status = harness.status(stack)
    assert status["paused"] and "disk swap on the host" in status["paused"]
    assert d.metric("infra_paused", stack="pausing", group="") == 1

    mark = len(d.events())
    assert harness.infra("resume", str(stack)).returncode == 0
    d.wait_for(lambda e: e.get("event") == "change" and e.get("member") == "web-1", after=mark, timeout=60,
               what="web-1 healed after resume")
    assert _members(harness, stack)["web-1"]["id"] != before["web-1"]["id"]
    assert d.terminate() == 0


def test_one_failed_probe_replaces_nothing(harness: Harness, tmp_path: Path) -> None:
    flag = tmp_path / "failing"
    stack = harness.track(tmp_path / "flaky.py")
    config = {"command": [sys.executable, "-c", SERVER, "{address}", "8095", str(flag)], "port": 8095,
              "health": "http"}
    replace_text(stack, "from reconciler import Group, Stack\n"
                        f"stack = Stack(name='flaky', groups=[Group(name='api', size=1, role='command', "
                        f"config={config!r}, remediation={{'startup_grace': 0}})])\n")
    d = harness.daemon(stack, interval=0.5)
    d.wait_for(is_pass("ok", observed=1), timeout=60, what="the stack converged")
    before = _members(harness, stack)["api-0"]["id"]
    mark = len(d.events())
    flag.write_text("")  # the probe fails ...
    d.wait_for(is_event("held"), after=mark, timeout=30, what="the daemon holding the replacement")
    after = len(d.events())
    after, _e = d.wait_for(is_pass(), after=after, timeout=30, what="one more pass")
    flag.unlink()  # ... for a pass or two, then recovers
    after, _e = d.wait_for(is_pass("ok"), after=after + 1, timeout=30, what="a pass after recovery")
    assert not [e for e in d.events()[mark:] if e.get("event") in ("change.start", "change")]
    assert _members(harness, stack)["api-0"]["id"] == before
    held = [e for e in d.events()[mark:] if e.get("event") == "held"]
    assert "replaced once unhealthy for 10s" in str(held[0].get("msg"))
    assert d.terminate() == 0
