"""The conformance suite run against the in-process memory provider."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from providers.memory import MemoryProvider, world
from reconciler.kit.provider import Provider
from reconciler.testing import ProviderConformance


class TestMemoryProvider(ProviderConformance):
    @pytest.fixture
    def provider(self, tmp_path: Path, stack: str) -> Iterator[Provider]:
        p = MemoryProvider.open({"world": uuid.uuid4().hex}, stack=stack, state_dir=tmp_path)
        yield p
        p.close()

    def add_foreign(self, provider: Provider, name: str, labels: Mapping[str, str]) -> str:
        assert isinstance(provider, MemoryProvider)
        return world(provider.config.world).add_foreign(name, labels).id
