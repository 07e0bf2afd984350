"""Prometheus on the local provider, driven through the real ``infra`` CLI as a user would.

A ``command`` group of tiny web servers serving ``/metrics`` and a ``prometheus`` group watching
it: Prometheus finds every member by the provider's file discovery, follows a scale up and a
scale down without being restarted or replaced, and ``infra status`` shows each target's health.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.prometheus.conftest import PROMETHEUS, InfraCli, require_binary

WEB_STACK = """
from reconciler import Group, Stack

stack = Stack(
    name="pmon",
    provider="local",
    groups=[
        Group(name="web", size={size}, role="command", config={{
            "command": ["python3", "-m", "http.server", "8080", "--bind", "{{address}}",
                        "--directory", "{{config}}/web"],
            "port": 8080, "health": "http", "metrics_path": "/metrics",
            "files": {{"metrics": "# TYPE demo_up gauge\\ndemo_up 1\\n"}},
        }}),
        Group(name="prometheus", size=1, role="prometheus",
              config={{"watch": ["web"], "scrape_interval": "1s"}}),
    ],
)
"""


def prometheus_member(status: dict[str, Any]) -> dict[str, Any]:
    (group,) = [g for g in status["groups"] if g["name"] == "prometheus"]
    (member,) = group["members"]
    return dict(member)


def api(address: str, path: str) -> Any:
    with urllib.request.urlopen(f"http://{address}:9090{path}", timeout=5) as resp:
        return json.load(resp)


def wait_for_targets(
    address: str, check: Callable[[dict[str, str]], bool], timeout: float = 60, job: str = "web"
) -> dict[str, str]:
    """Poll ``/api/v1/targets`` until ``check({member: health})`` holds for ``job``."""
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        doc = api(address, "/api/v1/targets?state=active")
        seen = {t["labels"]["member"]: t["health"] for t in doc["data"]["activeTargets"] if t["scrapePool"] == job}
        if check(seen):
            return seen
        time.sleep(0.3)
    pytest.fail(f"{job} targets never satisfied the check in {timeout}s; last seen {seen}")


def test_prometheus_follows_a_scaled_group_through_the_cli(infra_cli: InfraCli, tmp_path: Path) -> None:
    require_binary(PROMETHEUS)
    stack = tmp_path / "pmon.py"
    stack.write_text(WEB_STACK.format(size=2))
    infra_cli.run("apply", str(stack), "--yes", check=True)

    status = infra_cli.json("status", str(stack))
    prom = prometheus_member(status)
    assert prom["healthy"] is True
    address = prom["address"]
    wait_for_targets(address, lambda t: t == {"web-0": "up", "web-1": "up"})
    wait_for_targets(address, lambda t: t == {"prometheus-0": "up"}, job="prometheus")
    started = api(address, "/api/v1/status/runtimeinfo")["data"]["startTime"]

    # infra status shows Prometheus's view of every target.
    status = infra_cli.json("status", str(stack))
    (group,) = [g for g in status["groups"] if g["name"] == "prometheus"]
    rows = {(r["job"], r["member"]): r["health"] for r in group["role_status"]["targets"]}
    assert rows == {("prometheus", "prometheus-0"): "up", ("web", "web-0"): "up", ("web", "web-1"): "up"}
    human = infra_cli.run("status", str(stack), check=True).stdout
    for member in ("web-0", "web-1"):
        assert re.search(rf"\bweb\W+{member}\W+up\b", human), human

    # Scale up: the plan touches only the web group; Prometheus discovers the new member.
    stack.write_text(WEB_STACK.format(size=4))
    plan = infra_cli.json("plan", str(stack))
    assert {c["group"] for c in plan["changes"]} == {"web"}, plan
    infra_cli.run("apply", str(stack), "--yes", check=True)
    wait_for_targets(address, lambda t: t == {f"web-{i}": "up" for i in range(4)})

    # Scale down to one: the removed members disappear from the targets.
    stack.write_text(WEB_STACK.format(size=1))
    infra_cli.run("apply", str(stack), "--yes", check=True)
    wait_for_targets(address, lambda t: t == {"web-0": "up"})

    after = prometheus_member(infra_cli.json("status", str(stack)))
    assert after["name"] == prom["name"], "Prometheus was replaced"
    assert api(address, "/api/v1/status/runtimeinfo")["data"]["startTime"] == started, "Prometheus restarted"
    assert infra_cli.run("plan", str(stack), "--detailed-exitcode").returncode == 0


def test_a_bad_watch_list_is_refused_before_anything_runs(infra_cli: InfraCli, tmp_path: Path) -> None:
    stack = tmp_path / "pmon.py"
    stack.write_text(WEB_STACK.format(size=1).replace('"watch": ["web"]', '"watch": ["web", "wbe"]'))
    for command in (("validate",), ("plan",), ("apply", "--yes")):
        result = infra_cli.run(command[0], str(stack), *command[1:])
        assert result.returncode == 1, result.stdout
        assert "groups[1].config.watch[1]: no group named 'wbe'" in result.stdout + result.stderr
    assert not list(infra_cli.state.glob("local/instances/*")), "something was created"
