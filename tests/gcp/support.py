"""Helpers shared by the gcp tests: the fake Compute API's admin calls and an open provider.

Used by ``tests/gcp/test_*.py`` and ``tests/conformance/test_gcp.py``.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from providers.gcp import ENDPOINT_ENV, GcpProvider

PROJECT = "my-project"
ZONES = ["us-central1-a", "us-central1-b"]
IMAGE = "family/infra-etcd"
MACHINE_TYPE = "e2-small"


def admin(url: str, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
    """Call the fake's admin API (``/_admin/...``) and return its JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def calls(url: str) -> dict[str, int]:
    return dict(admin(url, "GET", "/_admin/calls")["calls"])


def add_foreign(url: str, name: str, labels: Mapping[str, str], zone: str = ZONES[0]) -> str:
    """Put an instance at the fake without going through infra; returns its provider id."""
    admin(url, "POST", "/_admin/instances", {"project": PROJECT, "zone": zone, "name": name, "labels": dict(labels)})
    return f"{zone}/{name}"


def open_provider(
    url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stack: str = "conf", **config: Any
) -> GcpProvider:
    monkeypatch.setenv(ENDPOINT_ENV, url)
    settings: dict[str, Any] = {"project": PROJECT, "zones": ZONES, "retry_deadline": 20.0, **config}
    return GcpProvider.open(settings, stack=stack, state_dir=tmp_path)
