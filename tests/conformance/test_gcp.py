"""The provider conformance suite run against the gcp provider and the fake Compute API.

Run twice: with two zones (observation through ``instances.aggregatedList``) and with one zone
(``instances.list``). Foreign instances are put in through the fake's admin API, as another tool
would create them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from providers.gcp import GcpProvider
from reconciler.kit.provider import Provider
from reconciler.testing import ProviderConformance
from tests.gcp.support import IMAGE, MACHINE_TYPE, add_foreign, open_provider
from tests.gcp_fake import FakeCompute


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeCompute]:
    with FakeCompute(op_delay=0.02, boot_delay=0.02) as server:
        yield server


class TestGcpProvider(ProviderConformance):
    spec_fields: Mapping[str, Any] = {"image": IMAGE, "machine_type": MACHINE_TYPE}
    zones: list[str] | None = None

    @pytest.fixture
    def provider(self, fake: FakeCompute, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                 stack: str) -> Iterator[Provider]:
        extra: dict[str, Any] = {"zones": self.zones} if self.zones else {}
        p = open_provider(fake, monkeypatch, tmp_path, stack=stack, **extra)
        yield p
        p.close()

    def add_foreign(self, provider: Provider, name: str, labels: Mapping[str, str]) -> str:
        assert isinstance(provider, GcpProvider) and provider.endpoint
        return add_foreign(provider.endpoint, name, labels)


class TestGcpProviderOneZone(TestGcpProvider):
    zones = ["us-central1-c"]

    def add_foreign(self, provider: Provider, name: str, labels: Mapping[str, str]) -> str:
        assert isinstance(provider, GcpProvider) and provider.endpoint
        return add_foreign(provider.endpoint, name, labels, zone="us-central1-c")
