"""The role protocol: what runs on the instances of a group (InfraKit's "flavor", typed).

A role plugin is a class registered under the ``infra.plugins`` entry-point group, built with no
arguments. The engine calls it with a :class:`RoleContext` that holds the stack, the group, the
role's parsed settings, this pass's observed instances and the stack's private state directory.

Contract, hook by hook (every hook may raise only :mod:`reconciler.core.errors` types; a
``RoleTransientError`` is retried with backoff, anything else stops the group's changes):

``validate(ctx)``       problems with the group's settings; changes nothing. Warnings are shown.
``expand(ctx)``         the group's desired members, with stable logical ids (``etcd-0``...).
``check(group, cfg)``   problems visible in the declaration alone (a size the role cannot run);
                        called before any provider is opened or any directory is made.
``health(ctx, inst)``   HEALTHY, UNHEALTHY (the planner replaces it) or UNKNOWN (left alone).
                        Called only for instances the provider reports alive; must be quick.
                        ``probes(ctx)`` says whether it does I/O (then checks run in parallel).
``preflight(ctx)``      before each change of a quorum group (once per group for cattle): raise
                        QuorumLostError to refuse every change, RoleTransientError to wait.
``before_create``       e.g. ``etcd member add``; returns the member to create, possibly with
                        runtime files (``initial-cluster-state=existing``) added. If it raises,
                        nothing was created.
``after_create``        wait until the new instance is healthy (raise HealthTimeoutError).
``before_delete``       e.g. ``etcd member remove``. If it raises, the instance is not deleted.
``status(ctx)``         extra facts for ``infra status`` (leader, target health).
``env(ctx)``            shell variables for ``infra env`` (etcdctl endpoints and certificates).
``metrics(ctx)``        where members serve Prometheus metrics (port, scheme, mutual TLS).
``links(ctx)``          the other groups its members talk to, and why (drawn by ``infra graph``).

A quorum group with no observed instance is bootstrapped: all its creates run together with
``ctx.bootstrapping`` set, then ``after_create`` runs for each. Afterwards every change is one
at a time: ``preflight`` → (``before_delete`` → delete) and/or (``before_create`` → create →
``after_create``), removal first when a member is replaced.

During ``infra destroy`` (``ctx.destroying``) membership hooks are skipped: the whole group is
going away, there is no quorum to protect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, JsonValue, model_validator

from reconciler.core.model import Health, Instance, MemberSpec, Problem, UpdatePolicy
from reconciler.core.stack import Group, Stack
from reconciler.kit.provider import Provider
from reconciler.kit.secretstore import SecretStore


@dataclass(frozen=True)
class MetricsTarget:
    """Where a role's members expose Prometheus metrics (for the prometheus role to scrape).

    ``mtls`` means the endpoint requires a client certificate signed by the stack's CA
    (:mod:`reconciler.kit.pki`).
    """

    port: int
    path: str = "/metrics"
    scheme: str = "http"
    mtls: bool = False


class RoleConfig(BaseModel):
    """Base for a role's settings model: frozen, unknown fields rejected.

    ``renamed`` maps a setting's former name to its current one: ``Group(config={old: v})`` keeps
    working (a typed group class, which inherits the model, only takes the current names).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    renamed: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _renamed_settings(cls, data: Any) -> Any:
        if not cls.renamed or not isinstance(data, dict) or issubclass(cls, Group):
            return data
        data = dict(data)
        for old, new in cls.renamed.items():
            if old in data and new not in data:
                data[new] = data.pop(old)
        return data


#: A role's settings model.
C = TypeVar("C", bound=RoleConfig)


@dataclass
class RoleContext(Generic[C]):
    """What a role may look at during one pass. ``observed`` is kept current by the executor."""

    stack: Stack
    group: Group
    config: C  # the group's settings, parsed by the role's settings model
    provider: Provider
    state_dir: Path  # the stack's private directory (0700); secrets go here, mode 0600
    observed: dict[str, list[Instance]] = field(default_factory=dict)  # by group name
    destroying: bool = False
    #: True when the pass holds the stack's lock and may write the stack's state (its CA):
    #: apply, destroy, the leading daemon, ``infra env``. False for plan, validate, status and
    #: graph, which write nothing: build ``StackCA`` with it (below).
    writing: bool = True
    #: Where the stack's CA and secrets are shared with writers on other machines (the engine
    #: sets it from ``INFRA_COORDINATION``); None: this machine's state directory. Build
    #: ``StackCA(ctx.state_dir, create=ctx.writing, store=ctx.secrets)``.
    secrets: SecretStore | None = None
    #: True while a quorum group with no observed instance is created from nothing: its members
    #: are created together (a static bootstrap), so ``after_create`` runs after all of them
    #: exist and ``before_create`` must not try runtime reconfiguration.
    bootstrapping: bool = False
    log: Callable[[str], None] = print
    #: The metrics endpoints of another group's role, by group name (set by the engine), so a
    #: monitoring role learns how to scrape a group without importing its role.
    metrics_of: Callable[[str], list[MetricsTarget]] = lambda group: []

    @property
    def instances(self) -> list[Instance]:
        """This group's observed instances."""
        return self.observed.get(self.group.name, [])

    def reachable(self, address: str | None) -> bool:
        """Whether ``infra`` may probe ``address`` from where it runs (``INFRA_NETWORK_ALLOW``).

        A role must not wait on, or judge, a member it may not reach: its health is UNKNOWN and
        its health gate is skipped with a log line (bootstrap needs no API); a membership change
        that needs a reachable member refuses instead. Running outside a cloud's network, set
        ``INFRA_NETWORK_ALLOW`` to the networks you can reach.
        """
        if not address:
            return False
        from reconciler.kit import netguard

        return netguard.is_allowed(address)


