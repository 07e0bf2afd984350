"""Reads back what the linuxkit stand-in wrote: the YAML an artefact was built from (tests only)."""

from __future__ import annotations

import gzip
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

from reconciler.core.image import ImageSpec
from reconciler.core.model import MemberSpec, Service
from reconciler.engine import imagebuild

MAGIC = b"INFRA-LINUXKIT-STANDIN-DISK\n"
STANDIN = Path(__file__).resolve().parent / "linuxkit"


def _yaml_of_disk(head: bytes) -> str:
    assert head.startswith(MAGIC), "not a disk written by the linuxkit stand-in"
    header_line, _, rest = head[len(MAGIC):].partition(b"\n")
    header = json.loads(header_line)
    return rest[: header["yaml_bytes"]].decode()


def yaml_of(path: Path) -> str:
    """The YAML ``path`` (a ``.raw`` disk or a ``.img.tar.gz``) was built from."""
    if path.name.endswith(".tar.gz"):
        with gzip.open(path, "rb") as gz, tarfile.open(fileobj=gz, mode="r|") as tar:
            for member in tar:
                assert member.name == "disk.raw", member.name
                fh = tar.extractfile(member)
                assert fh is not None
                return _yaml_of_disk(fh.read(1 << 20))
        raise AssertionError("empty archive")
    with open(path, "rb") as fh:
        return _yaml_of_disk(fh.read(1 << 20))


def yaml_of_bytes(data: bytes) -> str:
    """The YAML of a raw disk's first bytes (e.g. an EBS snapshot's block 0)."""
    return _yaml_of_disk(data)


def web_image(fmt: str, command: str = "httpd") -> ImageSpec:
    """The image of a one-service ``command`` group ``web``, in format ``fmt`` (for push tests)."""
    member = MemberSpec(stack="st", group="web", member="web-0", role="command",
                        services=(Service(name="web", image="busybox:1.36", command=(command, "{address}")),))
    return ImageSpec.of("web", [member], fmt=fmt, metadata=fmt)


def build_with_standin(image: ImageSpec, root: Path, setenv: Callable[[str, str], None]) -> Path:
    """``image`` built by the stand-in (``INFRA_LINUXKIT`` set through ``setenv``) under ``root``."""
    setenv("INFRA_LINUXKIT", str(STANDIN))
    return imagebuild.build(image, root)
