"""stacks/web-hcloud.py: the docstring's "on this machine" commands, run as written (against the
stand-in of pulumi-resource-hcloud), and the real-cloud commands' stack file validated as far as
it can be without the plugin."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import REPO

STACK = REPO / "stacks" / "web-hcloud.py"


def blocks() -> list[list[str]]:
    doc = ast.get_docstring(ast.parse(STACK.read_text())) or ""
    out: list[list[str]] = [[]]
    for line in doc.splitlines():
        if line.startswith("    ") and line.strip():
            out[-1].append(line.split("  #")[0].strip())
        elif out[-1]:
            out.append([])
    return [b for b in out if b]


def test_the_docstrings_local_commands_run_as_written(tmp_path: Path) -> None:
    (local,) = [b for b in blocks() if any("tests/pulumi/bin" in c for c in b)]
    env = {**os.environ, "INFRA_STATE_DIR": str(tmp_path / "state"), "FAKECLOUD_PYTHON": sys.executable,
           "TMPDIR": str(tmp_path)}
    env.pop("HCLOUD_TOKEN", None)
    proc = subprocess.run(["bash", "-euc", "\n".join(local)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "web-0" in proc.stdout and "running" in proc.stdout  # infra status
    states = list(tmp_path.glob("*/hcloud.json"))
    assert len(states) == 1 and json.loads(states[0].read_text())["servers"] == {}  # destroyed: nothing left


def test_the_real_cloud_block_names_the_plugin_it_needs(tmp_path: Path) -> None:
    (real,) = [b for b in blocks() if any("pulumi plugin install" in c for c in b)]
    env = {**os.environ, "INFRA_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin:" +
           str(Path(sys.executable).parent), "HCLOUD_TOKEN": "x", "PULUMI_HOME": str(tmp_path / "home")}
    validate = next(c for c in real if c.startswith("infra validate")).split()
    proc = subprocess.run(validate, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "no pulumi-resource-hcloud on PATH" in proc.stderr, proc.stderr
    assert "resource-hcloud-v1.41.0" in proc.stderr and "pulumi plugin install resource hcloud" in proc.stderr
