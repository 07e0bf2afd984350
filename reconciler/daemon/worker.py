"""One stack under the daemon: its file, its engine, its leadership, and what each pass did.

A :class:`StackLoop` owns no thread. The scheduler (:mod:`reconciler.daemon.process`) asks it,
every half second, whether its stack file changed (:meth:`StackLoop.watch`) and whether a pass
is due (:meth:`StackLoop.due`), and runs :meth:`StackLoop.turn` on one of a few shared pass
threads — so a daemon's threads do not grow with its stacks. A turn:

* takes (or keeps) the stack's leadership (:mod:`reconciler.daemon.leader`); a follower comes back
  every ``min(interval, 2 s)``;
* runs :meth:`reconciler.engine.engine.Engine.reconcile` — the very pass ``infra apply`` runs — with a
  reporter that logs every change and counts it in the metrics, failed provider calls included;
* turns the :class:`~reconciler.engine.engine.PassResult` into the next due time: the interval, at once
  after a pass that changed something (``requeue_after`` 0), or an exponential backoff per stack
  after an error (1 s, 2 s, 4 s … up to ``--backoff-max``; a lost quorum is such an error,
  reported on every pass and never "fixed" by deleting anything).

A stack file that changes is reloaded; a version that fails to load, or renames the stack, is
logged and the last good version keeps being reconciled.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from reconciler.daemon.log import Log
from reconciler.daemon.page import PassRecord, StackPage, StackView

if TYPE_CHECKING:
    from reconciler.core.errors import InfraError
    from reconciler.core.plan import Change, Plan
    from reconciler.core.stack import Stack
    from reconciler.daemon.leader import Leader
    from reconciler.daemon.metrics import DaemonMetrics
    from reconciler.daemon.spread import Spread
    from reconciler.engine.engine import Engine, PassResult, PlannedPass
    from reconciler.kit.coordination import EtcdTarget
    from reconciler.kit.secretstore import SecretStore

#: First error backoff; doubled per failed pass up to --backoff-max.
BACKOFF_BASE = 1.0


class Settings(NamedTuple):
    interval: float
    backoff_max: float
    concurrency: int
    timeout: float
    stuck_after: float
    #: where the stacks' CA and secrets are shared with the other machines' daemons (None: here)
    secrets: SecretStore | None = None
    #: the coordinating etcd (--lock etcd://): the stacks' pauses are read there
    coordination: EtcdTarget | None = None


def open_engine(stack: Stack, path: str, *, log: Log, concurrency: int, timeout: float,
                secrets: SecretStore | None = None, coordination: EtcdTarget | None = None) -> Engine:
    """Wire ``stack`` exactly as the CLI does."""
    from reconciler.engine.engine import Engine
    from reconciler.kit.retry import RetryPolicy

    name = stack.name
    return Engine.open(stack, source=path, log=lambda m: log("info", "note", m, stack=name),
                       concurrency=concurrency, retry=RetryPolicy(change_timeout=timeout), secrets=secrets,
                       coordination=coordination)


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class _Reporter:
    """The executor's progress, as log events and metrics (a :class:`~reconciler.engine.executor.Reporter`)."""

    def __init__(self, loop: StackLoop) -> None:
        self.w = loop

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

    def provider_error(self, call: str, error: InfraError) -> None:
        self.w.metrics.provider_errors.labels(self.w.stack_name, call, type(error).__name__).inc()

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


