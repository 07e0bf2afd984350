"""Image identity through the engine: equal declarations share an image, image changes roll.

The stack is ``stacks/etcd-gcp.py`` (the real etcd and prometheus roles) planned in process
against the fake Compute API, with the tests' linuxkit stand-in; nothing here reaches etcd (the
fake's 10.128.x members are outside ``INFRA_NETWORK_ALLOW``).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core import linuxkit
from reconciler.core.image import DIGEST_LEN, ImageSpec, digest_of
from reconciler.core.model import MemberSpec, Service
from reconciler.core.plan import Plan
from reconciler.core.stack import Stack
from reconciler.engine.engine import Engine
from reconciler.engine.loader import load_stack
from tests.gcp_fake import FakeCompute

ROOT = Path(__file__).resolve().parents[2]
ETCD_GCP = ROOT / "stacks" / "etcd-gcp.py"


def stack(**changes: Any) -> Stack:
    """stacks/etcd-gcp.py with group settings changed: ``{"etcd": {"config": {...}}}``."""
    base = load_stack(str(ETCD_GCP))
    groups = []
    for g in base.groups:
        update = changes.get(g.name, {})
        groups.append(g.model_copy(update={k: ({**getattr(g, k), **v} if isinstance(v, dict) else v)
                                            for k, v in update.items()}))
    return base.model_copy(update={"groups": tuple(groups)})


def engine(s: Stack, root: Path) -> Engine:
    return Engine.open(s, root=root)


def plan(s: Stack, root: Path) -> Plan:
    e = engine(s, root)
    try:
        return e.plan().plan
    finally:
        e.close()


def images_of(p: Plan) -> dict[str, str]:
    return {i.group: i.digest for i in p.images}


def test_equal_declarations_give_the_same_images(fake: FakeCompute, standin: Path, tmp_path: Path) -> None:
    first, second = plan(stack(), tmp_path / "a"), plan(stack(), tmp_path / "b")
    assert images_of(first) == images_of(second) and set(images_of(first)) == {"etcd", "prometheus"}
    for image in first.images:
        assert re.fullmatch(rf"infra-{image.group}-[0-9a-f]{{12}}", image.name)
        assert len(image.digest) == DIGEST_LEN and image.name.endswith(image.digest[:12])
        assert image.format == "gcp"
    etcd = [c for c in first.changes if c.group == "etcd"]
    assert {c.after.image for c in etcd if c.after} == {first.images[0].name}  # every member boots it


@pytest.mark.parametrize(("change", "rolled"), [
    ({"etcd": {"config": {"version": "3.4.30"}}}, {"etcd"}),  # the service's container image
    ({"prometheus": {"config": {"retention": "30d"}}}, {"prometheus"}),  # a flag of the service command
    ({"kernel": "linuxkit/kernel:6.6.72"}, {"etcd", "prometheus"}),  # a component pin
])
def test_every_image_relevant_change_gives_a_new_image_and_a_rolling_plan(
    fake: FakeCompute, standin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    change: dict[str, Any], rolled: set[str],
) -> None:
    root = tmp_path / "state"
    e = engine(stack(), root)
    try:
        before = e.plan()
        result = e.apply(before)
        assert result.ok, result.failed
        assert e.plan().empty  # pushed and created: nothing left to do
    finally:
        e.close()
    kernel = change.pop("kernel", None)
    if kernel:
        monkeypatch.setattr(linuxkit, "KERNEL_IMAGE", kernel)
    after = plan(stack(**change), root)
    old, new = images_of(before.plan), images_of(after)
    assert set(new) == rolled and all(new[g] != old[g] for g in rolled)
    assert {c.group for c in after.changes} == rolled
    assert {(c.action.value, c.reason.value) for c in after.changes} == {("replace", "spec changed")}
    for c in after.changes:
        assert c.after is not None and c.after.image == next(i.name for i in after.images if i.group == c.group)


def test_member_only_changes_keep_the_image(fake: FakeCompute, standin: Path, tmp_path: Path) -> None:
    root = tmp_path / "state"
    base = plan(stack(), root)
    moved = plan(stack(etcd={"provider_config": {"address_range": "10.128.14.0/28"}}), root)
    shutil.rmtree(root / "stacks" / "etcd-gcp" / "pki")  # a new CA: every certificate changes
    recerted = plan(stack(), root)
    tuned = plan(stack(etcd={"config": {"heartbeat_interval_ms": 50, "election_timeout_ms": 500}}), root)
    assert images_of(moved) == images_of(recerted) == images_of(tuned) == images_of(base)


def test_the_output_format_is_part_of_the_digest() -> None:
    member = MemberSpec(stack="s", group="g", member="g-0", role="command",
                        services=(Service(name="a", image="busybox", command=("true",)),))
    gcp = ImageSpec.of("g", [member], fmt="gcp", metadata="gcp")
    aws = ImageSpec.of("g", [member], fmt="aws", metadata="gcp")
    assert gcp.digest != aws.digest


def test_members_that_disagree_on_their_services_cannot_share_an_image() -> None:
    def member(i: int, cmd: str) -> MemberSpec:
        return MemberSpec(stack="s", group="g", member=f"g-{i}", role="command",
                          services=(Service(name="a", image="busybox", command=(cmd,)),))

    with pytest.raises(ValueError, match="run different services"):
        ImageSpec.of("g", [member(0, "true"), member(1, "false")], fmt="gcp", metadata="gcp")


services = st.lists(
    st.builds(Service, name=st.from_regex(r"[a-z]{1,8}", fullmatch=True), image=st.text(min_size=1, max_size=12),
              command=st.lists(st.text(max_size=10), max_size=4).map(tuple),
              env=st.dictionaries(st.from_regex(r"[A-Z]{1,5}", fullmatch=True), st.text(max_size=6), max_size=2)),
    min_size=1, max_size=3,
)


@settings(max_examples=150, deadline=None)
@given(a=services, b=services)
def test_digest_is_a_function_of_the_document_alone(a: list[Service], b: list[Service]) -> None:
    doc_a, doc_b = linuxkit.document(a, metadata="gcp"), linuxkit.document(b, metadata="gcp")
    assert digest_of(doc_a, "gcp") == digest_of(linuxkit.document(list(a), metadata="gcp"), "gcp")
    assert (digest_of(doc_a, "gcp") == digest_of(doc_b, "gcp")) == (doc_a == doc_b)
