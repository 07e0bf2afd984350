"""``infra daemon``: reconcile passes in a loop, for ever, for one or more stacks.

Registered as ``infra daemon`` by :mod:`reconciler.cli`, which imports :data:`daemon_command`
at start-up — so this module's top level imports only ``click`` and the standard library
(``infra --help`` must stay fast); the engine, prometheus-client and etcd3gw are imported when
the daemon starts.

Each stack gets a worker thread (:class:`StackWorker`) that runs
:meth:`reconciler.engine.Engine.reconcile` — the very pass ``infra apply`` runs, with no second
code path — level-triggered, controller-runtime style:

* every ``--interval`` seconds, and at once when the stack file changes on disk (its
  ``stat`` is polled every 0.5 s, its content hashed only when that changes). A version that
  fails to load — or that renames the stack — is logged and the last good version keeps
  being reconciled;
* ``PassResult.requeue_after`` is honoured (0 after a pass that changed something: come back
  at once to confirm); a pass that ends in an error backs off exponentially per stack, 1 s,
  2 s, 4 s … up to ``--backoff-max``, and the next healthy pass resets it. A stack whose quorum
  is lost is such an error: reported on every pass, never "fixed" by deleting anything;
* only while this daemon *leads* the stack (:mod:`reconciler.leader`: the local file lock held
  for the daemon's life, or an etcd lease with ``--lock etcd://HOST:PORT``). A follower
  retries the lock every ``min(interval, 2 s)``. Losing leadership mid-pass sets the
  executor's stop event: no new change starts.

SIGTERM or SIGINT sets every executor's stop event — changes in flight finish, none starts —
then each worker releases its lock and the process exits 0. If changes are still in flight
after ``--grace`` seconds it exits 1 (a second signal exits 1 at once).

Logs go to stderr, one event per line: readable text, or JSON objects with
``--log-format json`` (``ts``, ``level``, ``event``, ``msg`` and the event's fields). Every
change is logged with its reason, every pass with its duration and result. Metrics and
``/healthz`` are described in :mod:`reconciler.metrics`.
"""

from __future__ import annotations

import builtins
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TextIO

import click

if TYPE_CHECKING:
    from reconciler.engine import Engine, Observed, PassResult
    from reconciler.errors import InfraError
    from reconciler.leader import EtcdTarget, Leader
    from reconciler.metrics import DaemonMetrics, HealthReport
    from reconciler.model import Instance, MemberSpec, Problem
    from reconciler.plan import Change, Plan
    from reconciler.provider import Provider, SdConfig
    from reconciler.stack import Stack

#: How often a worker wakes to look at its stack file and the clock.
WATCH_POLL = 0.5
#: First error backoff; doubled per failed pass up to --backoff-max.
BACKOFF_BASE = 1.0
#: An idle worker that has not looped for this long is stuck (it wakes every WATCH_POLL).
IDLE_STUCK = 30.0


# -- structured logs -----------------------------------------------------------------------------


class EventLog:
    """One event per line on ``stream``: text for people, JSON for machines. Thread-safe."""

    LEVELS: ClassVar[dict[str, int]] = {"debug": 10, "info": 20, "warning": 30, "error": 40}

    def __init__(self, fmt: str = "text", stream: TextIO | None = None, level: str = "info") -> None:
        self.fmt = fmt
        self.stream = stream or sys.stderr
        self.min_level = self.LEVELS[level]
        self._lock = threading.RLock()  # a signal handler may log while the main thread does

    def __call__(self, level: str, event: str, msg: str, **fields: Any) -> None:
        if self.LEVELS.get(level, 20) < self.min_level:
            return
        now = time.time()
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        if self.fmt == "json":
            line = json.dumps({"ts": ts, "level": level, "event": event, "msg": msg, **fields}, default=str)
        else:
            extra = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items()
                             if k not in ("stack",) and v is not None and v != "")
            stack = fields.get("stack")
            where = f"[{stack}] " if stack else ""
            line = f"{ts} {level.upper():<7} {where}{msg}" + (f"  ({extra})" if extra else "")
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed stderr must not kill the loop


def _text_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


Log = Callable[..., None]


