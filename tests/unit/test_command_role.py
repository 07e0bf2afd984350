"""The command role's health verdicts and gate, on real sockets, and its reachability rule."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from plugins.command import CommandConfig, CommandRole
from providers.memory import MemoryProvider
from reconciler.core.errors import HealthTimeoutError
from reconciler.core.model import Health, Instance, InstanceStatus
from reconciler.core.stack import Group, Stack
from reconciler.kit.role import RoleContext


def ctx(port: int, tmp_path: Path, **extra: object) -> RoleContext:
    config = CommandConfig(command=["x"], port=port, ready_timeout=0.5, **extra)  # type: ignore[arg-type]
    group = Group(name="web", size=1, config={"command": ["x"], "port": port})
    return RoleContext(stack=Stack(name="t", provider="memory", groups=(group,)), group=group, config=config,
                       provider=MemoryProvider.open({}, stack="t", state_dir=tmp_path), state_dir=tmp_path,
                       log=lambda m: logs.append(m))


logs: list[str] = []


def inst(address: str, status: InstanceStatus = InstanceStatus.RUNNING) -> Instance:
    return Instance(id="i", name="n", address=address, status=status)


def test_listening_is_healthy_refused_is_unhealthy(tmp_path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    role, c = CommandRole(), ctx(port, tmp_path)
    assert role.health(c, inst("127.0.0.1")) is Health.HEALTHY
    server.close()
    assert role.health(c, inst("127.0.0.1")) is Health.UNHEALTHY
    assert role.health(c, inst("127.0.0.1", InstanceStatus.DEAD)) is Health.UNHEALTHY


def test_the_gate_times_out_when_nothing_listens(tmp_path: Path) -> None:
    role, c = CommandRole(), ctx(1, tmp_path)
    member = role.expand(c)[0]
    start = time.monotonic()
    with pytest.raises(HealthTimeoutError, match="did not answer"):
        role.after_create(c, member, inst("127.0.0.1"))
    assert time.monotonic() - start < 3


def test_members_outside_the_allowed_networks_are_not_probed(tmp_path: Path) -> None:
    # the suite runs with INFRA_NETWORK_ALLOW=127.0.0.0/8 (tests/conftest.py)
    role, c = CommandRole(), ctx(8080, tmp_path)
    member = role.expand(c)[0]
    logs.clear()
    start = time.monotonic()
    assert role.health(c, inst("10.0.0.7")) is Health.UNKNOWN
    role.after_create(c, member, inst("10.0.0.7"))  # returns at once, says why
    assert time.monotonic() - start < 0.5
    assert any("outside INFRA_NETWORK_ALLOW" in m for m in logs)