class Role(Generic[C]):
    """Base class with the default behaviour of every hook; plugins override what they need.

    Generic over the role's settings model: ``class EtcdRole(Role[EtcdConfig])`` with
    ``config_model = EtcdConfig`` gets ``ctx.config`` typed as ``EtcdConfig`` in every hook.
    """

    name: ClassVar[str] = ""
    policy: ClassVar[UpdatePolicy] = UpdatePolicy.CATTLE
    config_model: type[C]

    def parse(self, raw: Mapping[str, Any]) -> C:
        """The group's settings (``Group.config``) parsed by the role's model; ValidationError if bad."""
        return self.config_model.model_validate(dict(raw))

    def check(self, group: Group, config: C) -> list[Problem]:
        """Problems visible in the declaration alone (a size the role cannot run, say).

        Called by :meth:`reconciler.engine.engine.Engine.open` before any provider is opened or any
        directory or lock is made; needs no context. Fields are relative to the group (``size``).
        """
        return []

    def validate(self, ctx: RoleContext[C]) -> list[Problem]:
        return []

    def expand(self, ctx: RoleContext[C]) -> list[MemberSpec]:
        raise NotImplementedError

    def health(self, ctx: RoleContext[C], instance: Instance) -> Health:
        return Health.HEALTHY if instance.alive else Health.UNHEALTHY

    def probes(self, ctx: RoleContext[C]) -> bool:
        """Whether :meth:`health` does I/O for this group (the engine then runs the checks on its
        shared health threads); True whenever a role overrides ``health``, unless it says otherwise."""
        return type(self).health is not Role.health

    def preflight(self, ctx: RoleContext[C]) -> None:
        return None

    def before_create(self, ctx: RoleContext[C], member: MemberSpec) -> MemberSpec:
        return member

    def after_create(self, ctx: RoleContext[C], member: MemberSpec, instance: Instance) -> None:
        return None

    def before_delete(self, ctx: RoleContext[C], instance: Instance) -> None:
        return None

    def status(self, ctx: RoleContext[C]) -> Mapping[str, JsonValue]:
        return {}

    def env(self, ctx: RoleContext[C]) -> dict[str, str]:
        return {}

    def metrics(self, ctx: RoleContext[C]) -> list[MetricsTarget]:
        """Where this group's members serve Prometheus metrics (none by default)."""
        return []

    def links(self, ctx: RoleContext[C]) -> list[tuple[str, str]]:
        """The other groups this group's members talk to, with what for: ``[("etcd", "scrapes")]``.

        Drawn by ``infra graph`` and the daemon's page; none by default.
        """
        return []

    def member_bases(self, ctx: RoleContext[C], **fields: Any) -> list[MemberSpec]:
        """Members ``<group>-0`` … ``<group>-(size-1)``, all with the same ``fields``.

        One member is validated and the others are its siblings (:meth:`MemberSpec.sibling`):
        the fast way to expand a large cattle group whose members differ only by index.
        """
        size = ctx.group.size
        if not size:
            return []
        first = self.member_base(ctx, 0, **fields)
        assert first.spec_hash  # computed once, before the copies: each sibling carries it
        name = ctx.group.name
        return [first, *(first.sibling(f"{name}-{i}", i) for i in range(1, size))]

    def member_base(self, ctx: RoleContext[C], index: int, *, member: str | None = None,
                    **fields: Any) -> MemberSpec:
        """A member with the identity fields filled in, plus ``fields`` (services, files, ...).

        Pass a group's shared ``services`` and ``files`` here (the same objects for every member)
        rather than copying the member afterwards: one validated object per member, and the spec
        hash is computed once per distinct content (:attr:`MemberSpec.spec_hash`).
        """
        group = ctx.group
        return MemberSpec(
            stack=ctx.stack.name,
            group=group.name,
            member=member or f"{group.name}-{index}",
            role=self.name,
            image=group.image,
            machine_type=group.machine_type,
            provider_config=ctx.stack.group_provider_config(group),
            placement=index,
            **fields,
        )


__all__ = ["AnyContext", "AnyRole", "MetricsTarget", "Role", "RoleConfig", "RoleContext", "UpdatePolicy"]

#: A role and its context as the engine holds them: one per group, each with its own settings
#: model, so the engine sees them through the base type.
AnyRole = Role[Any]
AnyContext = RoleContext[Any]
