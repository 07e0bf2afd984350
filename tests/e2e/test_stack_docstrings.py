"""The commands in the cloud stacks' docstrings and the README's try-it block, run as written.

Each stack file's docstring has a block of commands for trying it against the in-repo stand-in of
its cloud (the fake Compute and Cloud Storage APIs, the moto server). This test takes that block
from the docstring and runs it with bash in a scratch directory, with one change: the fixed port
becomes a free one. For the GCP stack ``linuxkit`` is "installed" by putting the tests' stand-in
first on PATH (no real one installs on these machines); the AWS stack runs with none. The block must exit 0 and leave nothing of the stack
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
    """The indented command block of the docstring that starts the emulator or the stand-in of its cloud."""
    doc = ast.get_docstring(ast.parse(stack.read_text())) or ""
    blocks: list[list[str]] = [[]]
    for line in doc.splitlines():
        if line.startswith("    ") and line.strip():
            blocks[-1].append(line.strip())
        elif blocks[-1]:
            blocks.append([])
    (block,) = [b for b in blocks if any("python -m tests." in cmd or "infra emulator" in cmd for cmd in b)]
    return block


def readme_blocks() -> list[list[str]]:
    """The command blocks of the README's "Try the cloud stacks on this machine" (GCP, then AWS)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Try the cloud stacks on this machine"):]
    section = section[: section.index("\n## ", 4)]
    blocks = section.split("```")[1::2]
    return [[line.split("  #")[0].strip() for line in b.splitlines() if line.strip()] for b in blocks]


def run_block(block: list[str], port: str, tmp_path: Path, *, linuxkit: bool) -> subprocess.CompletedProcess[str]:
    # On exit, stop what the block left running and wait for it: an emulator stops its instances
    # before it exits, and the next test's members take the same addresses.
    script = "\n".join(["set -eu", "trap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT",
                        *(re.sub(rf"\b{port}\b", str(free_port()), cmd) for cmd in block)])
    (tmp_path / "stacks").symlink_to(ROOT / "stacks")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "INFRA_GCP", "INFRA_AWS"))}
    path = env["PATH"] if not linuxkit else f"{STANDIN.parent}{os.pathsep}{env['PATH']}"
    env.update({"PATH": path, "PYTHONPATH": str(ROOT), "INFRA_STATE_DIR": str(tmp_path / "state"), "NO_COLOR": "1",
                "INFRA_AWS_HEALTH_TIMEOUT": "3"})
    env.pop("INFRA_LINUXKIT", None)
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=420, check=False)
    assert proc.returncode == 0, f"{script}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    return proc


@pytest.mark.parametrize(("index", "cloud", "port"), [(0, "gcp", "8089"), (1, "aws", "5000")])
def test_the_readmes_try_it_commands_work_as_written(index: int, cloud: str, port: str, tmp_path: Path) -> None:
    """README's "Try the cloud stacks on this machine", with no linuxkit installed."""
    block = readme_blocks()[index]
    assert block[0].startswith(f"infra emulator {cloud}") and "etcdctl endpoint health --cluster" in " ".join(block)
    proc = run_block(block, port, tmp_path, linuxkit=False)
    assert (proc.stdout + proc.stderr).count("is healthy") == 3
    assert "2 images pushed" in proc.stdout and "image infra-etcd-" in proc.stdout


@pytest.mark.parametrize(("stack", "port", "linuxkit"), [
    ("etcd-gcp.py", "8089", True),  # images built (by the stand-in), pushed with their YAML beside
    ("etcd-aws.py", "5000", False),  # no linuxkit: the emulator boots the YAML registered as the image
])
def test_the_docstring_commands_work_as_written(stack: str, port: str, linuxkit: bool, tmp_path: Path) -> None:
    block = emulator_block(ROOT / "stacks" / stack)
    assert any(cmd.startswith("infra apply") for cmd in block) and block[-1].startswith("infra destroy")
    assert "etcdctl endpoint health --cluster" in " ".join(block)
    proc = run_block(block, port, tmp_path, linuxkit=linuxkit)
    assert (proc.stdout + proc.stderr).count("is healthy") == 3  # a working cluster, seen by etcdctl
    assert "2 images pushed" in proc.stdout  # apply built and pushed both groups' images
    assert re.search(r"etcd: infra-etcd-[0-9a-f]{12}\s+present", proc.stdout)  # infra image list
    assert "image infra-etcd-" in proc.stdout and "deleted" in proc.stdout  # destroy --images
