"""Builds LinuxKit images with the real ``linuxkit`` CLI, cached by digest.

Called by the engine before it pushes an image (:meth:`reconciler.engine.engine.Engine.push_images`)
and by ``infra image build``. The CLI is ``$INFRA_LINUXKIT`` when set, else ``linuxkit`` on
``PATH``; infra runs::

    linuxkit build --format <format> --name <image name> --dir <tmp> <image name>.yml

and keeps the artefact (``<name>.img.tar.gz`` for ``gcp``, ``<name>.raw`` for ``aws``, the
names linuxkit gives them) under ``<state root>/images/<digest>/`` with the YAML it was built
from. A build writes into a temporary directory that is renamed into place only when linuxkit
succeeded, so a crash never leaves a half-written artefact in the cache, and an artefact in the
cache is never built again.

When no ``linuxkit`` is found, :class:`LinuxkitMissingError` (a ConfigError: exit 1, nothing
changed) says how to install it; ``infra validate`` reports the same before anything starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Final

from reconciler.core.errors import ConfigError, PermanentError
from reconciler.core.image import ImageSpec

LINUXKIT_ENV: Final = "INFRA_LINUXKIT"
#: The file ``linuxkit build`` writes for each output format infra uses (``<name><suffix>``).
OUTPUT_SUFFIX: Final = {"gcp": ".img.tar.gz", "aws": ".raw", "raw-bios": "-bios.img"}
INSTALL_HINT: Final = (
    "install the linuxkit CLI (a release binary from https://github.com/linuxkit/linuxkit/releases, "
    "or 'go install github.com/linuxkit/linuxkit/src/cmd/linuxkit@latest'); it needs Docker to build. "
    f"Put it on PATH or set {LINUXKIT_ENV} to its path"
)
#: How long one build may take (pulling component images is the slow part).
BUILD_TIMEOUT: Final = 1800.0


class LinuxkitMissingError(ConfigError):
    """No ``linuxkit`` CLI was found; nothing was built or changed."""


class BuildError(PermanentError):
    """An image build failed (``linuxkit build``, or the Debian builder's packages and tools); the
    message carries the end of the tool's output."""


def find_linuxkit() -> str | None:
    """The path of the linuxkit CLI to run, or None."""
    explicit = os.environ.get(LINUXKIT_ENV)
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("linuxkit")


def require_linuxkit(why: str = "") -> str:
    """The linuxkit CLI, or :class:`LinuxkitMissingError`."""
    found = find_linuxkit()
    if found is None:
        where = (f"{LINUXKIT_ENV}={os.environ[LINUXKIT_ENV]!r} is not an executable file"
                 if os.environ.get(LINUXKIT_ENV) else "no 'linuxkit' on PATH")
        raise LinuxkitMissingError(f"linuxkit is needed{(' ' + why) if why else ''}: {where}", hint=INSTALL_HINT)
    return found


def cache_root(state_root: Path) -> Path:
    return state_root / "images"


def artefact_path(image: ImageSpec, state_root: Path) -> Path:
    """Where the artefact of ``image`` is kept (whether or not it exists yet)."""
    return cache_root(state_root) / image.digest / f"{image.name}{OUTPUT_SUFFIX[image.format]}"


def cached(image: ImageSpec, state_root: Path) -> Path | None:
    """The cached artefact of ``image``, or None."""
    path = artefact_path(image, state_root)
    return path if path.is_file() else None


def document_artefact(image: ImageSpec, state_root: Path) -> Path:
    """The image's LinuxKit YAML as its artefact (``<digest>/<name>.yml``), for an emulator that
    boots from the document; written once, atomically."""
    path = cache_root(state_root) / image.digest / f"{image.name}.yml"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(image.yaml(), encoding="utf-8")
        tmp.replace(path)
    return path


def build(image: ImageSpec, state_root: Path, *, log: Callable[[str], None] = lambda m: None) -> Path:
    """The artefact of ``image``: from the cache, else built now. Raises BuildError, LinuxkitMissingError."""
    hit = cached(image, state_root)
    if hit is not None:
        return hit
    if image.format not in OUTPUT_SUFFIX:
        raise ConfigError(f"image {image.name}: infra cannot build LinuxKit format {image.format!r}")
    exe = require_linuxkit(f"to build image {image.name}")
    final = artefact_path(image, state_root)
    root = cache_root(state_root)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{image.digest[:12]}-", dir=root))
    try:
        source = tmp / f"{image.name}.yml"
        source.write_text(image.yaml(), encoding="utf-8")
        out = tmp / "out"
        out.mkdir()
        command = [exe, "build", "--format", image.format, "--name", image.name, "--dir", str(out), str(source)]
        log(f"building image {image.name}: linuxkit build --format {image.format}")
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                                  check=False, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BuildError(f"image {image.name}: could not run {exe}: {exc}") from exc
        produced = out / final.name
        if proc.returncode != 0 or not produced.is_file():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            raise BuildError(
                f"image {image.name}: linuxkit build exited {proc.returncode}"
                + ("" if produced.is_file() or proc.returncode else f" without writing {produced.name}")
                + (f":\n{tail}" if tail else ""),
                hint=f"the YAML it was given is kept in {root / (image.digest + '.failed')}",
            )
        produced.rename(tmp / final.name)
        shutil.rmtree(out)
        try:
            tmp.rename(final.parent)
        except OSError:  # another build of the same digest finished first: keep that one
            if not final.is_file():
                raise
    except BaseException:
        if tmp.exists():
            failed = root / f"{image.digest}.failed"
            shutil.rmtree(failed, ignore_errors=True)
            try:
                tmp.rename(failed)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