# -- provider errors by type ---------------------------------------------------------------------


class _CountedProvider:
    """Passes every call to the stack's provider, counting the typed errors it raises."""

    name: ClassVar[str] = ""

    def __init__(self, inner: Provider, on_error: Callable[[str, BaseException], None]) -> None:
        self._inner = inner
        self._on_error = on_error

    def _count(self, call: str, fn: Callable[[], Any]) -> Any:
        from reconciler.errors import InfraError

        try:
            return fn()
        except InfraError as exc:
            self._on_error(call, exc)
            raise

    def list(self, selector: Mapping[str, str]) -> builtins.list[Instance]:
        result: builtins.list[Instance] = self._count("list", lambda: self._inner.list(selector))
        return result

    def create(self, spec: MemberSpec) -> Instance:
        result: Instance = self._count("create", lambda: self._inner.create(spec))
        return result

    def delete(self, instance: Instance) -> None:
        self._count("delete", lambda: self._inner.delete(instance))

    def validate(self, members: Sequence[MemberSpec]) -> builtins.list[Problem]:
        result: builtins.list[Problem] = self._count("validate", lambda: self._inner.validate(members))
        return result

    def discovery(self, selector: Mapping[str, str], port: int) -> SdConfig | None:
        result: SdConfig | None = self._count("discovery", lambda: self._inner.discovery(selector, port))
        return result

    def close(self) -> None:
        self._inner.close()

    def __getattr__(self, attr: str) -> Any:  # optional methods: address_for, ensure_image, ...
        return getattr(self._inner, attr)


def _counted(inner: Provider, on_error: Callable[[str, BaseException], None]) -> Provider:
    cls = type(f"Counted{type(inner).__name__}", (_CountedProvider,), {"name": inner.name})
    provider: Provider = cls(inner, on_error)
    return provider


def _open_engine(stack: Stack, path: str, *, log: Log, metrics: DaemonMetrics,
                 concurrency: int, timeout: float) -> Engine:
    """Wire ``stack`` exactly as the CLI does, with the provider's errors counted."""
    from reconciler.engine import Engine
    from reconciler.executor import RetryPolicy

    class _DaemonEngine(Engine):
        """The same Engine; it only remembers how many instances each group had last pass."""

        observed_counts: dict[str, int] = {}  # replaced per pass, never mutated

        def observe(self) -> Observed:
            observed = super().observe()
            self.observed_counts = {g.name: len(observed.get(g.name, [])) for g in self.stack.groups}
            return observed

    name = stack.name
    engine = _DaemonEngine.open(
        stack, source=path, log=lambda m: log("info", "note", m, stack=name),
        concurrency=concurrency, retry=RetryPolicy(change_timeout=timeout),
    )

    def on_error(call: str, exc: BaseException) -> None:
        metrics.provider_errors.labels(name, call, type(exc).__name__).inc()

    engine.provider = _counted(engine.provider, on_error)
    return engine


# -- the per-stack loop --------------------------------------------------------------------------


class Settings(NamedTuple):
    interval: float
    backoff_max: float
    concurrency: int
    timeout: float
    stuck_after: float


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _digest(path: Path) -> str | None:
    import hashlib

    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class _Reporter:
    """The executor's progress, as log events and metrics (a :class:`~reconciler.executor.Reporter`)."""

    def __init__(self, worker: StackWorker) -> None:
        self.w = worker

    def begin(self, plan: Plan) -> None:
        self.w.progress()

    def started(self, change: Change) -> None:
        self.w.progress()
        self.w.log("info", "change.start", f"{change.action.value} {change.group}/{change.member} "
                   f"({change.reason.value}{': ' + change.detail if change.detail else ''})",
                   **_change_fields(self.w.stack_name, change))

    def finished(self, change: Change, seconds: float) -> None:
        self.w.progress()
        done = {"create": "created", "delete": "deleted", "replace": "replaced"}[change.action.value]
        self.w.log("info", "change", f"{done} {change.group}/{change.member} in {seconds:.1f}s "
                   f"({change.reason.value})", result="applied", seconds=round(seconds, 3),
                   **_change_fields(self.w.stack_name, change))
        self.w.metrics.changes_applied.labels(self.w.stack_name, change.group, change.action.value,
                                              change.reason.value).inc()

    def failed(self, change: Change, error: InfraError) -> None:
        self.w.progress()
        self.w.log("error", "change", f"{change.action.value} {change.group}/{change.member} failed: {error}",
                   result="failed", error=str(error), error_type=type(error).__name__,
                   **_change_fields(self.w.stack_name, change))
        self.w.metrics.changes_failed.labels(self.w.stack_name, change.group, change.action.value,
                                             change.reason.value).inc()

    def note(self, message: str) -> None:
        self.w.log("info", "note", message, stack=self.w.stack_name)

    def upload(self, image: str, done: int, total: int) -> None:
        if done == total:
            self.w.log("info", "image", f"uploaded image {image} ({total:,} bytes)", stack=self.w.stack_name)

    def end(self) -> None:
        self.w.progress()