class StackLoop:
    """Reconciles one stack, one turn at a time: see the module docstring."""

    def __init__(self, path: str, stack: Stack, engine: Engine, leader: Leader, *, settings: Settings,
                 log: Log, metrics: DaemonMetrics, shutdown: threading.Event, spread: Spread | None = None) -> None:
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
        self.busy_since: float | None = None
        self.last_progress = time.monotonic()
        self.passes = 0
        self.crashed: str | None = None
        self.finished = False
        self._stop_evt: threading.Event | None = None
        self._was_leader = False
        self._last_holder = ""
        #: how the daemons share the stacks (--lock etcd://), and since when the key was seen free
        self.spread = spread
        self._free_since: float | None = None
        #: the result of a take tried inside the spread's turn (used by the same tick)
        self._acquired: bool | None = None
        #: how many stacks this daemon leads now (set by the daemon when it spreads)
        self.led: Callable[[], int] = lambda: 0
        #: told whether this stack is led after each try and each loss (the daemon counts them)
        self.on_leading: Callable[[str, bool], None] = lambda stack, leading: None
        self._sig = _signature(self.file)
        self._digest = _digest(self.file)
        self._bad_digest: str | None = None
        self._groups = {g.name for g in stack.groups}
        #: what the live page shows (reconciler.daemon.page); views are made only when it is served
        self.views = False
        self.view: StackView | None = None
        self.history: deque[PassRecord] = deque(maxlen=10)
        #: the daemon's memory between passes, an input of the pure planner: when each instance was
        #: first seen failing its health check, and when each member was replaced as unhealthy
        self.first_unhealthy: dict[str, float] = {}
        self.replaced: dict[tuple[str, str], list[float]] = {}
        #: what was last reported of held changes, pauses and undeclared groups (logged on change)
        self._reported: dict[str, Any] = {}
        leader.on_lost = self._lost

    # -- called from other threads ---------------------------------------------------------------

    def stop_writes(self) -> None:
        """Ask the pass in flight (if any) to start no new change."""
        evt = self._stop_evt
        if evt is not None:
            evt.set()

    def waiting_on_free_key(self) -> bool:
        """A standby that last saw its stack's leader key free (left to another daemon's choice)."""
        return self._free_since is not None

    def _lost(self, why: str) -> None:
        self.stop_writes()
        self.on_leading(self.stack_name, False)
        self.metrics.leader.labels(self.stack_name).set(0)

    def progress(self) -> None:
        self.last_progress = time.monotonic()

    def health(self, now: float) -> tuple[bool, dict[str, Any]]:
        info: dict[str, Any] = {"alive": self.crashed is None, "passes": self.passes,
                                "leader": self.leader.leading(), "failures": self.failures}
        if self.crashed is not None:
            info["problem"] = f"the loop has stopped: {self.crashed}"
            return False, info
        if self.busy_since is not None:
            quiet = now - self.last_progress
            info["pass_running_for"] = round(now - self.busy_since, 1)
            if quiet > self.settings.stuck_after:
                info["problem"] = f"no progress in the running pass for {quiet:.0f}s"
                return False, info
        return True, info

    def page(self) -> StackPage:
        """What the live page shows of this stack now (read from the HTTP thread)."""
        last = self.history[-1] if self.history else None
        leading = self.leader.leading()
        return StackPage(view=self.view, history=list(self.history), leading=leading,
                         name=self.stack_name, error=last.error if last is not None else None,
                         holder="" if leading else self.leader.holder(),
                         daemon=self.spread.id if self.spread is not None else "")

    def _planned(self, planned: PlannedPass) -> None:
        """Remember what this pass saw (first sightings of unhealthy members), report what it holds,
        and publish its view before it applies anything (so the page shows the changes while they
        run). Runs on the pass thread, between the engine's steps: no race with it."""
        self._remember(planned)
        self._report(planned)
        if not self.views:
            return
        engine = self.engine
        self.view = StackView(
            stack=self.stack_name, provider=self.stack.provider, path=self.path,
            groups=engine.status_of_pass(planned), links=engine.links(), quorum=engine.quorum_groups,
            paused=planned.paused[""].describe() if "" in planned.paused else None,
            plan=planned.plan, observed_at=time.time(),
            applying=not planned.plan.empty and planned.refusal is None)
        from reconciler.daemon.page import draw

        self.view.svg = draw(self.view)

    def _remember(self, planned: PlannedPass) -> None:
        from reconciler.core.model import Health

        now = time.time()
        sick = {i.id for insts in planned.observed.values() for i in insts
                if i.alive and planned.health.get(i.id) is Health.UNHEALTHY}
        self.first_unhealthy = {iid: self.first_unhealthy.get(iid, now) for iid in sick}

    def _report(self, planned: PlannedPass) -> None:
        """Log held changes, pauses and undeclared groups when they change; set their metrics."""
        from reconciler.core.plan import held_kind, held_reasons

        plan, m, name = planned.plan, self.metrics, self.stack_name
        kinds: dict[tuple[str, str], int] = {}
        for c in plan.held:
            key = (c.group, held_kind(c.held or ""))
            kinds[key] = kinds.get(key, 0) + 1
        reasons = held_reasons(plan.held)
        for (group, why), n in kinds.items():
            m.held.labels(name, group, why).set(n)
        for key in self._reported.get("held_kinds", set()) - set(kinds):
            m.held.labels(name, *key).set(0)
        paused = {g: p.describe() for g, p in planned.paused.items()}
        for group in {*self._reported.get("paused", {}), *paused, ""}:
            m.paused.labels(name, group).set(1 if group in paused else 0)
        undeclared = {u.group: u.message for u in plan.undeclared}
        for u in plan.undeclared:
            m.undeclared.labels(name, u.group).set(u.members)
        for group in set(self._reported.get("undeclared", {})) - set(undeclared):
            m.undeclared.labels(name, group).set(0)
        if reasons != self._reported.get("held"):
            for group, texts in sorted(reasons.items()):
                self.log("warning", "held", f"group {group}: " + "; ".join(texts), stack=name, group=group,
                         held=len([c for c in plan.held if c.group == group]))
        if paused != self._reported.get("paused"):
            for group, text in sorted(paused.items()):
                self.log("warning", "paused", text, stack=name, group=group)
            for group in set(self._reported.get("paused", {})) - set(paused):
                self.log("info", "resumed", f"{'group ' + group if group else 'the stack'} resumed", stack=name,
                         group=group)
        if undeclared != self._reported.get("undeclared"):
            for group, text in sorted(undeclared.items()):
                self.log("warning", "undeclared", text, stack=name, group=group)
        self._reported = {"held": reasons, "held_kinds": set(kinds), "paused": paused, "undeclared": undeclared}

    # -- asked by the scheduler ------------------------------------------------------------------

    def due(self, now: float) -> bool:
        return self.crashed is None and self.busy_since is None and now >= self.next_due

    def watch(self) -> None:
        """Reload the stack file when its content changed (its ``stat`` first, then its hash)."""
        if self.crashed is not None or self.busy_since is not None:
            return
        sig = _signature(self.file)
        if sig == self._sig:
            return
        self._sig = sig
        digest = _digest(self.file)
        if digest is None or digest not in (self._digest, self._bad_digest):
            self._reload()

    def turn(self) -> None:
        """One turn: leadership, then a pass. Called on a pass thread; never two at once."""
        self.busy_since = time.monotonic()
        self.progress()
        try:
            self._tick()
        except BaseException as exc:  # a bug: say so loudly; /healthz turns 503
            self.crashed = f"{type(exc).__name__}: {exc}"
            self.log("error", "crash", f"the loop of stack {self.stack_name} crashed: {self.crashed}",
                     stack=self.stack_name)
            self.finish()
            raise
        finally:
            self.busy_since = None

    def finish(self) -> None:
        """Release the lock and close the engine (once)."""
        if self.finished:
            return
        self.finished = True
        try:
            self.leader.release()
        finally:
            self.on_leading(self.stack_name, False)
            self.metrics.leader.labels(self.stack_name).set(0)
            self.engine.close()
            if self._was_leader:
                self.log("info", "lock", f"released the lock of stack {self.stack_name}", stack=self.stack_name,
                         lock=self.leader.kind)

    # -- inside -----------------------------------------------------------------------------------

    def _reload(self) -> None:
        from reconciler.core.errors import ConfigError, InfraError
        from reconciler.engine.loader import load_stack

        self.progress()
        digest = _digest(self.file)
        try:
            stack = load_stack(self.path)
            if stack.name != self.stack_name:
                raise ConfigError(
                    f"{self.path}: the stack is now named {stack.name!r}, not {self.stack_name!r}; a daemon does not "
                    "follow a rename", hint="restart the daemon to manage the renamed stack")
            engine = open_engine(stack, self.path, log=self.log, concurrency=self.settings.concurrency,
                                 timeout=self.settings.timeout, secrets=self.settings.secrets,
                                 coordination=self.settings.coordination)
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

    def _fair_share(self) -> bool:
        """With several daemons: whether this one should lead the stack now (see daemon.spread).
        Hands a stack over between passes; False leaves it to another daemon (standby)."""
        spread = self.spread
        if spread is None:
            return True
        if self.leader.leading():
            with spread.turn:  # one hand-over decision at a time: each sees the count the last one left
                to = spread.hand_over(self.stack_name, led=self.led())
                if to is None:
                    return True
                self.leader.release()
            self.log("info", "handover", f"handing stack {self.stack_name} to daemon {to} (its fair share)",
                     stack=self.stack_name, to=to)
            self._was_leader = False
            self._free_since = None
            return False
        held = self.leader.held()
        now = time.monotonic()
        self._free_since = (self._free_since or now) if held is False else None
        with spread.turn:  # one take at a time: each sees the count the last one left (no overshoot)
            if spread.may_lead(self.stack_name, led=self.led(), free_since=self._free_since):
                self._acquired = self.leader.acquire()
                self.on_leading(self.stack_name, self._acquired)
                return True
        holder = self.leader.holder()
        if holder != self._last_holder:
            self.log("info", "standby", f"not leading stack {self.stack_name}; held by {holder}; the fair share "
                     f"leaves it to daemon {spread.choice(self.stack_name)}", stack=self.stack_name, holder=holder,
                     lock=self.leader.kind)
            self._last_holder = holder
        return False

    def _tick(self) -> None:
        if not self._fair_share():
            self.on_leading(self.stack_name, False)
            self.metrics.leader.labels(self.stack_name).set(0)
            # Another daemon's share. Held by another: look again in a TTL (the daemon's watch of the
            # coordinating etcd makes every standby stack look at once when a leader key is freed).
            # Free: look again soon (its chosen daemon may be one just gone).
            wait = self._standby_delay()
            if self.spread is not None and self._free_since is None:
                wait = max(wait, self.spread.ttl)
            self.next_due = time.monotonic() + wait
            return
        leading, self._acquired = self._acquired, None  # taken (and counted) inside the spread's turn
        if leading is None:
            leading = self.leader.acquire()
            self.on_leading(self.stack_name, leading)
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
            if self.spread is not None:
                # Taken from another daemon's share: the first pass is the next turn, so a daemon
                # taking many stacks at once (a dead one's) claims them all before passing any.
                self.next_due = time.monotonic()
                return
        stop = threading.Event()
        self._stop_evt = stop
        if self.shutdown.is_set() or not self.leader.leading():
            self._stop_evt = None
            self.next_due = time.monotonic() + self._standby_delay()
            return
        try:
            result = self._pass(stop)
        finally:
            self._stop_evt = None
        self._account(result)

    def _pass(self, stop: threading.Event) -> PassResult:
        from reconciler.core.errors import PermanentError
        from reconciler.core.plan import Plan
        from reconciler.core.planner import Conditions
        from reconciler.engine.engine import PassResult

        start = time.monotonic()
        conditions = Conditions(now=time.time(), first_unhealthy=dict(self.first_unhealthy),
                                replaced={k: tuple(v) for k, v in self.replaced.items()})
        try:
            return self.engine.reconcile(reporter=_Reporter(self), stop=stop, on_planned=self._planned,
                                         conditions=conditions)
        except Exception as exc:  # a plugin bug outside the executor's guard: an error pass
            err = PermanentError(f"unexpected {type(exc).__name__} during the pass: {exc}")
            return PassResult(Plan(self.stack_name), None, error=err, seconds=time.monotonic() - start)

    def _account(self, result: PassResult) -> None:
        self.passes += 1
        plan, applied, err, outcome = result.plan, result.applied, result.error, result.outcome
        if applied is not None:  # members replaced because unhealthy: the crash-loop memory
            now = time.time()
            for c in applied.applied:
                if c.reason.value == "unhealthy":
                    times = [t for t in self.replaced.get((c.group, c.member), []) if now - t < 3600][-9:]
                    self.replaced[(c.group, c.member)] = [*times, now]
        self.history.append(PassRecord(at=time.time(), outcome=outcome, seconds=result.seconds,
                                       planned=len(plan.actionable), applied=len(applied.applied) if applied else 0,
                                       failed=len(applied.failed) if applied else 0,
                                       error=str(err) if err is not None else None))
        if self.view is not None and self.view.applying:
            self.view.applying = False
        m = self.metrics
        m.passes.labels(self.stack_name, outcome).inc()
        m.pass_seconds.labels(self.stack_name).observe(result.seconds)
        m.planned.labels(self.stack_name).set(len(plan.actionable))
        m.last_pass.labels(self.stack_name).set(time.time())
        if not plan.empty:
            m.drift.labels(self.stack_name).inc()
        if result.observed:
            m.set_observed(self.stack_name, result.observed)

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
            "observed": plan.observed, "planned": len(plan.actionable),
            "create": n["create"], "replace": n["replace"], "delete": n["delete"], "update": n["update"],
            "held": n["held"],
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
            held = f"; {n['held']} change(s) held" if n["held"] else ""
            msg = f"pass: no changes ({plan.observed} instances observed) in {result.seconds:.2f}s{held}"
        level = "error" if err is not None else ("warning" if outcome == "interrupted" else "info")
        self.log(level, "pass", msg, **fields)
        for p in plan.problems:
            if not p.is_error:
                self.log("warning", "problem", self.engine.describe(p), stack=self.stack_name)
