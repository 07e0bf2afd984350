"""The gcp provider's two ways to Compute (providers/gcp/api.py) stay true to google-cloud-compute.

Reads are JSON over google-auth's session; writes are google-cloud-compute's clients. Checked:
the read URI templates are google-cloud-compute's own (a drift in either is noticed here); every
answer the fake gives to those reads parses strictly as google-cloud-compute's message of that
method (so the field names the provider reads, which the provider tests exercise against the
fake, are the real API's); a failed read raises the exception google-cloud-compute raises for
the same answer; and a CLI call that only reads never imports google-cloud-compute, while one
that creates does.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import compute_v1

from providers.gcp import GcpProvider
from providers.gcp.api import READS
from reconciler.core.model import MemberSpec, stack_selector
from tests.gcp.support import IMAGE, MACHINE_TYPE, PROJECT, ZONES, open_provider
from tests.gcp_fake import FakeCompute

ROOT = Path(__file__).resolve().parents[2]

#: google-cloud-compute's message for each read's answer.
ANSWERS: dict[str, Any] = {
    "instances.get": compute_v1.Instance,
    "instances.list": compute_v1.InstanceList,
    "instances.aggregatedList": compute_v1.InstanceAggregatedList,
    "machineTypes.get": compute_v1.MachineType,
    "images.get": compute_v1.Image,
    "images.getFromFamily": compute_v1.Image,
    "images.list": compute_v1.ImageList,
}


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def http_options(method: str) -> list[dict[str, str]]:
    """google-cloud-compute's REST transport options of ``service.method`` (e.g. ``images.getFromFamily``)."""
    service, verb = method.split(".")
    module = importlib.import_module(f"google.cloud.compute_v1.services.{_snake(service)}.transports.rest_base")
    base = getattr(module, f"_Base{service[0].upper()}{service[1:]}RestTransport")
    options: list[dict[str, str]] = getattr(base, f"_Base{verb[0].upper()}{verb[1:]}")._get_http_options()
    return options


@pytest.mark.parametrize("method", sorted(READS))
def test_each_read_is_google_cloud_computes_get_of_that_method(method: str) -> None:
    assert http_options(method) == [{"method": "get", "uri": READS[method]}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeCompute]:
    with FakeCompute(op_delay=0.02, boot_delay=0.02) as server:
        server.add_image(PROJECT, "infra-etcd-1", family="infra-etcd")
        yield server


@pytest.fixture
def provider(fake: FakeCompute, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[GcpProvider]:
    p = open_provider(fake, monkeypatch, tmp_path, stack="api")
    yield p
    p.close()


def test_the_fakes_answers_to_every_read_parse_strictly_as_the_apis_messages(
    fake: FakeCompute, provider: GcpProvider
) -> None:
    spec = MemberSpec(stack="api", group="web", member="web-0", role="command", placement=0, image=IMAGE,
                      machine_type=MACHINE_TYPE)
    created = provider.create(spec)
    zone, _, name = created.id.partition("/")
    params = {
        "instances.get": {"project": PROJECT, "zone": zone, "instance": name},
        "instances.list": {"project": PROJECT, "zone": zone},
        "instances.aggregatedList": {"project": PROJECT},
        "machineTypes.get": {"project": PROJECT, "zone": ZONES[0], "machine_type": MACHINE_TYPE},
        "images.get": {"project": PROJECT, "image": "infra-etcd-1"},
        "images.getFromFamily": {"project": PROJECT, "family": "infra-etcd"},
        "images.list": {"project": PROJECT},
    }
    assert set(params) == set(READS)
    for method, message in ANSWERS.items():
        answer = provider.api.get(method, params[method])
        parsed = message.from_json(json.dumps(answer), ignore_unknown_fields=False)  # raises on a field the API lacks
        assert parsed, method
    listed = provider.list(stack_selector("api"))
    assert [(i.id, i.address) for i in listed] == [(created.id, created.address)] and created.address
    provider.delete(created)


def test_a_failed_read_raises_what_google_cloud_compute_raises(provider: GcpProvider) -> None:
    with pytest.raises(gexc.NotFound) as raw:
        provider.api.get("images.get", {"project": PROJECT, "image": "no-such-image"})
    client = provider.api.writes.images
    with pytest.raises(gexc.NotFound) as sdk:
        client.get(project=PROJECT, image="no-such-image", retry=None)
    assert type(raw.value) is type(sdk.value) and raw.value.code == sdk.value.code == 404
    assert raw.value.errors == sdk.value.errors


def cli(fake: FakeCompute, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -X importtime -m reconciler.cli ARGS`` against the fake (the import log is on stderr)."""
    env = {**os.environ, **fake.env(), "INFRA_STATE_DIR": str(state), "NO_COLOR": "1",
           "WEB_GCP_STACK": "apiimports", "INFRA_NETWORK_ALLOW": "127.0.0.0/8"}
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "reconciler.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def imported(proc: subprocess.CompletedProcess[str]) -> set[str]:
    return {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


def test_a_cli_call_that_only_reads_never_imports_google_cloud_compute(fake: FakeCompute, tmp_path: Path) -> None:
    stack = "tests/gcp/stacks/web-gcp.py"
    applied = cli(fake, tmp_path, "apply", stack, "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "google.cloud.compute_v1" in imported(applied)  # a create needs it: the check can see it
    for args in (("validate", stack), ("plan", stack, "--detailed-exitcode"), ("status", stack)):
        proc = cli(fake, tmp_path, *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        modules = imported(proc)
        assert "providers.gcp.provider" in modules
        assert not {m for m in modules if m.startswith(("google.cloud.compute", "grpc"))}, args
    destroyed = cli(fake, tmp_path, "destroy", stack, "--yes")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
