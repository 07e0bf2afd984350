"""Choosing the Debian builder: per stack or group, part of the digest, pinned to apt's packages.

The plan is asked of the real CLI against the GCE emulator (process mode); the builder's own
pieces (pins, the GCE tarball, the guard against changed package lists) are called directly.
Builds of whole images and their boots are in ``test_debian_builder.py`` and the VM tests.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.core.image import ImageSpec
from reconciler.core.model import MemberSpec, Service
from reconciler.engine import debianbuild
from reconciler.engine.debianbuild import BuildError
from tests.emulator.conftest import Emulator, launch

ETCD = Service(name="etcd", image="quay.io/coreos/etcd:v3.4.23", command=("etcd",), debian_package="etcd-server")


def image(builder: str, pins: dict[str, object] | None = None, fmt: str = "gcp") -> ImageSpec:
    member = MemberSpec(stack="st", group="etcd", member="etcd-0", role="etcd", services=(ETCD,))
    if builder == "debian" and pins is None:
        pins = debianbuild.pins({"etcd": "etcd-server"}, fmt)
    return ImageSpec.of("etcd", [member], fmt=fmt, metadata=fmt, builder=builder, pins=pins)


def test_the_builder_and_every_package_version_are_part_of_the_digest() -> None:
    linuxkit, debian = image("linuxkit"), image("debian")
    assert linuxkit.digest != debian.digest and debian.builder == "debian"
    assert image("debian").digest == debian.digest  # the same lists, the same image
    pins = json.loads(json.dumps(debian.pins))
    names = [p[0] for p in pins["packages"]]
    assert names[0].startswith("linux-image-") and "etcd-server" in names and "busybox-static" in names
    etcd = next(p for p in pins["packages"] if p[0] == "etcd-server")
    etcd[1] = etcd[1] + "+1"  # what an apt-get update bringing a new etcd-server would give
    assert image("debian", pins).digest != debian.digest


def test_a_build_refuses_packages_that_changed_since_the_plan(tmp_path: Path) -> None:
    pins = json.loads(json.dumps(image("debian").pins))
    pins["packages"][1][2] = "0" * 64  # the plan saw another busybox-static
    stale = image("debian", pins)
    with pytest.raises(BuildError, match="changed since the plan"):
        debianbuild.artefact(stale, tmp_path)
    assert not list(tmp_path.rglob("*.tar.gz"))  # nothing built


def test_the_gce_tarball_holds_a_whole_gib_disk_raw_and_is_reproducible(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\x55\xaa" * 4096 + bytes(1 << 20) + b"end")
    made = []
    for n in range(2):
        out = tmp_path / f"{n}.img.tar.gz"
        debianbuild._gce_tarball(raw, out)
        made.append(hashlib.sha256(out.read_bytes()).hexdigest())
        assert out.stat().st_size < 64 * 1024  # sparse: the padding is not stored
    assert made[0] == made[1]
    with tarfile.open(tmp_path / "0.img.tar.gz", "r:gz") as tar:
        (member,) = tar.getmembers()
        assert member.name == "disk.raw" and member.size == 1 << 30 and member.uid == 0
        data = tar.extractfile(member)
        assert data is not None and data.read(8192) == b"\x55\xaa" * 4096


def test_validate_names_the_tools_a_debian_build_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debianbuild.shutil, "which", lambda tool: None if tool == "syslinux" else "/usr/bin/" + tool)
    assert debianbuild.missing_tools("gcp") == ["syslinux"]


STACK = '''
import os
from plugins.etcd import Etcd
from reconciler import Group, Stack

stack = Stack(
    name="chosen",
    provider="gcp",
    image_builder="debian",
    provider_config={{"project": os.environ["INFRA_GCP_PROJECT"], "zones": ["us-central1-a"],
                     "image_bucket": os.environ["INFRA_GCP_IMAGE_BUCKET"], "machine_type": "e2-small"}},
    groups=(
        Etcd(name="etcd", size=1, version="3.4.23",
             provider_config={{"address_range": os.environ["INFRA_GCP_ADDRESS_RANGE"]}}),
        Group(name="web", size=1, role="command", image_builder={web!r}, config={{"command": ["httpd", "-f"]}}),
    ),
)
'''


@pytest.fixture
def gce(tmp_path: Path) -> Iterator[Emulator]:
    emulator = launch("gcp", tmp_path)
    try:
        yield emulator
    finally:
        emulator.proc.terminate()
        emulator.proc.wait(timeout=30)


def test_a_stack_chooses_the_builder_and_a_group_may_choose_its_own(gce: Emulator, tmp_path: Path) -> None:
    stack = tmp_path / "chosen.py"
    stack.write_text(textwrap.dedent(STACK.format(web="linuxkit")))
    plan = gce.ok("plan", str(stack), "--json")
    images = {i["group"]: i for i in json.loads(plan.stdout)["images"]}
    assert images["etcd"]["builder"] == "debian" and images["web"]["builder"] == "linuxkit"

    stack.write_text(textwrap.dedent(STACK.format(web="debian")))
    refused = gce.infra("plan", str(stack))
    assert refused.returncode == 1
    assert "no Debian package declared for service(s) web" in refused.stderr
    assert f"{stack}:" in refused.stderr  # the file and line of the group
    assert not (gce.state / "images").exists()  # nothing built, nothing written
