"""The image pipeline's two steps around a plan: look images up, then build and push the missing.

Called by the engine: :func:`survey` while planning (which pipeline images exist at the provider,
one lookup per distinct digest) and :func:`push` at the start of an apply (build what is not
cached, upload and register what the provider lacks, before any member change, so a member is
never created from an image that does not exist). ``infra image build|push|list`` use the same
functions.

A push is retried while the provider raises a retryable error, under the one retry policy
(:mod:`reconciler.kit.retry`); the provider's ``push_image`` is idempotent by
digest, so a retry (or the next apply after a crash) never uploads or registers twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.core.image import ImageRecord, ImageSpec
from reconciler.core.model import Problem
from reconciler.engine import debianbuild, imagebuild
from reconciler.kit import retry
from reconciler.kit.provider import ImageStore, accepts_documents
from reconciler.kit.retry import RetryPolicy

#: ``upload(image name, bytes done, bytes total)``
Upload = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ImageState:
    """One pipeline image of the declaration and where it stands."""

    spec: ImageSpec
    record: ImageRecord | None  # at the provider, when found
    artefact: Path | None  # in the local build cache, when built

    @property
    def present(self) -> bool:
        return self.record is not None


def survey(store: ImageStore, images: Iterable[ImageSpec], state_root: Path) -> list[ImageState]:
    """Each image with what the provider holds of it (one ``find_image`` per distinct digest)."""
    out: list[ImageState] = []
    found: dict[str, ImageRecord | None] = {}
    for spec in images:
        if spec.digest not in found:
            found[spec.digest] = store.find_image(spec)
        out.append(ImageState(spec, found[spec.digest], imagebuild.cached(spec, state_root)))
    return out


def problems(store: ImageStore, states: Sequence[ImageState], field_of: Callable[[str], str]) -> list[Problem]:
    """What stops the missing images from being built: the Debian builder's missing tools, no
    linuxkit (one problem for all the images of each builder)."""
    todo = [s for s in states if not s.present and s.artefact is None]
    out: list[Problem] = []
    debian = [s for s in todo if s.spec.builder == "debian"]
    missing = sorted({t for s in debian for t in debianbuild.missing_tools(s.spec.format)})
    if missing:
        names = ", ".join(f"{s.spec.name} (group {s.spec.group})" for s in debian)
        out.append(Problem(field=field_of(debian[0].spec.group),
                           message=f"the Debian image builder needs {', '.join(missing)} to build {names}: "
                                   "scripts/install.sh --vm installs them (Debian's syslinux, mtools, "
                                   "dosfstools, fdisk, cpio)"))
    todo = [s for s in todo if s.spec.builder == "linuxkit"]
    if not todo or (imagebuild.find_linuxkit() is None and accepts_documents(store)):
        return out
    try:
        imagebuild.require_linuxkit()
    except imagebuild.LinuxkitMissingError as exc:
        names = ", ".join(f"{s.spec.name} (group {s.spec.group})" for s in todo)
        out.append(Problem(field=field_of(todo[0].spec.group),
                           message=f"{exc.message.split(': ', 1)[-1]}, and linuxkit must build {names}: "
                                   f"{imagebuild.INSTALL_HINT}"))
    return out


def push(
    store: ImageStore,
    images: Iterable[ImageSpec],
    state_root: Path,
    *,
    policy: RetryPolicy | None = None,
    deadline: float = 1800.0,
    log: Callable[[str], None] = lambda m: None,
    upload: Upload = lambda name, done, total: None,
) -> list[ImageRecord]:
    """Build (when not cached) and push each image; the records, in order. Raises InfraError."""
    records: list[ImageRecord] = []
    done: dict[str, ImageRecord] = {}
    for spec in images:
        if spec.digest in done:
            records.append(done[spec.digest])
            continue
        if spec.builder == "debian":
            artefact = debianbuild.artefact(spec, state_root, log=log)
        elif (imagebuild.find_linuxkit() is None and imagebuild.cached(spec, state_root) is None
                and accepts_documents(store)):
            artefact = imagebuild.document_artefact(spec, state_root)
            log(f"no linuxkit: registering the LinuxKit YAML of {spec.name} itself as its image "
                "(the emulator boots from the document; a real cloud needs a built disk)")
        else:
            artefact = imagebuild.build(spec, state_root, log=log)
        log(f"pushing image {spec.name} ({artefact.stat().st_size:,} bytes)")

        def attempt(spec: ImageSpec = spec, artefact: Path = artefact) -> ImageRecord:
            return store.push_image(spec, artefact, lambda d, t: upload(spec.name, d, t))

        record = retry.call(attempt, policy or RetryPolicy(), deadline=time.monotonic() + deadline)
        log(f"image {spec.name} is ready ({record.id})")
        done[spec.digest] = record
        records.append(record)
    return records
