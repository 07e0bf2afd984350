"""Engine benchmark: how fast ``infra`` plans and applies, next to its targets and to Terraform.

Run from the repository root::

    python bench/engine.py            # full sizes, about 4 minutes (most of it Terraform)
    python bench/engine.py --quick    # small sizes, a few seconds: checks the bench itself works

Every ``infra`` figure comes from a fresh Python child process (this script re-run with
``--child``) that drives :class:`reconciler.engine.engine.Engine` directly against the in-process
``memory`` provider, with one ``command``-role group (``config={"command": ["true"]}``), so each
row starts from a clean heap and its peak RSS belongs to that row alone:

* apply from empty at N members: one pass (observe, validate, expand, plan, execute);
* no-op plan at N members: the world already holds the N instances; ``Engine.plan()`` finds
  nothing to do. Time is the best of 3 plans (the first, cold one is shown too); memory is the
  ``tracemalloc`` peak of Python allocations during one plan, and the child's peak RSS
  (``ru_maxrss``: interpreter + imports + the provider's N instances + the plan);
* latency-bound creates: the memory provider sleeps ``latency`` seconds per call; the executor's
  time for the creates is compared to the ideal ``creates / concurrency * latency``;
* ``infra --help``: wall time of the installed console script, best of several runs.

Times are wall-clock. Where a row says ``CPU`` it also gives the child's CPU time (all threads,
``time.process_time``), which moves much less than wall time on a busy machine.

Where ``terraform`` is on PATH the same shapes run with ``terraform_data`` resources
(``count = N``; built into Terraform, no provider download) in a private temp directory with an
empty CLI config, checkpoint disabled and HTTP(S) proxies pointed at a closed loopback port, so
nothing can reach the network. Terraform runs are bounded in time; a run that exceeds its bound
is stopped and reported as a lower bound.

Figures are printed next to their targets (DESIGN: benches never pass or fail on time); the
exit status is non-zero only when the bench itself breaks. Called by people and by
``tests/bench/test_bench_smoke.py`` (``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024

# Targets (issue 2, deliverable 9).
TARGET_APPLY_5000 = 4.0  # seconds
TARGET_NOOP_5000 = 0.5  # seconds
TARGET_NOOP_5000_MIB = 150.0
TARGET_LATENCY_FACTOR = 1.2  # 500 creates at 0.1 s / 50 in flight: ideal 1.0 s, target 1.2 s
TARGET_HELP = 0.25  # seconds


@dataclass(frozen=True)
class Sizes:
    apply: tuple[int, int]
    noop: tuple[int, int]
    creates: int
    latency: float
    concurrency: int
    help_runs: int
    tf_apply: tuple[int, int]
    tf_noop: tuple[int, int]
    tf_apply_bound: float  # seconds allowed to each Terraform apply
    tf_plan_bound: float  # ... and to each no-op plan
    tf_budget: float  # ... and to all of them together


FULL = Sizes(apply=(1000, 5000), noop=(5000, 10000), creates=500, latency=0.1, concurrency=50,
             help_runs=15, tf_apply=(1000, 5000), tf_noop=(5000, 10000), tf_apply_bound=60.0,
             tf_plan_bound=120.0, tf_budget=220.0)
QUICK = Sizes(apply=(50, 100), noop=(100, 200), creates=100, latency=0.1, concurrency=50,
              help_runs=3, tf_apply=(50, 100), tf_noop=(100, 200), tf_apply_bound=30.0, tf_plan_bound=30.0,
              tf_budget=90.0)


# -- the infra side: children that drive the Engine in-process ---------------------------------


def _rss_mib() -> float:
    """This process's current resident set size."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / MIB


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _engine(n: int, root: Path, **provider_config: Any) -> Any:
    from reconciler.core.stack import Group, Stack
    from reconciler.engine.engine import Engine

    stack = Stack(
        name="bench",
        provider="memory",
        provider_config={"world": f"bench-{uuid.uuid4().hex}", **provider_config},
        groups=(Group(name="m", size=n, role="command", config={"command": ["true"]}),),
    )
    return Engine.open(stack, root=root)


