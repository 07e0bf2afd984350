"""Fixtures for the Pulumi bridge: the fakecloud plugin (a real gRPC plugin process) and its cloud."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

BIN = Path(__file__).resolve().parent / "bin"
TOKEN = "good-token"


def bridge_config(**extra: Any) -> dict[str, Any]:
    """``provider_config`` for fakecloud with the generic keys only (no preset): what a stack file says."""
    return {
        "plugin": "fakecloud",
        "config": {"token": {"env": "FAKECLOUD_API_TOKEN"}},
        "resource": "fakecloud:index/server:Server",
        "inputs": {"name": "{name}", "serverType": "{machine_type}", "image": "{image}", "labels": "{labels}",
                   "userData": "{userdata}"},
        "list": {"function": "fakecloud:index/getServers:getServers", "args": {"withSelector": "{selector}"},
                 "items": "servers",
                 "fields": {"id": "id", "name": "name", "labels": "labels", "address": "ipv4Address",
                            "status": "status"}},
        "status": {"running": "running", "initializing": "pending", "off": "stopped"},
        **extra,
    }


@dataclass
class FakeCloud:
    """The fakecloud's state and fault files, and the environment that points the plugin at them."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "cloud.json"

    @property
    def faults(self) -> Path:
        return self.root / "faults.json"

    def env(self) -> dict[str, str]:
        return {"FAKECLOUD_STATE": str(self.state), "FAKECLOUD_FAULTS": str(self.faults),
                "FAKECLOUD_PYTHON": sys.executable, "FAKECLOUD_API_TOKEN": TOKEN,
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}

    def servers(self) -> dict[str, dict[str, Any]]:
        if not self.state.exists():
            return {}
        doc: dict[str, Any] = json.loads(self.state.read_text())
        servers: dict[str, dict[str, Any]] = doc["servers"]
        return servers

    def inject(self, **faults: int) -> None:
        self.faults.write_text(json.dumps(faults))

    def add(self, name: str, labels: dict[str, str]) -> str:
        """A server made behind infra's back (another tool's, another stack's)."""
        doc: dict[str, Any] = json.loads(self.state.read_text()) if self.state.exists() else {"next_id": 1000,
                                                                                              "servers": {}}
        server_id = doc["next_id"]
        doc["next_id"] += 1
        doc["servers"][str(server_id)] = {"id": server_id, "name": name, "serverType": "cx22", "image": "debian-12",
                                          "labels": labels, "userData": "", "status": "running",
                                          "ipv4Address": "127.92.255.1", "rootPassword": "hunter2-root"}
        self.state.write_text(json.dumps(doc))
        return str(server_id)


@pytest.fixture
def fakecloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCloud]:
    cloud = FakeCloud(tmp_path / "fakecloud")
    cloud.root.mkdir()
    for key, value in cloud.env().items():
        monkeypatch.setenv(key, value)
    yield cloud
