"""Smoke test of ``bench/startup.py``: one round prints a validate and a no-op plan figure per
provider, each beside local's (no timing assertion: the figures are bench/README.md's)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_startup_bench_prints_a_row_per_provider() -> None:
    env = {**os.environ, "INFRA_NETWORK_ALLOW": "127.0.0.0/8"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "startup.py"), "--rounds", "1"], env=env,
                          capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for provider in ("local", "gcp", "aws", "pulumi", "memory"):
        row = (rf"{provider}\s+infra validate\s+\d+ ms \(\s*\d+\.\d\dx local\)\s+"
               rf"no-op infra plan\s+\d+ ms \(\s*\d+\.\d\dx local\)")
        assert re.search(row, proc.stdout), proc.stdout
    assert "target ≤ 1.5x" in proc.stdout
