"""The builder (reconciler.engine.imagebuild) running ``linuxkit build``: the stand-in, and a real CLI where one is installed.

Every test here runs once against the tests' stand-in (``tests/linuxkit_standin``) and once
against a real ``linuxkit`` on PATH (marker ``real_linuxkit``; skipped on machines that have none,
as these have: no Docker engine, no linuxkit release reachable).
"""

from __future__ import annotations

import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from reconciler.core.errors import ConfigError
from reconciler.core.image import ImageSpec
from reconciler.core.model import MemberSpec, Service
from reconciler.engine import imagebuild
from tests.linuxkit_standin.artefact import STANDIN, yaml_of

REAL = shutil.which("linuxkit")
CONTRACT = json.loads((STANDIN.parent / "contract.json").read_text())


@pytest.fixture(params=["standin", pytest.param("real", marks=pytest.mark.real_linuxkit)])
def linuxkit_cli(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """``INFRA_LINUXKIT`` set to a wrapper that logs each call, then runs the stand-in or the real CLI."""
    if request.param == "real":
        if REAL is None:
            pytest.skip("no real linuxkit on PATH")
        target = REAL
    else:
        target = str(STANDIN)
    log = tmp_path / "linuxkit-calls.log"
    wrapper = tmp_path / "linuxkit"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {target} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("INFRA_LINUXKIT", str(wrapper))
    yield log


def image(fmt: str, command: str = "httpd") -> ImageSpec:
    member = MemberSpec(stack="s", group="web", member="web-0", role="command",
                        services=(Service(name="web", image="busybox:1.36", command=(command, "-p", "{address}:80")),))
    return ImageSpec.of("web", [member], fmt=fmt, metadata=fmt)


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("fmt", ["gcp", "aws"])
def test_build_writes_the_named_artefact_once_and_caches_it(linuxkit_cli: Path, tmp_path: Path, fmt: str) -> None:
    spec = image(fmt)
    path = imagebuild.build(spec, tmp_path / "root")
    assert path == tmp_path / "root" / "images" / spec.digest / f"{spec.name}{CONTRACT['outputs'][fmt].split('}')[1]}"
    assert path.is_file()
    (call,) = calls(linuxkit_cli)
    assert call.startswith(f"build --format {fmt} --name {spec.name} --dir ")
    if fmt == "gcp":
        with tarfile.open(path) as tar:
            assert [m.name for m in tar.getmembers()] == ["disk.raw"]
    assert imagebuild.build(spec, tmp_path / "root") == path  # from the cache
    assert len(calls(linuxkit_cli)) == 1
    assert not [p for p in (tmp_path / "root" / "images").iterdir() if p.name.startswith(".build")]


def test_the_artefact_is_built_from_the_image_document(standin: Path, tmp_path: Path) -> None:
    """Only the stand-in embeds the YAML it was built from, so this runs against it alone."""
    spec = image("gcp")
    built = yaml.safe_load(yaml_of(imagebuild.build(spec, tmp_path)))
    assert built == yaml.safe_load(spec.yaml())


def test_a_failed_build_caches_nothing_and_keeps_the_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = image("aws")
    broken = tmp_path / "broken-linuxkit"
    broken.write_text('#!/bin/sh\necho "Error: pull access denied for busybox" >&2\nexit 1\n')
    broken.chmod(0o755)
    monkeypatch.setenv("INFRA_LINUXKIT", str(broken))
    with pytest.raises(imagebuild.BuildError, match="linuxkit build exited 1:\nError: pull access denied") as err:
        imagebuild.build(spec, tmp_path)
    assert not err.value.retryable
    assert imagebuild.cached(spec, tmp_path) is None
    kept = tmp_path / "images" / f"{spec.digest}.failed" / f"{spec.name}.yml"
    assert yaml.safe_load(kept.read_text()) == yaml.safe_load(spec.yaml())


def test_a_missing_linuxkit_is_one_clear_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("INFRA_LINUXKIT", raising=False)
    with pytest.raises(imagebuild.LinuxkitMissingError) as err:
        imagebuild.build(image("gcp"), tmp_path)
    assert isinstance(err.value, ConfigError)
    assert "no 'linuxkit' on PATH" in err.value.message and "install the linuxkit CLI" in str(err.value)
    assert not (tmp_path / "images").exists() or not any((tmp_path / "images").iterdir())
    monkeypatch.setenv("INFRA_LINUXKIT", str(tmp_path / "nope"))
    with pytest.raises(imagebuild.LinuxkitMissingError, match="is not an executable file"):
        imagebuild.build(image("gcp"), tmp_path)
