"""What the stack benches share: the ``infra`` CLI as a subprocess and etcd's health through ``infra env``.

Imported by ``bench/emulator.py`` and ``bench/vm_mode.py`` (run from the repository: they put its
root on ``sys.path``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def infra_cmd() -> list[str]:
    exe = shutil.which("infra")
    return [exe] if exe else [sys.executable, "-m", "reconciler.cli"]


def run(env: dict[str, str], *args: str, timeout: float = 600) -> None:
    """``infra ARGS``; exits the bench with its output when it fails."""
    proc = subprocess.run([*infra_cmd(), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"infra {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")


def healthy(env: dict[str, str], stack: str) -> bool:
    """``etcdctl endpoint health --cluster`` with ``infra env``'s settings reports 3 healthy members."""
    out = subprocess.run([*infra_cmd(), "env", stack], env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    variables = dict(shlex.split(line)[1].split("=", 1) for line in out.stdout.splitlines())
    check = subprocess.run(["etcdctl", "endpoint", "health", "--cluster"], capture_output=True, text=True,
                           env={"PATH": os.environ["PATH"], **variables}, timeout=30, check=False)
    return (check.stdout + check.stderr).count("is healthy") == 3  # etcdctl 3.4 writes them to stderr


def until_healthy(env: dict[str, str], stack: str, start: float, limit: float = 300, every: float = 0.1) -> float:
    """Seconds from ``start`` (a ``perf_counter``) until :func:`healthy`; exits after ``limit``."""
    while not healthy(env, stack):
        if time.perf_counter() - start > limit:
            raise SystemExit(f"{stack}: not healthy after {limit:g} s")
        time.sleep(every)
    return time.perf_counter() - start
