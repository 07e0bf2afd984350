"""The provider conformance suite against the Pulumi bridge, over real gRPC to the fakecloud plugin."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from providers.pulumi import PulumiProvider
from reconciler.kit.provider import Provider
from reconciler.testing import ProviderConformance
from tests.pulumi.conftest import FakeCloud, bridge_config


class TestPulumiBridge(ProviderConformance):
    spec_fields = {"machine_type": "cx22"}

    @pytest.fixture
    def provider(self, fakecloud: FakeCloud, stack: str, tmp_path: Path) -> Iterator[Provider]:
        self.cloud = fakecloud
        p = PulumiProvider.open(bridge_config(), stack=stack, state_dir=tmp_path)
        yield p
        p.close()

    def add_foreign(self, provider: Provider, name: str, labels: Mapping[str, str]) -> str:
        return self.cloud.add(name, dict(labels))
