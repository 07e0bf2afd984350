"""The reconcile pass: observe → expand → plan → (apply). One function for every entry point.

``infra plan`` is a pass without apply, ``infra apply`` one pass, ``infra destroy`` a pass whose
desired state is empty, and the daemon runs passes in a loop — all through :class:`Engine`, with
no second code path (controller-runtime's level-triggered contract: every pass re-reads the
world from the provider, the only source of truth).

An :class:`Engine` is wired from a :class:`~reconciler.stack.Stack` by :meth:`Engine.open`, which
finds the roles through entry points (:mod:`reconciler.registry`), checks the groups against
them (settings, a size the role cannot run) *before* the provider is opened, then opens the
provider with its settings.

The pass is a value, with no state kept in the engine between its steps: :meth:`Engine.plan`
returns a :class:`PlannedPass` (what was observed, each member's health, the problems, the plan,
and a quorum group's refusal), :meth:`Engine.apply` takes it, and :meth:`Engine.reconcile` (plan,
then apply) returns a :class:`PassResult` with the outcome, the counts a daemon reports, and
when to come back (``requeue_after``), like a controller-runtime ``Result``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from reconciler import fieldpath, pipeline, registry
from reconciler.errors import ConfigError, InfraError, QuorumLostError, StalePlanError
from reconciler.executor import ApplyResult, Executor, NullReporter, Reporter
from reconciler.image import ImageSpec, pinned, with_image
from reconciler.model import Health, Instance, MemberSpec, Problem, stack_selector
from reconciler.paths import stack_dir, state_root
from reconciler.plan import Plan
from reconciler.planner import GroupDesire, member_sort_key
from reconciler.planner import plan as make_plan
from reconciler.provider import Provider, image_store
from reconciler.retry import RetryPolicy
from reconciler.role import AnyContext, AnyRole, MetricsTarget, RoleContext, UpdatePolicy
from reconciler.stack import Stack

Observed = dict[str, list[Instance]]


@dataclass(frozen=True)
class PlannedPass:
    """A planned pass: everything :meth:`Engine.apply` needs, made by :meth:`Engine.plan`.

    ``refusal`` is set when a quorum group with changes refused them at plan time (its
    ``preflight`` raised QuorumLostError): applying would change nothing, so the CLI stops before
    asking and the daemon reports it.
    """

    plan: Plan
    observed: Observed
    health: Mapping[str, Health] = field(default_factory=dict)
    refusal: InfraError | None = None
    #: each group's desired members' spec hashes (group → member → hash): what is current
    desired: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def problems(self) -> tuple[Problem, ...]:
        return self.plan.problems

    @property
    def empty(self) -> bool:
        """Nothing to change and nothing to push."""
        return self.plan.empty

    def counts(self) -> dict[str, int]:
        """Instances observed per group."""
        return {group: len(insts) for group, insts in self.observed.items()}


@dataclass
class PassResult:
    """What one reconcile pass did, and when the next should run (None: at the usual interval).

    ``observed`` counts the instances of each group the pass observed (empty when it could not
    observe); ``outcome`` is one word for logs and metrics.
    """

    plan: Plan
    applied: ApplyResult | None
    error: InfraError | None = None
    requeue_after: float | None = None
    seconds: float = 0.0
    observed: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and (self.applied is None or self.applied.ok)

    @property
    def outcome(self) -> str:
        """``quorum_lost``, ``error``, ``interrupted`` (stopped mid-way), ``applied`` or ``ok``."""
        if isinstance(self.error, QuorumLostError):
            return "quorum_lost"
        if self.error is not None:
            return "error"
        if self.applied is not None and self.applied.skipped:
            return "interrupted"
        return "applied" if not self.plan.empty else "ok"


@dataclass
class MemberStatus:
    member: str
    name: str
    id: str
    address: str | None
    status: str
    healthy: str
    spec_current: bool


@dataclass
class GroupStatus:
    name: str
    role: str
    size: int
    members: list[MemberStatus] = field(default_factory=list)
    extra: Mapping[str, Any] = field(default_factory=dict)


#: Threads that run the roles' health checks that do I/O, shared by every engine of the process
#: (a daemon's stacks included), created on first use: a pass starts no thread of its own.
HEALTH_THREADS = 32
_health_pool: ThreadPoolExecutor | None = None
_health_pool_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _health_pool
    with _health_pool_lock:
        if _health_pool is None:
            _health_pool = ThreadPoolExecutor(max_workers=HEALTH_THREADS, thread_name_prefix="infra-health")
        return _health_pool


def _parallel_health(checks: list[tuple[AnyRole, AnyContext, Instance]]) -> dict[str, Health]:
    """Run each ``role.health(ctx, inst)`` on the shared health threads; verdicts by instance id.

    Up to ``HEALTH_THREADS`` tasks each take the next check until none is left (one task per
    check cost a thread hand-off per instance, which dominated a no-op plan). If checks raise,
    the exception of the first failing check in ``checks`` order is raised, as
    ``ThreadPoolExecutor.map`` would.
    """
    results: list[Health | None] = [None] * len(checks)
    errors: dict[int, BaseException] = {}
    todo = iter(range(len(checks)))
    take = threading.Lock()

    def work() -> None:
        while True:
            with take:
                i = next(todo, None)
            if i is None:
                return
            role, ctx, inst = checks[i]
            try:
                results[i] = role.health(ctx, inst)
            except BaseException as exc:  # re-raised in the caller's thread below
                errors[i] = exc

    pool = _pool()
    for future in [pool.submit(work) for _ in range(min(HEALTH_THREADS, len(checks)))]:
        future.result()
    if errors:
        raise errors[min(errors)]
    verdicts: dict[str, Health] = {}
    for (_, _, inst), verdict in zip(checks, results, strict=True):
        assert verdict is not None
        verdicts[inst.id] = verdict
    return verdicts


@dataclass
class _Checked:
    """What :meth:`Engine._validate` found."""

    problems: list[Problem]
    expanded: dict[str, list[MemberSpec]]
    images: list[pipeline.ImageState]


class Engine:
    """A stack wired to its provider and roles. Not thread-safe: one pass at a time."""

    def __init__(
        self,
        stack: Stack,
        provider: Provider,
        roles: Mapping[str, AnyRole],
        configs: Mapping[str, Any],
        *,
        state_dir: Path,
        source: str = "",
        log: Callable[[str], None] = lambda message: None,
        concurrency: int = 50,
        retry: RetryPolicy | None = None,
        image_root: Path | None = None,
        declared: tuple[Problem, ...] = (),
    ) -> None:
        self.stack = stack
        self.provider = provider
        self.roles = dict(roles)
        self.configs = dict(configs)
        self.state_dir = state_dir
        self.source = source
        self.log = log
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        #: where built images are cached (``<state root>/images``, shared by every stack)
        self.image_root = image_root or state_dir
        #: what the roles found in the declaration alone (Role.check): warnings, by now
        self.declared = declared

    # -- wiring --------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        stack: Stack,
        *,
        source: str = "",
        root: Path | None = None,
        log: Callable[[str], None] = lambda message: None,
        concurrency: int = 50,
        retry: RetryPolicy | None = None,
    ) -> Engine:
        """Find the roles, check the groups, then open the provider. Changes nothing.

        Every error in the declaration that needs no provider (a role's settings, a size the role
        cannot run) is found before the provider is opened, so no directory or lock exists yet.
        """
        roles: dict[str, AnyRole] = {}
        configs: dict[str, Any] = {}
        declared: list[Problem] = []
        for i, group in enumerate(stack.groups):
            prefix = f"groups[{i}]"
            role = registry.role(group.role, where=fieldpath.where(stack, source, f"{prefix}.role"))
            try:
                configs[group.name] = role.parse(group.config)
            except ValidationError as exc:
                found = fieldpath.validation_problems(exc, known=role.config_model.model_fields)
                config = f"{prefix}.config"
                raise ConfigError("; ".join(
                    f"{fieldpath.where(stack, source, fieldpath.join(config, field or '(top level)'))}: {msg}"
                    for field, msg in found)) from None
            declared.extend(p.model_copy(update={"field": fieldpath.join(prefix, p.field)})
                            for p in role.check(group, configs[group.name]))
            roles[group.name] = role
        errors = [p for p in declared if p.is_error]
        if errors:
            raise ConfigError("; ".join(f"{fieldpath.where(stack, source, p.field)}: {p.message}" for p in errors))
        root = root or state_root()
        sdir = stack_dir(stack.name, root)
        provider_cls = registry.provider_class(stack.provider, where=fieldpath.where(stack, source, "provider"))
        try:
            provider = provider_cls.open(stack.provider_config, stack=stack.name, state_dir=sdir)
        except ConfigError as exc:
            if exc.field:
                message = exc.message.removeprefix(f"{exc.field}: ")
                raise ConfigError(f"{fieldpath.where(stack, source, exc.field)}: {message}", hint=exc.hint,
                                  field=exc.field) from None
            raise ConfigError(f"{fieldpath.where(stack, source, '')}: {exc.message}", hint=exc.hint) from None
        return cls(
            stack, provider, roles, configs, state_dir=sdir, source=source, log=log,
            concurrency=concurrency, retry=retry, image_root=root, declared=tuple(declared),
        )

    def describe(self, problem: Problem) -> str:
        """``FILE:LINE: FIELD: message`` for a problem of this stack (:mod:`reconciler.fieldpath`)."""
        return f"{fieldpath.where(self.stack, self.source, problem.field)}: {problem.message}"

    def close(self) -> None:
        self.provider.close()

    def context(self, group: str, observed: Observed, *, destroying: bool = False) -> AnyContext:
        """The context of ``group``'s role hooks over ``observed`` (which the executor keeps current)."""
        return RoleContext(
            stack=self.stack,
            group=self.stack.group(group),
            config=self.configs[group],
            provider=self.provider,
            state_dir=self.state_dir,
            observed=observed,
            destroying=destroying,
            log=self.log,
            metrics_of=self._metrics_of,
        )

    def _metrics_of(self, group: str) -> list[MetricsTarget]:
        if group not in self.roles:
            return []
        return self.roles[group].metrics(self.context(group, {}))

    # -- the pass, step by step ------------------------------------------------------------------

    def observe(self, reporter: Reporter | None = None) -> Observed:
        """One provider listing for the whole stack, split by group (members sorted)."""
        try:
            instances = self.provider.list(stack_selector(self.stack.name))
        except InfraError as exc:
            if reporter is not None:
                reporter.provider_error("list", exc)
            raise
        observed: Observed = {}
        for inst in instances:
            if inst.owned_by(self.stack.name):
                observed.setdefault(inst.group or "", []).append(inst)
        for insts in observed.values():
            insts.sort(key=lambda i: (member_sort_key(i.member or ""), i.id))
        return observed

    def desired(self, observed: Observed) -> list[GroupDesire]:
        """Each group's desired members, booting their pipeline images (as :meth:`plan` diffs them)."""
        expanded = {g.name: self.roles[g.name].expand(self.context(g.name, observed)) if g.size else []
                    for g in self.stack.groups}
        self._resolve_images(expanded)
        return [GroupDesire(g.name, self.roles[g.name].policy, expanded[g.name]) for g in self.stack.groups]

    def health(self, observed: Observed) -> dict[str, Health]:
        """Each alive instance's health by its role; checks that do I/O run in parallel."""
        verdicts: dict[str, Health] = {}
        slow: list[tuple[AnyRole, AnyContext, Instance]] = []
        for group in self.stack.groups:
            role = self.roles[group.name]
            ctx = self.context(group.name, observed)
            inline = not role.probes(ctx)
            for inst in observed.get(group.name, []):
                if not inst.alive:
                    continue
                if inline:
                    verdicts[inst.id] = role.health(ctx, inst)
                else:
                    slow.append((role, ctx, inst))
        if slow:
            verdicts.update(_parallel_health(slow))
        return verdicts

    def validate(self) -> list[Problem]:
        """Every problem the roles, the image pipeline and the provider can see before anything changes."""
        return self._validate({}).problems

    def _validate(self, observed: Observed, *, provider_checks: bool = True,
                  reporter: Reporter | None = None) -> _Checked:
        """The problems, each group's members as expanded to find them, and the pipeline images.

        Expanding is the costliest step of a plan after the provider call (a MemberSpec per
        member), so :meth:`plan` diffs against these members instead of expanding again.
        """
        problems: list[Problem] = list(self.declared)
        expanded: dict[str, list[MemberSpec]] = {}
        index: dict[str, int] = {}
        for i, group in enumerate(self.stack.groups):
            index[group.name] = i
            ctx = self.context(group.name, observed)
            for p in self.roles[group.name].validate(ctx):
                problems.append(p if p.field.startswith("groups") else
                                p.model_copy(update={"field": fieldpath.join(f"groups[{i}]", p.field)}))
            if not any(p.is_error for p in problems) and group.size:
                expanded[group.name] = self.roles[group.name].expand(ctx)
        if any(p.is_error for p in problems):
            return _Checked(problems, expanded, [])
        images = self._resolve_images(expanded)
        states: list[pipeline.ImageState] = []
        store = image_store(self.provider)
        if images and store is not None:
            states = pipeline.survey(store, images.values(), self.image_root)
            problems.extend(pipeline.problems(store, states, lambda g: f"groups[{index[g]}].image"))
        if provider_checks and not any(p.is_error for p in problems):
            try:
                found = self.provider.validate([m for ms in expanded.values() for m in ms])
            except InfraError as exc:
                if reporter is not None:
                    reporter.provider_error("validate", exc)
                raise
            seen = {(p.field, p.message) for p in problems}
            for p in found:  # one format for every field (groups[i]), each problem once
                p = p.model_copy(update={"field": fieldpath.normalize(self.stack, p.field)})
                if (p.field, p.message) not in seen:
                    seen.add((p.field, p.message))
                    problems.append(p)
        return _Checked(problems, expanded, states)

    def _resolve_images(self, expanded: dict[str, list[MemberSpec]]) -> dict[str, ImageSpec]:
        """Give each group without a pinned image the pipeline image of its own LinuxKit document.

        Only on a provider that stores images (:func:`reconciler.provider.image_store`); the
        members in ``expanded`` are replaced by members booting that image.
        """
        store = image_store(self.provider)
        if store is None:
            return {}
        images: dict[str, ImageSpec] = {}
        for group, members in expanded.items():
            if not members or any(pinned(m) for m in members):
                continue
            try:
                spec = ImageSpec.of(group, members, fmt=store.image_format, metadata=store.image_metadata)
            except ValueError as exc:
                field = f"groups[{[g.name for g in self.stack.groups].index(group)}]"
                raise ConfigError(f"{fieldpath.where(self.stack, self.source, field)}: {exc}") from None
            images[group] = spec
            expanded[group] = with_image(members, spec)
        return images

    def images(self) -> list[pipeline.ImageState]:
        """The declaration's pipeline images and whether the provider has each (read-only).

        One image lookup per distinct digest and nothing else: an image depends on the groups'
        services alone, so no instance is observed and the provider validates nothing.
        """
        return self._validate({}, provider_checks=False).images

    def push_images(self, images: list[ImageSpec], reporter: Reporter | None = None) -> None:
        """Build and push ``images`` (idempotent by digest). Raises InfraError when one fails."""
        store = image_store(self.provider)
        if not images or store is None:
            return
        report = reporter or NullReporter()
        pipeline.push(store, images, self.image_root, policy=self.retry, log=report.note, upload=report.upload)

    def plan(self, *, destroy: bool = False, reporter: Reporter | None = None) -> PlannedPass:
        """Observe, check, diff, and ask each quorum group with changes whether it could change now.

        Raises ConfigError when validation finds an error. The plan lists the pipeline images the
        provider lacks (pushed first by :meth:`apply`). Read-only.
        """
        observed = self.observe(reporter)
        instances = [i for v in observed.values() for i in v]
        if destroy:
            groups = [GroupDesire(g.name, self.roles[g.name].policy, []) for g in self.stack.groups]
            return PlannedPass(make_plan(self.stack.name, groups, instances, destroy=True), observed)
        checked = self._validate(observed, reporter=reporter)
        problems, expanded = checked.problems, checked.expanded
        errors = [p for p in problems if p.is_error]
        if errors:
            raise ConfigError("; ".join(self.describe(p) for p in errors))
        desired = [GroupDesire(g.name, self.roles[g.name].policy, expanded.get(g.name, []))
                   for g in self.stack.groups]
        health = self.health(observed)
        result = make_plan(self.stack.name, desired, instances, health)
        the_plan = Plan(
            stack=result.stack, groups=result.groups, problems=tuple(problems),
            observed=result.observed, destroy=result.destroy,
            images=tuple(s.spec for s in checked.images if not s.present),
        )
        wanted = {g: {m.member: m.spec_hash for m in ms} for g, ms in expanded.items()}
        return PlannedPass(the_plan, observed, health, self._refusal(the_plan, observed), wanted)

    def _refusal(self, the_plan: Plan, observed: Observed) -> InfraError | None:
        """A quorum group's refusal of its pending changes (its preflight, read-only), if any.

        Only a lost quorum refuses here; anything else a preflight raises (an election under way)
        is left to the executor, which waits and retries it.
        """
        for gp in the_plan.groups:
            if the_plan.destroy or gp.bootstrap or gp.policy != UpdatePolicy.QUORUM.value:
                continue
            try:
                self.roles[gp.group].preflight(self.context(gp.group, observed))
            except QuorumLostError as exc:
                return exc
            except InfraError:
                continue
        return None

    def check_saved(self, planned: PlannedPass, saved_stack: str, saved_destroy: bool, saved_keys: list[Any]) -> None:
        """Refuse a saved plan that no longer matches what a fresh plan would do."""
        plan = planned.plan
        if saved_stack != self.stack.name:
            raise StalePlanError(f"the saved plan is for stack {saved_stack!r}, not {self.stack.name!r}")
        if saved_destroy != plan.destroy:
            raise StalePlanError("the saved plan is a destroy plan" if saved_destroy else
                                 "the saved plan is not a destroy plan")
        if [list(k) for k in saved_keys] != [list(k) for k in plan.keys()]:  # noqa: SIM118
            raise StalePlanError(
                "the saved plan is stale: what is observed changed since it was made "
                f"(saved: {len(saved_keys)} changes, now: {len(plan.changes)})",
                hint="run 'infra plan' again and review the new plan",
            )

    def apply(
        self, planned: PlannedPass, *, reporter: Reporter | None = None, stop: threading.Event | None = None
    ) -> ApplyResult:
        """Execute a pass planned by :meth:`plan` on this engine. Caller holds the stack lock.

        The images the plan pushes go first; when one cannot be pushed, InfraError is raised and
        no member is changed. The planned pass is not modified.
        """
        plan = planned.plan
        self.push_images(list(plan.images), reporter)
        observed = {k: list(v) for k, v in planned.observed.items()}
        contexts = {
            g.name: (self.roles[g.name], self.context(g.name, observed, destroying=plan.destroy))
            for g in self.stack.groups
        }
        executor = Executor(
            self.provider, contexts, concurrency=self.concurrency, retry=self.retry,
            reporter=reporter, stop=stop,
        )
        return executor.execute(plan)

    def reconcile(
        self, *, reporter: Reporter | None = None, stop: threading.Event | None = None, dry_run: bool = False,
        on_planned: Callable[[PlannedPass], None] | None = None,
    ) -> PassResult:
        """One level-triggered pass: plan, then apply unless ``dry_run``. Never raises InfraError.

        ``on_planned`` sees the planned pass before anything is applied (the daemon's page shows
        what was observed, and what is about to change, while the changes run).
        """
        start = time.monotonic()

        def result(plan: Plan, applied: ApplyResult | None = None, error: InfraError | None = None,
                   requeue: float | None = None, counts: dict[str, int] | None = None) -> PassResult:
            return PassResult(plan, applied, error=error, requeue_after=requeue, seconds=time.monotonic() - start,
                              observed=counts or {})

        try:
            planned = self.plan(reporter=reporter)
        except InfraError as exc:
            return result(Plan(self.stack.name), error=exc)
        counts = {g.name: len(planned.observed.get(g.name, [])) for g in self.stack.groups}
        if on_planned is not None:
            on_planned(planned)
        if planned.refusal is not None:
            return result(planned.plan, error=planned.refusal, counts=counts)
        if dry_run or planned.plan.empty:
            return result(planned.plan, counts=counts)
        try:
            applied = self.apply(planned, reporter=reporter, stop=stop)
        except InfraError as exc:  # an image could not be pushed: nothing was changed
            return result(planned.plan, error=exc, counts=counts)
        error: InfraError | None = applied.quorum_lost
        if error is None and applied.failed:
            error = applied.failed[0][1]
        return result(planned.plan, applied, error, 0.0 if applied.ok else None, counts)

    # -- read-only views -------------------------------------------------------------------------

    def status(self) -> list[GroupStatus]:
        """Every group's members as observed now, with health, and its role's facts."""
        observed = self.observe()
        health = self.health(observed)
        desired = {d.name: {m.member: m.spec_hash for m in d.members} for d in self.desired(observed)}
        return self.status_of(observed, health, desired)

    def status_of(self, observed: Observed, health: Mapping[str, Health],
                  desired: Mapping[str, Mapping[str, str]]) -> list[GroupStatus]:
        """The status of what a pass observed (``PlannedPass``), with the roles' facts about it."""
        out = []
        for group in self.stack.groups:
            role = self.roles[group.name]
            gs = GroupStatus(group.name, group.role, group.size)
            for inst in observed.get(group.name, []):
                want = desired.get(group.name, {}).get(inst.member or "")
                verdict = health.get(inst.id, Health.UNHEALTHY if not inst.alive else Health.UNKNOWN)
                gs.members.append(MemberStatus(
                    member=inst.member or "", name=inst.name, id=inst.id, address=inst.address,
                    status=inst.status.value, healthy=verdict.value,
                    spec_current=want is not None and want == inst.spec_hash,
                ))
            try:
                gs.extra = role.status(self.context(group.name, observed))
            except InfraError as exc:
                gs.extra = {"error": str(exc)}
            out.append(gs)
        return out

    def links(self) -> list[tuple[str, str, str]]:
        """(from group, to group, what for) for every link a role declares (``Role.links``)."""
        out = []
        for group in self.stack.groups:
            for to, why in self.roles[group.name].links(self.context(group.name, {})):
                out.append((group.name, to, why))
        return out

    def env(self) -> dict[str, str]:
        observed = self.observe()
        env: dict[str, str] = {}
        for group in self.stack.groups:
            env.update(self.roles[group.name].env(self.context(group.name, observed)))
        return env
