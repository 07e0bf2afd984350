"""The aws provider's image push (providers/aws/images.py) against moto: EBS direct APIs + RegisterImage.

moto with the test world's fidelity fixes (:mod:`tests.aws.moto_fidelity`: RegisterImage keeps
its tags, an EBS-direct snapshot is pending until completed), artefacts from the tests' linuxkit
stand-in (a sparse 1 GiB raw disk whose only non-zero 512 KiB blocks are the first and the last).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ConnectionClosedError

from providers.aws import AwsProvider
from reconciler.core.errors import PermanentError, TransientError
from reconciler.core.image import ImageSpec
from tests.aws import moto_fidelity
from tests.aws.moto_world import World, tags_of
from tests.linuxkit_standin.artefact import build_with_standin, web_image, yaml_of_bytes

BLOCKS = (1 << 30) // (512 * 1024)


@pytest.fixture
def fidelity(monkeypatch: pytest.MonkeyPatch) -> None:
    moto_fidelity.apply(monkeypatch.setattr)


@pytest.fixture
def aws(fidelity: None, provider: AwsProvider) -> AwsProvider:
    return provider


def spec() -> ImageSpec:
    return web_image("aws")


@pytest.fixture
def artefact(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return build_with_standin(spec(), tmp_path / "root", monkeypatch.setenv)


class Calls:
    """Operations sent by the provider's EC2 and EBS clients."""

    def __init__(self, provider: AwsProvider) -> None:
        self.counts: Counter[str] = Counter()
        for client, service in ((provider.client, "ec2"), (provider.ebs_client(), "ebs")):
            client.meta.events.register(f"before-call.{service}", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.counts[model.name] += 1


@pytest.fixture
def calls(aws: AwsProvider) -> Calls:
    return Calls(aws)


def fail_once(provider: AwsProvider, service: str, operation: str, *, after: bool = False, when: int = 0) -> list[int]:
    """Make the ``when``-th ``operation`` call fail with a lost connection (``after``: once it took effect)."""
    seen: list[int] = []
    client = provider.client if service == "ec2" else provider.ebs_client()

    def hook(**_: Any) -> None:
        seen.append(1)
        if len(seen) == when + 1:
            raise ConnectionClosedError(endpoint_url="https://example.invalid/")

    client.meta.events.register(f"{'after' if after else 'before'}-call.{service}.{operation}", hook)
    return seen


def test_push_writes_only_non_zero_blocks_and_registers_a_tagged_ami(aws: AwsProvider, calls: Calls, ec2: Any,
                                                                    artefact: Path) -> None:
    image = spec()
    record = aws.push_image(image, artefact, lambda d, t: None)
    assert record.ready and record.name == image.name and record.digest == image.digest
    assert calls.counts["StartSnapshot"] == 1 and calls.counts["CompleteSnapshot"] == 1
    assert calls.counts["PutSnapshotBlock"] == 2  # block 0 and the last: 2046 all-zero blocks skipped
    (ami,) = ec2.describe_images(ImageIds=[record.id])["Images"]
    assert ami["Name"] == image.name and tags_of(ami)["infra-image"] == image.digest
    (snap,) = ec2.describe_snapshots(OwnerIds=["self"], Filters=[
        {"Name": "tag:infra-image", "Values": [image.digest]}])["Snapshots"]
    assert snap["State"] == "completed"
    ebs = aws.ebs_client()
    blocks = ebs.list_snapshot_blocks(SnapshotId=snap["SnapshotId"])["Blocks"]
    assert sorted(b["BlockIndex"] for b in blocks) == [0, BLOCKS - 1]
    block0 = ebs.get_snapshot_block(SnapshotId=snap["SnapshotId"], BlockIndex=0,
                                    BlockToken=next(b["BlockToken"] for b in blocks if b["BlockIndex"] == 0))
    assert "image: busybox:1.36" in yaml_of_bytes(block0["BlockData"].read())
    assert aws.find_image(image) == record


def test_a_second_push_makes_one_lookup_and_no_upload(aws: AwsProvider, calls: Calls, artefact: Path) -> None:
    first = aws.push_image(spec(), artefact, lambda d, t: None)
    calls.counts.clear()
    assert aws.push_image(spec(), artefact, lambda d, t: None) == first
    assert dict(calls.counts) == {"DescribeImages": 1}


def test_a_crash_between_upload_and_register_is_recovered_without_uploading_again(
    aws: AwsProvider, calls: Calls, ec2: Any, artefact: Path
) -> None:
    fail_once(aws, "ec2", "RegisterImage")
    with pytest.raises(TransientError):
        aws.push_image(spec(), artefact, lambda d, t: None)
    assert ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [spec().name]}])["Images"] == []
    calls.counts.clear()
    record = aws.push_image(spec(), artefact, lambda d, t: None)
    assert record.ready
    assert calls.counts["PutSnapshotBlock"] == 0 and calls.counts["StartSnapshot"] == 0
    assert calls.counts["RegisterImage"] == 1


