"""The gcp provider's image push (providers/gcp/images.py) against the fake Compute and Cloud Storage APIs.

Artefacts come from the tests' linuxkit stand-in. Checked: what a push creates (a GCS object, an
image in the ``infra-<group>`` family labelled with the digest, imported from that object), that a
second push makes one lookup and no upload or insert, that a crash between upload and insert
(and an insert whose answer was lost) is recovered by the next push without a second upload or
image, that a foreign image holding the name is never used or replaced, and delete.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from providers.gcp import GcpProvider
from reconciler.core.errors import ConfigError, PermanentError, TransientError
from reconciler.core.image import ImageSpec
from reconciler.core.model import MemberSpec
from tests.gcp.support import open_provider
from tests.gcp_fake import FakeCompute
from tests.linuxkit_standin.artefact import build_with_standin, web_image, yaml_of

BUCKET = "infra-test-images"


@pytest.fixture
def fake() -> Iterator[FakeCompute]:
    with FakeCompute(op_delay=0.05, boot_delay=0.02) as server:
        server.storage.add_bucket(BUCKET)
        yield server


@pytest.fixture
def provider(fake: FakeCompute, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[GcpProvider]:
    p = open_provider(fake, monkeypatch, tmp_path, image_bucket=BUCKET)
    yield p
    p.close()


def spec() -> ImageSpec:
    return web_image("gcp")


@pytest.fixture
def artefact(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return build_with_standin(spec(), tmp_path / "root", monkeypatch.setenv)


def counts(fake: FakeCompute) -> dict[str, int]:
    return {**fake.call_counts(), **fake.storage.calls}


def reset(fake: FakeCompute) -> None:
    fake.reset_calls()
    fake.storage.calls.clear()


def test_push_uploads_inserts_and_waits_for_a_ready_image(fake: FakeCompute, provider: GcpProvider,
                                                          artefact: Path) -> None:
    image = spec()
    progress: list[tuple[int, int]] = []
    record = provider.push_image(image, artefact, lambda d, t: progress.append((d, t)))
    assert record.ready and record.name == image.name and record.digest == image.digest
    stored = fake.api_image("my-project", image.name)
    assert stored["status"] == "READY" and stored["family"] == "infra-web"
    assert stored["labels"] == {"infra-image": image.digest}
    obj_name = f"infra-images/{image.digest}/{artefact.name}"
    assert stored["rawDisk"]["source"] == f"https://storage.googleapis.com/{BUCKET}/{obj_name}"
    obj = fake.storage.get(BUCKET, obj_name)
    assert obj is not None and obj.data == artefact.read_bytes()
    assert progress[-1] == (artefact.stat().st_size, artefact.stat().st_size)
    assert provider.find_image(image) == record
    assert "image: busybox:1.36" in yaml_of(artefact)  # the image document it was built from


def test_a_second_push_makes_one_lookup_and_no_upload_or_insert(fake: FakeCompute, provider: GcpProvider,
                                                                artefact: Path) -> None:
    first = provider.push_image(spec(), artefact, lambda d, t: None)
    reset(fake)
    again = provider.push_image(spec(), artefact, lambda d, t: None)
    assert again == first
    assert counts(fake) == {"images.list": 1}


def test_a_crash_between_upload_and_insert_is_recovered_without_a_second_upload(
    fake: FakeCompute, provider: GcpProvider, artefact: Path
) -> None:
    fake.queue_failure("images.insert", 503, "backendError", "The service is currently unavailable.")
    with pytest.raises(TransientError):
        provider.push_image(spec(), artefact, lambda d, t: None)
    # uploaded: the disk and, beside it, the LinuxKit YAML it was built from; no image yet
    assert sorted(n.rsplit("/", 1)[-1] for (_, n) in fake.storage.objects) == [artefact.name, f"{spec().name}.yml"]
    assert not fake.images.get(("my-project", spec().name))
    reset(fake)
    record = provider.push_image(spec(), artefact, lambda d, t: None)
    assert record.ready
    assert fake.storage.calls.get("storage.objects.insert", 0) == 0  # the object was already there
    assert fake.call_counts()["images.insert"] == 1


def test_an_insert_whose_answer_was_lost_makes_no_second_image(fake: FakeCompute, provider: GcpProvider,
                                                               artefact: Path) -> None:
    fake.queue_failure("images.insert", 503, "backendError", "lost", after=True)
    with pytest.raises(TransientError):
        provider.push_image(spec(), artefact, lambda d, t: None)
    reset(fake)
    record = provider.push_image(spec(), artefact, lambda d, t: None)
    assert record.ready
    assert fake.call_counts().get("images.insert", 0) == 0  # found by its digest label
    assert [k for k in fake.images if k[1].startswith("infra-web-")] == [("my-project", spec().name)]


def test_a_foreign_image_holding_the_name_is_neither_used_nor_replaced(fake: FakeCompute, provider: GcpProvider,
                                                                       artefact: Path) -> None:
    fake.add_image("my-project", spec().name, "someone-else")
    with pytest.raises(PermanentError, match="without label infra-image"):
        provider.push_image(spec(), artefact, lambda d, t: None)
    assert fake.api_image("my-project", spec().name).get("family") == "someone-else"
    assert fake.call_counts().get("images.delete", 0) == 0


def test_a_push_needs_a_bucket(fake: FakeCompute, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                               artefact: Path) -> None:
    p = open_provider(fake, monkeypatch, tmp_path)
    try:
        with pytest.raises(ConfigError, match=r"provider_config\.image_bucket"):
            p.push_image(spec(), artefact, lambda d, t: None)
        member = MemberSpec(stack="st", group="web", member="web-0", role="command", image=spec().name,
                            image_digest=spec().digest, machine_type="e2-small")
        assert [pr.field for pr in p.validate([member])] == ["groups.web.provider_config.image_bucket"]
    finally:
        p.close()


def test_an_artefact_gce_cannot_import_fails_the_push(fake: FakeCompute, provider: GcpProvider, tmp_path: Path) -> None:
    bogus = tmp_path / "infra-web-x.img.tar.gz"
    bogus.write_bytes(b"not a tarball")
    with pytest.raises(PermanentError, match="not a gzip-compressed tar archive"):
        provider.push_image(spec(), bogus, lambda d, t: None)


def test_delete_removes_the_image_and_its_object(fake: FakeCompute, provider: GcpProvider, artefact: Path) -> None:
    record = provider.push_image(spec(), artefact, lambda d, t: None)
    provider.delete_image(record)
    assert provider.find_image(spec()) is None and not fake.storage.objects
    provider.delete_image(record)  # already gone: success
