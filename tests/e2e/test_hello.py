"""The user story of the core engine issue, end to end through the real CLI on the local provider.

validate → plan → apply → status → kill -9 a member → plan shows the replacement and why →
apply heals → destroy leaves nothing running or on disk.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path

import psutil

from tests.e2e.conftest import Infra
from tests.polling import wait_for

HELLO = "stacks/hello-local.py"


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (a zombie awaiting its reaper counts as gone)."""
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def members(status: dict) -> dict[str, dict]:
    return {m["member"]: m for g in status["groups"] for m in g["members"]}


def get(address: str, port: int = 8080) -> str:
    with urllib.request.urlopen(f"http://{address}:{port}/", timeout=5) as resp:
        return resp.read().decode()


def instance_record(state: Path, name: str) -> dict:
    return json.loads((state / "local" / "instances" / name / "instance.json").read_text())


def test_the_hello_story(infra: Infra) -> None:
    assert "valid" in infra.run("validate", HELLO, check=True).stdout

    plan = infra.run("plan", HELLO, check=True).stdout
    for m in ("+ web-0", "+ web-1", "+ web-2"):
        assert m in plan
    assert "3 to create" in plan

    infra.run("apply", HELLO, "--yes", check=True)
    status = infra.json("status", HELLO)
    assert status["stack"] == "hello"
    (group,) = status["groups"]
    assert (group["name"], group["role"]) == ("web", "command")
    ms = members(status)
    assert sorted(ms) == ["web-0", "web-1", "web-2"]
    addresses = {m["address"] for m in ms.values()}
    assert len(addresses) == 3 and all(a.startswith("127.77.") for a in addresses)
    for m in ms.values():
        assert m["status"] == "running" and m["healthy"] is True
        assert "hello from infra" in get(m["address"])
    human = infra.run("status", HELLO, check=True).stdout
    assert "web-1" in human and "healthy" in human

    # an empty plan now: exit code 0 with --detailed-exitcode
    assert infra.run("plan", HELLO, "--detailed-exitcode").returncode == 0

    # kill -9 every process of web-1
    victim = ms["web-1"]
    record = instance_record(infra.state, victim["name"])
    pgid = record["processes"]["pgid"]
    os.killpg(pgid, signal.SIGKILL)
    wait_for(lambda: not group_alive(pgid), f"process group {pgid} of web-1 to be gone")

    healing = infra.run("plan", HELLO, "--detailed-exitcode")
    assert healing.returncode == 2
    assert "-/+ web-1" in healing.stdout and "unhealthy" in healing.stdout
    doc = json.loads(infra.run("plan", HELLO, "--json", check=True).stdout)
    assert [(c["action"], c["member"], c["reason"]) for c in doc["changes"]] == [("replace", "web-1", "unhealthy")]

    infra.run("apply", HELLO, "--yes", check=True)
    healed = members(infra.json("status", HELLO))
    assert healed["web-1"]["healthy"] is True and healed["web-1"]["id"] != victim["id"]
    assert "hello from infra" in get(healed["web-1"]["address"])
    assert healed["web-0"]["id"] == ms["web-0"]["id"], "a healthy member was touched"
    assert infra.run("plan", HELLO, "--detailed-exitcode").returncode == 0

    pgids = [instance_record(infra.state, m["name"])["processes"]["pgid"] for m in healed.values()]
    out = infra.run("destroy", HELLO, "--yes", check=True)
    assert "Destroy complete" in out.stdout
    for pgid in pgids:
        alive = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == pgid and p.status() != "zombie"]
        assert not alive, f"processes of group {pgid} survived destroy: {alive}"
    assert not list((infra.state / "local" / "instances").iterdir())
    assert not (infra.state / "stacks" / "hello").exists()
    again = infra.run("destroy", HELLO, "--yes", check=True)
    assert "nothing to destroy" in again.stdout


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_scale_down_and_up_touches_only_the_difference(infra: Infra, tmp_path: Path) -> None:
    from tests.e2e.conftest import write_stack

    def stack(size: int) -> Path:
        return write_stack(tmp_path / "scale.py", f"""
stack = Stack(name="scale", groups=[Group(name="web", size={size}, config={{
    "command": ["python3", "-m", "http.server", "8080", "--bind", "{{address}}"], "port": 8080}})])
""")

    path = str(stack(3))
    infra.run("apply", path, "--yes", check=True)
    before = members(infra.json("status", path))
    stack(1)
    plan = json.loads(infra.run("plan", path, "--json", check=True).stdout)
    assert sorted((c["action"], c["member"]) for c in plan["changes"]) == [("delete", "web-1"), ("delete", "web-2")]
    infra.run("apply", path, "--yes", check=True)
    after = members(infra.json("status", path))
    assert list(after) == ["web-0"] and after["web-0"]["id"] == before["web-0"]["id"]
    stack(2)
    infra.run("apply", path, "--yes", check=True)
    assert sorted(members(infra.json("status", path))) == ["web-0", "web-1"]


def test_a_spec_change_replaces_every_member(infra: Infra, tmp_path: Path) -> None:
    from tests.e2e.conftest import write_stack

    def stack(greeting: str) -> str:
        return str(write_stack(tmp_path / "spec.py", f"""
stack = Stack(name="spec", groups=[Group(name="web", size=2, config={{
    "command": ["python3", "-m", "http.server", "8080", "--bind", "{{address}}", "--directory", "{{config}}/web"],
    "port": 8080, "health": "http", "files": {{"index.html": "{greeting}"}}}})])
"""))

    path = stack("one")
    infra.run("apply", path, "--yes", check=True)
    path = stack("two")
    doc = json.loads(infra.run("plan", path, "--json", check=True).stdout)
    assert {(c["action"], c["reason"]) for c in doc["changes"]} == {("replace", "spec changed")}
    infra.run("apply", path, "--yes", check=True)
    for m in members(infra.json("status", path)).values():
        assert get(m["address"]) == "two"