def test_a_crash_mid_upload_resumes_the_same_snapshot(aws: AwsProvider, calls: Calls, ec2: Any,
                                                      artefact: Path) -> None:
    fail_once(aws, "ebs", "PutSnapshotBlock", when=1)
    with pytest.raises(TransientError):
        aws.push_image(spec(), artefact, lambda d, t: None)
    calls.counts.clear()
    record = aws.push_image(spec(), artefact, lambda d, t: None)
    assert record.ready and calls.counts["StartSnapshot"] == 0 and calls.counts["CompleteSnapshot"] == 1
    snaps = ec2.describe_snapshots(OwnerIds=["self"], Filters=[
        {"Name": "tag:infra-image", "Values": [spec().digest]}])["Snapshots"]
    assert len(snaps) == 1  # no leaked second snapshot


def test_a_lost_register_answer_makes_no_second_ami(aws: AwsProvider, ec2: Any, artefact: Path) -> None:
    fail_once(aws, "ec2", "RegisterImage", after=True)
    with pytest.raises(TransientError):
        aws.push_image(spec(), artefact, lambda d, t: None)
    record = aws.push_image(spec(), artefact, lambda d, t: None)
    named = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [spec().name]}])["Images"]
    assert [i["ImageId"] for i in named] == [record.id]


def test_a_foreign_ami_holding_the_name_is_neither_used_nor_replaced(aws: AwsProvider, ec2: Any,
                                                                     artefact: Path, world: World) -> None:
    foreign = ec2.register_image(Name=spec().name)["ImageId"]
    # EC2 refuses a second AMI of one name (InvalidAMIName.Duplicate); moto does not: answer as EC2 would.
    def duplicate(params: dict[str, Any], **_: Any) -> None:
        if params.get("Name") == spec().name:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "InvalidAMIName.Duplicate",
                                         "Message": f"AMI name {spec().name} is already in use by AMI {foreign}"}},
                              "RegisterImage")

    aws.client.meta.events.register("provide-client-params.ec2.RegisterImage", duplicate)
    with pytest.raises(PermanentError, match="without tag infra-image"):
        aws.push_image(spec(), artefact, lambda d, t: None)
    assert [i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=[
        {"Name": "name", "Values": [spec().name]}])["Images"]] == [foreign]


def test_delete_deregisters_the_ami_and_deletes_its_snapshot(aws: AwsProvider, ec2: Any, artefact: Path) -> None:
    record = aws.push_image(spec(), artefact, lambda d, t: None)
    aws.delete_image(record)
    assert aws.find_image(spec()) is None
    assert ec2.describe_snapshots(OwnerIds=["self"], Filters=[
        {"Name": "tag:infra-image", "Values": [spec().digest]}])["Snapshots"] == []


def test_moto_still_differs_from_ec2_where_the_test_world_compensates(provider: AwsProvider, ec2: Any) -> None:
    """Without tests/aws/moto_fidelity.py: if this fails, moto fixed it; remove that patch."""
    ami = ec2.register_image(Name="xyz", TagSpecifications=[
        {"ResourceType": "image", "Tags": [{"Key": "k", "Value": "v"}]}])["ImageId"]
    assert tags_of(ec2.describe_images(ImageIds=[ami])["Images"][0]) == {}  # EC2 would have k=v
    snap = provider.ebs_client().start_snapshot(VolumeSize=1)["SnapshotId"]
    assert ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["State"] == "completed"  # EC2: pending
