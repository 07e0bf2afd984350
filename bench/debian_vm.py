"""Debian image bench: build time, image sizes, VM boot to a healthy etcd, memory per VM.

Run from the repository root, as root, inside a private network namespace (the metadata server
listens on 127.0.0.1:80)::

    unshare -n sh -c 'ip link set lo up && python bench/debian_vm.py'
    unshare -n sh -c 'ip link set lo up && python bench/debian_vm.py --boots 1'   # quicker

The image is the one ``tests/images/test_debian_builder.py`` boots (etcd from ``etcd-server`` and
a busybox service), built by :mod:`reconciler.engine.debianbuild` from its package cache (fill it
with ``python -m reconciler.engine.debianbuild fetch etcd-server`` while online). Figures:

* **build** — seconds for a cold build (an empty output directory) and a warm one (reused);
* **sizes** — kernel, initrd and raw disk;
* **boot** — seconds from QEMU's start until etcd inside the VM answers ``/health`` from the
  host, through ``-kernel`` and through the disk's bootloader, best and median of ``--boots``;
* **memory** — the QEMU process's RSS once etcd answers (``-m 512``).

Software emulation (TCG) only: ``/dev/kvm`` on these machines runs no guest. The bench never
passes or fails on time; it exits non-zero only when the VM never answers.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil  # type: ignore[import-untyped,unused-ignore]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler.engine import debianbuild
from tests.images.test_debian_builder import DOCUMENT, PACKAGES, Metadata, free_port

MIB = 1 << 20


def boot(built: debianbuild.Built, how: str, timeout: float = 180.0) -> tuple[float, float]:
    """(seconds until etcd answers, QEMU's RSS in MiB then)."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise SystemExit("bench error: qemu-system-x86_64 is missing (scripts/install.sh --vm)")
    port = free_port()
    media = (["-drive", f"file={debianbuild.disk(built)},format=raw,if=virtio,snapshot=on"] if how == "disk" else
             ["-kernel", str(built.kernel), "-initrd", str(built.initrd), "-append", "console=ttyS0 panic=-1"])
    net = (f"user,id=n,net=169.254.169.0/24,host=169.254.169.254,dhcpstart=169.254.169.15,"
           f"hostfwd=tcp:127.0.0.1:{port}-:2379")
    start = time.monotonic()
    vm = subprocess.Popen([qemu, "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", *media, "-netdev", net,
                           "-device", "virtio-net-pci,netdev=n"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - start < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    if b'"true"' in resp.read():
                        return time.monotonic() - start, psutil.Process(vm.pid).memory_info().rss / MIB
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"bench error: etcd in the VM ({how}) never answered within {timeout:.0f}s")
    finally:
        vm.kill()
        vm.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--boots", type=int, default=3, help="boots per way (best and median printed)")
    args = ap.parse_args()
    import http.server

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 80), Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"infra Debian image bench — QEMU TCG (software emulation), {psutil.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="infra-debian-bench-") as tmp:
        start = time.monotonic()
        built = debianbuild.build(DOCUMENT, PACKAGES, Path(tmp))
        cold = time.monotonic() - start
        start = time.monotonic()
        debianbuild.build(DOCUMENT, PACKAGES, Path(tmp))
        warm = time.monotonic() - start
        start = time.monotonic()
        raw = debianbuild.disk(built)
        disk_s = time.monotonic() - start
        print(f"  build: {cold:5.1f} s cold, {warm:4.2f} s warm (reused); disk {disk_s:4.1f} s")
        print(f"  sizes: kernel {built.kernel.stat().st_size / MIB:5.1f} MiB, initrd "
              f"{built.initrd.stat().st_size / MIB:5.1f} MiB, disk {raw.stat().st_size / MIB:5.1f} MiB (raw)")
        for how in ("kernel", "disk"):
            runs = [boot(built, how) for _ in range(args.boots)]
            secs = [r[0] for r in runs]
            print(f"  boot ({how:6}) to etcd healthy: best {min(secs):5.1f} s, median {statistics.median(secs):5.1f} s; "
                  f"QEMU RSS {max(r[1] for r in runs):5.0f} MiB (-m 512)")
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
