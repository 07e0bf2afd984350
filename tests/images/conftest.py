"""Fixtures of the image pipeline tests: the linuxkit stand-in, the fake GCE and an engine on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gcp_fake import FakeCompute
from tests.linuxkit_standin.artefact import STANDIN

BUCKET = "my-project-infra-images"


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Path:
    """``INFRA_LINUXKIT`` pointing at the tests' stand-in for the linuxkit CLI."""
    monkeypatch.setenv("INFRA_LINUXKIT", str(STANDIN))
    return STANDIN


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCompute]:
    with FakeCompute(op_delay=0.02, boot_delay=0.02) as server:
        server.storage.add_bucket(BUCKET)
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        yield server
