"""Scale benchmark: one very large stack, and one daemon over many stacks.

Run from the repository root::

    python bench/scale.py            # about 3 minutes
    python bench/scale.py --quick    # about 40 s, smaller shapes: checks the bench itself works

Rows (every figure is measured here, in a fresh child process or a real daemon subprocess):

* **large stack** — 10 groups of 10,000 ``command`` members (100,000) on the in-process ``memory``
  provider, driven through :class:`reconciler.engine.engine.Engine` in a child process: the apply from
  empty, then the no-op plan (best of 3; ``CPU`` is the child's CPU time), and the child's peak
  RSS after the apply and after the no-op plans (``ru_maxrss``: interpreter, imports, the
  provider's 100,000 instances and the pass). Targets: no-op plan ≤ 2 s, peak RSS ≤ 400 MiB.
* **daemon over many stacks** — one real ``infra daemon`` (``--interval 10``) over 100 stack files
  of 100 ``memory`` members each (10,000 members). Once every stack has logged a converged no-op
  pass, the bench samples the daemon's CPU time (user + system, all threads, psutil) over
  ``--idle-seconds`` and its thread count, and prints the CPU as a percentage of one core. Targets:
  ≤ 5 % of a core, and threads that do not grow with the number of stacks (the same daemon over
  10 stacks is measured beside it).

Figures are printed next to their targets; the bench never passes or fails on time. It exits
non-zero only when the bench itself breaks. Called by ``tests/bench/test_bench_scale.py``
(``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]

ROOT = Path(__file__).resolve().parent.parent
INFRA = Path(sys.executable).parent / "infra"
MIB = 1024 * 1024

TARGET_NOOP_S = 2.0
TARGET_RSS_MIB = 400.0
TARGET_DAEMON_CPU = 5.0


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_large(groups: int, size: int) -> dict[str, Any]:
    from reconciler.core.stack import Group, Stack
    from reconciler.engine.engine import Engine

    stack = Stack(name="scale", provider="memory", provider_config={"world": uuid.uuid4().hex},
                  groups=tuple(Group(name=f"g{i}", size=size, config={"command": ["true"]}) for i in range(groups)))
    with tempfile.TemporaryDirectory(prefix="infra-bench-scale-") as tmp:
        engine = Engine.open(stack, root=Path(tmp))
        start = time.perf_counter()
        planned = engine.plan()
        result = engine.apply(planned)
        applied = time.perf_counter() - start
        if not result.ok or len(result.applied) != groups * size:
            raise SystemExit(f"apply: {len(result.applied)} applied, {len(result.failed)} failed")
        del planned, result
        rss_apply = _peak_rss_mib()
        times, cpus = [], []
        for _ in range(3):
            cpu, t0 = time.process_time(), time.perf_counter()
            again = engine.plan()
            times.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - cpu)
            if not again.empty or again.plan.observed != groups * size:
                raise SystemExit(f"the no-op plan is not empty: {again.plan.counts()}")
            del again
        return {"apply_s": applied, "noop_s": min(times), "noop_first_s": times[0], "noop_cpu_s": min(cpus),
                "rss_after_apply_mib": rss_apply, "rss_peak_mib": _peak_rss_mib()}


def large_row(groups: int, size: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child-large", str(groups), str(size)],
                         capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"the large-stack child failed:\n{out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def daemon_row(stacks: int, members: int, seconds: float, interval: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="infra-bench-daemon-scale-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "INFRA_STATE_DIR": str(root / "state"), "INFRA_NETWORK_ALLOW": "127.0.0.0/8"}
        paths = []
        for i in range(stacks):
            path = root / f"s{i:03d}.py"
            path.write_text(
                "from reconciler import Group, Stack\n"
                f"stack = Stack(name='s{i:03d}', provider='memory', provider_config={{'world': 's{i:03d}'}},\n"
                f"              groups=[Group(name='web', size={members}, config={{'command': ['true']}})])\n")
            paths.append(str(path))
        log = root / "daemon.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([str(INFRA), "daemon", *paths, "--interval", str(interval), "--log-format",
                                     "json", "--metrics-addr", "none"], env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 600
            converged: set[str] = set()
            seen = 0
            while len(converged) < stacks:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the daemon did not converge:\n" + log.read_text()[-2000:])
                lines = log.read_text(errors="replace").splitlines()
                for line in lines[seen:]:
                    try:
                        e = json.loads(line)
                    except ValueError:
                        continue
                    if e.get("event") == "pass" and e.get("result") == "ok" and e.get("observed") == members:
                        converged.add(e["stack"])
                seen = len(lines)
                time.sleep(0.2)
            ps = psutil.Process(proc.pid)
            mark = len(log.read_text(errors="replace").splitlines())
            c0, t0 = ps.cpu_times(), time.monotonic()
            threads = ps.num_threads()
            end = t0 + seconds
            while time.monotonic() < end:
                time.sleep(min(1.0, max(0.0, end - time.monotonic())))
                threads = max(threads, ps.num_threads())
            c1, t1 = ps.cpu_times(), time.monotonic()
            passes = [json.loads(x) for x in log.read_text(errors="replace").splitlines()[mark:]
                      if x.startswith("{") and '"event": "pass"' in x]
            if any(p.get("result") != "ok" for p in passes):
                raise SystemExit(f"idle passes were not no-ops: {passes[:3]}")
            return {"cpu_pct": 100.0 * ((c1.user + c1.system) - (c0.user + c0.system)) / (t1 - t0),
                    "threads": float(threads), "passes": float(len(passes)),
                    "pass_s": statistics.median([p["seconds"] for p in passes]) if passes else float("nan"),
                    "rss_mib": ps.memory_info().rss / MIB}
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="small shapes (checks the bench works)")
    ap.add_argument("--idle-seconds", type=float, default=None)
    ap.add_argument("--child-large", nargs=2, type=int, metavar=("GROUPS", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_large:
        print(json.dumps(child_large(*args.child_large)))
        return 0
    groups, size = (10, 500) if args.quick else (10, 10_000)
    stacks, members = (10, 20) if args.quick else (100, 100)
    seconds = args.idle_seconds or (10.0 if args.quick else 40.0)
    print(f"infra scale bench — {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    r = large_row(groups, size)
    n = groups * size
    print(f"  large stack: {groups} groups of {size:,} ({n:,} members), memory provider")
    print(f"    apply from empty                         {r['apply_s']:8.2f} s")
    print(f"    no-op plan (best of 3)                   {r['noop_s']:8.2f} s   CPU {r['noop_cpu_s']:.2f} s   "
          f"first {r['noop_first_s']:.2f} s   target ≤ {TARGET_NOOP_S:g} s at 100,000")
    print(f"    peak RSS after the apply                 {r['rss_after_apply_mib']:8.0f} MiB")
    print(f"    peak RSS after the no-op plans           {r['rss_peak_mib']:8.0f} MiB   "
          f"target ≤ {TARGET_RSS_MIB:g} MiB at 100,000")
    small = daemon_row(max(1, stacks // 10), members, min(seconds, 15.0), 10.0)
    d = daemon_row(stacks, members, seconds, 10.0)
    print(f"  daemon idling over many stacks (--interval 10, memory provider, {seconds:g} s window)")
    for label, row, k in ((f"{max(1, stacks // 10)} stacks", small, max(1, stacks // 10)), (f"{stacks} stacks", d, stacks)):
        print(f"    {label + ' of ' + str(members) + ' members':40s} {row['cpu_pct']:6.2f} % of a core   "
              f"threads {row['threads']:.0f}   median pass {row['pass_s'] * 1000:.0f} ms   RSS {row['rss_mib']:.0f} MiB"
              + (f"   target ≤ {TARGET_DAEMON_CPU:g} %" if k == stacks else ""))
    print(f"    threads grow with stacks: {'no' if d['threads'] <= small['threads'] + 2 else 'YES'} "
          f"({small['threads']:.0f} → {d['threads']:.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
