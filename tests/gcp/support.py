"""Helpers shared by the gcp tests: the fake Compute API's admin calls and an open provider.

Used by ``tests/gcp/test_*.py`` and ``tests/conformance/test_gcp.py``.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from providers.gcp import ENDPOINT_ENV, GcpProvider
from providers.gcp.config import ACCESS_TOKEN_ENV
from providers.gcp.emulator.compute import FakeCompute

PROJECT = "my-project"
ZONES = ["us-central1-a", "us-central1-b"]
IMAGE = "family/infra-etcd"
MACHINE_TYPE = "e2-small"


Fake = FakeCompute | str  # a fake, or the URL of one whose token is in the environment (open_provider)


def admin(fake: Fake, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
    """Call the fake's admin API (``/_admin/...``) with its token and return its JSON answer."""
    url, token = (fake, os.environ[ACCESS_TOKEN_ENV]) if isinstance(fake, str) else (fake.url, fake.token)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def calls(fake: Fake) -> dict[str, int]:
    return dict(admin(fake, "GET", "/_admin/calls")["calls"])


def add_foreign(fake: Fake, name: str, labels: Mapping[str, str], zone: str = ZONES[0]) -> str:
    """Put an instance at the fake without going through infra; returns its provider id."""
    admin(fake, "POST", "/_admin/instances", {"project": PROJECT, "zone": zone, "name": name, "labels": dict(labels)})
    return f"{zone}/{name}"


def open_provider(
    fake: Fake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stack: str = "conf", **config: Any
) -> GcpProvider:
    if isinstance(fake, str):
        monkeypatch.setenv(ENDPOINT_ENV, fake)
    else:
        for key, value in fake.env().items():
            monkeypatch.setenv(key, value)
    settings: dict[str, Any] = {"project": PROJECT, "zones": ZONES, "retry_deadline": 20.0, **config}
    return GcpProvider.open(settings, stack=stack, state_dir=tmp_path)