def child_apply(n: int, root: Path) -> dict[str, Any]:
    engine = _engine(n, root)
    cpu = time.process_time()
    start = time.perf_counter()
    plan = engine.plan()
    planned = time.perf_counter()
    result = engine.apply(plan)
    done = time.perf_counter()
    cpu = time.process_time() - cpu
    if not result.ok or len(result.applied) != n:
        raise SystemExit(f"apply N={n}: {len(result.applied)} applied, {len(result.failed)} failed")
    if not engine.plan().empty:
        raise SystemExit(f"apply N={n}: the plan after apply is not empty")
    return {"seconds": done - start, "plan": planned - start, "apply": done - planned, "cpu": cpu,
            "peak_rss_mib": _peak_rss_mib()}


def child_noop(n: int, root: Path) -> dict[str, Any]:
    engine = _engine(n, root)
    observed = engine.observe()
    for desire in engine.desired(observed):
        for member in desire.members:
            engine.provider.create(member)
    times, cpus = [], []
    for _ in range(3):
        cpu = time.process_time()
        start = time.perf_counter()
        plan = engine.plan().plan
        times.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
        if not plan.empty or plan.observed != n:
            raise SystemExit(f"no-op plan N={n}: expected no changes over {n} instances, got {plan.counts()}")
    rss_before = _rss_mib()
    tracemalloc.start()
    engine.plan()
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"seconds": min(times), "first": times[0], "cpu": min(cpus), "traced_peak_mib": traced_peak / MIB,
            "rss_before_mib": rss_before, "peak_rss_mib": _peak_rss_mib()}


def child_latency(n: int, root: Path, latency: float, concurrency: int) -> dict[str, Any]:
    engine = _engine(n, root, latency=latency)
    engine.concurrency = concurrency
    start = time.perf_counter()
    plan = engine.plan()
    planned = time.perf_counter()
    cpu = time.process_time()
    result = engine.apply(plan)
    done = time.perf_counter()
    cpu = time.process_time() - cpu
    if not result.ok or len(result.applied) != n:
        raise SystemExit(f"latency N={n}: {len(result.applied)} applied, {len(result.failed)} failed")
    return {"seconds": done - planned, "pass": done - start, "cpu": cpu, "peak_rss_mib": _peak_rss_mib()}


