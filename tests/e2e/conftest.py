"""Fixtures for end-to-end tests: run the real ``infra`` CLI as a subprocess, as a user would.

Every test gets its own ``INFRA_STATE_DIR``; the finalizer destroys whatever a stack left running
(the sweeper), so a failed test cannot leak processes into the next one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def infra_bin() -> list[str]:
    exe = shutil.which("infra")
    return [exe] if exe else [sys.executable, "-m", "reconciler.cli"]


@dataclass
class Infra:
    """Runs ``infra`` with a private state dir; remembers stacks to sweep afterwards."""

    state: Path
    applied: set[str] = field(default_factory=set)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"INFRA_STATE_DIR": str(self.state), "NO_COLOR": "1", "COLUMNS": "200"})
        env.update(extra)
        return env

    def run(self, *args: str, check: bool | None = None, timeout: float = 180, input: str | None = None,
            **extra: str) -> subprocess.CompletedProcess[str]:
        if args and args[0] in ("apply", "daemon"):
            self.applied.add(args[1])
        proc = subprocess.run([*infra_bin(), *args], capture_output=True, text=True, timeout=timeout,
                              env=self.env(**extra), cwd=REPO, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if check:
            assert proc.returncode == 0, f"infra {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        return proc

    def json(self, *args: str) -> Any:
        proc = self.run(*args, "--json", check=True)
        return json.loads(proc.stdout)

    def sweep(self) -> None:
        for stack in self.applied:
            if Path(stack).exists() or (REPO / stack).exists():
                self.run("destroy", stack, "--yes", timeout=120)


@pytest.fixture
def infra(tmp_path: Path) -> Iterator[Infra]:
    state = tmp_path / "state"
    state.mkdir()
    runner = Infra(state)
    yield runner
    runner.sweep()


def write_stack(path: Path, body: str) -> Path:
    path.write_text("from reconciler import Group, Stack\n" + body)
    return path
