"""infra against moto's own server, as moto's and LocalStack's users run it (no fidelity fixes).

A plain ``python -m moto.server`` drops ``RegisterImage``'s tags, ignores its ``ImdsSupport`` and
registers a second AMI of a name already used. Through the real CLI: two ``infra image push`` of
``stacks/etcd-aws.py`` register each image once (the second finds the first by its name and its
tagged snapshot, and tags it), ``apply`` launches the members with their metadata options, the
re-plan is empty, and an untagged AMI of the same name registered beside infra's (what an older
push against such a server left) does not make the next plan guess or fail.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.aws import moto_world
from tests.aws.moto_server import child as moto_child
from tests.aws.moto_world import REGION, tags_of
from tests.aws.test_e2e import ETCD, infra, of_stack

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bare_moto(aws_env: None, tmp_path: Path) -> Iterator[str]:
    """``python -m moto.server`` on a free loopback port, exactly as installed."""
    with moto_child([sys.executable, "-m", "moto.server", "-H", "127.0.0.1"], tmp_path / "moto.log") as url:
        yield url


def infra_amis(ec2: Any) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for image in ec2.describe_images(Owners=["self"])["Images"]:
        if image["Name"].startswith(("infra-etcd-", "infra-prometheus-")):
            out.setdefault(image["Name"], []).append(image)
    return out


def test_push_twice_apply_and_an_empty_replan_against_a_bare_moto_server(bare_moto: str, tmp_path: Path) -> None:
    from providers.aws.session import new_session

    ec2 = new_session().client("ec2", region_name=REGION, endpoint_url=bare_moto)
    # The server really is bare: it drops RegisterImage's tags (what infra must cope with).
    probe = ec2.register_image(Name="probe-image", RootDeviceName="/dev/sda1", TagSpecifications=[
        {"ResourceType": "image", "Tags": [{"Key": "k", "Value": "v"}]}])["ImageId"]
    assert not ec2.describe_images(ImageIds=[probe])["Images"][0].get("Tags")
    ec2.deregister_image(ImageId=probe)

    world = moto_world.build(ec2)
    env = {"INFRA_AWS_SUBNETS": ",".join(world.subnets), "INFRA_AWS_SECURITY_GROUPS": world.security_group,
           "INFRA_AWS_HEALTH_TIMEOUT": "3"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        out = infra(bare_moto, tmp_path / "state", *args, **env)
        return out

    for _ in range(2):
        pushed = run("image", "push", str(ETCD))
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    amis = infra_amis(ec2)
    assert len(amis) == 2 and all(len(same) == 1 for same in amis.values()), amis  # registered once each
    for (image,) in amis.values():
        assert tags_of(image)["infra-image"]  # tagged after registering: the server dropped the tags

    applied = run("apply", str(ETCD), "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    made = {tags_of(i)["infra-member"]: i for i in of_stack(ec2, "etcd-aws", "pending", "running")}
    assert sorted(made) == ["etcd-0", "etcd-1", "etcd-2", "prometheus-0"]
    etcd_ami = next(ids[0]["ImageId"] for name, ids in amis.items() if name.startswith("infra-etcd-"))
    assert {made[f"etcd-{i}"]["ImageId"] for i in range(3)} == {etcd_ami}
    assert made["etcd-0"]["MetadataOptions"]["HttpTokens"] == "optional"  # the stack's LinuxKit images
    assert made["etcd-0"]["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert run("plan", str(ETCD), "--detailed-exitcode").returncode == 0

    # An untagged AMI of the same name beside infra's (a bare server accepts it): a replacement
    # launches from infra's own, tagged with the member's digest, with no guessing.
    name = next(n for n in amis if n.startswith("infra-prometheus-"))
    ec2.register_image(Name=name, RootDeviceName="/dev/sda1")
    assert len(infra_amis(ec2)[name]) == 2
    ec2.terminate_instances(InstanceIds=[made["prometheus-0"]["InstanceId"]])
    healed = run("apply", str(ETCD), "--yes")
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert "will not guess" not in healed.stdout + healed.stderr
    live = of_stack(ec2, "etcd-aws", "pending", "running")
    (again,) = [i for i in live if tags_of(i)["infra-member"] == "prometheus-0"]
    assert again["ImageId"] == amis[name][0]["ImageId"]
    assert run("plan", str(ETCD), "--detailed-exitcode").returncode == 0

    destroyed = run("destroy", str(ETCD), "--yes")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert of_stack(ec2, "etcd-aws", "pending", "running") == []