def _change_fields(stack: str, change: Change) -> dict[str, Any]:
    return {
        "stack": stack, "group": change.group, "member": change.member, "action": change.action.value,
        "reason": change.reason.value, "detail": change.detail,
        "instance": (change.before.name if change.before is not None else None),
        "new_instance": (change.after.name if change.after is not None else None),
    }


class StackWorker(threading.Thread):
    """Reconciles one stack for ever: see the module docstring."""

    def __init__(self, path: str, stack: Stack, engine: Engine, leader: Leader, *, settings: Settings,
                 log: Log, metrics: DaemonMetrics, shutdown: threading.Event) -> None:
        super().__init__(name=f"infra-stack-{stack.name}", daemon=True)
        self.path = path
        self.file = Path(path)
        self.stack = stack
        self.stack_name = stack.name
        self.engine = engine
        self.leader = leader
        self.settings = settings
        self.log = log
        self.metrics = metrics
        self.shutdown = shutdown
        self.failures = 0
        self.next_due = 0.0
        self.beat = time.monotonic()
        self.busy_since: float | None = None
        self.last_progress = self.beat
        self.passes = 0
        self._stop_evt: threading.Event | None = None
        self._was_leader = False
        self._last_holder = ""
        self._sig = _signature(self.file)
        self._digest = _digest(self.file)
        self._bad_digest: str | None = None
        self._groups = {g.name for g in stack.groups}
        self.crashed: str | None = None
        leader.on_lost = self._lost

    # -- called from other threads ---------------------------------------------------------------

    def stop_writes(self) -> None:
        """Ask the pass in flight (if any) to start no new change."""
        evt = self._stop_evt
        if evt is not None:
            evt.set()

    def _lost(self, why: str) -> None:
        self.stop_writes()
        self.metrics.leader.labels(self.stack_name).set(0)

    def progress(self) -> None:
        self.last_progress = time.monotonic()

    def health(self, now: float) -> tuple[bool, dict[str, Any]]:
        info: dict[str, Any] = {"alive": self.is_alive(), "passes": self.passes,
                                "leader": self.leader.leading(), "failures": self.failures}
        if not self.is_alive():
            info["problem"] = f"the loop has stopped: {self.crashed or 'exited'}"
            return False, info
        if self.busy_since is not None:
            quiet = now - self.last_progress
            info["pass_running_for"] = round(now - self.busy_since, 1)
            if quiet > self.settings.stuck_after:
                info["problem"] = f"no progress in the running pass for {quiet:.0f}s"
                return False, info
            return True, info
        idle = now - self.beat
        if idle > IDLE_STUCK:
            info["problem"] = f"the loop has not turned for {idle:.0f}s"
            return False, info
        return True, info

    # -- the loop ----------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            while not self.shutdown.is_set():
                self.beat = time.monotonic()
                if self._file_changed():
                    self._reload()
                if time.monotonic() >= self.next_due and not self.shutdown.is_set():
                    self._tick()
                wait = min(WATCH_POLL, max(0.0, self.next_due - time.monotonic()))
                self.shutdown.wait(wait)
        except BaseException as exc:  # a bug: say so loudly; /healthz turns 503
            self.crashed = f"{type(exc).__name__}: {exc}"
            self.log("error", "crash", f"the loop of stack {self.stack_name} crashed: {self.crashed}",
                     stack=self.stack_name)
            raise
        finally:
            self._finish()

    def _finish(self) -> None:
        try:
            self.leader.release()
        finally:
            self.metrics.leader.labels(self.stack_name).set(0)
            self.engine.close()
            if self._was_leader:
                self.log("info", "lock", f"released the lock of stack {self.stack_name}", stack=self.stack_name,
                         lock=self.leader.kind)

    def _file_changed(self) -> bool:
        sig = _signature(self.file)
        if sig == self._sig:
            return False
        self._sig = sig
        digest = _digest(self.file)
        return digest is None or digest not in (self._digest, self._bad_digest)

    def _reload(self) -> None:
        from reconciler.errors import ConfigError, InfraError
        from reconciler.loader import load_stack

        self.progress()
        digest = _digest(self.file)
        try:
            stack = load_stack(self.path)
            if stack.name != self.stack_name:
                raise ConfigError(
                    f"{self.path}: the stack is now named {stack.name!r}, not {self.stack_name!r}; a daemon does not "
                    "follow a rename", hint="restart the daemon to manage the renamed stack")
            engine = _open_engine(stack, self.path, log=self.log, metrics=self.metrics,
                                  concurrency=self.settings.concurrency, timeout=self.settings.timeout)
        except Exception as exc:  # InfraError, or a plugin's bug while opening: keep the last good version
            if not isinstance(exc, InfraError):
                exc = ConfigError(f"{self.path}: unexpected {type(exc).__name__} while loading: {exc}")
            self._bad_digest = digest
            self.metrics.reloads.labels(self.stack_name, "error").inc()
            self.log("error", "reload", f"{self.path} changed but cannot be used; still reconciling the last good "
                     f"version: {exc}", stack=self.stack_name, result="error", error=str(exc), file=self.path)
            return
        old, self.engine, self.stack = self.engine, engine, stack
        self._digest, self._bad_digest = digest, None
        old.close()
        self.metrics.reloads.labels(self.stack_name, "ok").inc()
        sizes = {g.name: g.size for g in stack.groups}
        self.log("info", "reload", f"{self.path} changed; reconciling the new version now",
                 stack=self.stack_name, result="ok", file=self.path, sizes=sizes)
        for gone in self._groups - set(sizes):
            try:
                self.metrics.observed.remove(self.stack_name, gone)
            except KeyError:
                pass
        self._groups = set(sizes)
        self.failures = 0
        self.next_due = 0.0

    def _standby_delay(self) -> float:
        return min(self.settings.interval, 2.0)

    def _tick(self) -> None:
        leading = self.leader.acquire()
        self.metrics.leader.labels(self.stack_name).set(1 if leading else 0)
        if not leading:
            holder = self.leader.holder()
            if self._was_leader or holder != self._last_holder:
                self.log("warning" if self._was_leader else "info", "standby",
                         f"not leading stack {self.stack_name}; held by {holder}; retrying every "
                         f"{self._standby_delay():g}s", stack=self.stack_name, holder=holder, lock=self.leader.kind)
            self._was_leader = False
            self._last_holder = holder
            self.next_due = time.monotonic() + self._standby_delay()
            return
        if not self._was_leader:
            self.log("info", "lock", f"leading stack {self.stack_name} ({self.leader.kind} lock)",
                     stack=self.stack_name, lock=self.leader.kind, leader=True)
            self._was_leader = True
            self._last_holder = ""
        stop = threading.Event()
        self._stop_evt = stop
        if self.shutdown.is_set() or not self.leader.leading():
            self._stop_evt = None
            self.next_due = time.monotonic() + self._standby_delay()
            return
        self.busy_since = time.monotonic()
        self.progress()
        try:
            result = self._pass(stop)
        finally:
            self.busy_since = None
            self._stop_evt = None
        self._account(result)

    def _pass(self, stop: threading.Event) -> PassResult:
        from reconciler.engine import PassResult
        from reconciler.errors import PermanentError
        from reconciler.plan import Plan

        start = time.monotonic()
        try:
            return self.engine.reconcile(reporter=_Reporter(self), stop=stop)
        except Exception as exc:  # a plugin bug outside the executor's guard: an error pass
            err = PermanentError(f"unexpected {type(exc).__name__} during the pass: {exc}")
            return PassResult(Plan(self.stack_name), None, error=err, seconds=time.monotonic() - start)

    def _account(self, result: PassResult) -> None:
        from reconciler.errors import QuorumLostError

        self.passes += 1
        plan, applied, err = result.plan, result.applied, result.error
        m = self.metrics
        if isinstance(err, QuorumLostError):
            outcome = "quorum_lost"
        elif err is not None:
            outcome = "error"
        elif applied is not None and applied.skipped:
            outcome = "interrupted"
        elif not plan.empty:
            outcome = "applied"
        else:
            outcome = "ok"
        m.passes.labels(self.stack_name, outcome).inc()
        m.pass_seconds.labels(self.stack_name).observe(result.seconds)
        m.planned.labels(self.stack_name).set(len(plan.changes))
        m.last_pass.labels(self.stack_name).set(time.time())
        if not plan.empty:
            m.drift.labels(self.stack_name).inc()
        counts = getattr(self.engine, "observed_counts", {})
        if err is None or counts:
            m.set_observed(self.stack_name, counts)

        now = time.monotonic()
        if err is not None:
            self.failures += 1
            delay = min(self.settings.backoff_max, BACKOFF_BASE * 2 ** (self.failures - 1))
        elif outcome == "interrupted":
            delay = 0.0 if not self.shutdown.is_set() else self.settings.interval
        else:
            self.failures = 0
            delay = self.settings.interval if result.requeue_after is None else max(0.0, result.requeue_after)
        m.backoff.labels(self.stack_name).set(delay if err is not None else 0.0)
        self.next_due = now + delay

        n = plan.counts()
        fields: dict[str, Any] = {
            "stack": self.stack_name, "result": outcome, "seconds": round(result.seconds, 3),
            "observed": plan.observed, "planned": len(plan.changes),
            "create": n["create"], "replace": n["replace"], "delete": n["delete"],
            "applied": len(applied.applied) if applied else 0,
            "failed": len(applied.failed) if applied else 0,
            "skipped": len(applied.skipped) if applied else 0,
            "next_in": round(delay, 3),
        }
        if err is not None:
            fields["error"] = str(err)
            fields["error_type"] = type(err).__name__
            fields["failures"] = self.failures
        if outcome == "quorum_lost":
            msg = f"pass: QUORUM LOST, nothing changed, nothing deleted: {err}"
        elif err is not None:
            msg = f"pass failed in {result.seconds:.2f}s; next in {delay:g}s (backoff): {err}"
        elif outcome == "interrupted":
            why = "stopping" if self.shutdown.is_set() else "leadership lost"
            msg = f"pass interrupted ({why}): in-flight changes finished, {fields['skipped']} not started"
        elif outcome == "applied":
            msg = f"pass applied {fields['applied']} change(s) in {result.seconds:.2f}s"
        else:
            msg = f"pass: no changes ({plan.observed} instances observed) in {result.seconds:.2f}s"
        level = "error" if err is not None else ("warning" if outcome == "interrupted" else "info")
        self.log(level, "pass", msg, **fields)
        for p in plan.problems:
            if not p.is_error:
                self.log("warning", "problem", f"{p.field}: {p.message}", stack=self.stack_name)


