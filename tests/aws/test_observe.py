"""Observation cost: planning a stack of 2000 EC2 instances lists them in pages, never one by one.

The issue's bound: at most ceil(N/1000)+1 ``DescribeInstances`` calls for N instances, counted
with a botocore ``before-call`` hook on the provider's own client. The 2000 instances are put
straight into moto's backend, tagged exactly as ``create`` tags them (one reservation each, as
``create`` launches them), so the plan is empty only if every one of them was observed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from providers.aws import AwsProvider
from tests.aws import moto_world
from tests.aws.conftest import make_engine, web_stack
from tests.aws.moto_world import World


def test_tags_index_gives_moto_the_same_answers(ec2: Any, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.ec2.models.core import TaggedEC2Resource

    ec2.run_instances(ImageId=world.ami_id, MinCount=2, MaxCount=2, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "a", "Value": "1"}, {"Key": "Name", "Value": "x"}]}])
    def tags() -> list[list[tuple[str, str]]]:
        return sorted(sorted(moto_world.tags_of(i).items()) for i in moto_world.all_instances(ec2))

    before = tags()
    vpc_before = ec2.describe_vpcs()["Vpcs"]
    original = TaggedEC2Resource.get_tags
    moto_world.index_moto_tags(monkeypatch.setattr)
    assert TaggedEC2Resource.get_tags is not original
    assert tags() == before
    assert ec2.describe_vpcs()["Vpcs"] == vpc_before
    filtered = ec2.describe_instances(Filters=[{"Name": "tag:a", "Values": ["1"]}])["Reservations"]
    assert sum(len(r["Instances"]) for r in filtered) == 2


def test_planning_2000_instances_makes_at_most_3_describe_calls(
    provider: AwsProvider, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moto_world.index_moto_tags(monkeypatch.setattr)
    engine = make_engine(web_stack(world, 2000), provider, tmp_path)
    members = engine.desired({})[0].members
    moto_world.populate(world, members, tag=lambda s: {**s.labels, "Name": s.name})
    calls = moto_world.CallCounter(provider.client)
    planned = engine.plan()
    assert planned.empty, planned.plan.counts()  # all 2000 observed: nothing to create
    assert len(engine.context("web", planned.observed).instances) == 2000
    assert 2 <= calls.counts["DescribeInstances"] <= 3, calls.counts
