"""The ``directory`` provider against infra's provider conformance suite, and the role's hooks."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from infra_example import DirectoryProvider, Greeter, GreeterConfig, GreeterRole

from reconciler import Group, Stack
from reconciler.model import Instance, InstanceStatus
from reconciler.provider import Provider
from reconciler.role import RoleContext
from reconciler.testing import ProviderConformance


class TestDirectoryProvider(ProviderConformance):
    @pytest.fixture
    def provider(self, tmp_path: Path, stack: str) -> Iterator[Provider]:
        p = DirectoryProvider.open({"root": str(tmp_path / "cloud")}, stack=stack, state_dir=tmp_path)
        yield p
        p.close()

    def add_foreign(self, provider: Provider, name: str, labels: Mapping[str, str]) -> str:
        assert isinstance(provider, DirectoryProvider)
        provider.root.mkdir(parents=True, exist_ok=True)
        inst = Instance(id=name, name=name, labels=dict(labels), status=InstanceStatus.RUNNING)
        (provider.root / f"{name}.json").write_text(json.dumps(inst.model_dump(mode="json")))
        return name


def test_greeter_members_say_their_greeting(tmp_path: Path) -> None:
    group = Greeter(name="hi", size=2, greeting="hej")
    assert group.config == {"greeting": "hej"} and group.role == "greeter"
    stack = Stack(name="greet", provider="directory", groups=(group,))
    provider = DirectoryProvider.open({"root": str(tmp_path)}, stack="greet", state_dir=tmp_path)
    ctx = RoleContext(stack=stack, group=group, config=GreeterConfig(greeting="hej"), provider=provider,
                      state_dir=tmp_path)
    members = GreeterRole().expand(ctx)
    assert [m.member for m in members] == ["hi-0", "hi-1"]
    assert members[0].files[0].content == "hej\n"
    same = Group(name="hi", size=2, role="greeter", config={"greeting": "hej"})  # the generic form
    ctx_same = RoleContext(stack=stack, group=same, config=GreeterConfig(greeting="hej"), provider=provider,
                           state_dir=tmp_path)
    assert [m.spec_hash for m in GreeterRole().expand(ctx_same)] == [m.spec_hash for m in members]


def test_too_many_greeters_are_refused_by_check() -> None:
    problems = GreeterRole().check(Group(name="hi", size=11, role="greeter"), GreeterConfig())
    assert [p.field for p in problems] == ["size"]