# -- the process -------------------------------------------------------------------------------


def _parse_addr(value: str) -> tuple[str, int] | None:
    from reconciler.errors import ConfigError

    if value.lower() in ("none", "off", ""):
        return None
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--metrics-addr {value!r}: expected HOST:PORT (e.g. 127.0.0.1:9464) or 'none'")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Daemon:
    """Everything one ``infra daemon`` process runs. ``run()`` returns the exit code."""

    def __init__(self, paths: Sequence[str], *, settings: Settings, log: Log, lock: str,
                 lock_ttl: int, etcd: EtcdTarget | None, metrics_addr: tuple[str, int] | None,
                 grace: float) -> None:
        from reconciler.metrics import DaemonMetrics

        self.paths = list(paths)
        self.settings = settings
        self.log = log
        self.lock = lock
        self.lock_ttl = lock_ttl
        self.etcd = etcd
        self.metrics_addr = metrics_addr
        self.grace = grace
        self.metrics = DaemonMetrics()
        self.shutdown = threading.Event()
        self.workers: list[StackWorker] = []
        self._signalled_at: float | None = None
        self.started = time.monotonic()

    def _leader(self, engine: Engine) -> Leader:
        from reconciler.leader import EtcdLeader, FileLeader

        local = FileLeader(engine.state_dir, engine.stack.name)
        if self.etcd is None:
            return local
        return EtcdLeader(self.etcd, engine.stack.name, ttl=self.lock_ttl, local=local,
                          log=lambda level, msg: self.log(level, "lock", msg, stack=engine.stack.name))

    def build(self) -> None:
        """Load every stack and wire its engine; ConfigError (exit 1) before anything runs."""
        from reconciler.errors import ConfigError
        from reconciler.loader import load_stack

        seen: dict[str, str] = {}
        for path in self.paths:
            stack = load_stack(path)
            if stack.name in seen:
                raise ConfigError(f"{path}: stack {stack.name!r} is already managed from {seen[stack.name]}")
            seen[stack.name] = path
            engine = _open_engine(stack, path, log=self.log, metrics=self.metrics,
                                  concurrency=self.settings.concurrency, timeout=self.settings.timeout)
            self.metrics.init_stack(stack.name, [g.name for g in stack.groups])
            self.workers.append(StackWorker(path, stack, engine, self._leader(engine), settings=self.settings,
                                            log=self.log, metrics=self.metrics, shutdown=self.shutdown))

    def health(self) -> HealthReport:
        from reconciler.metrics import HealthReport

        now = time.monotonic()
        stacks: dict[str, Any] = {}
        ok = True
        for w in self.workers:
            healthy, info = w.health(now)
            ok = ok and healthy
            stacks[w.stack_name] = info
        if self.shutdown.is_set():
            return HealthReport(False, {"stopping": True, "stacks": stacks})
        return HealthReport(ok, {"uptime": round(now - self.started, 1), "stacks": stacks})

    def _on_signal(self, signum: int, frame: Any) -> None:
        import signal

        name = signal.Signals(signum).name
        if self._signalled_at is not None:
            self.log("error", "stop", f"second {name}: exiting now, changes in flight may be cut short",
                     signal=name)
            os._exit(1)
        self._signalled_at = time.monotonic()
        self.log("info", "stop", f"{name}: finishing changes in flight (grace {self.grace:g}s), then exiting",
                 signal=name, grace=self.grace)
        self.shutdown.set()
        for w in self.workers:
            w.stop_writes()

    def run(self) -> int:
        import signal

        from reconciler.errors import ConfigError
        from reconciler.metrics import MetricsServer

        self.build()
        server: MetricsServer | None = None
        if self.metrics_addr is not None:
            host, port = self.metrics_addr
            try:
                server = MetricsServer(host, port, self.metrics, self.health)
            except OSError as exc:
                raise ConfigError(f"--metrics-addr {host}:{port}: cannot listen: {exc.strerror or exc}") from None
            if not _is_loopback(host):
                self.log("warning", "metrics", f"metrics and /healthz are served beyond loopback on {host}:{port}")
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        if server is not None:
            server.start()
        self.log("info", "start", f"infra daemon started: {len(self.workers)} stack(s), every "
                 f"{self.settings.interval:g}s, {self.lock} lock"
                 + (f", metrics on http://{server.address}/metrics" if server else ""),
                 pid=os.getpid(), stacks=[w.stack_name for w in self.workers], interval=self.settings.interval,
                 lock=self.lock, metrics=server.address if server else None)
        for w in self.workers:
            w.start()
        try:
            while not self.shutdown.wait(0.5):
                if not any(w.is_alive() for w in self.workers):
                    self.log("error", "stop", "every stack loop has stopped; exiting")
                    return 1
            assert self._signalled_at is not None or self.shutdown.is_set()
            deadline = (self._signalled_at or time.monotonic()) + self.grace
            for w in self.workers:
                w.join(timeout=max(0.0, deadline - time.monotonic()))
            late = [w.stack_name for w in self.workers if w.is_alive()]
            if late:
                self.log("error", "stop", f"grace time of {self.grace:g}s is over with changes still in flight "
                         f"for {', '.join(late)}; exiting anyway", stacks=late)
                for w in self.workers:
                    if w.is_alive():
                        try:
                            w.leader.release()
                        except Exception:
                            pass
                sys.stderr.flush()
                os._exit(1)
            crashed = [w.stack_name for w in self.workers if w.crashed]
            self.log("info", "stop", "infra daemon stopped cleanly", seconds=round(
                time.monotonic() - (self._signalled_at or time.monotonic()), 3))
            return 1 if crashed else 0
        finally:
            if server is not None:
                server.stop()


