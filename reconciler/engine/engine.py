"""The reconcile pass: observe → expand → plan → (apply). One function for every entry point.

``infra plan`` is a pass without apply, ``infra apply`` one pass, ``infra destroy`` a pass whose
desired state is empty, and the daemon runs passes in a loop — all through :class:`Engine`, with
no second code path (controller-runtime's level-triggered contract: every pass re-reads the
world from the provider, the only source of truth).

An :class:`Engine` is wired from a :class:`~reconciler.core.stack.Stack` by :meth:`Engine.open`, which
finds the roles through entry points (:mod:`reconciler.kit.registry`), checks the groups against
them (settings, a size the role cannot run) *before* the provider is opened, then opens the
provider with its settings.

The pass is a value, with no state kept in the engine between its steps: :meth:`Engine.plan`
returns a :class:`PlannedPass` (what was observed, each member's health, the problems, the plan,
and a quorum group's refusal), :meth:`Engine.apply` takes it, and :meth:`Engine.reconcile` (plan,
then apply) returns a :class:`PassResult` with the outcome, the counts a daemon reports, and
when to come back (``requeue_after``), like a controller-runtime ``Result``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from reconciler.core import fieldpath
from reconciler.core.errors import ConfigError, InfraError, PermanentError, QuorumLostError
from reconciler.core.fieldpath import FieldPath
from reconciler.core.image import ImageRecord, ImageSpec, pinned, with_image
from reconciler.core.model import LABEL_ROLE, Health, Instance, MemberSpec, Problem, stack_selector
from reconciler.core.plan import Plan
from reconciler.core.planner import Conditions, GroupDesire, labels_differ, member_sort_key
from reconciler.core.planner import plan as make_plan
from reconciler.core.stack import Group, Stack
from reconciler.engine import debianbuild, pipeline
from reconciler.engine.binding import GroupBinding, group_labels
from reconciler.engine.executor import ApplyResult, Executor, GroupHooks, NullReporter, Reporter
from reconciler.engine.health import parallel_health
from reconciler.engine.pause import Pause, Pauses
from reconciler.engine.state import StateDir
from reconciler.engine.views import GroupStatus, StackStatus, annotate, status_of
from reconciler.kit import registry
from reconciler.kit.coordination import EtcdTarget
from reconciler.kit.provider import Provider, image_store, label_updater
from reconciler.kit.retry import RetryPolicy
from reconciler.kit.role import AnyContext, AnyRole, MetricsTarget, RoleContext, UpdatePolicy
from reconciler.kit.secretstore import SecretStore

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
    #: stored images a ``destroy --images`` deletes once every member is gone
    images_to_delete: tuple[ImageRecord, ...] = ()
    #: planned by a writer (under the stack's lock), so it may be applied; a read-only plan's
    #: members may carry a throwaway CA's certificates and is never applied
    writing: bool = True
    #: the groups the stack file removes, bound to their roles (their deletions run through them)
    removed: tuple[GroupBinding, ...] = ()
    #: the pauses in force when it was planned, by group (``""``: the whole stack)
    paused: Mapping[str, Pause] = field(default_factory=dict)

    @property
    def problems(self) -> tuple[Problem, ...]:
        return self.plan.problems

    @property
    def empty(self) -> bool:
        """Nothing to change, nothing to push and no image to delete."""
        return self.plan.empty and not self.images_to_delete

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
        state_dir: Path | StateDir,
        source: str = "",
        log: Callable[[str], None] = lambda message: None,
        concurrency: int = 50,
        retry: RetryPolicy | None = None,
        image_root: Path | None = None,
        declared: tuple[Problem, ...] = (),
        secrets: SecretStore | None = None,
        coordination: EtcdTarget | None = None,
    ) -> None:
        """Wire ``stack`` by hand (tests, the conformance suite); :meth:`open` is the usual way.

        ``roles`` and ``configs`` are by group name; ``state_dir`` is the stack's state directory
        (a :class:`StateDir`, or a plain directory used as the stack's own).
        """
        self.stack = stack
        self.provider = provider
        self.bindings: tuple[GroupBinding, ...] = tuple(
            GroupBinding(i, g, roles[g.name], configs[g.name], group_labels(stack, g, roles[g.name]))
            for i, g in enumerate(stack.groups))
        self.state = state_dir if isinstance(state_dir, StateDir) else StateDir(stack.name, path=Path(state_dir))
        #: the stack's private directory (roles keep the stack's CA here); made on first write
        self.state_dir = self.state.path
        self.source = source
        self.log = log
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        #: where built images are cached (``<state root>/images``, shared by every stack)
        self.image_root = image_root or self.state.path
        #: what the roles found in the declaration alone (Role.check): warnings, by now
        self.declared = declared
        #: where the stack's CA and secrets are shared with other machines' writers (None: here)
        self.secrets = secrets
        #: the coordinating etcd the writers of this stack share (its lock and pauses), if any
        self.coordination = coordination
        self._by_name = {b.name: b for b in self.bindings}
        #: whether the pass under way may write the stack's state (see :meth:`plan`)
        self._writing = False

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
        secrets: SecretStore | None = None,
        coordination: EtcdTarget | None = None,
    ) -> Engine:
        """Find the roles, check the groups, then open the provider. Creates and changes nothing.

        Every error in the declaration that needs no provider (a role's settings, a size the role
        cannot run) is found before the provider is opened. No directory or lock is made here:
        the state directory is made on first write (:class:`~reconciler.engine.state.StateDir`).
        """
        roles: dict[str, AnyRole] = {}
        configs: dict[str, Any] = {}
        declared: list[Problem] = []
        for i, group in enumerate(stack.groups):
            at = FieldPath.group(i)
            role = registry.role(group.role, where=fieldpath.where(stack, source, at / "role"))
            try:
                configs[group.name] = role.parse(group.config)
            except ValidationError as exc:
                found = fieldpath.validation_problems(exc, known=role.config_model.model_fields)
                raise ConfigError("; ".join(
                    f"{fieldpath.where(stack, source, at / 'config' / (field or '(top level)'))}: {msg}"
                    for field, msg in found)) from None
            declared.extend(p.model_copy(update={"field": str(at / p.field)})
                            for p in role.check(group, configs[group.name]))
            roles[group.name] = role
        errors = [p for p in declared if p.is_error]
        if errors:
            raise ConfigError("; ".join(f"{fieldpath.where(stack, source, p.field)}: {p.message}" for p in errors))
        state = StateDir(stack.name, root)
        provider_cls = registry.provider_class(stack.provider, where=fieldpath.where(stack, source, "provider"))
        try:
            provider = provider_cls.open(stack.provider_config, stack=stack.name, state_dir=state.path)
        except ConfigError as exc:
            if exc.field:
                message = exc.message.removeprefix(f"{exc.field}: ")
                raise ConfigError(f"{fieldpath.where(stack, source, exc.field)}: {message}", hint=exc.hint,
                                  field=exc.field) from None
            raise ConfigError(f"{fieldpath.where(stack, source, '')}: {exc.message}", hint=exc.hint) from None
        return cls(
            stack, provider, roles, configs, state_dir=state, source=source, log=log,
            concurrency=concurrency, retry=retry, image_root=state.root, declared=tuple(declared), secrets=secrets,
            coordination=coordination,
        )

    @property
    def roles(self) -> dict[str, AnyRole]:
        """Each group's role, by group name."""
        return {b.name: b.role for b in self.bindings}

    @property
    def stores_images(self) -> bool:
        """Whether the provider boots images infra builds and pushes (:class:`ImageStore`)."""
        return image_store(self.provider) is not None

    @property
    def quorum_groups(self) -> list[str]:
        """The groups changed one member at a time (their role's policy is quorum)."""
        return [b.name for b in self.bindings if b.policy == UpdatePolicy.QUORUM]

    def describe(self, problem: Problem) -> str:
        """``FILE:LINE: FIELD: message`` for a problem of this stack (:mod:`reconciler.core.fieldpath`)."""
        return f"{fieldpath.where(self.stack, self.source, problem.field)}: {problem.message}"

    def close(self) -> None:
        self.provider.close()

    def context(self, binding: GroupBinding | str, observed: Observed, *, destroying: bool = False) -> AnyContext:
        """The context of a group's role hooks over ``observed`` (which the executor keeps current)."""
        if isinstance(binding, str):
            binding = self._by_name[binding]
        return RoleContext(
            stack=self.stack,
            group=binding.group,
            config=binding.config,
            provider=self.provider,
            state_dir=self.state_dir,
            observed=observed,
            destroying=destroying,
            writing=self._writing,
            secrets=self.secrets,
            log=self.log,
            metrics_of=self._metrics_of,
        )

    def _metrics_of(self, group: str) -> list[MetricsTarget]:
        binding = self._by_name.get(group)
        if binding is None:
            return []
        return binding.role.metrics(self.context(binding, {}))

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
        expanded = {b.name: self._expand(b, self.context(b, observed)) if b.group.size else []
                    for b in self.bindings}
        self._resolve_images(expanded)
        return [self._desire(b, expanded[b.name]) for b in self.bindings]

    @staticmethod
    def _expand(binding: GroupBinding, ctx: AnyContext) -> list[MemberSpec]:
        """The group's members as its role expands them, each recording the group's labels."""
        labels = binding.labels
        return [m.with_labels(labels) for m in binding.role.expand(ctx)]

    @staticmethod
    def _desire(binding: GroupBinding, members: Sequence[MemberSpec]) -> GroupDesire:
        return GroupDesire(binding.name, binding.policy, members, labels=binding.labels,
                           remediation=binding.group.remediation, removed=binding.removed)

    def health(self, observed: Observed) -> dict[str, Health]:
        """Each alive instance's health by its role; checks that do I/O run in parallel."""
        verdicts: dict[str, Health] = {}
        slow: list[tuple[AnyRole, AnyContext, Instance]] = []
        for binding in self.bindings:
            ctx = self.context(binding, observed)
            inline = not binding.role.probes(ctx)
            for inst in observed.get(binding.name, []):
                if not inst.alive:
                    continue
                if inline:
                    verdicts[inst.id] = binding.role.health(ctx, inst)
                else:
                    slow.append((binding.role, ctx, inst))
        if slow:
            verdicts.update(parallel_health(slow))
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
        for binding in self.bindings:
            ctx = self.context(binding, observed)
            for p in binding.role.validate(ctx):
                problems.append(p if p.field.startswith("groups") else
                                p.model_copy(update={"field": str(binding.path / p.field)}))
            if not any(p.is_error for p in problems) and binding.group.size:
                expanded[binding.name] = self._expand(binding, ctx)
        if any(p.is_error for p in problems):
            return _Checked(problems, expanded, [])
        images = self._resolve_images(expanded)
        states: list[pipeline.ImageState] = []
        store = image_store(self.provider)
        if images and store is not None:
            states = pipeline.survey(store, images.values(), self.image_root)
            problems.extend(pipeline.problems(store, states,
                                              lambda g: str(self._by_name[g].path / "image")))
        if provider_checks and not any(p.is_error for p in problems):
            try:
                found = self.provider.validate([m for ms in expanded.values() for m in ms])
            except InfraError as exc:
                if reporter is not None:
                    reporter.provider_error("validate", exc)
                raise
            seen = {(p.field, p.message) for p in problems}
            for p in found:  # one format for every field (groups[i]), each problem once
                p = p.model_copy(update={"field": str(fieldpath.normalize(self.stack, p.field))})
                if (p.field, p.message) not in seen:
                    seen.add((p.field, p.message))
                    problems.append(p)
        return _Checked(problems, expanded, states)

    def _resolve_images(self, expanded: dict[str, list[MemberSpec]]) -> dict[str, ImageSpec]:
        """Give each group without a pinned image the pipeline image of its own LinuxKit document.

        Only on a provider that stores images (:func:`reconciler.kit.provider.image_store`); the
        members in ``expanded`` are replaced by members booting that image.
        """
        store = image_store(self.provider)
        if store is None:
            return {}
        images: dict[str, ImageSpec] = {}
        for group, members in expanded.items():
            if not members or any(pinned(m) for m in members):
                continue
            binding = self._by_name[group]
            builder = binding.group.image_builder or self.stack.image_builder
            try:
                pins = None
                if builder == "debian":  # the packages' versions are part of the digest
                    pins = debianbuild.pins(debianbuild.packages_of(members[0].services), store.image_metadata)
                spec = ImageSpec.of(group, members, fmt=store.image_format, metadata=store.image_metadata,
                                    builder=builder, pins=pins)
            except (ValueError, InfraError) as exc:
                text = exc.message if isinstance(exc, InfraError) else str(exc)
                hint = exc.hint if isinstance(exc, InfraError) else None
                raise ConfigError(f"{fieldpath.where(self.stack, self.source, binding.path)}: {text}",
                                  hint=hint) from None
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

    def delete_images(self, planned: PlannedPass, on_deleted: Callable[[ImageRecord], None] = lambda r: None) -> None:
        """Delete the stored images a destroy planned to delete (``planned.images_to_delete``)."""
        store = image_store(self.provider)
        if store is None:
            return
        for record in planned.images_to_delete:
            store.delete_image(record)
            on_deleted(record)

    @contextlib.contextmanager
    def _mode(self, writing: bool) -> Iterator[None]:
        """Role contexts made meanwhile may (or may not) write the stack's state (``ctx.writing``)."""
        before, self._writing = self._writing, writing
        try:
            yield
        finally:
            self._writing = before

    def plan(self, *, destroy: bool = False, images: bool = False, reporter: Reporter | None = None,
             writing: bool = True, conditions: Conditions | None = None) -> PlannedPass:
        """Observe, check, diff, and ask each quorum group with changes whether it could change now.

        Raises ConfigError when validation finds an error. The plan lists the pipeline images the
        provider lacks (pushed first by :meth:`apply`); a destroy plan with ``images`` also lists
        the stored images the declaration boots (deleted after the members). Changes nothing at
        the provider. ``writing`` (the default): the caller holds the stack's lock and may apply
        this plan, so the roles may make the stack's secrets (its CA) now; ``writing=False`` (``infra
        plan``, ``graph``) writes nothing of the stack's state, and the pass cannot be applied.
        ``conditions``: the time and memory of the pass, targets and requested replacements
        (:class:`~reconciler.core.planner.Conditions`); the pauses in force are read here, every
        pass, whoever plans.
        """
        with self._mode(writing):
            planned = self._plan(destroy=destroy, images=images, reporter=reporter,
                                 conditions=conditions or Conditions())
        return planned if writing else replace(planned, writing=False)

    def pauses(self) -> dict[str, Pause]:
        """The pauses in force for this stack (``""``: the whole stack)."""
        return Pauses(self.state, self.coordination).read()

    def _conditions(self, given: Conditions, pauses: Mapping[str, Pause]) -> Conditions:
        paused = {g: f"{p.reason} (since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(p.since))}, by {p.by})"
                  for g, p in pauses.items()}
        return replace(given, paused={**given.paused, **paused}, in_place=label_updater(self.provider) is not None)

    def _removed(self, observed: Observed) -> list[GroupBinding]:
        """The groups the stack file removes and that still have instances, bound to their roles."""
        out = []
        for i, gone in enumerate(self.stack.removed):
            insts = observed.get(gone.group, [])
            if not insts:
                continue
            at = FieldPath(("removed", i))
            recorded = sorted({x.labels[LABEL_ROLE] for x in insts if x.labels.get(LABEL_ROLE)})
            name = gone.role or (recorded[0] if len(recorded) == 1 else None)
            if name is None:
                why = (f"its instances record roles {', '.join(recorded)}" if recorded else
                       f"its instances carry no {LABEL_ROLE} label (made before infra recorded it)")
                raise ConfigError(f"{fieldpath.where(self.stack, self.source, at)}: group {gone.group}: {why}; "
                                  f"name the role that deletes it: Removed({gone.group!r}, role='...')")
            role = registry.role(name, where=fieldpath.where(self.stack, self.source, at / "role"))
            try:  # its settings are gone with its declaration: the role deletes it with its defaults
                config = role.parse({})
            except ValidationError:  # settings without defaults (a command): unset for its delete hooks
                config = role.config_model.model_construct()
            group = Group(name=gone.group, size=0, role=name)
            out.append(GroupBinding(i, group, role, config, removed=True))
        return out

    def _plan(self, *, destroy: bool, images: bool, reporter: Reporter | None, conditions: Conditions) -> PlannedPass:
        observed = self.observe(reporter)
        instances = [i for v in observed.values() for i in v]
        pauses = self.pauses()
        cond = self._conditions(conditions, pauses)
        if destroy:
            groups = [GroupDesire(b.name, b.policy, []) for b in self.bindings]
            doomed = tuple(s.record for s in self.images() if s.record is not None) if images else ()
            return PlannedPass(make_plan(self.stack.name, groups, instances, destroy=True, conditions=cond),
                               observed, images_to_delete=doomed, paused=pauses)
        removed = self._removed(observed)
        checked = self._validate(observed, reporter=reporter)
        problems, expanded = checked.problems, checked.expanded
        errors = [p for p in problems if p.is_error]
        if errors:
            raise ConfigError("; ".join(self.describe(p) for p in errors))
        desired = [self._desire(b, expanded.get(b.name, [])) for b in self.bindings]
        desired += [self._desire(b, []) for b in removed]
        if not cond.in_place:
            problems.extend(self._outdated_labels(observed))
        health = self.health(observed)
        result = make_plan(self.stack.name, desired, instances, health, conditions=cond)
        the_plan = replace(result, problems=tuple(problems),
                           images=tuple(s.spec for s in checked.images if not s.present))
        wanted = {g: {m.member: m.spec_hash for m in ms} for g, ms in expanded.items()}
        return PlannedPass(the_plan, observed, health, self._refusal(the_plan, observed, removed), wanted,
                           removed=tuple(removed), paused=pauses)

    def _outdated_labels(self, observed: Observed) -> list[Problem]:
        """Warnings: members whose labels differ, on a provider that cannot change them in place."""
        out = []
        for b in self.bindings:
            stale = [i for i in observed.get(b.name, []) if labels_differ(i, b.labels)]
            if stale:
                out.append(Problem(field=str(b.path / "labels"), severity="warning",
                                   message=f"{len(stale)} member(s) carry other labels than declared; provider "
                                   f"{self.stack.provider!r} cannot change labels in place, so they are left as "
                                   "they are (nothing is replaced for a label)"))
        return out

    def _refusal(self, the_plan: Plan, observed: Observed,
                 removed: Sequence[GroupBinding] = ()) -> InfraError | None:
        """A quorum group's refusal of its pending changes (its preflight, read-only), if any.

        Only a lost quorum refuses here; anything else a preflight raises (an election under way)
        is left to the executor, which waits and retries it.
        """
        for gp in the_plan.groups:
            if the_plan.destroy or gp.bootstrap or gp.policy != UpdatePolicy.QUORUM.value:
                continue
            binding = self._by_name.get(gp.group) or next((b for b in removed if b.name == gp.group), None)
            if binding is None:
                continue
            try:
                binding.role.preflight(self.context(binding, observed))
            except QuorumLostError as exc:
                return exc
            except InfraError:
                continue
        return None

    def apply(
        self, planned: PlannedPass, *, reporter: Reporter | None = None, stop: threading.Event | None = None
    ) -> ApplyResult:
        """Execute a pass planned by :meth:`plan` on this engine. Caller holds the stack lock.

        The images the plan pushes go first; when one cannot be pushed, InfraError is raised and
        no member is changed. The planned pass is not modified. A read-only pass
        (``plan(writing=False)``) is refused: its members may carry a throwaway CA's certificates.
        """
        if not planned.writing:
            raise PermanentError("a read-only plan cannot be applied: plan again with writing=True, under the "
                                 "stack's lock")
        plan = planned.plan
        if planned.refusal is not None:  # a quorum group refused at plan time: nothing is attempted
            changes = plan.actionable or plan.changes
            return ApplyResult(failed=[(changes[0], planned.refusal)] if changes else [], skipped=changes[1:])
        self.push_images(list(plan.images), reporter)
        observed = {k: list(v) for k, v in planned.observed.items()}
        with self._mode(True):
            hooks = {b.name: GroupHooks(b.role, self.context(b, observed, destroying=plan.destroy))
                     for b in (*self.bindings, *planned.removed)}
        executor = Executor(
            self.provider, hooks, concurrency=self.concurrency, retry=self.retry,
            reporter=reporter, stop=stop,
        )
        return executor.execute(plan)

    def reconcile(
        self, *, reporter: Reporter | None = None, stop: threading.Event | None = None, dry_run: bool = False,
        on_planned: Callable[[PlannedPass], None] | None = None, conditions: Conditions | None = None,
    ) -> PassResult:
        """One level-triggered pass: plan, then apply unless ``dry_run``. Never raises InfraError.

        The caller holds the stack's lock (the daemon leads the stack), so the pass is a writer.
        ``on_planned`` sees the planned pass before anything is applied (the daemon's page shows
        what was observed, and what is about to change, while the changes run).
        """
        start = time.monotonic()

        def result(plan: Plan, applied: ApplyResult | None = None, error: InfraError | None = None,
                   requeue: float | None = None, counts: dict[str, int] | None = None) -> PassResult:
            return PassResult(plan, applied, error=error, requeue_after=requeue, seconds=time.monotonic() - start,
                              observed=counts or {})

        try:
            planned = self.plan(reporter=reporter, writing=not dry_run, conditions=conditions)
        except InfraError as exc:
            return result(Plan(self.stack.name), error=exc)
        counts = {b.name: len(planned.observed.get(b.name, [])) for b in self.bindings}
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
        """Every group's members as observed now, with health, and its role's facts. Read-only."""
        return self.stack_status().groups

    def status_of(self, observed: Observed, health: Mapping[str, Health],
                  desired: Mapping[str, Mapping[str, str]]) -> list[GroupStatus]:
        """The status of what a pass observed (``PlannedPass``), with the roles' facts about it."""
        return status_of(self.bindings, observed, health, desired,
                         lambda b: b.role.status(self.context(b, observed)))

    def status_of_pass(self, planned: PlannedPass) -> list[GroupStatus]:
        """The status of a planned pass: what it observed, with the health it saw, what it holds."""
        groups = self.status_of(planned.observed, planned.health, planned.desired)
        return annotate(groups, planned.plan, planned.paused)

    def stack_status(self) -> StackStatus:
        """``infra status``: every group as observed now, what is held and why, the pauses, and the
        groups the stack file no longer declares. Read-only; plans without a clock (as by hand)."""
        observed = self.observe()
        health = self.health(observed)
        desires = self.desired(observed)
        pauses = self.pauses()
        the_plan = make_plan(self.stack.name, desires, [i for v in observed.values() for i in v], health,
                             conditions=self._conditions(Conditions(), pauses))
        desired = {d.name: {m.member: m.spec_hash for m in d.members} for d in desires}
        groups = annotate(self.status_of(observed, health, desired), the_plan, pauses)
        stack_pause = pauses.get("")
        return StackStatus(groups, stack_pause.describe() if stack_pause is not None else None,
                           list(the_plan.undeclared))

    def links(self) -> list[tuple[str, str, str]]:
        """(from group, to group, what for) for every link a role declares (``Role.links``)."""
        return [(b.name, to, why) for b in self.bindings for to, why in b.role.links(self.context(b, {}))]

    def env(self) -> dict[str, str]:
        """The stack's client settings (``infra env``): the roles issue their client credentials
        as files, so this writes the stack's state (the user asked for those credentials)."""
        observed = self.observe()
        env: dict[str, str] = {}
        with self._mode(True):
            for binding in self.bindings:
                env.update(binding.role.env(self.context(binding, observed)))
        return env
