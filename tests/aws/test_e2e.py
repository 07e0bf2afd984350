"""End to end: the real ``infra`` CLI, as a subprocess, against a moto server on 127.0.0.1.

The fixture starts ``python -m tests.aws.moto_server`` (moto refusing unknown AMIs and instance
types, as EC2 does, with the test world's fidelity fixes); the CLI reaches it through
``AWS_ENDPOINT_URL`` with fake credentials, exactly as a user would point ``infra`` at another EC2
endpoint, and builds images with the tests' linuxkit stand-in (``INFRA_LINUXKIT``). What a user would see: apply creates tagged
members carrying their user-data, the next plan is empty, an instance terminated out of band is
replaced, an untagged instance and another stack's instance are never touched, destroy leaves
none of the stack's instances running; and ``stacks/etcd-aws.py`` applies (its bootstrap needs no
etcd API) after pushing the AMIs its groups boot (EBS direct APIs + RegisterImage; a second apply
pushes nothing), while a later membership change, with no etcd member reachable from here, is
refused.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.aws import moto_world
from tests.aws.moto_server import child as moto_child
from tests.aws.moto_world import REGION, World, tags_of
from tests.linuxkit_standin.artefact import STANDIN

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "tests" / "aws" / "stacks" / "web-aws.py"
ETCD = ROOT / "stacks" / "etcd-aws.py"
LIVE = ("pending", "running", "stopping", "stopped")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def moto_server(aws_env: None, tmp_path: Path) -> Iterator[str]:
    """A moto server on 127.0.0.1 (a child process, stopped and reaped by the finalizer)."""
    with moto_child([sys.executable, "-m", "tests.aws.moto_server", "--no-world"], tmp_path / "moto.log") as url:
        yield url


@pytest.fixture
def ec2(moto_server: str) -> Any:
    from providers.aws.session import new_session

    return new_session().client("ec2", region_name=REGION, endpoint_url=moto_server)


@pytest.fixture
def world(ec2: Any) -> World:
    return moto_world.build(ec2)


def infra(url: str, state: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("infra")
    assert exe, "the infra console script is not installed (pip install -e .)"
    full = {**os.environ, "AWS_ENDPOINT_URL": url, "INFRA_STATE_DIR": str(state), "NO_COLOR": "1",
            "COLUMNS": "200", "INFRA_LINUXKIT": str(STANDIN), **env}
    return subprocess.run([exe, *args], capture_output=True, text=True, env=full, timeout=240, check=False,
                          stdin=subprocess.DEVNULL)


def instances(ec2: Any, *states: str) -> list[dict[str, Any]]:
    return moto_world.all_instances(ec2, *states)


def of_stack(ec2: Any, stack: str, *states: str) -> list[dict[str, Any]]:
    return [i for i in instances(ec2, *states) if tags_of(i).get("infra-stack") == stack]


def user_data(ec2: Any, instance_id: str) -> dict[str, Any]:
    value = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")["UserData"]["Value"]
    return dict(json.loads(base64.b64decode(value)))


def pipeline_amis(ec2: Any) -> list[dict[str, Any]]:
    """The AMIs infra's image pipeline registered (tagged infra-image)."""
    return [i for i in ec2.describe_images(Owners=["self"])["Images"] if "infra-image" in tags_of(i)]


def foreign(ec2: Any, world: World, name: str, tags: dict[str, str]) -> str:
    resp = ec2.run_instances(ImageId=world.ami_id, MinCount=1, MaxCount=1, InstanceType=moto_world.INSTANCE_TYPE,
                             TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                 {"Key": k, "Value": v} for k, v in {"Name": name, **tags}.items()]}])
    return str(resp["Instances"][0]["InstanceId"])


