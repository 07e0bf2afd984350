"""The conformance suite run against the local provider, with a real HTTP server per instance."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from providers.local import LocalProvider
from providers.local.store import new_id, write_json
from reconciler.kit.provider import Provider
from reconciler.testing import ProviderConformance
from tests.providers.test_local_support import http_get, http_service, teardown_root


class TestLocalProvider(ProviderConformance):
    services = (http_service(),)

    @pytest.fixture
    def provider(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stack: str) -> Iterator[Provider]:
        monkeypatch.setenv("INFRA_STATE_DIR", str(tmp_path / "state"))
        root = tmp_path / "local"
        p = LocalProvider.open({"root": str(root), "grace": 2.0}, stack=stack, state_dir=tmp_path)
        yield p
        p.close()
        teardown_root(root)

    def add_foreign(self, provider: Provider, name: str, labels: Mapping[str, str]) -> str:
        """An instance directory another tool made: a record with foreign or no labels."""
        assert isinstance(provider, LocalProvider)
        directory = provider.root / "instances" / name
        directory.mkdir(parents=True)
        instance_id = new_id()
        write_json(directory / "instance.json", {"id": instance_id, "name": name, "labels": dict(labels)})
        return instance_id

    def test_created_instances_serve_on_their_own_address(self, provider: Provider, stack: str) -> None:
        a = provider.create(self.spec(stack, "web-0", index=0))
        b = provider.create(self.spec(stack, "web-1", index=1))
        assert a.address and b.address and a.address != b.address
        assert http_get(a.address) == 200
        assert http_get(b.address) == 200
