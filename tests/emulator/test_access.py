"""Who may use an emulator: only the client that holds the credential it printed.

Against the real ``infra emulator gcp|aws`` processes: every request without the per-run
credential is refused (the GCE emulator's bearer token; the EC2 emulator's IAM key, checked by
moto's own signature and IAM code), a request naming another host (DNS rebinding) is refused,
nothing answers a browser (no CORS, no preflight, no form bodies), moto's admin API is closed,
Prometheus's discovery identity can list and nothing else, and the machines die with their
emulator even when it is killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.emulator.conftest import Emulator, launch, wait_for

pytestmark = pytest.mark.e2e

INSTANCES = "/compute/v1/projects/my-project/zones/us-central1-a/instances"


def ask(url: str, method: str = "GET", body: bytes | None = None, **headers: str) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            raw = resp.read()
            return resp.status, dict(resp.headers), json.loads(raw) if raw.strip().startswith(b"{") else raw
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, dict(exc.headers), json.loads(raw) if raw.strip().startswith(b"{") else raw


def bare(cloud: str, tmp_path: Path) -> Iterator[Emulator]:
    """The emulator with no stack: stopped with SIGTERM, exit 0."""
    emu = launch(cloud, tmp_path)
    yield emu
    emu.proc.send_signal(signal.SIGTERM)
    assert emu.proc.wait(timeout=60) == 0


@pytest.fixture
def bare_gce(tmp_path: Path) -> Iterator[Emulator]:
    yield from bare("gcp", tmp_path)


@pytest.fixture
def bare_ec2(tmp_path: Path) -> Iterator[Emulator]:
    yield from bare("aws", tmp_path)


def test_the_gce_emulator_answers_only_its_token_holder(bare_gce: Emulator) -> None:
    emu = bare_gce
    url, token, sd_token = emu.url, emu.exports["INFRA_GCP_ACCESS_TOKEN"], emu.exports["INFRA_GCP_SD_TOKEN"]
    assert len(token) >= 32 and token != sd_token
    good = {"Authorization": f"Bearer {token}"}
    paths = ["/compute/v1/projects/my-project/aggregated/instances", INSTANCES, "/_admin/instances",
             "/_emulator/info", "/_emulator/sd/my-project", "/storage/v1/b/my-project-infra-images/o"]
    for path in paths:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}, {"Authorization": f"Basic {token}"}):
            code, _, body = ask(url + path, **headers)
            assert code == 401, (path, headers, code, body)
            assert body["error"]["status"] == "UNAUTHENTICATED"
        assert ask(url + path, **good)[0] == 200, path
    # The discovery token lists addresses and opens nothing else.
    assert ask(url + "/_emulator/sd/my-project", Authorization=f"Bearer {sd_token}")[0] == 200
    assert ask(url + "/_admin/instances", Authorization=f"Bearer {sd_token}")[0] == 401
    assert ask(url + INSTANCES, Authorization=f"Bearer {sd_token}")[0] == 401

    # A page that rebinds its own name to 127.0.0.1 sends its own Host: refused, token or not.
    code, _, body = ask(url + INSTANCES, **good, Host="attacker.example")
    assert code == 403 and "not this emulator" in body["error"]["message"]

    # Nothing answers a browser: a form or text body is refused, a preflight too, no CORS header.
    insert = json.dumps({"name": "planted", "machineType": "zones/us-central1-a/machineTypes/e2-small"}).encode()
    code, headers, _ = ask(url + INSTANCES, "POST", insert, **good, **{"Content-Type": "text/plain"})
    assert code == 415
    code, headers, _ = ask(url + INSTANCES, "OPTIONS", **good, Origin="http://attacker.example",
                           **{"Access-Control-Request-Method": "POST"})
    assert code == 405 and not any(k.lower().startswith("access-control") for k in headers)
    assert ask(url + INSTANCES, **good)[2].get("items") is None  # nothing was planted
    code, headers, _ = ask(url + INSTANCES, **good, Origin="http://attacker.example")
    assert code == 200 and not any(k.lower().startswith("access-control") for k in headers)


def test_infra_with_a_wrong_gce_token_is_a_clear_credentials_error(bare_gce: Emulator) -> None:
    out = bare_gce.infra("plan", "stacks/etcd-gcp.py", INFRA_GCP_ACCESS_TOKEN="not-the-token")
    assert out.returncode == 1
    assert "401" in out.stderr or "credential" in out.stderr.lower(), out.stderr
    assert "not-the-token" not in out.stdout + out.stderr
    assert bare_gce.infra("plan", "stacks/etcd-gcp.py").returncode == 0


def test_the_ec2_emulator_answers_only_its_iam_keys(bare_ec2: Emulator) -> None:
    emu = bare_ec2
    url, exports = emu.url, emu.exports

    def ec2(key: str | None, secret: str | None, **extra: Any) -> Any:
        return boto3.client("ec2", region_name="us-east-1", endpoint_url=url, aws_access_key_id=key,
                            aws_secret_access_key=secret, **extra)

    infra = ec2(exports["AWS_ACCESS_KEY_ID"], exports["AWS_SECRET_ACCESS_KEY"])
    vpcs = len(infra.describe_vpcs()["Vpcs"])
    refused = [ec2("AKIAIOSFODNN7EXAMPLE", "made-up"),  # a key of nothing
               ec2(exports["AWS_ACCESS_KEY_ID"], "wrong-secret"),  # the key, another secret
               ec2(None, None, config=Config(signature_version=UNSIGNED))]  # not signed at all
    for client in refused:
        with pytest.raises(ClientError) as caught:
            client.describe_instances()
        assert caught.value.response["Error"]["Code"] == "AuthFailure"
        with pytest.raises(ClientError):
            client.create_vpc(CidrBlock="127.80.0.0/16")
    ebs = boto3.client("ebs", region_name="us-east-1", endpoint_url=url, aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
                       aws_secret_access_key="made-up")
    with pytest.raises(ClientError):
        ebs.start_snapshot(VolumeSize=1)

    # Prometheus's identity lists instances and can change nothing.
    sd = ec2(exports["INFRA_AWS_SD_ACCESS_KEY_ID"], exports["INFRA_AWS_SD_SECRET_ACCESS_KEY"])
    sd.describe_instances()
    for call in (lambda: sd.create_vpc(CidrBlock="127.81.0.0/16"),
                 lambda: sd.register_image(Name="planted-image", RootDeviceName="/dev/sda1"),
                 lambda: sd.terminate_instances(InstanceIds=["i-0123456789abcdef0"])):
        with pytest.raises(ClientError) as caught:
            call()
        assert caught.value.response["Error"]["Code"] == "AccessDenied"
    assert len(infra.describe_vpcs()["Vpcs"]) == vpcs

    # moto's admin API (reset, switch authentication off) is closed; rebinding and browsers refused.
    assert ask(url + "/moto-api/reset", "POST", b"")[0] == 404
    assert ask(url + "/moto-api/reset-auth", "POST", b"inf")[0] == 404
    assert ask(url + "/", Host="attacker.example")[0] == 403
    code, headers, _ = ask(url + "/", "OPTIONS", Origin="http://attacker.example")
    assert code == 405 and not any(k.lower().startswith("access-control") for k in headers)
    assert ask(url + "/_emulator/info")[0] == 401
    with pytest.raises(ClientError):
        refused[2].describe_instances()
    assert len(infra.describe_vpcs()["Vpcs"]) == vpcs  # nothing was reset


def test_the_machines_die_with_the_emulator_even_on_sigkill(tmp_path: Path) -> None:
    emu = launch("gcp", tmp_path)
    try:
        emu.ok("apply", "stacks/etcd-gcp.py", "--yes")
        running = emu.processes()
        names = {p.name() for p in running}
        assert {"etcd", "prometheus"} <= names, names
        os.kill(emu.proc.pid, signal.SIGKILL)
        assert emu.proc.wait(timeout=10) == -signal.SIGKILL
        wait_for("every machine process to end with its emulator", lambda: not emu.processes() or None, timeout=20)
        assert not [p for p in running if p.is_running() and p.status() != "zombie"]
    finally:
        if emu.proc.poll() is None:
            emu.proc.kill()
        for p in emu.processes():
            p.kill()
        # The machines' directories would hold their addresses for the next emulator (local claims).
        shutil.rmtree(tmp_path / "emulator-state", ignore_errors=True)
