"""The provider conformance suite: every provider's test module subclasses :class:`ProviderConformance`.

Importable by a third-party provider package's tests (``from reconciler.testing import
ProviderConformance``); infra's own providers run it from ``tests/conformance/``.

Shaped after Terraform's acceptance harness: each test creates through the provider, checks what
``list`` observes, and the ``cleanup`` fixture (a sweeper) deletes whatever a failed test left
with the test stack's labels, so one failure does not cascade.

A subclass provides two things:

* a ``provider`` fixture yielding a provider open for the test's ``stack`` fixture
  (``reconciler.kit.provider.Provider``);
* ``add_foreign(provider, name, labels)``: put an instance at the provider *without* going
  through ``infra`` (another tool's VM, another stack's) and return its id.

and may override ``spec_fields`` (image, machine type, provider_config the provider needs) and
``settle(provider)`` (wait for eventual consistency after a change).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from reconciler.core.errors import PermanentError
from reconciler.core.model import Instance, MemberSpec, Service, group_selector, stack_selector
from reconciler.kit.provider import Provider, label_updater
from reconciler.kit.role import Role, RoleConfig, RoleContext


class _ServicesRole(Role[RoleConfig]):
    """The suite's own role: each member runs the suite's ``services``; cattle, alive is healthy."""

    name = "conformance"
    config_model = RoleConfig

    def __init__(self, services: tuple[Service, ...]) -> None:
        self.services = services

    def expand(self, ctx: RoleContext[RoleConfig]) -> list[MemberSpec]:
        return [self.member_base(ctx, i, services=self.services) for i in range(ctx.group.size)]


class ProviderConformance:
    """Behaviour every provider must have. See the module docstring."""

    #: Extra MemberSpec fields the provider needs (image, machine_type, provider_config).
    spec_fields: Mapping[str, Any] = {}
    #: Services the members run (the local provider really runs them).
    services: tuple[Service, ...] = ()

    @pytest.fixture
    def provider(self) -> Iterator[Provider]:
        raise NotImplementedError("subclasses provide an open provider")

    def add_foreign(self, provider: Provider, name: str, labels: Mapping[str, str]) -> str:
        raise NotImplementedError("subclasses create an instance outside infra and return its id")

    def settle(self, provider: Provider) -> None:
        """Wait until the provider's listing reflects the last change (no-op by default)."""

    # -- helpers -----------------------------------------------------------------------------

    @pytest.fixture
    def stack(self) -> str:
        return "conf" + uuid.uuid4().hex[:6]

    @pytest.fixture(autouse=True)
    def cleanup(self, provider: Provider, stack: str) -> Iterator[None]:
        yield
        for inst in provider.list(stack_selector(stack)):
            provider.delete(inst)

    def spec(self, stack: str, member: str = "web-0", group: str = "web", index: int = 0) -> MemberSpec:
        fields: dict[str, Any] = {"services": self.services, **self.spec_fields}
        return MemberSpec(stack=stack, group=group, member=member, role="command", placement=index, **fields)

    def ids(self, instances: list[Instance]) -> set[str]:
        return {i.id for i in instances}

    # -- the suite ---------------------------------------------------------------------------

    def test_create_then_list_by_labels(self, provider: Provider, stack: str) -> None:
        a = provider.create(self.spec(stack, "web-0", index=0))
        b = provider.create(self.spec(stack, "web-1", index=1))
        self.settle(provider)
        seen = provider.list(group_selector(stack, "web"))
        assert self.ids(seen) == {a.id, b.id}
        by_id = {i.id: i for i in seen}
        assert by_id[a.id].name == self.spec(stack, "web-0").name
        assert dict(by_id[a.id].labels).items() >= self.spec(stack, "web-0").labels.items()
        assert by_id[a.id].owned_by(stack)
        assert by_id[a.id].alive

    def test_list_filters_by_every_label(self, provider: Provider, stack: str) -> None:
        web = provider.create(self.spec(stack, "web-0", group="web"))
        db = provider.create(self.spec(stack, "db-0", group="db"))
        self.settle(provider)
        assert self.ids(provider.list(group_selector(stack, "web"))) == {web.id}
        assert self.ids(provider.list(group_selector(stack, "db"))) == {db.id}
        assert self.ids(provider.list(stack_selector(stack))) == {web.id, db.id}
        assert provider.list(stack_selector(stack + "x")) == []

    def test_create_is_idempotent_on_the_name(self, provider: Provider, stack: str) -> None:
        first = provider.create(self.spec(stack))
        again = provider.create(self.spec(stack))
        self.settle(provider)
        assert again.id == first.id
        assert self.ids(provider.list(stack_selector(stack))) == {first.id}

    def test_delete_removes_the_instance(self, provider: Provider, stack: str) -> None:
        keep = provider.create(self.spec(stack, "web-0"))
        gone = provider.create(self.spec(stack, "web-1", index=1))
        self.settle(provider)
        provider.delete(gone)
        self.settle(provider)
        assert self.ids(provider.list(stack_selector(stack))) == {keep.id}

    def test_delete_of_a_missing_instance_succeeds(self, provider: Provider, stack: str) -> None:
        inst = provider.create(self.spec(stack))
        self.settle(provider)
        provider.delete(inst)
        self.settle(provider)
        provider.delete(inst)  # already gone: still success
        assert provider.list(stack_selector(stack)) == []

    def test_foreign_instances_are_untouched(self, provider: Provider, stack: str) -> None:
        mine = provider.create(self.spec(stack))
        untagged = self.add_foreign(provider, f"{stack}-untagged", {})
        other = self.spec(stack + "o").labels
        other_stack = self.add_foreign(provider, f"{stack}-other", other)
        self.settle(provider)
        assert self.ids(provider.list(stack_selector(stack))) == {mine.id}
        # Deleting an instance without infra's labels is refused by the provider itself.
        foreign = Instance(id=untagged, name=f"{stack}-untagged", labels={})
        with pytest.raises(PermanentError):
            provider.delete(foreign)
        assert other_stack in self.ids(provider.list(stack_selector(stack + "o")))
        provider.delete(mine)
        self.settle(provider)
        assert other_stack in self.ids(provider.list(stack_selector(stack + "o")))

    def test_a_provider_refuses_to_delete_another_stacks_instance(self, provider: Provider, stack: str) -> None:
        """Opened for ``stack``, the provider deletes nothing of another stack, whoever asks."""
        theirs = self.spec(stack + "o").labels
        other = self.add_foreign(provider, f"{stack}o-web-web-0-{theirs['infra-spec']}", theirs)
        self.settle(provider)
        with pytest.raises(PermanentError, match="refusing to delete"):
            provider.delete(Instance(id=other, name=f"{stack}o-web-web-0-{theirs['infra-spec']}", labels=theirs))
        self.settle(provider)
        assert other in self.ids(provider.list(stack_selector(stack + "o")))

    def test_a_provider_does_not_trust_the_callers_labels(self, provider: Provider, stack: str) -> None:
        """A caller's copy that claims this stack's labels does not make a foreign instance deletable."""
        mine = provider.create(self.spec(stack))
        untagged = self.add_foreign(provider, f"{stack}-untagged", {})
        theirs = self.spec(stack + "o").labels
        other = self.add_foreign(provider, f"{stack}o-web-web-0-{theirs['infra-spec']}", theirs)
        self.settle(provider)
        for victim, name in ((untagged, f"{stack}-untagged"), (other, f"{stack}o-web-web-0-{theirs['infra-spec']}")):
            with pytest.raises(PermanentError, match="refusing to delete"):
                provider.delete(Instance(id=victim, name=name, labels=mine.labels))
        self.settle(provider)
        assert other in self.ids(provider.list(stack_selector(stack + "o")))
        provider.delete(mine)

    def test_labels_change_in_place_when_the_provider_can(self, provider: Provider, stack: str) -> None:
        """``update_labels`` (optional) keeps the instance, sets the labels, lifts an ``infra-`` label
        not asked for, and refuses a change of ownership or another stack's instance."""
        updater = label_updater(provider)
        if updater is None:
            pytest.skip(f"provider {provider.name!r} does not change labels in place (optional)")
        spec = self.spec(stack).with_labels({"infra-protect": "true", "team": "blue"})
        inst = provider.create(spec)
        self.settle(provider)
        wanted = {**self.spec(stack).with_labels({"team": "green"}).labels}
        updated = updater.update_labels(inst, wanted)
        self.settle(provider)
        (seen,) = provider.list(stack_selector(stack))
        assert seen.id == inst.id == updated.id
        assert dict(seen.labels).items() >= wanted.items() and "infra-protect" not in seen.labels
        with pytest.raises(PermanentError, match="ownership"):
            updater.update_labels(seen, {**wanted, "infra-group": "other"})
        theirs = self.spec(stack + "o").labels
        other = self.add_foreign(provider, f"{stack}o-web-web-0-{theirs['infra-spec']}", theirs)
        self.settle(provider)
        with pytest.raises(PermanentError):
            updater.update_labels(Instance(id=other, name=f"{stack}o-web-web-0-{theirs['infra-spec']}",
                                           labels=seen.labels), wanted)

    def test_engine_steps_apply_replan_empty_then_destroy_leaves_nothing(
        self, provider: Provider, stack: str, tmp_path: Any
    ) -> None:
        """Terraform's acceptance shape: apply, re-plan is empty, scale, destroy, nothing leaks."""
        from reconciler.core.stack import Group, Stack
        from reconciler.engine.engine import Engine

        fields = dict(self.spec_fields)
        role = _ServicesRole(self.services)

        def engine(size: int) -> Engine:
            group = Group(name="web", size=size, role=role.name, image=fields.get("image"),
                          machine_type=fields.get("machine_type"),
                          provider_config=dict(fields.get("provider_config", {})))
            st = Stack(name=stack, provider=provider.name, groups=(group,))
            return Engine(st, provider, {"web": role}, {"web": RoleConfig()}, state_dir=tmp_path)

        first = engine(2)
        result = first.apply(first.plan())
        assert result.ok, result.failed
        self.settle(provider)
        assert first.plan().empty
        assert len(provider.list(stack_selector(stack))) == 2

        bigger = engine(3)
        plan = bigger.plan()
        assert [(c.action.value, c.member) for c in plan.plan.changes] == [("create", "web-2")]
        assert bigger.apply(plan).ok
        self.settle(provider)
        assert bigger.plan().empty

        gone = bigger.plan(destroy=True)
        assert len(gone.plan.changes) == 3
        assert bigger.apply(gone).ok
        self.settle(provider)
        assert provider.list(stack_selector(stack)) == []