@click.command("daemon")
@click.argument("stack_files", metavar="STACK...", nargs=-1, required=True)
@click.option("--interval", default=10.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds between passes of each stack.")
@click.option("--metrics-addr", default="127.0.0.1:9464", show_default=True,
              help="HOST:PORT for /metrics and /healthz (port 0: any free port; 'none' to disable).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Log lines on stderr: readable text or JSON objects.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@click.option("--lock", "lock", default="file", show_default=True, metavar="file|etcd://HOST:PORT",
              help="Who may write: the local file lock, or a lease in a coordinating etcd (several daemons, "
                   "one leader per stack).")
@click.option("--lock-ttl", default=10, show_default=True, type=click.IntRange(2, 3600),
              help="Seconds an etcd leader's lease lives without keepalive (hand-over time).")
@click.option("--lock-cacert", type=click.Path(dir_okay=False), help="CA bundle of the coordinating etcd (TLS).")
@click.option("--lock-cert", type=click.Path(dir_okay=False), help="Client certificate for the coordinating etcd.")
@click.option("--lock-key", type=click.Path(dir_okay=False), help="Key of --lock-cert.")
@click.option("--grace", default=60.0, show_default=True, type=click.FloatRange(0),
              help="Seconds allowed on SIGTERM/SIGINT for changes in flight to finish.")
@click.option("--backoff-max", default=300.0, show_default=True, type=click.FloatRange(1),
              help="Longest wait after repeated failed passes (backoff doubles from 1s).")
@click.option("--stuck-after", type=click.FloatRange(0.1), default=None,
              help="/healthz fails when a running pass shows no progress for this long [default: --timeout + 60].")
@click.option("--concurrency", default=50, show_default=True, type=click.IntRange(1, 1000),
              help="Changes in flight at once (cattle groups).")
@click.option("--timeout", default=600.0, show_default=True, type=click.FloatRange(1),
              help="Seconds allowed per change, retries included.")
def daemon_command(stack_files: tuple[str, ...], interval: float, metrics_addr: str, log_format: str,
                   log_level: str, lock: str, lock_ttl: int, lock_cacert: str | None, lock_cert: str | None,
                   lock_key: str | None, grace: float, backoff_max: float, stuck_after: float | None,
                   concurrency: int, timeout: float) -> None:
    """Reconcile stacks for ever: every interval and when a stack file changes.

    \b
      infra daemon stacks/etcd-local.py
      curl 127.0.0.1:9464/metrics; curl 127.0.0.1:9464/healthz
      infra daemon stacks/etcd-local.py --lock etcd://10.0.0.5:2379   # one leader per stack

    While it runs the daemon is the stacks' one writer: 'infra apply' fails at once naming it.
    SIGTERM/SIGINT finish the changes in flight, release the locks and exit 0.
    """
    from reconciler.leader import parse_lock

    etcd = parse_lock(lock, cacert=lock_cacert, cert=lock_cert, key=lock_key)
    addr = _parse_addr(metrics_addr)
    settings = Settings(interval=interval, backoff_max=backoff_max, concurrency=concurrency, timeout=timeout,
                        stuck_after=stuck_after or timeout + 60.0)
    log = EventLog(log_format, level=log_level)
    daemon = Daemon(stack_files, settings=settings, log=log, lock="etcd" if etcd else "file", lock_ttl=lock_ttl,
                    etcd=etcd, metrics_addr=addr, grace=grace)
    raise SystemExit(daemon.run())
