"""Benchmark: how fast ``infra`` brings up and heals a real etcd cluster on the local provider.

    python bench/etcd.py                 # 3 rounds of each measurement
    python bench/etcd.py --rounds 5

Measures, through the real ``infra`` CLI (a subprocess, as a user runs it) in a throw-away
``INFRA_STATE_DIR``:

* bring-up of 3 and of 5 members from nothing: from the start of ``infra apply`` until every
  member answers ``/health`` over mutual TLS (``apply`` itself waits for that);
* heal: ``kill -9`` one member's etcd, then from the start of ``infra apply`` until all members
  are healthy again (the dead member removed, a new one added). Target: at most 15 s.

The stack uses the timeouts of ``stacks/etcd-local.py`` (heartbeat 50 ms, election 500 ms).
Prints figures only; never passes or fails on time.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from plugins.etcd.client import EtcdClient, EtcdError
from plugins.etcd.role import stack_client

CONFIG = {"heartbeat_interval_ms": 50, "election_timeout_ms": 500}


class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / "state"
        self.stack_file = root / "stack.py"
        self.env = {**os.environ, "INFRA_STATE_DIR": str(self.state)}
        self._client: EtcdClient | None = None

    def write(self, size: int) -> None:
        self.stack_file.write_text(
            "from reconciler import Group, Stack\n"
            f"stack = Stack(name='bench', provider='local', groups=(Group(name='etcd', size={size}, "
            f"role='etcd', config={CONFIG!r}),))\n"
        )

    def infra(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "reconciler.cli", *args, str(self.stack_file)]
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"infra {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def records(self) -> list[dict[str, object]]:
        return [json.loads(p.read_text()) for p in (self.state / "local" / "instances").glob("*/instance.json")]

    def client(self) -> EtcdClient:
        """A client with the stack's certificates, as ``infra env`` names them (read once)."""
        if self._client is None:
            exports = dict(
                shlex.split(line)[1].split("=", 1) for line in self.infra("env").stdout.splitlines() if line.strip()
            )
            self._client = stack_client(Path(exports["ETCDCTL_CACERT"]).parent.parent, "etcd", timeout=2)
        return self._client

    def all_healthy(self, size: int) -> bool:
        client = self.client()
        endpoints = [f"https://{r['address']}:2379" for r in self.records()]
        if len(endpoints) != size:
            return False
        try:
            return all(client.health(ep) for ep in endpoints)
        except EtcdError:
            return False

    def kill_one(self) -> None:
        rec = next(r for r in self.records() if r["labels"]["infra-member"] == "etcd-1")  # type: ignore[index]
        pid = int(rec["processes"]["services"]["etcd"]["pid"])  # type: ignore[index]
        os.kill(pid, signal.SIGKILL)
        while True:
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    if fh.read().split(") ", 1)[1].startswith("Z"):
                        break
            except FileNotFoundError:
                break
            time.sleep(0.01)


def timed(what: Callable[[], None]) -> float:
    start = time.monotonic()
    what()
    return time.monotonic() - start


def summary(name: str, values: list[float], target: float | None = None) -> str:
    med = statistics.median(values)
    extra = f"   (target <= {target:.0f} s)" if target else ""
    return f"{name:<32} median {med:6.2f} s   min {min(values):6.2f} s   max {max(values):6.2f} s{extra}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"bring up 3 members": [], "bring up 5 members": [], "heal 1 killed of 3": []}
    for _ in range(args.rounds):
        for size in (3, 5):
            with tempfile.TemporaryDirectory(prefix="infra-bench-etcd-") as tmp:
                bench = Bench(Path(tmp))
                bench.write(size)
                try:

                    def bring_up(b: Bench = bench) -> None:
                        b.infra("apply", "--yes")  # returns once every member passed its health gate

                    results[f"bring up {size} members"].append(timed(bring_up))
                    _check(bench.all_healthy(size))
                    if size == 3:
                        bench.kill_one()

                        def heal(b: Bench = bench) -> None:
                            b.infra("apply", "--yes")
                            while not b.all_healthy(3):
                                time.sleep(0.05)

                        results["heal 1 killed of 3"].append(timed(heal))
                finally:
                    subprocess.run(
                        [sys.executable, "-m", "reconciler.cli", "destroy", "--yes", str(bench.stack_file)],
                        env=bench.env,
                        capture_output=True,
                        check=False,
                    )
    print(f"etcd on the local provider, {args.rounds} rounds, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    for name, values in results.items():
        print(summary(name, values, 15.0 if name.startswith("heal") else None))


def _check(ok: bool) -> None:
    if not ok:
        raise SystemExit("the cluster is not healthy right after infra apply returned")


if __name__ == "__main__":
    main()
