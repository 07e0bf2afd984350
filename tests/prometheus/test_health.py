"""The prometheus role's health verdicts and readiness wait against real sockets on loopback."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from plugins.prometheus import PrometheusRole
from plugins.prometheus import role as role_module
from reconciler.core.errors import HealthTimeoutError
from reconciler.core.model import Health, Instance, InstanceStatus
from reconciler.kit.role import RoleContext
from tests.prometheus.conftest import MetricsServer, free_port

MakeCtx = Callable[..., RoleContext]


def instance(address: str | None = "127.0.0.1") -> Instance:
    labels = {"infra-stack": "demo", "infra-group": "prom", "infra-member": "prom-0", "infra-spec": "x"}
    return Instance(id="p0", name="demo-prom-prom-0-x", labels=labels, address=address, status=InstanceStatus.RUNNING)


def test_something_else_on_the_port_is_unhealthy(
    make_ctx: MakeCtx, role: PrometheusRole, metrics_server: Callable[..., MetricsServer]
) -> None:
    server = metrics_server()  # answers 404 on /-/ready: not a Prometheus
    ctx = make_ctx({"watch": ["etcd"], "port": server.port})
    assert role.health(ctx, instance()) is Health.UNHEALTHY


def test_nothing_listening_or_no_address_is_unknown(make_ctx: MakeCtx, role: PrometheusRole) -> None:
    ctx = make_ctx({"watch": ["etcd"], "port": free_port()})
    assert role.health(ctx, instance()) is Health.UNKNOWN
    assert role.health(ctx, instance(address=None)) is Health.UNKNOWN


def test_after_create_gives_up_with_a_health_timeout(
    make_ctx: MakeCtx, role: PrometheusRole, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(role_module, "READY_TIMEOUT", 0.5)
    ctx = make_ctx({"watch": ["etcd"], "port": free_port()})
    (member,) = role.expand(ctx)
    with pytest.raises(HealthTimeoutError, match="'prom-0' did not become ready") as err:
        role.after_create(ctx, member, instance())
    assert "PRIVATE KEY" not in str(err.value)
