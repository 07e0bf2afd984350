"""The commands in the cloud stacks' docstrings, run as written (bash, the real CLI).

Each stack file's docstring has a block of commands for trying it against the in-repo stand-in of
its cloud (the fake Compute and Cloud Storage APIs, the moto server). This test takes that block
from the docstring and runs it with bash in a scratch directory, with one change: the fixed port
becomes a free one. ``linuxkit`` is "installed" by putting the tests' stand-in first on PATH (no
real one installs on these machines). The block must exit 0 and leave nothing of the stack
behind (its last command is ``infra destroy ... --images``).
"""

from __future__ import annotations

import ast
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from tests.linuxkit_standin.artefact import STANDIN

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def emulator_block(stack: Path) -> list[str]:
    """The indented command block of the docstring that starts the cloud's stand-in."""
    doc = ast.get_docstring(ast.parse(stack.read_text())) or ""
    blocks: list[list[str]] = [[]]
    for line in doc.splitlines():
        if line.startswith("    ") and line.strip():
            blocks[-1].append(line.strip())
        elif blocks[-1]:
            blocks.append([])
    (block,) = [b for b in blocks if any("python -m tests." in cmd for cmd in b)]
    return block


@pytest.mark.parametrize(("stack", "port"), [("etcd-gcp.py", "8089"), ("etcd-aws.py", "5000")])
def test_the_docstring_commands_work_as_written(stack: str, port: str, tmp_path: Path) -> None:
    block = emulator_block(ROOT / "stacks" / stack)
    assert any(cmd.startswith("infra apply") for cmd in block) and block[-1].startswith("infra destroy")
    script = "\n".join(["set -eu", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT",
                        *(re.sub(rf"\b{port}\b", str(free_port()), cmd) for cmd in block)])
    (tmp_path / "stacks").symlink_to(ROOT / "stacks")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "INFRA_GCP", "INFRA_AWS"))}
    env.update({"PATH": f"{STANDIN.parent}{os.pathsep}{env['PATH']}", "PYTHONPATH": str(ROOT),
                "INFRA_STATE_DIR": str(tmp_path / "state"), "NO_COLOR": "1", "INFRA_AWS_HEALTH_TIMEOUT": "3"})
    env.pop("INFRA_LINUXKIT", None)
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=420, check=False)
    assert proc.returncode == 0, f"{script}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert "2 images pushed" in proc.stdout  # apply built and pushed both groups' images
    assert re.search(r"etcd: infra-etcd-[0-9a-f]{12}\s+present", proc.stdout)  # infra image list
    assert "image infra-etcd-" in proc.stdout and "deleted" in proc.stdout  # destroy --images
