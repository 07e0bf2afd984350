"""Upgrading a stack file to typed groups rolls nothing: every stack in ``stacks/`` (typed form)
expands to members with the very spec hashes of the same stack as it was written before typed
groups existed (``tests/typed/dict_form/``: the files of ``stacks/`` at commit 9cedfb3, in the
``Group(role=..., config={...})`` form, kept verbatim).

Expanded by each group's real role with a provider that reserves addresses as the cloud ones do,
so etcd's members carry their full configuration; the spec hash covers everything that forces a
replacement (``MemberSpec.spec_hash``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.core.stack import Stack
from reconciler.engine.loader import load_stack
from reconciler.kit import registry
from reconciler.kit.role import RoleContext
from tests.etcd.test_role import AddressBook

ROOT = Path(__file__).resolve().parents[2]
OLD = Path(__file__).resolve().parent / "dict_form"


def hashes(stack: Stack, tmp_path: Path) -> dict[str, list[tuple[str, str]]]:
    provider: Any = AddressBook()  # reserves an address per member name, as the cloud providers do
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
