"""The conformance suite run against the aws provider on moto in-process (``mock_aws``).

moto holds a VPC with two subnets and a registered AMI; the provider finds the AMI by name
(``DescribeImages``, owned by this account) and spreads members over the subnets.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from providers.aws import AwsProvider
from reconciler.kit.provider import Provider
from reconciler.testing import ProviderConformance
from tests.aws import moto_world


class TestAwsProvider(ProviderConformance):
    spec_fields: Mapping[str, Any] = {"image": moto_world.AMI_NAME, "machine_type": moto_world.INSTANCE_TYPE}

    @pytest.fixture
    def provider(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stack: str) -> Iterator[Provider]:
        moto_world.fake_env(monkeypatch.setenv, lambda k: monkeypatch.delenv(k, raising=False))
        moto_world.strict_moto(monkeypatch.setattr)
        with mock_aws():
            world = moto_world.build(moto_world.client())
            p = AwsProvider.open(world.provider_config(), stack=stack, state_dir=tmp_path)
            yield p
            p.close()

    def add_foreign(self, provider: Provider, name: str, labels: Mapping[str, str]) -> str:
        assert isinstance(provider, AwsProvider)
        client = moto_world.client()
        image = client.describe_images(Owners=["self"])["Images"][0]["ImageId"]
        tags = [{"Key": "Name", "Value": name}, *({"Key": k, "Value": v} for k, v in labels.items())]
        resp = client.run_instances(
            ImageId=image, MinCount=1, MaxCount=1, InstanceType=moto_world.INSTANCE_TYPE,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )
        return str(resp["Instances"][0]["InstanceId"])
