"""MemberSpec's fast paths agree with full validation."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from reconciler.core.model import MemberSpec, Service


def test_a_sibling_is_the_member_validation_would_build() -> None:
    svc = (Service(name="w", image="x", command=("true",)),)
    config = MappingProxyType({"zones": ["a"]})
    first = MemberSpec(stack="s", group="g", member="g-0", role="command", services=svc, provider_config=config)
    assert first.spec_hash  # computed once, and carried to the siblings
    sibling = first.sibling("g-7", 7)
    built = MemberSpec(stack="s", group="g", member="g-7", role="command", services=svc, provider_config=config,
                       placement=7)
    assert sibling == built and sibling.model_dump() == built.model_dump()
    assert sibling.spec_hash == built.spec_hash and sibling.name == built.name and sibling.labels == built.labels
    assert sibling.model_fields_set == built.model_fields_set
    assert first.member == "g-0" and first.placement == 0  # the original is untouched
    moved = sibling.model_copy(update={"address": "10.0.0.7"})
    assert moved.address == "10.0.0.7" and sibling.address is None
    with pytest.raises(TypeError):
        first.sibling(7, 7)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reserved address"):
        moved.sibling("g-8", 8)
