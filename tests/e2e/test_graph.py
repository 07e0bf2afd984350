"""``infra graph`` through the CLI: the main stack's picture before and after an apply."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import Infra

HELLO = "stacks/hello-local.py"


def test_graph_draws_the_plan_then_the_running_members(infra: Infra, tmp_path: Path) -> None:
    before = infra.run("graph", HELLO, "--plan", "--format", "dot", check=True).stdout
    assert before.count("+ web-") == 3 and "(missing)" in before and 'label="web (command, 0/3)"' in before
    infra.run("apply", HELLO, "--yes", check=True)
    out = tmp_path / "hello.svg"
    drawn = infra.run("graph", HELLO, "-o", str(out), check=True)
    assert "wrote" in drawn.stderr and out.read_text().lstrip().startswith("<?xml")
    svg = out.read_text().replace("&#45;", "-")
    assert all(f"web-{i}" in svg for i in range(3)) and "running, healthy" in svg
    dot = infra.run("graph", HELLO, "--format", "dot", check=True).stdout
    assert dot.count('fillcolor="#c8e6c9"') == 3  # every member healthy (green)
    assert infra.run("graph", HELLO, "--format", "png", "-o", str(tmp_path / "x.png"), check=True).returncode == 0
    assert (tmp_path / "x.png").read_bytes().startswith(b"\x89PNG")
