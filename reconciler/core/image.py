"""Image identity: which LinuxKit image a group boots, named by the digest of its content.

Called by the engine while planning (:meth:`reconciler.engine.engine.Engine.plan`), by the builder
(:mod:`reconciler.engine.imagebuild`) and by providers that store images (their ``push_image``). Pure:
no I/O.

A group whose ``image`` is not pinned (no ``Group.image``, no ``image`` in its provider
settings) on a provider that stores images boots the image of its own LinuxKit document
(:func:`reconciler.core.linuxkit.document` of the members' services). That document holds no member
data, so it is the same for every member; its **digest** is the SHA-256 of the canonical JSON of
the document and of the output format, cut to :data:`DIGEST_LEN` hex characters (160 bits; short
enough to be a GCE label value), and the image is named ``infra-<group>-<digest[:12]>``.

Two builders make an image of the document, chosen explicitly in the stack file
(``Stack.image_builder``, a group's own ``image_builder``), never by what the machine has, since
the builder is part of the digest: ``linuxkit`` (the ``linuxkit`` CLI, from OCI images) and
``debian`` (:mod:`reconciler.engine.debianbuild`, from Debian packages). A Debian image's digest
also covers its *pins*: every package's name, version and SHA-256 as apt's lists give them, the
init and the builder's layout, so a new package version is a new image. The
provider labels or tags the stored image with :data:`LABEL_IMAGE` = the digest and finds it by
that label, never by name alone.

The image name goes into every member's :attr:`~reconciler.core.model.MemberSpec.image`, so it is part
of the spec hash: a change to the image (a service, a command-line flag of a service, a kernel
or component pin) gives a new digest, a new name and a rolling plan under the group's update
policy, while changes that live in user-data (addresses, certificates, configuration files) keep
the image.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.core import linuxkit
from reconciler.core.model import MemberSpec

#: The label (GCE) or tag (EC2) that carries an image's digest.
LABEL_IMAGE = "infra-image"
#: Hex characters of the SHA-256 kept as the digest.
DIGEST_LEN = 40
#: Hex characters of the digest in the image name.
NAME_DIGEST_LEN = 12


def canonical(document: Mapping[str, Any]) -> str:
    """The canonical JSON of a LinuxKit document: sorted keys, no spaces."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


#: The image builders a stack may choose (``Stack.image_builder``).
BUILDERS = ("linuxkit", "debian")


def digest_of(document: Mapping[str, Any], fmt: str, *, builder: str = "linuxkit",
              pins: Mapping[str, Any] | None = None) -> str:
    """The image digest of ``document`` built in output format ``fmt`` by ``builder``, whose
    ``pins`` (the Debian builder's packages) are part of it. A LinuxKit image's digest is the one
    it always had."""
    raw = f"linuxkit-format:{fmt}\n{canonical(document)}"
    if builder != "linuxkit":
        raw = f"builder:{builder}\n{raw}\n{canonical(pins or {})}"
    return hashlib.sha256(raw.encode()).hexdigest()[:DIGEST_LEN]


def image_name(group: str, digest: str) -> str:
    """``infra-<group>-<first 12 hex of the digest>``: a valid GCE image and EC2 AMI name."""
    return f"infra-{group}-{digest[:NAME_DIGEST_LEN]}"


@dataclass(frozen=True)
class ImageSpec:
    """One image the declaration needs: a group's LinuxKit document in one output format."""

    group: str
    format: str  # ``linuxkit build --format``: "gcp", "aws"
    metadata: str  # the metadata package's source inside the image: "gcp", "aws"
    document: Mapping[str, Any] = field(repr=False, hash=False, compare=False)
    digest: str = ""
    builder: str = "linuxkit"  # who builds it: "linuxkit" or "debian"
    #: What the builder adds to the digest (the Debian packages), and hands back to build it.
    pins: Mapping[str, Any] = field(default_factory=dict, repr=False, hash=False, compare=False)

    @classmethod
    def of(cls, group: str, members: Sequence[MemberSpec], *, fmt: str, metadata: str, builder: str = "linuxkit",
           pins: Mapping[str, Any] | None = None) -> ImageSpec:
        """The image of ``members`` (one group's). Raises ValueError when they disagree on it."""
        first = members[0]
        for m in members[1:]:
            if m.services != first.services:
                raise ValueError(
                    f"group {group!r}: members {first.member} and {m.member} run different services, "
                    "so they cannot share one image; a role must give every member the same services"
                )
        doc = linuxkit.document(first.services, metadata=metadata)
        return cls(group=group, format=fmt, metadata=metadata, document=doc, builder=builder, pins=dict(pins or {}),
                   digest=digest_of(doc, fmt, builder=builder, pins=pins))

    @property
    def name(self) -> str:
        return image_name(self.group, self.digest)

    @property
    def labels(self) -> dict[str, str]:
        """What the stored image is labelled (tagged) with."""
        return {LABEL_IMAGE: self.digest}

    def yaml(self) -> str:
        """The document as the YAML file handed to ``linuxkit build``."""
        how = ("build: linuxkit build --format {fmt} --name {name} {name}.yml" if self.builder == "linuxkit"
               else "built by infra's Debian builder from Debian packages")
        header = (f"# LinuxKit image {self.name} (group {self.group}, format {self.format}, "
                  f"digest {self.digest}).\n# Rendered by infra from the group's declaration; "
                  + how.format(fmt=self.format, name=self.name) + "\n")
        return linuxkit.dump(self.document, header=header)

    def public_view(self) -> dict[str, Any]:
        return {"group": self.group, "name": self.name, "digest": self.digest, "format": self.format,
                "builder": self.builder}


@dataclass(frozen=True)
class ImageRecord:
    """An image as a provider stores it."""

    name: str
    id: str  # the provider's own reference: an AMI id, a GCE image selfLink or name
    digest: str
    size: int | None = None  # bytes of the stored artefact/disk, when the provider says
    status: str = "ready"  # "ready", "pending", "failed"

    @property
    def ready(self) -> bool:
        return self.status == "ready"


def pinned(member: MemberSpec) -> bool:
    """Whether the member's image is chosen by the user (``image=`` or provider ``image``)."""
    return member.image is not None or member.provider_config.get("image") is not None


def with_image(members: Sequence[MemberSpec], image: ImageSpec) -> list[MemberSpec]:
    """``members`` booting ``image``: its name in the spec (and so in the spec hash)."""
    return [m.model_copy(update={"image": image.name, "image_digest": image.digest}) for m in members]
