"""Smoke test of ``bench/engine.py``: the bench runs in ``--quick`` mode and prints every row.

No timing assertion (benches never pass or fail on time); this only catches a bench broken by a
change to the engine, e.g. an apply that no longer converges or a renamed API.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FIGURE = r"\d+(\.\d+)? (s|MiB)"


def test_quick_bench_prints_every_row() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "engine.py"), "--quick"],
        capture_output=True, text=True, cwd=ROOT, timeout=240, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()

    def line(pattern: str) -> str:
        """The one output line matching ``pattern`` (anchored at the start)."""
        found = [ln for ln in lines if re.match(pattern, ln)]
        assert len(found) == 1, f"expected one row matching {pattern!r} in:\n{proc.stdout}"
        return found[0]

    terraform = shutil.which("terraform") is not None
    # infra figure, target, then (with terraform) terraform's figure and the ratio infra/terraform
    compared = rf"\s+{FIGURE}\s+\S+\s+{FIGURE}\s+\d+\.\d+\s" if terraform else rf"\s+{FIGURE}\s"
    for n in (50, 100):
        line(rf"apply from empty N={n}{compared}")
    for n in (100, 200):
        line(rf"no-op plan N={n}{compared}")
        line(rf"no-op plan N={n} peak RSS\s+{FIGURE}")
        line(rf"no-op plan N={n} traced peak\s+{FIGURE}")
    latency = line(rf"100 creates @ 100 ms latency\s+{FIGURE}\s+≤ 0\.24 s\s+n/a")
    assert "ideal 0.20 s" in latency and "no latency-simulating resource" in latency
    line(rf"infra --help\s+{FIGURE}\s+≤ 250 ms")
    tf_line = line("terraform: ")
    assert ("terraform_data" in tf_line) if terraform else ("not on PATH" in tf_line), tf_line
