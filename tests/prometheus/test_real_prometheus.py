"""The rendered configuration run by the real Prometheus 2.42 against real metrics servers.

File-based discovery is driven here the way the local provider drives it (a JSON file per group
and port, rewritten atomically), so these tests pin down what the role relies on: Prometheus
follows the file without a restart, labels targets by member, and scrapes mutual-TLS endpoints
with the files the role delivers next to ``prometheus.yml``.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from plugins.prometheus import PrometheusRole
from reconciler.core.model import Health, Instance, InstanceStatus, MemberSpec
from reconciler.kit.pki import StackCA
from reconciler.kit.role import MetricsTarget, RoleContext
from tests.prometheus.conftest import (
    FakeDiscoveryProvider,
    MetricsServer,
    RunningPrometheus,
    free_port,
    write_member_files,
)

MakeCtx = Callable[..., RoleContext]
StartServer = Callable[..., MetricsServer]
StartPrometheus = Callable[[MemberSpec, Path], RunningPrometheus]


def write_sd(provider: FakeDiscoveryProvider, group: str, port: int, members: dict[str, str]) -> None:
    """What the local provider does on each pass: one file_sd file per group and port."""
    path = provider.sd_file({"infra-stack": "demo", "infra-group": group}, port)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = [
        {
            "targets": [target],
            "labels": {"infra_stack": "demo", "infra_group": group, "infra_member": member},
        }
        for member, target in sorted(members.items())
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def up_members(targets: list[dict[str, Any]], job: str) -> dict[str, str]:
    return {t["labels"].get("member", "?"): t["health"] for t in targets if t["scrapePool"] == job}


def start(
    role: PrometheusRole, ctx: RoleContext, tmp_path: Path, run_prometheus: StartPrometheus
) -> tuple[MemberSpec, RunningPrometheus]:
    (member,) = role.expand(ctx)
    config_dir = tmp_path / "config"
    write_member_files(member, config_dir)
    return member, run_prometheus(member, config_dir)


def test_discovers_members_and_follows_scaling_without_restart(
    make_ctx: MakeCtx,
    role: PrometheusRole,
    metrics_server: StartServer,
    run_prometheus: StartPrometheus,
    tmp_path: Path,
) -> None:
    port = free_port()
    web_port = 8080  # what the role says; the discovery file carries each member's real address
    ctx = make_ctx(
        {"watch": ["web"], "port": port, "scrape_interval": "1s"}, metrics={"web": [MetricsTarget(port=web_port)]}
    )
    provider = ctx.provider
    assert isinstance(provider, FakeDiscoveryProvider)
    servers = [metrics_server() for _ in range(3)]
    write_sd(provider, "prom", port, {"prom-0": f"127.0.0.1:{port}"})
    write_sd(provider, "web", web_port, {"web-0": servers[0].target, "web-1": servers[1].target})
    _, prom = start(role, ctx, tmp_path, run_prometheus)
    pid = prom.proc.pid

    targets = prom.wait_for(lambda t: up_members(t, "web") == {"web-0": "up", "web-1": "up"})
    web0 = next(t for t in targets if t["labels"].get("member") == "web-0")
    assert web0["labels"]["instance"] == "web-0"
    assert web0["labels"]["group"] == "web"
    assert not any(k.startswith("infra_") for k in web0["labels"]), "raw provider labels are renamed"
    prom.wait_for(lambda t: up_members(t, "prom") == {"prom-0": "up"})

    # Scale up: a third member appears in the discovery file only.
    write_sd(provider, "web", web_port, {f"web-{i}": s.target for i, s in enumerate(servers)})
    prom.wait_for(lambda t: up_members(t, "web") == {"web-0": "up", "web-1": "up", "web-2": "up"})
    # Scale down to one.
    write_sd(provider, "web", web_port, {"web-0": servers[0].target})
    prom.wait_for(lambda t: up_members(t, "web") == {"web-0": "up"})
    assert prom.proc.poll() is None and prom.proc.pid == pid, "Prometheus was not restarted"


def test_scrapes_mutual_tls_endpoints_with_the_delivered_client_certificate(
    make_ctx: MakeCtx,
    role: PrometheusRole,
    metrics_server: StartServer,
    run_prometheus: StartPrometheus,
    tmp_path: Path,
) -> None:
    port = free_port()
    ctx = make_ctx(
        {"watch": ["etcd"], "port": port, "scrape_interval": "1s"},
        metrics={"etcd": [MetricsTarget(port=2379, scheme="https", mtls=True)]},
    )
    provider = ctx.provider
    assert isinstance(provider, FakeDiscoveryProvider)
    # A server like etcd with --client-cert-auth: its certificate from the stack's CA, its SAN
    # the address it is scraped at, and client certificates required.
    ca = StackCA(ctx.state_dir)
    server_cert = ca.issue("etcd-0", sans=["127.0.0.1"], server=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(server_cert.cert_path, server_cert.key_path)
    tls.load_verify_locations(ca.ca_cert_path)
    tls.verify_mode = ssl.CERT_REQUIRED
    server = metrics_server(tls=tls)
    # Without a client certificate the endpoint refuses.
    no_cert = ssl.create_default_context(cafile=str(ca.ca_cert_path))
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        urllib.request.urlopen(f"https://{server.target}/metrics", context=no_cert, timeout=5)

    write_sd(provider, "prom", port, {"prom-0": f"127.0.0.1:{port}"})
    write_sd(provider, "etcd", 2379, {"etcd-0": server.target})
    member, prom = start(role, ctx, tmp_path, run_prometheus)
    key = next(f for f in member.files if f.secret)
    assert (tmp_path / "config" / key.path).stat().st_mode & 0o777 == 0o600
    targets = prom.wait_for(lambda t: up_members(t, "etcd") == {"etcd-0": "up"})
    (etcd0,) = [t for t in targets if t["scrapePool"] == "etcd"]
    assert etcd0["scrapeUrl"].startswith("https://")


def test_health_and_status_read_the_real_prometheus(
    make_ctx: MakeCtx,
    role: PrometheusRole,
    metrics_server: StartServer,
    run_prometheus: StartPrometheus,
    tmp_path: Path,
) -> None:
    port = free_port()
    web_port = 8080
    ctx = make_ctx(
        {"watch": ["web"], "port": port, "scrape_interval": "1s"}, metrics={"web": [MetricsTarget(port=web_port)]}
    )
    provider = ctx.provider
    assert isinstance(provider, FakeDiscoveryProvider)
    server = metrics_server()
    gone = free_port()  # nothing listens here: a member whose process died
    write_sd(provider, "prom", port, {"prom-0": f"127.0.0.1:{port}"})
    write_sd(provider, "web", web_port, {"web-0": server.target, "web-1": f"127.0.0.1:{gone}"})
    _, prom = start(role, ctx, tmp_path, run_prometheus)
    prom.wait_for(lambda t: up_members(t, "web") == {"web-0": "up", "web-1": "down"})
    prom.wait_for(lambda t: up_members(t, "prom") == {"prom-0": "up"})

    labels = {"infra-stack": "demo", "infra-group": "prom", "infra-member": "prom-0", "infra-spec": "x"}
    me = Instance(id="p0", name="demo-prom-prom-0-x", labels=labels, address="127.0.0.1", status=InstanceStatus.RUNNING)
    assert role.health(ctx, me) is Health.HEALTHY
    elsewhere = me.model_copy(update={"address": "127.0.0.2"})  # nothing listens there
    assert role.health(ctx, elsewhere) is Health.UNKNOWN

    ctx.observed["prom"] = [me]
    status: dict[str, Any] = dict(role.status(ctx))
    rows = {(r["job"], r["member"]): r for r in status["targets"]}
    assert rows[("web", "web-0")]["health"] == "up"
    assert rows[("web", "web-1")]["health"] == "down"
    assert "refused" in str(rows[("web", "web-1")]["last_error"])
    assert rows[("prom", "prom-0")]["prometheus"] == "prom-0"
    assert status["summary"] == {"up": 2, "down": 1, "unknown": 0}
    assert "errors" not in status

    ctx.observed["prom"] = [elsewhere]
    status = dict(role.status(ctx))
    assert status["targets"] == []
    assert status["errors"][0]["prometheus"] == "prom-0"
