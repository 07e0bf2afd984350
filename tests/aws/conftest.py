"""Fixtures of the aws provider tests: moto in-process (``mock_aws``) with a small world in it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from providers.aws import AwsProvider
from tests.aws import moto_world
from tests.aws.moto_world import REGION, World


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
