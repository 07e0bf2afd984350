"""Smoke test of ``bench/pulumi_bridge.py``: it runs in ``--quick`` mode and prints every row (no timing assertion)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_pulumi_bench_prints_every_row() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "pulumi_bridge.py"), "--quick"],
                          capture_output=True, text=True, cwd=ROOT, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(r"plugin start-up \(open \+ Configure \+ first call\)\s+\d+ ms", out), out
    assert re.search(r"no-op plan, 20 members, bridge\s+\d+\.\d+ ms\s+plugin calls per plan: \{'Invoke': 1\}", out), out
    assert re.search(r"no-op plan, 20 members, memory provider\s+\d+\.\d+ ms\s+bridge/memory \d+\.\d+x", out), out