def run_child(kind: str, n: int, sizes: Sizes) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, str(n),
           "--latency", str(sizes.latency), "--concurrency", str(sizes.concurrency)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"bench child {kind} N={n} failed (exit {proc.returncode}):\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def timed(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` (output discarded): its wall time and CPU time (user + system, from wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def help_figures(runs: int) -> dict[str, Any]:
    """``infra --help``: best wall and CPU time of the console script; the PATH one if it differs."""
    script = Path(sys.executable).parent / "infra"
    found = shutil.which("infra")
    if not script.exists():
        if found is None:
            raise SystemExit("infra is not installed: pip install -e '.[test]'")
        script = Path(found)
    runs_ = [timed([str(script), "--help"]) for _ in range(runs)]
    out: dict[str, Any] = {"script": str(script), "seconds": min(w for w, _ in runs_),
                           "cpu": min(c for _, c in runs_), "median": sorted(w for w, _ in runs_)[runs // 2]}
    if found is not None and Path(found).resolve() != script.resolve():
        # e.g. a pyenv shim: a bash script that re-execs through pyenv before Python starts
        out["path"] = found
        out["path_seconds"] = min(timed([found, "--help"])[0] for _ in range(3))
    return out


# -- the terraform side -------------------------------------------------------------------------

TF_MAIN = """\
variable "n" {
  type = number
}

resource "terraform_data" "m" {
  count = var.n
  input = ["true"]
}
"""


@dataclass
class Run:
    seconds: float
    peak_rss_mib: float
    code: int | None  # None: stopped at the bound
    output: str = ""

    @property
    def finished(self) -> bool:
        return self.code is not None


class Terraform:
    """``terraform`` in a private temp directory that cannot reach the network."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.dir = workdir
        cfg = workdir / "empty.tfrc"
        cfg.write_text("")
        (workdir / "main.tf").write_text(TF_MAIN)
        closed = "http://127.0.0.1:9"  # the discard port: nothing listens, connections fail at once
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TF_")},
            "TF_CLI_CONFIG_FILE": str(cfg),
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1",
            "HTTP_PROXY": closed, "HTTPS_PROXY": closed, "http_proxy": closed, "https_proxy": closed,
            "NO_PROXY": "", "no_proxy": "",
            "TF_DATA_DIR": str(workdir / ".terraform"),
        }

    def run(self, *args: str, bound: float) -> Run:
        """Run one terraform command; stop it (SIGINT, then SIGKILL) after ``bound`` seconds."""
        log = self.dir / "last.log"
        with open(log, "wb") as out:
            start = time.perf_counter()
            proc = subprocess.Popen([self.binary, *args, "-no-color"], cwd=self.dir, env=self.env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            status, usage, stopped = self._wait(proc, start + max(1.0, bound))
            seconds = time.perf_counter() - start
        code = None if stopped else os.waitstatus_to_exitcode(status)
        proc.returncode = -1 if code is None else code
        return Run(seconds, usage.ru_maxrss / 1024, code, log.read_text(errors="replace")[-2000:])

    @staticmethod
    def _wait(proc: subprocess.Popen[bytes], until: float) -> tuple[int, Any, bool]:
        stopped = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                return status, usage, stopped
            if not stopped and time.perf_counter() > until:
                stopped = True
                os.killpg(proc.pid, signal.SIGINT)
                kill_at = time.perf_counter() + 10
            if stopped and time.perf_counter() > kill_at:
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.02)

    def init(self) -> None:
        r = self.run("init", "-input=false", bound=60)
        if r.code != 0:
            raise SystemExit(f"terraform init failed:\n{r.output}")

    @property
    def state(self) -> Path:
        return self.dir / "terraform.tfstate"

    def reset(self) -> None:
        for name in ("terraform.tfstate", "terraform.tfstate.backup", ".terraform.tfstate.lock.info"):
            (self.dir / name).unlink(missing_ok=True)  # the lock note may outlive a stopped apply

    def apply(self, n: int, bound: float) -> Run:
        """Apply ``count = n`` from an empty state."""
        self.reset()
        r = self.run("apply", "-auto-approve", "-input=false", "-parallelism=50", f"-var=n={n}", bound=bound)
        if r.finished and r.code != 0:
            raise SystemExit(f"terraform apply N={n} failed:\n{r.output}")
        return r

    def extend_state(self, source: dict[str, Any], n: int) -> None:
        """Write a state holding ``n`` instances shaped exactly like those of a real apply's state.

        Used when applying ``n`` from empty would exceed the bound: the no-op plan then measures
        Terraform planning over ``n`` resources in state; ``-detailed-exitcode`` 0 proves the
        derived state matches the configuration (no change planned).
        """
        doc = json.loads(json.dumps(source))
        (resource_,) = doc["resources"]
        template = resource_["instances"][0]
        instances = []
        for i in range(n):
            inst = json.loads(json.dumps(template))
            inst["index_key"] = i
            inst["attributes"]["id"] = str(uuid.uuid4())
            instances.append(inst)
        resource_["instances"] = instances
        doc["serial"] = int(doc.get("serial", 1)) + 1
        self.reset()
        self.state.write_text(json.dumps(doc))

    def plan(self, n: int, bound: float) -> Run:
        """A plan over a state that already holds ``count = n``: must find no change."""
        r = self.run("plan", "-input=false", "-detailed-exitcode", "-parallelism=50", f"-var=n={n}",
                     bound=bound)
        if r.finished and r.code != 0:
            raise SystemExit(f"terraform no-op plan N={n} is not empty or failed (exit {r.code}):\n{r.output}")
        return r


def run_terraform(
    binary: str, sizes: Sizes
) -> tuple[dict[int, Run], dict[int, Run], dict[int, str], dict[int, str], str]:
    """Terraform's figures for the same shapes.

    Returns (applies, no-op plans, notes on applies, notes on plans — by N — and a header line).

    Each command is bounded (``tf_apply_bound``/``tf_plan_bound``) and all of them together by
    ``tf_budget``, so the whole bench stays within a few minutes however slow Terraform is.
    """
    applies: dict[int, Run] = {}
    plans: dict[int, Run] = {}
    notes: dict[int, str] = {}
    apply_notes: dict[int, str] = {}
    spent_by = time.monotonic() + sizes.tf_budget

    def bound(limit: float) -> float:
        return min(limit, spent_by - time.monotonic())

    with tempfile.TemporaryDirectory(prefix="infra-bench-tf-") as tmp:
        tf = Terraform(binary, Path(tmp))
        tf.init()
        version = subprocess.run([binary, "version"], capture_output=True, text=True, env=tf.env,
                                 check=False).stdout.splitlines()
        states: dict[int, dict[str, Any]] = {}
        for n in sizes.tf_apply:
            if bound(sizes.tf_apply_bound) < 10:
                apply_notes[n] = "not run: the bench's Terraform time budget is spent"
                continue
            applies[n] = tf.apply(n, bound=bound(sizes.tf_apply_bound))
            if applies[n].finished:
                states[n] = json.loads(tf.state.read_text())
        for n in sizes.tf_noop:
            smaller = [m for m in plans if m < n]
            if smaller:
                prev = plans[max(smaller)]
                if not prev.finished:
                    notes[n] = f"not run: the N={max(smaller)} plan did not finish within its bound"
                    continue
                at_least = prev.seconds * n / max(smaller)  # linear: a lower bound (it grows faster)
                if at_least > bound(sizes.tf_plan_bound):
                    notes[n] = (f"not run: at least ~{at_least:.0f} s (N={max(smaller)} took "
                                f"{secs(prev.seconds)}), beyond the {bound(sizes.tf_plan_bound):.0f} s left")
                    continue
            if bound(sizes.tf_plan_bound) < 10:
                notes[n] = "not run: the bench's Terraform time budget is spent"
                continue
            if n in states:
                tf.state.write_text(json.dumps(states[n]))
                notes[n] = "state from the apply above"
            elif states:
                base = max(states)
                tf.extend_state(states[base], n)
                why = ("its apply was stopped at its bound" if n in applies and not applies[n].finished
                       else f"no apply of {n} in this bench")
                notes[n] = f"state: the N={base} apply's state extended to {n} instances ({why})"
            else:
                notes[n] = "not run: no apply finished within its bound"
                continue
            plans[n] = tf.plan(n, bound=bound(sizes.tf_plan_bound))
    head = (f"terraform: {version[0] if version else binary}, terraform_data with count = N, "
            f"-parallelism=50; apply bounded at {sizes.tf_apply_bound:g} s, plan at {sizes.tf_plan_bound:g} s, "
            f"all at {sizes.tf_budget:g} s ('> t': stopped at t); peak RSS from wait4")
    return applies, plans, apply_notes, notes, head


# -- the report -----------------------------------------------------------------------------------

COLS = (31, 12, 12, 12, 10)


def row(label: str, infra: str, target: str, terraform: str = "", ratio: str = "", note: str = "") -> None:
    cells = (label, infra, target, terraform, ratio)
    line = "".join(c.ljust(w) for c, w in zip(cells, COLS, strict=True))
    print((line + note).rstrip(), flush=True)


def secs(s: float) -> str:
    return f"{s:.3f} s" if s < 10 else f"{s:.1f} s"


def tf_cells(infra: float, tf: Run | None, why: str) -> tuple[str, str]:
    """The terraform and infra/terraform cells of a row."""
    if tf is None:
        return why, ""
    if not tf.finished:
        return f"> {secs(tf.seconds)}", f"< {infra / tf.seconds:.3f}"
    return secs(tf.seconds), f"{infra / tf.seconds:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes: seconds, checks the bench works")
    parser.add_argument("--no-terraform", action="store_true", help="skip the Terraform comparison")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--latency", type=float, default=0.1, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=50, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        kind, n = args.child[0], int(args.child[1])
        with tempfile.TemporaryDirectory(prefix="infra-bench-") as tmp:
            if kind == "apply":
                out = child_apply(n, Path(tmp))
            elif kind == "noop":
                out = child_noop(n, Path(tmp))
            elif kind == "latency":
                out = child_latency(n, Path(tmp), args.latency, args.concurrency)
            else:
                raise SystemExit(f"unknown child {kind!r}")
        print(json.dumps(out))
        return 0

    sizes = QUICK if args.quick else FULL
    began = time.monotonic()
    tf_bin = None if args.no_terraform else shutil.which("terraform")
    print("infra engine bench" + (" --quick: small sizes; the targets are for the full sizes" if args.quick else ""))
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f} at start; memory provider, one 'command' group "
          "(command: [true]), Engine driven in-process, each row in a fresh child process")

    # infra first: it is quick, and its figures do not depend on Terraform's bounds.
    applies = {n: run_child("apply", n, sizes) for n in sizes.apply}
    noops = {n: run_child("noop", n, sizes) for n in sizes.noop}
    lat = run_child("latency", sizes.creates, sizes)
    help_ = help_figures(sizes.help_runs)

    tf_apply: dict[int, Run] = {}
    tf_noop: dict[int, Run] = {}
    tf_notes: dict[int, str] = {}
    tf_apply_notes: dict[int, str] = {}
    if tf_bin is None:
        tf_head = "terraform: not run (--no-terraform)" if args.no_terraform else "terraform: not on PATH"
        absent = "—"
    else:
        tf_apply, tf_noop, tf_apply_notes, tf_notes, tf_head = run_terraform(tf_bin, sizes)
        absent = "not run"

    def target(text: str, n: int, full_n: int) -> str:
        return text if not args.quick and n == full_n else "—"

    print()
    row("shape", "infra", "target", "terraform", "infra/tf", "notes")
    for n, r in applies.items():
        tf, rt = tf_cells(r["seconds"], tf_apply.get(n), tf_apply_notes.get(n, absent))
        row(f"apply from empty N={n}", secs(r["seconds"]), target(f"≤ {TARGET_APPLY_5000:g} s", n, 5000),
            tf, rt, f"plan {secs(r['plan'])} + execute {secs(r['apply'])}; CPU {secs(r['cpu'])}")
    for n, r in noops.items():
        tf_run = tf_noop.get(n)
        tf, rt = tf_cells(r["seconds"], tf_run, tf_notes.get(n, absent))
        row(f"no-op plan N={n}", secs(r["seconds"]), target(f"≤ {TARGET_NOOP_5000:g} s", n, 5000), tf, rt,
            f"best of 3 (first {secs(r['first'])}); CPU {secs(r['cpu'])}"
            + (f"; terraform {tf_notes[n]}" if tf_run and n in tf_notes else ""))
        tf_mem = f"{tf_run.peak_rss_mib:.0f} MiB" if tf_run is not None and tf_run.finished else ""
        row(f"no-op plan N={n} peak RSS", f"{r['peak_rss_mib']:.0f} MiB",
            target(f"≤ {TARGET_NOOP_5000_MIB:g} MiB", n, 5000), tf_mem, "",
            f"whole process (ru_maxrss); RSS before the plan {r['rss_before_mib']:.0f} MiB, "
            f"peak delta {max(0.0, r['peak_rss_mib'] - r['rss_before_mib']):.0f} MiB")
        row(f"no-op plan N={n} traced peak", f"{r['traced_peak_mib']:.1f} MiB", "—", "", "",
            "tracemalloc peak of Python allocations during one plan")
    ideal = sizes.creates / sizes.concurrency * sizes.latency
    row(f"{sizes.creates} creates @ {sizes.latency * 1000:g} ms latency", secs(lat["seconds"]),
        f"≤ {ideal * TARGET_LATENCY_FACTOR:.2f} s", "n/a", "",
        f"ideal {ideal:.2f} s ({sizes.creates}/{sizes.concurrency} * {sizes.latency:g} s), "
        f"{lat['seconds'] / ideal:.2f}x ideal; CPU {secs(lat['cpu'])}; pass incl. plan {secs(lat['pass'])}; "
        "terraform has no latency-simulating resource")
    row("infra --help", secs(help_["seconds"]), f"≤ {TARGET_HELP * 1000:g} ms", "", "",
        f"best of {sizes.help_runs} (median {secs(help_['median'])}; CPU {secs(help_['cpu'])}): {help_['script']}"
        + (f"; via PATH {help_['path']}: {secs(help_['path_seconds'])}" if "path" in help_ else ""))
    print()
    print(tf_head)
    print(f"bench took {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
