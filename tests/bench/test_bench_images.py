"""Smoke test of ``bench/images.py``: it runs, prints its rows, and a push with every image
present makes one lookup per image and no upload (call counts, never time)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_images_bench_prints_its_rows_and_pushes_nothing() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "images.py"), "--rounds", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pushes = re.findall(r"infra image push \(all present\)\s+\d+\.\d+ s\s+lookups/image (\S+)\s+uploads (\d+)",
                        proc.stdout)
    plans = re.findall(r"infra plan \(no-op\)\s+\d+\.\d+ s\s+lookups/image (\S+)\s+uploads (\d+)", proc.stdout)
    assert pushes == [("1.0", "0"), ("1.0", "0")] and plans == [("1.0", "0"), ("1.0", "0")], proc.stdout
