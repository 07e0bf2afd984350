"""Smoke test of ``bench/scale.py``: it runs in ``--quick`` mode and prints every row.

No timing assertion (benches never pass or fail on time); this catches a bench broken by a change
to the engine or the daemon.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_scale_bench_prints_every_row() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--quick", "--idle-seconds", "4"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for pattern in (r"apply from empty\s+\d+\.\d+ s", r"no-op plan \(best of 3\)\s+\d+\.\d+ s\s+CPU",
                    r"peak RSS after the apply\s+\d+ MiB", r"peak RSS after the no-op plans\s+\d+ MiB",
                    r"1 stacks of 20 members\s+\d+\.\d+ % of a core\s+threads \d+",
                    r"10 stacks of 20 members\s+\d+\.\d+ % of a core\s+threads \d+",
                    r"threads grow with stacks: (no|YES)"):
        assert re.search(pattern, out), f"no row matching {pattern!r} in:\n{out}"
