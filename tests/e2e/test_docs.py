"""The README and docs/ stay true: every ``infra`` command they show exists with the options they
give it, every bench or script they run exists and takes the flags they give it, every test path
they hand pytest exists, the README stays short, its links resolve, and its quick start runs as
written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import click
import pytest

from reconciler.cli.commands import cli
from reconciler.cli.main import add_daemon
from tests.e2e.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), REPO / "bench" / "README.md"]


def code_lines(path: Path) -> list[str]:
    out, fence = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
            continue
        if fence:
            out.append(line)
    return out


def infra_commands(path: Path) -> list[list[str]]:
    found = []
    for line in code_lines(path):
        line = line.split("  #")[0]
        for part in re.split(r"\s*(?:;|&&|\|\||\|)\s*", line):
            part = part.strip().removeprefix("eval \"$(").rstrip(')"').strip()
            drawing = any(ch in part for ch in "─│►▼┌└┐┘")  # a diagram, not a command
            if part.startswith("infra ") and "..." not in part and "[" not in part and not drawing:
                try:
                    found.append(shlex.split(part)[1:])
                except ValueError:
                    continue
    return found


def resolve(args: list[str]) -> tuple[click.Command, list[str]]:
    add_daemon()
    command: click.Command = cli
    rest = list(args)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(click.Context(command), rest[0])
        assert sub is not None, f"no command 'infra {' '.join(args[: len(args) - len(rest) + 1])}'"
        command, rest = sub, rest[1:]
    return command, rest


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_documented_command_exists_with_its_options(path: Path) -> None:
    for args in infra_commands(path):
        command, rest = resolve(args)
        known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
        for token in rest:
            if token == "--":  # what follows is another command's (infra emulator ... -- bash)
                break
            if token.startswith("-") and token != "-":
                flag = token.split("=", 1)[0]
                assert flag in known, f"{path.name}: 'infra {' '.join(args)}': {command.name} has no option {flag}"


def script_commands() -> dict[str, set[str]]:
    """``python bench/X.py [--flag ...]`` lines of the docs: script → the flags they give it."""
    found: dict[str, set[str]] = {}
    for path in DOCS:
        for line in code_lines(path):
            m = re.match(r"python3? ((?:bench|scripts)/\S+\.py)(.*)", line.split("  #")[0].strip())
            if m:
                found.setdefault(m.group(1), set()).update(re.findall(r"--[a-z][-a-z]*", m.group(2)))
    return found


def test_every_documented_script_exists_and_takes_the_flags_shown() -> None:
    scripts = script_commands()
    assert "bench/startup.py" in scripts  # the check sees the bench lines at all
    for script, flags in sorted(scripts.items()):
        assert (REPO / script).is_file(), f"the docs run {script}, which does not exist"
        helped = subprocess.run(["python3", script, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert helped.returncode == 0, f"python3 {script} --help: {helped.stderr[-1000:]}"
        for flag in flags:
            assert flag in helped.stdout, f"the docs give {script} {flag}, which it does not take"


def test_every_documented_test_path_exists() -> None:
    paths = [arg for path in DOCS for line in code_lines(path) if line.strip().startswith("pytest ")
             for arg in line.split("  #")[0].split()[1:] if not arg.startswith("-")]
    assert paths, "the docs name no pytest command: the check is looking in the wrong place"
    for arg in paths:
        assert (REPO / arg.split("::")[0]).exists(), f"the docs run pytest on {arg}, which does not exist"


def test_the_readme_is_short_and_its_links_resolve() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for target in re.findall(r"\]\(([^)#\s]+)\)", text):
        if not target.startswith("http"):
            assert (REPO / target).exists(), f"README links to {target}, which does not exist"
    for doc in sorted((REPO / "docs").rglob("*.md")):
        for target in re.findall(r"\]\(([^)#\s]+)\)", doc.read_text()):
            if not target.startswith("http"):
                assert (doc.parent / target).exists(), f"{doc.relative_to(REPO)} links to {target}"


def quick_start() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Quick start"):]
    block = section.split("```")[1]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


@pytest.mark.e2e
def test_the_quick_start_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "stacks").symlink_to(REPO / "stacks")  # the block's paths, run from a scratch directory
    env = {**os.environ, "INFRA_STATE_DIR": str(tmp_path / "state"), "NO_COLOR": "1"}
    proc = subprocess.run(["bash", "-euc", "\n".join(quick_start())], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "is healthy" in proc.stdout + proc.stderr  # etcdctl endpoint health --cluster
    assert (tmp_path / "etcd.svg").read_text().lstrip().startswith("<?xml")
    assert not list((tmp_path / "state" / "local" / "instances").glob("*"))  # destroyed
