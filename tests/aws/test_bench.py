"""Smoke test of ``bench/aws_observe.py``: it runs in ``--quick`` mode and prints every row.

No timing assertion (benches never pass or fail on time); this only catches a bench broken by a
change to the provider or the engine (a non-empty plan, too many calls, a renamed API).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_prints_calls_and_times() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "aws_observe.py"), "--quick"],
                          capture_output=True, text=True, cwd=ROOT, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(r"provider\.list \(observe\) N=200\s+\d+\.\d+ s\s+DescribeInstances calls: 1 ", out), out
    assert re.search(r"of which moto answering\s+\d+\.\d+ s", out), out
    assert re.search(r"engine\.plan .*DescribeInstances=1.*plan empty: yes", out), out
