"""What VMs cost: ``stacks/etcd-gcp.py`` on the GCE emulator with ``--machines vm`` beside
``--machines process`` and ``stacks/etcd-local.py`` on the local provider, in one run.

    unshare -n sh -c 'ip link set lo up && python bench/vm_mode.py [--rounds 1]'

VM mode runs only in a private network namespace (as root), hence ``unshare -n``. Through the
real CLI, in throw-away state directories, for each of the three:

* images: ``infra image push`` (VM mode: the Debian build of both images and their upload;
  process mode: their LinuxKit YAML; local: none);
* bring-up: from the start of ``infra apply`` until ``etcdctl endpoint health --cluster`` reports
  3 healthy members;
* heal: one member killed (``kill -9`` of its etcd process; in VM mode of its QEMU process, the
  whole machine), then from the start of ``infra apply`` until 3 are healthy again;

and in VM mode the boot time of each VM (the guest's uptime when infra's init says ``services
started`` on the console) and the resident memory of each QEMU process once the cluster is up. Goal: VM
bring-up within 3x of process mode on software emulation. Prints figures only.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stackrun import infra_cmd, run, until_healthy  # noqa: E402
from tests.exports import read_exports  # noqa: E402

ETCD_1 = {"vm": "10.128.15.3", "process": "127.128.15.3"}


def kill_member(mode: str, state: Path) -> None:
    """kill -9 etcd-1: its etcd process (local, process mode) or its VM's QEMU (VM mode)."""
    if mode == "vm":
        mac = "52:54:" + ":".join(f"{int(b):02x}" for b in ETCD_1["vm"].split("."))
        for p in psutil.process_iter(["cmdline"]):
            if f"mac={mac}" in " ".join(p.info["cmdline"] or []):
                p.kill()
                return
        raise SystemExit("no QEMU process for etcd-1")
    pattern = str(state / "**" / "instances" / "*" / "instance.json")
    for path in glob.glob(pattern, recursive=True):
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads(Path(path).read_text())
            if doc.get("address") == ETCD_1["process"] or doc.get("labels", {}).get("infra-member") == "etcd-1":
                os.kill(int(doc["processes"]["services"]["etcd"]["pid"]), signal.SIGKILL)
                return
    raise SystemExit("no etcd process for etcd-1")


def vm_figures(state: Path) -> tuple[list[float], list[float]]:
    """Each VM's boot (the guest's uptime when its init says 'services started' on the console)
    and each QEMU's RSS in MiB."""
    boots, rss = [], []
    for p in psutil.process_iter(["cmdline", "create_time", "memory_info"]):
        line = " ".join(p.info["cmdline"] or [])
        if "qemu-system" not in line or str(state) not in line:
            continue
        rss.append(p.info["memory_info"].rss / (1 << 20))
        console = re.search(r"file:(\S+console\.log)", line)
        if console:
            text = Path(console.group(1)).read_text(errors="replace")
            started = re.search(r"infra-init: \[(\d+\.\d+)\] services started", text)
            if started:
                boots.append(float(started.group(1)))
    return boots, rss


def measure(mode: str, base: dict[str, str], tmp: Path, figures: dict[str, list[float]]) -> tuple[float, float, float]:
    if mode == "local":
        env = {**base, "INFRA_STATE_DIR": str(tmp / "local"), "INFRA_NETWORK_ALLOW": "127.0.0.0/8"}
        stack, images = "stacks/etcd-local.py", 0.0
        emulator = None
    else:
        emulator = subprocess.Popen([*infra_cmd(), "emulator", "gcp", "--port", "0", "--state", str(tmp / "emu"),
                                     "--machines", mode], cwd=ROOT, env={**base, "INFRA_STATE_DIR": str(tmp / "er")},
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert emulator.stdout is not None
        env = {**base, **read_exports(emulator.stdout), "INFRA_STATE_DIR": str(tmp / "client")}
        stack = "stacks/etcd-gcp.py"
        start = time.perf_counter()
        run(env, "image", "push", stack, timeout=900)
        images = time.perf_counter() - start
    try:
        start = time.perf_counter()
        run(env, "apply", stack, "--yes", timeout=900)
        up = until_healthy(env, stack, start, limit=600, every=0.2)
        if mode == "vm":
            boots, rss = vm_figures(tmp / "emu")
            figures["boot"] += boots
            figures["rss"] += rss
        kill_member(mode, tmp)
        time.sleep(0.5)
        start = time.perf_counter()
        run(env, "apply", stack, "--yes", timeout=900)
        heal = until_healthy(env, stack, start, limit=600, every=0.2)
        run(env, "destroy", stack, "--yes", *(["--images"] if emulator else []))
    finally:
        if emulator is not None:
            emulator.send_signal(signal.SIGTERM)
            emulator.wait(timeout=60)
    return images, up, heal


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("INFRA_GCP", "INFRA_LINUXKIT", "INFRA_IMAGE"))}
    base["PATH"] = os.pathsep.join(p for p in base.get("PATH", "").split(os.pathsep) if "linuxkit" not in p)
    names = {"local": "etcd-local (local provider)", "process": "etcd-gcp (emulator, process)",
             "vm": "etcd-gcp (emulator, VMs)"}
    results: dict[str, list[tuple[float, float, float]]] = {mode: [] for mode in names}
    figures: dict[str, list[float]] = {"boot": [], "rss": []}
    for _ in range(args.rounds):
        for mode in names:
            tmp = Path(tempfile.mkdtemp(prefix=f"infra-bench-vm-{mode}-"))
            try:
                results[mode].append(measure(mode, base, tmp, figures))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'stack':<30} {'images':>9} {'bring-up':>10} {'heal':>9}   (medians of {args.rounds} rounds)")
    medians = {}
    for mode, rows in results.items():
        med = tuple(statistics.median(r[i] for r in rows) for i in range(3))
        medians[mode] = med
        print(f"{names[mode]:<30} {med[0]:>7.1f} s {med[1]:>8.1f} s {med[2]:>7.1f} s")
    vm, proc = medians["vm"], medians["process"]
    print(f"{'VMs / process':<30} {'':>9} {vm[1] / proc[1]:>9.2f}x {vm[2] / proc[2]:>8.2f}x   (goal: within 3x)")
    if figures["boot"]:
        print(f"VM boot to 'services started': median {statistics.median(figures['boot']):.1f} s, "
              f"max {max(figures['boot']):.1f} s ({len(figures['boot'])} VMs)")
    if figures["rss"]:
        print(f"QEMU resident memory per VM: median {statistics.median(figures['rss']):.0f} MiB, "
              f"max {max(figures['rss']):.0f} MiB (guest memory 512 MiB, TCG cache 64 MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