def test_apply_plan_heal_and_destroy_through_the_cli(moto_server: str, ec2: Any, world: World,
                                                     tmp_path: Path) -> None:
    untagged = foreign(ec2, world, "hand-made", {})
    other = foreign(ec2, world, "other-web-web-0-00000000", {"infra-stack": "other", "infra-group": "web",
                                                             "infra-member": "web-0", "infra-spec": "00000000"})
    env = {"WEB_AWS_SUBNETS": ",".join(world.subnets), "WEB_AWS_SECURITY_GROUPS": world.security_group}

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return infra(moto_server, tmp_path / "state", *args, **{**env, **extra})

    checked = run("validate", str(WEB))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    applied = run("apply", str(WEB), "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    made = of_stack(ec2, "webaws", *LIVE)
    assert sorted(tags_of(i)["infra-member"] for i in made) == ["web-0", "web-1", "web-2"]
    for inst in made:
        tags = tags_of(inst)
        assert set(tags) == {"Name", "infra-stack", "infra-group", "infra-member", "infra-spec", "infra-role",
                             "infra-policy"}
        assert tags["Name"] == f"webaws-web-{tags['infra-member']}-{tags['infra-spec']}"
        assert inst["ImageId"] == world.ami_id and inst["InstanceType"] == "t3.micro"
        assert user_data(ec2, inst["InstanceId"])["web"]["entries"]["index.html"] == {
            "content": "<h1>hello from ec2</h1>\n", "perm": "0644"}
    assert {i["SubnetId"] for i in made} == set(world.subnets)  # spread over both subnets

    again = run("plan", str(WEB), "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr  # nothing to do
    status = run("status", str(WEB), "--json")
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)["groups"][0]["members"]
    by_id = {i["InstanceId"]: i for i in made}
    assert sorted(r["member"] for r in rows) == ["web-0", "web-1", "web-2"]
    for row in rows:
        assert row["address"] == by_id[row["id"]]["PrivateIpAddress"] and row["spec_current"]
        assert row["healthy"] is None  # 10.20.x is outside INFRA_NETWORK_ALLOW: unknown, not probed

    victim = next(i for i in made if tags_of(i)["infra-member"] == "web-1")
    ec2.terminate_instances(InstanceIds=[victim["InstanceId"]])  # out of band
    drift = run("plan", str(WEB), "--json")
    assert drift.returncode == 0, drift.stderr
    changes = json.loads(drift.stdout)["changes"]
    assert [(c["action"], c["member"], c["reason"]) for c in changes] == [("create", "web-1", "missing")]
    assert "hello from ec2" not in drift.stdout  # a plan shows no file contents
    healed = run("apply", str(WEB), "--yes")
    assert healed.returncode == 0, healed.stdout + healed.stderr
    now = of_stack(ec2, "webaws", "pending", "running")
    assert sorted(tags_of(i)["infra-member"] for i in now) == ["web-0", "web-1", "web-2"]
    assert victim["InstanceId"] not in {i["InstanceId"] for i in now}
    assert run("plan", str(WEB), "--detailed-exitcode").returncode == 0

    destroyed = run("destroy", str(WEB), "--yes")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert of_stack(ec2, "webaws", *LIVE) == []
    survivors = {i["InstanceId"]: tags_of(i) for i in instances(ec2, "pending", "running")}
    assert set(survivors) == {untagged, other}  # never touched
    assert survivors[other]["infra-stack"] == "other"


def test_a_bad_image_is_refused_before_anything_is_created(moto_server: str, ec2: Any, world: World,
                                                           tmp_path: Path) -> None:
    env = {"WEB_AWS_SUBNETS": ",".join(world.subnets), "WEB_AWS_AMI": "ami-0000000000000dead"}
    for command in (["validate"], ["apply", "--yes"]):
        proc = infra(moto_server, tmp_path / "state", command[0], str(WEB), *command[1:], **env)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        out = proc.stdout + proc.stderr
        assert "web-aws.py:20: groups[0].image: " in out and "ami-0000000000000dead" in out \
            and "InvalidAMIID.NotFound" in out
    assert instances(ec2) == []


def test_etcd_aws_stack_bootstraps_and_refuses_blind_membership_changes(
    moto_server: str, ec2: Any, world: World, tmp_path: Path
) -> None:
    env = {"INFRA_AWS_SUBNETS": ",".join(world.subnets), "INFRA_AWS_SECURITY_GROUPS": world.security_group,
           "INFRA_AWS_HEALTH_TIMEOUT": "3"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return infra(moto_server, tmp_path / "state", *args, **env)

    applied = run("apply", str(ETCD), "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "2 images pushed" in applied.stdout
    amis = {tags_of(i)["infra-image"]: i for i in pipeline_amis(ec2)}
    etcd_ami = next(i["ImageId"] for i in amis.values() if i["Name"].startswith("infra-etcd-"))
    prom_ami = next(i["ImageId"] for i in amis.values() if i["Name"].startswith("infra-prometheus-"))
    for digest in amis:  # (moto ignores RegisterImage's BlockDeviceMappings: find the snapshot by its tag)
        (snap,) = ec2.describe_snapshots(OwnerIds=["self"], Filters=[
            {"Name": "tag:infra-image", "Values": [digest]}])["Snapshots"]
        assert snap["State"] == "completed"
    made = {tags_of(i)["infra-member"]: i for i in of_stack(ec2, "etcd-aws", *LIVE)}
    assert sorted(made) == ["etcd-0", "etcd-1", "etcd-2", "prometheus-0"]
    # Fixed addresses, round-robin over the subnets, known before launch (static bootstrap).
    assert [made[f"etcd-{i}"]["PrivateIpAddress"] for i in range(3)] == ["10.20.0.10", "10.20.16.10", "10.20.0.11"]
    assert {made[m]["ImageId"] for m in ("etcd-0", "etcd-1", "etcd-2")} == {etcd_ami}
    assert made["prometheus-0"]["ImageId"] == prom_ami
    assert tags_of(made["etcd-0"])["project"] == "etcd-aws"
    etcd_conf = user_data(ec2, made["etcd-0"]["InstanceId"])["etcd"]["entries"]
    conf_text = json.dumps(etcd_conf)
    for address in ("10.20.0.10", "10.20.16.10", "10.20.0.11"):
        assert address in conf_text  # initial-cluster names every member
    prom = user_data(ec2, made["prometheus-0"]["InstanceId"])["prometheus"]["entries"]["prometheus.yml"]["content"]
    job = next(j for j in yaml.safe_load(prom)["scrape_configs"] if j["job_name"] == "etcd")
    sd = job["ec2_sd_configs"][0]
    assert sd["region"] == REGION and sd["endpoint"] == moto_server
    assert {"name": "tag:infra-stack", "values": ["etcd-aws"]} in sd["filters"]
    assert {"name": "tag:infra-group", "values": ["etcd"]} in sd["filters"]
    assert "10.20." not in prom  # no member address in Prometheus's configuration

    # Nothing answers from here (INFRA_NETWORK_ALLOW is loopback): health is unknown, not bad.
    assert run("plan", str(ETCD), "--detailed-exitcode").returncode == 0
    again = run("apply", str(ETCD), "--yes")
    assert again.returncode == 0 and "No changes" in again.stdout  # nothing pushed again
    assert len(pipeline_amis(ec2)) == 2

    ec2.terminate_instances(InstanceIds=[made["etcd-1"]["InstanceId"]])
    refused = run("apply", str(ETCD), "--yes")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "can be reached from here" in refused.stderr + refused.stdout
    assert "will not change its membership blind" in refused.stderr + refused.stdout
    alive = sorted(tags_of(i)["infra-member"] for i in of_stack(ec2, "etcd-aws", "pending", "running"))
    assert alive == ["etcd-0", "etcd-2", "prometheus-0"]  # nothing created blind

    destroyed = run("destroy", str(ETCD), "--yes")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert of_stack(ec2, "etcd-aws", *LIVE) == []
    assert len(pipeline_amis(ec2)) == 2  # images stay without --images
    images = run("destroy", str(ETCD), "--yes", "--images")
    assert images.returncode == 0, images.stdout + images.stderr
    assert pipeline_amis(ec2) == []
    assert [s for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"] if "infra-image" in tags_of(s)] == []
