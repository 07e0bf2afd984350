"""Daemon benchmark: heal time under ``infra daemon``, and what an idle daemon costs.

Run from the repository root::

    python bench/daemon.py            # about 2 minutes
    python bench/daemon.py --quick    # about 30 s: checks the bench itself works

Every figure comes from a real ``infra daemon`` subprocess (the installed console script) with
``INFRA_STATE_DIR`` in a private temporary directory and ``--log-format json``; times are read
from the bench's own clock around what it does and what the daemon logs.

* **heal, command role** — a ``stacks/hello-local.py``-like stack (local provider, 3 tiny web
  servers, ``--interval 1``). The bench SIGKILLs one member's service process, then waits for the
  daemon to replace it and log a converged pass (``result: ok``, 3 observed). Repeated
  ``--kills`` times; prints each, the median and the worst.
* **heal, etcd** — the same on ``stacks/etcd-local.py`` (3 etcd members with mutual TLS and
  Prometheus): SIGKILL one etcd member, time to a converged pass. Skipped with ``--no-etcd``.
* **idle cost** — a daemon at the default ``--interval 10`` watching a 1000-member stack on the
  in-process ``memory`` provider (one ``command`` group, ``config={"command": ["true"]}``). The
  memory provider's instances live inside the daemon, so its first pass creates the 1000
  members; once a no-op pass is logged the bench samples the daemon's CPU time (user + system,
  all threads, ``psutil``) over ``--idle-seconds`` (30) and prints it as a percentage of one
  core, with the RSS at the end and the no-op passes' durations. Targets: < 2 % of a core,
  RSS ≤ 150 MiB.

Figures are printed with their targets; the bench never passes or fails on time (DESIGN.md). It
exits non-zero only when the bench itself breaks (a daemon that does not converge). Everything
it starts is stopped and destroyed on the way out, error or not.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]

ROOT = Path(__file__).resolve().parent.parent
INFRA = Path(sys.executable).parent / "infra"
MIB = 1024 * 1024

TARGET_IDLE_CPU = 2.0  # percent of one core
TARGET_RSS_MIB = 150.0

Event = dict[str, Any]


class BenchError(RuntimeError):
    pass


class Daemon:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen([str(INFRA), "daemon", *args, "--log-format", "json",
                                          "--metrics-addr", "127.0.0.1:0"],
                                         env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def events(self) -> list[Event]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                out.append(doc)
        return out

    def wait(self, pred: Callable[[Event], bool], after: int = 0, timeout: float = 120) -> tuple[int, Event]:
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            for i in range(after, len(events)):
                if pred(events[i]):
                    return i, events[i]
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
                raise BenchError(f"daemon did not get there (exit {self.proc.poll()}):\n{tail}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def ok_pass(observed: int) -> Callable[[Event], bool]:
    return lambda e: e.get("event") == "pass" and e.get("result") == "ok" and e.get("observed") == observed


@contextmanager
def workspace() -> Iterator[tuple[Path, dict[str, str], list[Path], list[Daemon]]]:
    """A temp dir and env; on exit stops daemons, destroys stacks, kills what is left."""
    with tempfile.TemporaryDirectory(prefix="infra-bench-daemon-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "INFRA_STATE_DIR": str(root / "state"), "INFRA_NETWORK_ALLOW": "127.0.0.0/8"}
        stacks: list[Path] = []
        daemons: list[Daemon] = []
        try:
            yield root, env, stacks, daemons
        finally:
            for d in daemons:
                d.stop()
            for s in stacks:
                subprocess.run([str(INFRA), "destroy", str(s), "--yes"], env=env, capture_output=True, timeout=120)
            for p in psutil.process_iter(["cmdline"]):
                try:
                    if str(root) in " ".join(p.info["cmdline"] or []):
                        p.kill()
                except (psutil.Error, TypeError):
                    pass


def write_hello(path: Path, size: int) -> Path:
    serve = [sys.executable, "-m", "http.server", "8080", "--bind", "{address}", "--directory", "{config}/web"]
    path.write_text(f'''from reconciler import Group, Stack
stack = Stack(name="bench-heal", provider="local", groups=[Group(name="web", size={size}, role="command",
    config={{"command": {serve!r}, "port": 8080, "health": "http", "files": {{"index.html": "hi"}}}})])
''')
    return path


def replaced(member: str) -> Callable[[Event], bool]:
    return lambda e: e.get("event") == "change" and e.get("member") == member and e.get("result") == "applied"


def service_pid(state: Path, instance: str, service: str) -> int:
    doc = json.loads((state / "local" / "instances" / instance / "instance.json").read_text())
    return int(doc["processes"]["services"][service]["pid"])


def members(env: dict[str, str], stack: Path) -> dict[str, str]:
    out = subprocess.run([str(INFRA), "status", str(stack), "--json"], env=env, capture_output=True, text=True,
                         timeout=60)
    if out.returncode != 0:
        raise BenchError(out.stderr)
    return {m["member"]: m["name"] for g in json.loads(out.stdout)["groups"] for m in g["members"]}


@dataclass
class Heal:
    total: float  # kill → converged pass
    detect: float  # kill → the replace of the killed member starting
    change: float  # the replace itself (member remove/add, create, health gate)
    failed_passes: int  # passes that ended in an error in between (each adds backoff)
    refused: list[str]  # members whose change failed in between (e.g. a healthy member the role would not remove)


def _ts(event: Event) -> float:
    stamp = datetime.strptime(event["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return stamp.timestamp()


def heal_times(stack_file: Path | None, *, size: int, service: str, member_prefix: str, kills: int,
               interval: float) -> list[Heal]:
    heals = []
    with workspace() as (root, env, stacks, daemons):
        stack = stack_file or write_hello(root / "hello.py", size)
        stacks.append(stack)
        d = Daemon([str(stack), "--interval", str(interval)], env, root / "daemon.log")
        daemons.append(d)
        total = size + (1 if service == "etcd" else 0)  # etcd-local also runs one Prometheus
        d.wait(ok_pass(total), timeout=180)
        for k in range(kills):
            victim = f"{member_prefix}-{k % size}"
            name = members(env, stack)[victim]
            mark = len(d.events())
            os.kill(service_pid(root / "state", name, service), signal.SIGKILL)
            killed, killed_wall = time.monotonic(), time.time()
            i, done = d.wait(replaced(victim), after=mark, timeout=180)
            d.wait(ok_pass(total), after=i, timeout=180)
            elapsed = time.monotonic() - killed
            events = d.events()[mark:]
            start = next(e for e in events if e.get("event") == "change.start" and e.get("member") == victim)
            failed = sum(1 for e in events if e.get("event") == "pass" and e.get("result") != "ok"
                         and e.get("result") != "applied")
            refused = sorted({e["member"] for e in events if e.get("event") == "change" and e.get("result") == "failed"})
            heals.append(Heal(elapsed, _ts(start) - killed_wall, _ts(done) - _ts(start), failed, refused))
            time.sleep(0.5)
    return heals


def idle_cost(n: int, seconds: float, interval: float) -> dict[str, float]:
    with workspace() as (root, env, _stacks, daemons):
        stack = root / "big.py"
        stack.write_text(f'''from reconciler import Group, Stack
stack = Stack(name="bench-idle", provider="memory",
              groups=[Group(name="web", size={n}, role="command", config={{"command": ["true"]}})])
''')
        d = Daemon([str(stack), "--interval", str(interval)], env, root / "daemon.log")
        daemons.append(d)
        started = time.monotonic()
        i, first = d.wait(lambda e: e.get("event") == "pass" and e.get("result") == "applied", timeout=300)
        converged_at = time.monotonic() - started
        i, _ = d.wait(ok_pass(n), after=i, timeout=300)
        proc = psutil.Process(d.proc.pid)
        time.sleep(1.0)  # let the allocator settle after the first passes
        mark = len(d.events())
        c0, t0 = proc.cpu_times(), time.monotonic()
        rss_peak = proc.memory_info().rss
        end = t0 + seconds
        while time.monotonic() < end:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            rss_peak = max(rss_peak, proc.memory_info().rss)
        c1, t1 = proc.cpu_times(), time.monotonic()
        cpu = (c1.user + c1.system) - (c0.user + c0.system)
        passes = [e for e in d.events()[mark:] if e.get("event") == "pass"]
        if any(p.get("result") != "ok" for p in passes):
            raise BenchError(f"idle passes were not no-ops: {passes}")
        return {
            "cpu_pct": 100.0 * cpu / (t1 - t0),
            "rss_mib": proc.memory_info().rss / MIB,
            "rss_peak_mib": rss_peak / MIB,
            "passes": float(len(passes)),
            "pass_s": statistics.median([p["seconds"] for p in passes]) if passes else float("nan"),
            "first_pass_s": float(first["seconds"]),
            "start_to_converged_s": converged_at,
            "window_s": t1 - t0,
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="small sizes: checks the bench works")
    ap.add_argument("--kills", type=int, default=5, help="kills per heal row")
    ap.add_argument("--idle-seconds", type=float, default=30.0)
    ap.add_argument("--members", type=int, default=1000)
    ap.add_argument("--no-etcd", action="store_true", help="skip the etcd-local heal row")
    args = ap.parse_args()
    if args.quick:
        args.kills, args.idle_seconds, args.members = 1, 5.0, 100
    if not INFRA.exists():
        raise BenchError(f"{INFRA} not found: pip install -e '.[test]' first")
    print(f"infra daemon bench — {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"python {sys.version.split()[0]}")
    print()

    def show_heal(label: str, heals: list[Heal]) -> None:
        times = [h.total for h in heals]
        print(f"  {label:<46} median {statistics.median(times):6.2f} s   worst {max(times):6.2f} s")
        for n, h in enumerate(heals, 1):
            print(f"      kill {n}: {h.total:6.2f} s = detect {h.detect:5.2f} s + replace {h.change:5.2f} s "
                  f"+ confirm; {h.failed_passes} failed pass(es) in between"
                  + (f" (failed changes of {', '.join(h.refused)})" if h.refused else ""))

    print("heal time: SIGKILL of one member's service → the daemon's next converged pass (--interval 1)")
    show_heal("local provider, command role, 3 members", heal_times(
        None, size=3, service="web", member_prefix="web", kills=args.kills, interval=1.0))
    if not args.no_etcd:
        show_heal("stacks/etcd-local.py, one of 3 etcd members", heal_times(
            ROOT / "stacks" / "etcd-local.py", size=3, service="etcd", member_prefix="etcd",
            kills=max(1, args.kills // 2 + 1), interval=1.0))
    print()

    print(f"idle daemon: {args.members}-member memory-provider stack, --interval 10, "
          f"sampled over {args.idle_seconds:g} s")
    r = idle_cost(args.members, args.idle_seconds, 10.0)
    print(f"  first pass (creates {args.members} members)       {r['first_pass_s']:8.2f} s   "
          f"(daemon start → converged {r['start_to_converged_s']:.2f} s)")
    print(f"  no-op pass, median of {int(r['passes'])}                    {r['pass_s'] * 1000:8.1f} ms")
    print(f"  idle CPU                                      {r['cpu_pct']:8.2f} % of a core   "
          f"(target < {TARGET_IDLE_CPU:g} %)")
    print(f"  RSS (end / peak in window)                    {r['rss_mib']:8.1f} MiB / {r['rss_peak_mib']:.1f} MiB   "
          f"(target ≤ {TARGET_RSS_MIB:g} MiB)")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BenchError as exc:
        print(f"bench error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
