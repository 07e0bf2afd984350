"""Upgrading a stack file to typed groups rolls nothing: every stack in ``stacks/`` (typed form)
expands to members with the very spec hashes of the same stack as it was written before typed
groups existed (``tests/typed/dict_form/``: the files of ``stacks/`` at commit 9cedfb3, in the
``Group(role=..., config={...})`` form, kept verbatim).

Expanded by each group's real role with a provider that reserves addresses as the cloud ones do,
so etcd's members carry their full configuration; the spec hash covers everything that forces a
replacement (``MemberSpec.spec_hash``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from reconciler import registry
from reconciler.loader import load_stack
from reconciler.model import Instance, MemberSpec, Problem
from reconciler.role import RoleContext
from reconciler.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
OLD = Path(__file__).resolve().parent / "dict_form"


class Addresses:
    """A provider stand-in that reserves one address per member name (as gcp/aws do)."""

    name: ClassVar[str] = "addresses"

    def __init__(self) -> None:
        self.given: dict[str, str] = {}

    def address_for(self, spec: MemberSpec) -> str:
        return self.given.setdefault(spec.member, f"10.0.0.{len(self.given) + 10}")

    def list(self, selector: Mapping[str, str]) -> list[Instance]:
        return []

    def create(self, spec: MemberSpec) -> Instance:
        raise AssertionError("not called")

    def delete(self, instance: Instance) -> None:
        raise AssertionError("not called")

    def validate(self, members: Sequence[MemberSpec]) -> list[Problem]:
        return []

    def discovery(self, selector: Mapping[str, str], port: int) -> None:
        return None

    def close(self) -> None:
        return None


def hashes(stack: Stack, tmp_path: Path) -> dict[str, list[tuple[str, str]]]:
    provider: Any = Addresses()
    out = {}
    for group in stack.groups:
        role = registry.role(group.role)
        ctx = RoleContext(stack=stack, group=group, config=role.parse(group.config), provider=provider,
                          state_dir=tmp_path, metrics_of=lambda g: [])
        out[group.name] = [(m.member, m.spec_hash) for m in role.expand(ctx)]
    return out


@pytest.mark.parametrize("name", ["etcd-local", "etcd-gcp", "etcd-aws", "hello-local"])
def test_the_typed_stack_expands_to_the_spec_hashes_of_its_dict_form(name: str, tmp_path: Path) -> None:
    typed, old = load_stack(ROOT / "stacks" / f"{name}.py"), load_stack(OLD / f"{name}.py")
    assert all(g.typed for g in typed.groups) and not any(g.typed for g in old.groups)
    assert [g.name for g in typed.groups] == [g.name for g in old.groups]
    new_hashes, old_hashes = hashes(typed, tmp_path), hashes(old, tmp_path)
    assert new_hashes == old_hashes
    assert all(new_hashes.values())  # every group expanded to members (nothing compared vacuously)
