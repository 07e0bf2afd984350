"""What the GCE emulator costs: ``stacks/etcd-gcp.py`` on ``infra emulator gcp`` beside ``stacks/etcd-local.py``.

    python bench/emulator.py [--rounds 3]

Both through the real CLI, in throw-away state directories, in the same run: from the start of
``infra apply`` until ``etcdctl endpoint health --cluster`` reports 3 healthy members (bring-up;
apply itself waits for the members' health), and the heal of one member whose etcd was killed
(``kill -9``, then ``infra apply`` until 3 are healthy again). The emulator round also includes
pushing the two images (their LinuxKit YAML: no linuxkit is used). The goal is the emulator
within 2x of the local provider. Prints figures only; never passes or fails on time.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stackrun import infra_cmd, run, until_healthy  # noqa: E402
from tests.exports import read_exports  # noqa: E402


def etcd_pid(records: str, match: dict[str, str]) -> int:
    for path in glob.glob(records):
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads(Path(path).read_text())
            if all(doc.get(k) == v or doc.get("labels", {}).get(k) == v for k, v in match.items()):
                return int(doc["processes"]["services"]["etcd"]["pid"])
    raise SystemExit(f"no etcd process matching {match}")


def measure(env: dict[str, str], stack: str, records: str, victim: dict[str, str]) -> tuple[float, float]:
    start = time.perf_counter()
    run(env, "apply", stack, "--yes")
    up = until_healthy(env, stack, start)
    os.kill(etcd_pid(records, victim), signal.SIGKILL)
    time.sleep(0.5)  # let the supervisor see it die; the heal is measured from apply's start
    start = time.perf_counter()
    run(env, "apply", stack, "--yes")
    heal = until_healthy(env, stack, start)
    run(env, "destroy", stack, "--yes", "--images") if "gcp" in stack else run(env, "destroy", stack, "--yes")
    return up, heal


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("INFRA_GCP", "INFRA_LINUXKIT"))}
    base["PATH"] = os.pathsep.join(p for p in base.get("PATH", "").split(os.pathsep) if "linuxkit" not in p)
    results: dict[str, list[tuple[float, float]]] = {"etcd-local (local provider)": [], "etcd-gcp (GCE emulator)": []}
    for _ in range(args.rounds):
        tmp = Path(tempfile.mkdtemp(prefix="infra-bench-emulator-"))
        try:
            local = {**base, "INFRA_STATE_DIR": str(tmp / "local"), "INFRA_NETWORK_ALLOW": "127.0.0.0/8"}
            results["etcd-local (local provider)"].append(measure(
                local, "stacks/etcd-local.py", str(tmp / "local" / "local" / "instances" / "*" / "instance.json"),
                {"infra-member": "etcd-1"}))
            emulator = subprocess.Popen([*infra_cmd(), "emulator", "gcp", "--port", "0", "--state", str(tmp / "emu")],
                                        cwd=ROOT, env={**base, "INFRA_STATE_DIR": str(tmp / "emu-root")},
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            try:
                assert emulator.stdout is not None
                exports = read_exports(emulator.stdout)
                gce = {**base, **exports, "INFRA_STATE_DIR": str(tmp / "client")}
                results["etcd-gcp (GCE emulator)"].append(measure(
                    gce, "stacks/etcd-gcp.py", str(tmp / "emu" / "machines" / "instances" / "*" / "instance.json"),
                    {"address": "127.128.15.3"}))
            finally:
                emulator.send_signal(signal.SIGTERM)
                emulator.wait(timeout=60)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'stack':<30} {'bring-up (median)':>18} {'heal (median)':>14}   ({args.rounds} rounds)")
    medians = {}
    for name, rows in results.items():
        up, heal = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
        medians[name] = (up, heal)
        print(f"{name:<30} {up:>16.2f} s {heal:>12.2f} s")
    (lup, lheal), (eup, eheal) = medians.values()
    print(f"{'emulator / local':<30} {eup / lup:>17.2f}x {eheal / lheal:>13.2f}x   (goal: within 2x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
