"""Nothing is destroyed by accident, through the real CLI on the local provider.

Protection survives the declaration and refuses destroy; a group whose members all fail because a
shared dependency is down is held, not replaced; ``--target`` touches only its group; a member
stopped for maintenance is left alone; labels change in place; a group left out of the file is
kept and reported until ``removed`` says to delete it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Infra

pytestmark = pytest.mark.e2e

#: A member whose health depends on a shared "database": 200 while ``<shared>/db-up`` exists, 500
#: while it does not (the process stays up: only its health check fails).
SERVER = """
import http.server, os, sys
address, port, shared = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        up = os.path.exists(os.path.join(shared, "db-up"))
        self.send_response(200 if up else 500)
        self.end_headers()
        self.wfile.write(b"ok" if up else b"database down")
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((address, port), H).serve_forever()
"""


def write(path: Path, *, name: str, groups: list[str], extra: str = "") -> Path:
    path.write_text("from reconciler import Group, Removed, Stack\n" + extra +
                    f"stack = Stack(name={name!r}, groups=[\n" + "".join(f"    {g},\n" for g in groups) + "])\n")
    return path


def web(name: str = "web", size: int = 2, port: int = 8080, **kw: Any) -> str:
    config = {"command": [sys.executable, "-m", "http.server", str(port), "--bind", "{address}"], "port": port}
    args = "".join(f", {k}={v!r}" for k, v in kw.items())
    return f"Group(name={name!r}, size={size}, role='command', config={config!r}{args})"


def api(shared: Path, size: int = 4, port: int = 8090, **kw: Any) -> str:
    config = {"command": [sys.executable, "-c", SERVER, "{address}", str(port), str(shared)], "port": port,
              "health": "http"}
    args = "".join(f", {k}={v!r}" for k, v in kw.items())
    return f"Group(name='api', size={size}, role='command', config={config!r}{args})"


def records(infra: Infra) -> dict[str, dict[str, Any]]:
    """member → its instance record, as the local provider keeps it."""
    out = {}
    for path in sorted((infra.state / "local" / "instances").glob("*/instance.json")):
        rec = json.loads(path.read_text())
        out[rec["labels"]["infra-member"]] = rec
    return out


def kill(rec: dict[str, Any]) -> None:
    os.killpg(int(rec["processes"]["pgid"]), signal.SIGKILL)


def test_protection_refuses_destroy_until_it_is_lifted_in_place(infra: Infra, tmp_path: Path) -> None:
    path = write(tmp_path / "p.py", name="prot", groups=[web(protect=True)])
    infra.run("apply", str(path), "--yes", check=True)
    before = {m: r["id"] for m, r in records(infra).items()}
    assert all(r["labels"]["infra-protect"] == "true" for r in records(infra).values())

    refused = infra.run("destroy", str(path), "--yes")
    assert refused.returncode == 1
    assert "group web is protected" in refused.stdout + refused.stderr and "Nothing was changed" in refused.stderr
    assert {m: r["id"] for m, r in records(infra).items()} == before, "destroy deleted a protected member"
    plan = infra.run("plan", str(path), "--destroy", "--json", check=True)
    assert json.loads(plan.stdout)["blocked"] and not json.loads(plan.stdout)["changes"]

    write(path, name="prot", groups=[web(protect=False)])
    lifted = infra.run("apply", str(path), "--yes", check=True)
    assert "~ web-0" in lifted.stdout and "labels changed" in lifted.stdout and "infra-protect" in lifted.stdout
    assert {m: r["id"] for m, r in records(infra).items()} == before, "lifting protection replaced a member"
    assert not any("infra-protect" in r["labels"] for r in records(infra).values())
    infra.run("destroy", str(path), "--yes", check=True)
    assert records(infra) == {}


def test_a_shared_outage_holds_remediation_and_nothing_is_replaced(infra: Infra, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "db-up").write_text("")
    path = write(tmp_path / "a.py", name="outage", groups=[api(shared)])
    infra.run("apply", str(path), "--yes", check=True)
    before = {m: r["id"] for m, r in records(infra).items()}

    (shared / "db-up").unlink()  # the shared database goes down: every member answers 500
    plan = infra.run("plan", str(path))
    assert "remediation held: 4 of 4 unhealthy, limit 40%" in plan.stdout, plan.stdout
    applied = infra.run("apply", str(path), "--yes")
    assert applied.returncode == 0, applied.stderr
    assert "remediation held: 4 of 4 unhealthy" in applied.stdout
    status = json.loads(infra.run("status", str(path), "--json", check=True).stdout)
    assert status["groups"][0]["held"][0].startswith("remediation held: 4 of 4 unhealthy")
    assert {m: r["id"] for m, r in records(infra).items()} == before, "members were replaced during the outage"

    (shared / "db-up").write_text("")  # the database is back: every member is healthy again
    again = infra.run("plan", str(path), "--detailed-exitcode")
    assert again.returncode == 0, again.stdout
    assert {m: r["id"] for m, r in records(infra).items()} == before
    infra.run("destroy", str(path), "--yes", check=True)


def test_target_touches_only_its_group_and_a_stopped_member_is_left_alone(infra: Infra, tmp_path: Path) -> None:
    path = write(tmp_path / "t.py", name="targ", groups=[web("web", 2, 8080), web("db", 2, 8081)])
    infra.run("apply", str(path), "--yes", check=True)
    before = records(infra)
    kill(before["web-1"])
    kill(before["db-1"])
    targeted = infra.run("apply", str(path), "--yes", "--target", "web", check=True)
    assert "not targeted" in targeted.stdout
    after = records(infra)
    assert after["web-1"]["id"] != before["web-1"]["id"], "the targeted group was not healed"
    assert after["db-1"]["id"] == before["db-1"]["id"], "a group outside --target was changed"
    bad = infra.run("apply", str(path), "--yes", "--target", "nope")
    assert bad.returncode == 1 and "no group 'nope'" in bad.stderr

    os.killpg(int(after["web-0"]["processes"]["pgid"]), signal.SIGSTOP)  # frozen for a debugger
    try:
        infra.run("apply", str(path), "--yes", check=True)
        assert records(infra)["web-0"]["id"] == after["web-0"]["id"], "a member that cannot be judged was replaced"
    finally:
        os.killpg(int(after["web-0"]["processes"]["pgid"]), signal.SIGCONT)
    infra.run("destroy", str(path), "--yes", check=True)


def test_a_group_left_out_of_the_file_is_kept_until_removed(infra: Infra, tmp_path: Path) -> None:
    path = write(tmp_path / "u.py", name="undecl", groups=[web("web", 1, 8080), web("db", 2, 8081)])
    infra.run("apply", str(path), "--yes", check=True)
    db = {m: r["id"] for m, r in records(infra).items() if m.startswith("db")}

    write(path, name="undecl", groups=[web("web", 1, 8080)])  # db deleted from the file, by mistake
    plan = infra.run("plan", str(path), "--json", check=True)
    doc = json.loads(plan.stdout)
    assert doc["changes"] == [] and [(u["group"], u["members"], u["role"]) for u in doc["undeclared"]] == [
        ("db", 2, "command")]
    text = infra.run("plan", str(path), "--detailed-exitcode")
    assert text.returncode == 2 and "group db (command) is no longer declared: 2 members kept" in text.stdout
    infra.run("apply", str(path), "--yes", check=True)
    assert {m: r["id"] for m, r in records(infra).items() if m.startswith("db")} == db

    write(path, name="undecl", groups=[web("web", 1, 8080)], extra="")
    path.write_text(path.read_text().replace("])\n", "], removed=[Removed('db')])\n"))
    gone = infra.run("apply", str(path), "--yes", check=True)
    assert "- db-1" in gone.stdout and "- db-0" in gone.stdout
    assert not [m for m in records(infra) if m.startswith("db")]
    infra.run("destroy", str(path), "--yes", check=True)


def test_labels_are_recorded_and_changed_in_place(infra: Infra, tmp_path: Path) -> None:
    path = write(tmp_path / "l.py", name="labels", groups=[web(labels={"team": "blue"})])
    infra.run("apply", str(path), "--yes", check=True)
    before = records(infra)
    assert all(r["labels"]["team"] == "blue" and r["labels"]["infra-role"] == "command"
               and r["labels"]["infra-policy"] == "cattle" for r in before.values())
    write(path, name="labels", groups=[web(labels={"team": "green", "cost-centre": "c42"})])
    applied = infra.run("apply", str(path), "--yes", check=True)
    assert "2 to update in place" in applied.stdout and "0 to replace" in applied.stdout
    after = records(infra)
    assert {m: r["id"] for m, r in after.items()} == {m: r["id"] for m, r in before.items()}
    assert all(r["labels"]["team"] == "green" and r["labels"]["cost-centre"] == "c42" for r in after.values())
    assert infra.run("plan", str(path), "--detailed-exitcode").returncode == 0
    infra.run("destroy", str(path), "--yes", check=True)
