"""The reconcile pass: observe → expand → plan → (apply). One function for every entry point.

``infra plan`` is a pass without apply, ``infra apply`` one pass, ``infra destroy`` a pass whose
desired state is empty, and the daemon runs passes in a loop — all through :class:`Engine`, with
no second code path (controller-runtime's level-triggered contract: every pass re-reads the
world from the provider, the only source of truth).

An :class:`Engine` is wired from a :class:`~reconciler.stack.Stack` by :meth:`Engine.open`, which
finds the provider and the roles through entry points (:mod:`reconciler.registry`) and validates
their settings; :meth:`Engine.reconcile` returns a :class:`PassResult` that says when to come
back (``requeue_after``), like a controller-runtime ``Result``.
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

from reconciler import pipeline, registry
from reconciler.errors import ConfigError, InfraError, StalePlanError
from reconciler.executor import ApplyResult, Executor, NullReporter, Reporter, RetryPolicy
from reconciler.image import ImageSpec, pinned, with_image
from reconciler.loader import validation_message
from reconciler.model import Health, Instance, MemberSpec, Problem, stack_selector
from reconciler.paths import stack_dir, state_root
from reconciler.plan import Plan
from reconciler.planner import GroupDesire, member_sort_key
from reconciler.planner import plan as make_plan
from reconciler.provider import Provider, image_store
from reconciler.role import MetricsTarget, Role, RoleContext
from reconciler.stack import Stack

Observed = dict[str, list[Instance]]


@dataclass
class PassResult:
    """What one reconcile pass did, and when the next should run (None: at the usual interval)."""

    plan: Plan
    applied: ApplyResult | None
    error: InfraError | None = None
    requeue_after: float | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and (self.applied is None or self.applied.ok)


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


def _parallel_health(checks: list[tuple[Role, RoleContext, Instance]], *, workers: int) -> dict[str, Health]:
    """Run each ``role.health(ctx, inst)`` on ``workers`` threads; verdicts by instance id.

    Each worker takes the next check until none is left (one task per check cost a thread
    hand-off per instance, which dominated a no-op plan). If checks raise, the exception of the
    first failing check in ``checks`` order is raised, as ``ThreadPoolExecutor.map`` would.
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

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(work) for _ in range(workers)]:
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
        roles: Mapping[str, Role],
        configs: Mapping[str, Any],
        *,
        state_dir: Path,
        source: str = "",
        log: Callable[[str], None] = lambda message: None,
        concurrency: int = 50,
        retry: RetryPolicy | None = None,
        image_root: Path | None = None,
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
        self._observed: Observed = {}

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
        """Find the provider and roles, validate their settings, connect. Changes nothing."""
        where = f"{source}: " if source else ""
        roles: dict[str, Role] = {}
        configs: dict[str, Any] = {}
        for i, group in enumerate(stack.groups):
            role = registry.role(group.role, where=f"{where}groups[{i}].role ({group.name})")
            try:
                configs[group.name] = role.config_model.model_validate(group.config)
            except ValidationError as exc:
                raise ConfigError(
                    f"{where}group {group.name!r} (role {group.role}): "
                    + validation_message(exc, prefix=f"groups[{i}].config")
                ) from None
            roles[group.name] = role
        root = root or state_root()
        sdir = stack_dir(stack.name, root)
        provider_cls = registry.provider_class(stack.provider, where=f"{where}provider")
        try:
            provider = provider_cls.open(stack.provider_config, stack=stack.name, state_dir=sdir)
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc.message}", hint=exc.hint) from None
        return cls(
            stack, provider, roles, configs, state_dir=sdir, source=source, log=log,
            concurrency=concurrency, retry=retry, image_root=root,
        )

    def close(self) -> None:
        self.provider.close()

    def context(self, group: str, observed: Observed | None = None, *, destroying: bool = False) -> RoleContext:
        return RoleContext(
            stack=self.stack,
            group=self.stack.group(group),
            config=self.configs[group],
            provider=self.provider,
            state_dir=self.state_dir,
            observed=observed if observed is not None else self._observed,
            destroying=destroying,
            log=self.log,
            metrics_of=self._metrics_of,
        )

    def _metrics_of(self, group: str) -> list[MetricsTarget]:
        if group not in self.roles:
            return []
        return self.roles[group].metrics(self.context(group))

    # -- the pass, step by step ------------------------------------------------------------------

    def observe(self) -> Observed:
        """One provider listing for the whole stack, split by group (members sorted)."""
        instances = self.provider.list(stack_selector(self.stack.name))
        observed: Observed = {}
        for inst in instances:
            if inst.owned_by(self.stack.name):
                observed.setdefault(inst.group or "", []).append(inst)
        for insts in observed.values():
            insts.sort(key=lambda i: (member_sort_key(i.member or ""), i.id))
        self._observed = observed
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
        slow: list[tuple[Role, RoleContext, Instance]] = []
        for group in self.stack.groups:
            role = self.roles[group.name]
            ctx = self.context(group.name, observed)
            inline = type(role).health is Role.health
            for inst in observed.get(group.name, []):
                if not inst.alive:
                    continue
                if inline:
                    verdicts[inst.id] = role.health(ctx, inst)
                else:
                    slow.append((role, ctx, inst))
        if slow:
            verdicts.update(_parallel_health(slow, workers=min(32, len(slow))))
        return verdicts

    def validate(self) -> list[Problem]:
        """Every problem the roles, the image pipeline and the provider can see before anything changes."""
        return self._validate(self._observed).problems

    def _validate(self, observed: Observed, *, provider_checks: bool = True) -> _Checked:
        """The problems, each group's members as expanded to find them, and the pipeline images.

        Expanding is the costliest step of a plan after the provider call (a MemberSpec per
        member), so :meth:`plan` diffs against these members instead of expanding again.
        """
        problems: list[Problem] = []
        expanded: dict[str, list[MemberSpec]] = {}
        index: dict[str, int] = {}
        for i, group in enumerate(self.stack.groups):
            index[group.name] = i
            ctx = self.context(group.name, observed)
            for p in self.roles[group.name].validate(ctx):
                problems.append(p if p.field.startswith("groups") else
                                p.model_copy(update={"field": f"groups[{i}].{p.field}".rstrip(".")}))
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
            problems.extend(self.provider.validate([m for ms in expanded.values() for m in ms]))
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
                raise ConfigError(f"{self.source + ': ' if self.source else ''}{exc}") from None
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
        pipeline.push(store, images, self.image_root, attempts=self.retry.attempts, base=self.retry.base,
                      cap=self.retry.cap, log=report.note, upload=report.upload)

    def plan(self, *, destroy: bool = False) -> Plan:
        """Observe and diff. Raises ConfigError when validation finds an error.

        The plan lists the pipeline images the provider lacks (pushed first by :meth:`apply`).
        """
        observed = self.observe()
        instances = [i for v in observed.values() for i in v]
        if destroy:
            groups = [GroupDesire(g.name, self.roles[g.name].policy, []) for g in self.stack.groups]
            return make_plan(self.stack.name, groups, instances, destroy=True)
        checked = self._validate(observed)
        problems, expanded = checked.problems, checked.expanded
        errors = [p for p in problems if p.is_error]
        if errors:
            where = f"{self.source}: " if self.source else ""
            raise ConfigError(where + "; ".join(f"{p.field}: {p.message}" for p in errors))
        desired = [GroupDesire(g.name, self.roles[g.name].policy, expanded.get(g.name, []))
                   for g in self.stack.groups]
        result = make_plan(self.stack.name, desired, instances, self.health(observed))
        return Plan(
            stack=result.stack, groups=result.groups, problems=tuple(problems),
            observed=result.observed, destroy=result.destroy,
            images=tuple(s.spec for s in checked.images if not s.present),
        )

    def check_saved(self, plan: Plan, saved_stack: str, saved_destroy: bool, saved_keys: list[Any]) -> None:
        """Refuse a saved plan that no longer matches what a fresh plan would do."""
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
        self, plan: Plan, *, reporter: Reporter | None = None, stop: threading.Event | None = None
    ) -> ApplyResult:
        """Execute ``plan`` (made by :meth:`plan` on this engine). Caller holds the stack lock.

        The images the plan pushes go first; when one cannot be pushed, InfraError is raised and
        no member is changed.
        """
        self.push_images(list(plan.images), reporter)
        observed = {k: list(v) for k, v in self._observed.items()}
        contexts = {
            g.name: (self.roles[g.name], self.context(g.name, observed, destroying=plan.destroy))
            for g in self.stack.groups
        }
        executor = Executor(
            self.provider, contexts, concurrency=self.concurrency, retry=self.retry,
            reporter=reporter, stop=stop,
        )
        result = executor.execute(plan)
        self._observed = observed
        return result

    def reconcile(
        self, *, reporter: Reporter | None = None, stop: threading.Event | None = None, dry_run: bool = False
    ) -> PassResult:
        """One level-triggered pass: plan, then apply unless ``dry_run``. Never raises InfraError."""
        start = time.monotonic()
        try:
            plan = self.plan()
        except InfraError as exc:
            return PassResult(Plan(self.stack.name), None, error=exc,
                              requeue_after=None, seconds=time.monotonic() - start)
        if dry_run or plan.empty:
            return PassResult(plan, None, seconds=time.monotonic() - start)
        try:
            applied = self.apply(plan, reporter=reporter, stop=stop)
        except InfraError as exc:  # an image could not be pushed: nothing was changed
            return PassResult(plan, None, error=exc, requeue_after=None, seconds=time.monotonic() - start)
        error: InfraError | None = applied.quorum_lost
        if error is None and applied.failed:
            error = applied.failed[0][1]
        requeue = 0.0 if applied.ok else None
        return PassResult(plan, applied, error=error, requeue_after=requeue, seconds=time.monotonic() - start)

    # -- read-only views -------------------------------------------------------------------------

    def status(self) -> list[GroupStatus]:
        observed = self.observe()
        health = self.health(observed)
        desired = {d.name: {m.member: m for m in d.members} for d in self.desired(observed)}
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
                    spec_current=want is not None and want.spec_hash == inst.spec_hash,
                ))
            try:
                gs.extra = role.status(self.context(group.name, observed))
            except InfraError as exc:
                gs.extra = {"error": str(exc)}
            out.append(gs)
        return out

    def env(self) -> dict[str, str]:
        self.observe()
        env: dict[str, str] = {}
        for group in self.stack.groups:
            env.update(self.roles[group.name].env(self.context(group.name)))
        return env
