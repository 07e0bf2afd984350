"""The executor: carries out a :class:`~reconciler.core.plan.Plan` against a provider and roles.

Called by :class:`reconciler.engine.engine.Engine.apply` (so by ``infra apply``, ``infra destroy`` and
every daemon pass). Groups run in plan order. Inside a group:

* **cattle** — every change at once, at most ``concurrency`` (default 50) in flight;
* **quorum** — one change at a time, ``preflight`` before each, health gate after each; a
  group created from nothing (``bootstrap``) creates all members together, then gates on each;
* **updates in place** (labels, protection) — after the group's other changes, in parallel, with
  no role hook: the instance and what runs on it stay as they are.

Held changes (paused, not targeted, remediation held) are never carried out.

Every provider call and role hook is retried under the one retry policy
(:mod:`reconciler.kit.retry`: retryable errors only, backoff with jitter, at least the server's
``retry_after``), for at most ``attempts`` tries and ``change_timeout`` seconds per change. Anything else fails
the change: a cattle group carries on with its other changes, a quorum group stops at once
(changing a quorum group after a failure could cost the quorum). What the provider returns is
checked against what was planned; a mismatch is reported as a provider bug.

``stop`` (a ``threading.Event``) asks the executor to start no new change; changes in flight
finish — the daemon's SIGTERM path.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from reconciler.core.errors import InfraError, PermanentError, QuorumLostError
from reconciler.core.model import Instance, MemberSpec
from reconciler.core.plan import Action, Change, GroupPlan, Order, Plan
from reconciler.kit import retry
from reconciler.kit.provider import Provider, label_updater
from reconciler.kit.retry import RetryPolicy
from reconciler.kit.role import AnyContext, AnyRole, UpdatePolicy

T = TypeVar("T")

DEFAULT_CONCURRENCY = 50


class Reporter(Protocol):
    """Where the executor reports progress (the CLI draws it; the daemon logs it)."""

    def begin(self, plan: Plan) -> None: ...

    def started(self, change: Change) -> None: ...

    def finished(self, change: Change, seconds: float) -> None: ...

    def failed(self, change: Change, error: InfraError) -> None: ...

    def note(self, message: str) -> None: ...

    def upload(self, image: str, done: int, total: int) -> None:
        """Bytes of an image pushed so far (the image pipeline, before any change)."""

    def provider_error(self, call: str, error: InfraError) -> None:
        """A provider call (``list``, ``validate``, ``create``, ``delete``) raised, retried or not."""

    def end(self) -> None: ...


class NullReporter:
    def begin(self, plan: Plan) -> None: ...

    def started(self, change: Change) -> None: ...

    def finished(self, change: Change, seconds: float) -> None: ...

    def failed(self, change: Change, error: InfraError) -> None: ...

    def note(self, message: str) -> None: ...

    def upload(self, image: str, done: int, total: int) -> None: ...

    def provider_error(self, call: str, error: InfraError) -> None: ...

    def end(self) -> None: ...


@dataclass(frozen=True)
class GroupHooks:
    """A declared group's role and the context its hooks see during this pass.

    A group the plan changes but the stack no longer declares has none: its members are changed
    by the provider alone, with no role hook.
    """

    role: AnyRole
    ctx: AnyContext


@dataclass
class ApplyResult:
    applied: list[Change] = field(default_factory=list)
    failed: list[tuple[Change, InfraError]] = field(default_factory=list)
    skipped: list[Change] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped

    @property
    def quorum_lost(self) -> QuorumLostError | None:
        for _, err in self.failed:
            if isinstance(err, QuorumLostError):
                return err
        return None


class Executor:
    """Runs plans. One executor per pass; see the module docstring."""

    def __init__(
        self,
        provider: Provider,
        hooks: Mapping[str, GroupHooks],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        retry: RetryPolicy | None = None,
        reporter: Reporter | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.provider = provider
        self.hooks = hooks
        self.concurrency = max(1, concurrency)
        self.retry = retry or RetryPolicy()
        self.reporter: Reporter = reporter or NullReporter()
        self.stop = stop or threading.Event()
        self._observed_lock = threading.Lock()
        # (id of a AnyContext, group) → (that group's observed list, the ids in it); see _ids.
        self._id_sets: dict[tuple[int, str], tuple[list[Instance], set[str]]] = {}

    # -- retries -------------------------------------------------------------------------------

    def _call(self, what: Callable[[], T], deadline: float, call: str | None = None) -> T:
        """``what()`` under the retry policy (:mod:`reconciler.kit.retry`); a provider ``call``'s
        failed attempts are reported to the reporter."""
        on_error = None
        if call is not None:
            def on_error(exc: BaseException, call: str = call) -> None:
                if isinstance(exc, InfraError):
                    self.reporter.provider_error(call, exc)
        return retry.call(what, self.retry, deadline=deadline, on_error=on_error)

    # -- the observed view roles see -------------------------------------------------------------

    def _hooks(self, group: str) -> GroupHooks | None:
        return self.hooks.get(group)

    def _ids(self, ctx: AnyContext, group: str) -> tuple[list[Instance], set[str]]:
        """The group's observed list and the set of its ids (rebuilt if the list was replaced).

        Caller holds ``_observed_lock``. Keeps adding an instance O(1) in Python work instead
        of a filter over the whole group per create (quadratic: 5000 creates took ~13 s). The
        set is trusted only while the list is the one it was built from, at the same length.
        """
        current = ctx.observed.get(group, [])
        cached = self._id_sets.get((id(ctx), group))
        if cached is None or cached[0] is not current or len(cached[1]) != len(current):
            cached = (current, {i.id for i in current})
        return cached

    def _observe_add(self, hooks: GroupHooks | None, group: str, inst: Instance) -> None:
        if hooks is None:
            return
        ctx = hooks.ctx
        with self._observed_lock:
            current, ids = self._ids(ctx, group)
            if inst.id in ids:
                updated = [*(i for i in current if i.id != inst.id), inst]
            else:
                updated = [*current, inst]  # a new list, as before: readers keep their snapshot
                ids.add(inst.id)
            ctx.observed[group] = updated
            self._id_sets[(id(ctx), group)] = (updated, ids)

    def _observe_remove(self, hooks: GroupHooks | None, group: str, inst: Instance) -> None:
        if hooks is None:
            return
        ctx = hooks.ctx
        with self._observed_lock:
            current, ids = self._ids(ctx, group)
            if inst.id in ids:
                updated = [i for i in current if i.id != inst.id]
                ids.discard(inst.id)
            else:
                updated = list(current)
            ctx.observed[group] = updated
            self._id_sets[(id(ctx), group)] = (updated, ids)

    # -- the halves of a change --------------------------------------------------------------

    def _create(self, change: Change, deadline: float, *, gate: bool = True) -> Instance:
        hooks = self._hooks(change.group)
        planned = change.after
        assert planned is not None
        member: MemberSpec = planned
        if hooks is not None and not hooks.ctx.destroying:
            role, ctx = hooks.role, hooks.ctx
            hooked: MemberSpec = self._call(lambda: role.before_create(ctx, planned), deadline)
            if hooked.spec_hash != member.spec_hash or hooked.name != member.name:
                raise PermanentError(
                    f"role {role.name!r} bug: before_create changed the spec of {member.member}",
                    hint="a role may add runtime files (in_spec=False) only",
                )
            member = hooked
        inst = self._call(lambda: self.provider.create(member), deadline, "create")
        self._check_created(member, inst)
        self._observe_add(hooks, change.group, inst)
        if gate and hooks is not None:
            self._after_create(hooks.role, hooks.ctx, member, inst, deadline)
        return inst

    def _after_create(
        self, role: AnyRole, ctx: AnyContext, member: MemberSpec, inst: Instance, deadline: float
    ) -> None:
        self._call(lambda: role.after_create(ctx, member, inst), deadline)

    def _check_created(self, member: MemberSpec, inst: Instance) -> None:
        if inst.name != member.name or not member.labels.items() <= dict(inst.labels).items():
            raise PermanentError(
                f"provider {self.provider.name!r} bug: asked to create {member.name} with labels "
                f"{member.labels}, it returned {inst.name} with labels {dict(inst.labels)}"
            )

    def _delete(self, change: Change, deadline: float) -> None:
        hooks = self._hooks(change.group)
        inst = change.before
        assert inst is not None
        if hooks is not None and not hooks.ctx.destroying:
            role, ctx = hooks.role, hooks.ctx
            self._call(lambda: role.before_delete(ctx, inst), deadline)
        self._call(lambda: self.provider.delete(inst), deadline, "delete")
        self._observe_remove(hooks, change.group, inst)

    def _update(self, change: Change, deadline: float) -> None:
        """Labels in place: the instance is kept (no role hook: nothing about the member changes)."""
        updater = label_updater(self.provider)
        inst, member = change.before, change.after
        assert inst is not None and member is not None
        if updater is None:
            raise PermanentError(f"provider {self.provider.name!r} cannot update labels in place")
        labels = member.labels
        updated = self._call(lambda: updater.update_labels(inst, labels), deadline, "update")
        if not labels.items() <= dict(updated.labels).items():
            raise PermanentError(f"provider {self.provider.name!r} bug: asked to set labels {labels} on {inst.name}, "
                                 f"it returned {dict(updated.labels)}")
        self._observe_add(self._hooks(change.group), change.group, updated)

    def _run(self, change: Change, *, gate: bool = True) -> None:
        deadline = time.monotonic() + self.retry.change_timeout
        if change.action is Action.CREATE:
            self._create(change, deadline, gate=gate)
        elif change.action is Action.DELETE:
            self._delete(change, deadline)
        elif change.action is Action.UPDATE:
            self._update(change, deadline)
        elif change.order is Order.CREATE_FIRST:
            self._create(change, deadline, gate=gate)
            self._delete(change, deadline)
        else:
            self._delete(change, deadline)
            self._create(change, deadline, gate=gate)

    def _attempt(self, change: Change, result: ApplyResult, *, gate: bool = True) -> bool:
        self.reporter.started(change)
        start = time.monotonic()
        try:
            self._run(change, gate=gate)
        except InfraError as exc:
            result.failed.append((change, exc))
            self.reporter.failed(change, exc)
            return False
        except Exception as exc:  # a plugin bug: report it as such, keep the other changes going
            err = PermanentError(f"unexpected {type(exc).__name__} in {change.action.value} of "
                                 f"{change.member}: {exc}")
            err.__cause__ = exc
            result.failed.append((change, err))
            self.reporter.failed(change, err)
            return False
        result.applied.append(change)
        self.reporter.finished(change, time.monotonic() - start)
        return True

    # -- groups ----------------------------------------------------------------------------------

    def _preflight(self, group: str) -> None:
        hooks = self._hooks(group)
        if hooks is not None and not hooks.ctx.destroying:
            role, ctx = hooks.role, hooks.ctx
            deadline = time.monotonic() + self.retry.change_timeout
            self._call(lambda: role.preflight(ctx), deadline)

    def _cattle(self, gp: GroupPlan, result: ApplyResult, pool: ThreadPoolExecutor) -> None:
        try:
            self._preflight(gp.group)
        except InfraError as exc:
            for change in gp.changes:
                result.failed.append((change, exc))
            self.reporter.failed(gp.changes[0], exc)
            return
        self._parallel(gp.changes, result, pool)

    def _parallel(self, changes: tuple[Change, ...], result: ApplyResult, pool: ThreadPoolExecutor) -> None:
        # ``concurrency`` workers each take the next change in plan order until none is left
        # or ``stop`` is set: at most ``concurrency`` in flight, as with one task per change,
        # without a wake-up of this thread per change (GIL hand-offs that dominated wall time).
        queue = deque(changes)

        def worker() -> None:
            while not self.stop.is_set():
                try:
                    change = queue.popleft()  # atomic: no two workers take the same change
                except IndexError:
                    return
                self._attempt(change, result)

        workers = [pool.submit(worker) for _ in range(min(self.concurrency, len(queue)))]
        wait(workers)
        if queue:  # stop was set: what never started is skipped
            result.skipped.extend(queue)

    def _quorum(self, gp: GroupPlan, result: ApplyResult, pool: ThreadPoolExecutor) -> None:
        hooks = self._hooks(gp.group)
        if gp.bootstrap and hooks is not None:
            role, ctx = hooks.role, hooks.ctx
            ctx.bootstrapping = True
            try:
                futures = [pool.submit(self._attempt, c, result, gate=False) for c in gp.changes]
                if not all(f.result() for f in futures):
                    return
                for change in gp.changes:
                    assert change.after is not None
                    member = change.after
                    inst = next(i for i in ctx.observed.get(gp.group, []) if i.name == member.name)
                    deadline = time.monotonic() + self.retry.change_timeout
                    try:
                        self._after_create(role, ctx, member, inst, deadline)
                    except InfraError as exc:
                        result.failed.append((change, exc))
                        self.reporter.failed(change, exc)
                        return
            finally:
                ctx.bootstrapping = False
            return
        for i, change in enumerate(gp.changes):
            if self.stop.is_set():
                result.skipped.extend(gp.changes[i:])
                return
            try:
                self._preflight(gp.group)
            except InfraError as exc:
                result.failed.append((change, exc))
                self.reporter.failed(change, exc)
                result.skipped.extend(gp.changes[i + 1 :])
                return
            if not self._attempt(change, result):
                result.skipped.extend(gp.changes[i + 1 :])
                return

    def execute(self, plan: Plan) -> ApplyResult:
        """Carry out ``plan``; never raises for a failed change (see ``ApplyResult.failed``)."""
        result = ApplyResult()
        start = time.monotonic()
        self.reporter.begin(plan)
        try:
            with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="infra-change") as pool:
                for whole in plan.groups:
                    # held changes are shown, never carried out; labels change in place, in
                    # parallel, after the group's other changes (no preflight: no member changes)
                    changes = whole.actionable
                    updates = tuple(c for c in changes if c.action is Action.UPDATE)
                    gp = replace(whole, changes=tuple(c for c in changes if c.action is not Action.UPDATE))
                    if self.stop.is_set():
                        result.skipped.extend(changes)
                        continue
                    if gp.changes and gp.policy == UpdatePolicy.QUORUM.value and not plan.destroy:
                        self._quorum(gp, result, pool)
                    elif gp.changes:
                        self._cattle(gp, result, pool)
                    if result.quorum_lost is not None:
                        break
                    if updates and not (result.failed and gp.policy == UpdatePolicy.QUORUM.value):
                        self._parallel(updates, result, pool)
        finally:
            result.seconds = time.monotonic() - start
            self.reporter.end()
        return result
