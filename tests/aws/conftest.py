"""Fixtures of the aws provider tests: moto in-process (``mock_aws``) with a small world in it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from providers.aws import AwsProvider
from reconciler.core.stack import Group, Stack
from reconciler.engine.engine import Engine
from reconciler.kit import registry
from tests.aws import moto_world
from tests.aws.moto_world import World


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    moto_world.fake_env(monkeypatch.setenv, lambda k: monkeypatch.delenv(k, raising=False))
    moto_world.strict_moto(monkeypatch.setattr)


@pytest.fixture
def ec2(aws_env: None) -> Iterator[Any]:
    """A raw EC2 client on a fresh moto account (the test's view from outside infra)."""
    with mock_aws():
        yield moto_world.client()


@pytest.fixture
def world(ec2: Any) -> World:
    return moto_world.build(ec2)


@pytest.fixture
def provider(world: World, tmp_path: Path) -> Iterator[AwsProvider]:
    p = AwsProvider.open(world.provider_config(), stack="st", state_dir=tmp_path)
    yield p
    p.close()


def make_engine(stack: Stack, provider: AwsProvider, state_dir: Path, **kwargs: Any) -> Engine:
    """An engine wired to ``provider`` itself (so a test's botocore hooks on its client apply)."""
    roles = {g.name: registry.role(g.role) for g in stack.groups}
    configs = {g.name: roles[g.name].config_model.model_validate(g.config) for g in stack.groups}
    return Engine(stack, provider, roles, configs, state_dir=state_dir, **kwargs)


def web_stack(world: World, size: int, *, name: str = "st", **group: Any) -> Stack:
    """A stack with one ``command`` group ``web`` of ``size`` members on the moto world."""
    return Stack(
        name=name,
        provider="aws",
        provider_config=world.provider_config(),
        groups=(
            Group(name="web", size=size, role="command", image=world.ami_name, machine_type=moto_world.INSTANCE_TYPE,
                  config={"command": ["httpd", "-p", "8080"], "port": 8080, "health": "none"}, **group),
        ),
    )
