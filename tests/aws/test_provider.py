"""The aws provider against moto in-process: settings, launch request, idempotency, delete, validate."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from providers.aws import AwsProvider, client_token
from reconciler.core.errors import ConfigError, PermanentError, TransientError
from reconciler.core.model import ConfigFile, InstanceStatus, MemberSpec, stack_selector
from tests.aws import moto_world
from tests.aws.conftest import make_engine, web_stack
from tests.aws.moto_world import REGION, World, all_instances, tags_of


def spec(member: str = "web-0", index: int = 0, *, stack: str = "st", group: str = "web", **fields: Any) -> MemberSpec:
    base: dict[str, Any] = {"image": moto_world.AMI_NAME, "machine_type": moto_world.INSTANCE_TYPE}
    base.update(fields)
    return MemberSpec(stack=stack, group=group, member=member, role="command", placement=index, **base)


def by_name(ec2: Any, name: str, *states: str) -> list[dict[str, Any]]:
    return [i for i in all_instances(ec2, *states) if tags_of(i).get("Name") == name]


# -- open ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"subnets": ["subnet-nope"]}, "provider_config.subnets[0]"),
        ({"zone": "us-east-1a"}, "provider_config.zone"),
        ({"region": "mars-1"}, "provider_config.region"),
        ({"security_group_ids": ["default"]}, "provider_config.security_group_ids[0]"),
        ({"address_offset": 10}, "provider_config"),
        ({"address_offset": 2, "subnets": ["subnet-0123456789abcdef0"]}, "provider_config.address_offset"),
        ({"tags": {"infra-stack": "x"}}, "provider_config.tags"),
        ({"address": "elastic"}, "provider_config.address"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_field(
    aws_env: None, tmp_path: Path, config: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        AwsProvider.open(config, stack="st", state_dir=tmp_path)
    assert str(info.value).startswith(field + ":") or str(info.value).startswith(field + "."), str(info.value)


def test_no_region_anywhere_is_a_config_error(aws_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(ConfigError, match=r"^provider_config\.region: no AWS region"):
        AwsProvider.open({}, stack="st", state_dir=tmp_path)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert AwsProvider.open({}, stack="st", state_dir=tmp_path).region == "eu-west-1"
    assert AwsProvider.open({"region": "ap-south-1"}, stack="st", state_dir=tmp_path).region == "ap-south-1"


def test_no_credentials_is_a_permanent_error_with_a_hint(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key)
    with pytest.raises(PermanentError) as info:
        AwsProvider.open({}, stack="st", state_dir=tmp_path)
    assert "no AWS credentials" in str(info.value) and info.value.hint and "AWS_PROFILE" in info.value.hint


def test_endpoint_override_reaches_every_call(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    endpoint = "http://127.0.0.1:4599"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    provider = AwsProvider.open(world.provider_config(), stack="st", state_dir=tmp_path)
    urls: list[str] = []

    def redirect(request: Any, **_: Any) -> None:
        # Record where the client sends the call, then hand it to moto (which answers only
        # requests addressed to AWS's own hosts).
        urls.append(request.url)
        request.url = request.url.replace(endpoint, f"https://ec2.{REGION}.amazonaws.com")

    provider.client.meta.events.register_first("before-send.ec2", redirect)
    assert provider.validate([spec()]) == []
    inst = provider.create(spec())
    assert [i.id for i in provider.list(stack_selector("st"))] == [inst.id]
    provider.delete(inst)
    assert len(urls) >= 7 and all(u.startswith(endpoint) for u in urls), urls
    assert provider.discovery({"infra-stack": "st"}, 2379)["ec2_sd_configs"][0]["endpoint"] == endpoint  # type: ignore[index]


# -- create ------------------------------------------------------------------------------------------


def test_launch_carries_tags_user_data_token_subnet_and_type(provider: AwsProvider, ec2: Any, world: World) -> None:
    tokens: list[str] = []
    provider.client.meta.events.register(
        "before-parameter-build.ec2.RunInstances", lambda params, **_: tokens.append(params["ClientToken"])
    )
    files = (ConfigFile(path="web/app.conf", content="port=8080\n"),
             ConfigFile(path="web/tls/key.pem", content="-----BEGIN KEY-----", mode=0o600, secret=True))
    specs = [spec(f"web-{i}", i, files=files) for i in range(3)]
    made = [provider.create(s) for s in specs]
    assert [m.name for m in made] == [s.name for s in specs]
    assert tokens == [client_token(s.name) for s in specs]
    for s, inst in zip(specs, made, strict=True):
        raw = ec2.describe_instances(InstanceIds=[inst.id])["Reservations"][0]["Instances"][0]
        assert tags_of(raw) == {**s.labels, "Name": s.name}
        assert raw["ImageId"] == world.ami_id  # the AMI name was resolved to its id
        assert raw["InstanceType"] == moto_world.INSTANCE_TYPE
        assert raw["SubnetId"] == world.subnets[s.placement % 2]  # round-robin over the subnets
        assert [g["GroupId"] for g in raw["SecurityGroups"]] == [world.security_group]
        user_data = ec2.describe_instance_attribute(InstanceId=inst.id, Attribute="userData")["UserData"]["Value"]
        doc = json.loads(base64.b64decode(user_data))
        assert doc == s.userdata()
        assert doc["web"]["entries"]["tls"]["entries"]["key.pem"] == {"content": "-----BEGIN KEY-----", "perm": "0600"}
        volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [inst.id]}])["Volumes"]
        assert volumes and all(tags_of(v).get("infra-member") == s.member for v in volumes)
        assert inst.status in (InstanceStatus.PENDING, InstanceStatus.RUNNING)
        assert inst.address == raw["PrivateIpAddress"]


def test_client_token_is_deterministic_short_and_per_incarnation() -> None:
    name = "a-stack-name-of-twenty-etcd-group-of-twenty-c-etcd-group-of-twenty-c-12-0123abcd"
    token = client_token(name)
    assert token == client_token(name)  # the same in every process: derived from the name only
    assert len(token) <= 64 and token.isascii()
    assert client_token(name + "x") != token
    assert client_token(name, after="i-0123") not in (token, client_token(name, after="i-0124"))


def test_a_lost_launch_response_leaves_one_instance(provider: AwsProvider, ec2: Any) -> None:
    calls = moto_world.CallCounter(provider.client)
    lost = moto_world.lose_response(provider.client, "RunInstances")
    s = spec()
    with pytest.raises(TransientError, match="could not reach EC2"):
        provider.create(s)
    assert len(lost) == 1 and len(by_name(ec2, s.name)) == 1  # it was launched all the same
    again = provider.create(s)  # the executor's retry finds it by name
    assert [i.id for i in provider.list(stack_selector("st"))] == [again.id]
    assert calls.counts["RunInstances"] == 1


def test_a_retry_while_the_lookup_lags_gets_the_same_instance_by_token(provider: AwsProvider, ec2: Any) -> None:
    """Real EC2: DescribeInstances may not show a fresh instance yet; the ClientToken saves us."""
    memory = moto_world.TokenMemory(provider.client)
    hidden = moto_world.HideNameLookups(provider.client)
    moto_world.lose_response(provider.client, "RunInstances")
    s = spec()
    with pytest.raises(TransientError):
        provider.create(s)
    again = provider.create(s)
    assert hidden.hidden == 2 and memory.replayed == [client_token(s.name)]
    assert [i["InstanceId"] for i in by_name(ec2, s.name)] == [again.id]


def test_a_terminated_incarnation_does_not_block_its_replacement(provider: AwsProvider, ec2: Any) -> None:
    """EC2 answers a remembered token with the terminated instance; create steps past it."""
    memory = moto_world.TokenMemory(provider.client)
    s = spec()
    first = provider.create(s)
    ec2.terminate_instances(InstanceIds=[first.id])  # out of band
    second = provider.create(s)
    assert second.id != first.id and second.alive
    assert memory.tokens == [client_token(s.name), client_token(s.name), client_token(s.name, after=first.id)]
    assert [i.id for i in provider.list(stack_selector("st"))] == [second.id]


def test_lost_responses_through_the_engine_converge_without_duplicates(
    provider: AwsProvider, ec2: Any, world: World, tmp_path: Path
) -> None:
    from reconciler.kit.retry import RetryPolicy

    lost = moto_world.lose_response(provider.client, "RunInstances", times=2)
    engine = make_engine(web_stack(world, 3), provider, tmp_path, retry=RetryPolicy(base=0.01, cap=0.05))
    result = engine.reconcile()
    assert result.ok, result.error
    assert len(lost) == 2
    mine = all_instances(ec2, "pending", "running")
    assert sorted(tags_of(i)["infra-member"] for i in mine) == ["web-0", "web-1", "web-2"]
    assert engine.plan().empty


# -- list / delete ------------------------------------------------------------------------------------


def test_list_reports_states_and_leaves_out_terminated(provider: AwsProvider, ec2: Any) -> None:
    a, b, c = (provider.create(spec(f"web-{i}", i)) for i in range(3))
    ec2.stop_instances(InstanceIds=[b.id])
    ec2.terminate_instances(InstanceIds=[c.id])
    seen = {i.id: i for i in provider.list(stack_selector("st"))}
    assert set(seen) == {a.id, b.id}
    assert seen[a.id].status in (InstanceStatus.PENDING, InstanceStatus.RUNNING) and seen[a.id].alive
    assert seen[b.id].status is InstanceStatus.STOPPED and not seen[b.id].alive
    assert (seen[a.id].address or "").startswith("10.20.")


def test_delete_rereads_tags_and_refuses_what_this_stack_does_not_own(provider: AwsProvider, ec2: Any) -> None:
    mine = provider.create(spec())
    other = provider.create(spec(stack="other"))
    partial = provider.create(spec("web-1", 1))
    ec2.delete_tags(Resources=[partial.id], Tags=[{"Key": "infra-spec"}])
    for inst in (other, partial):
        with pytest.raises(PermanentError, match="refusing to delete"):
            # The caller's copy claims ownership; the provider trusts only EC2's tags.
            provider.delete(inst.model_copy(update={"labels": mine.labels}))
    provider.delete(mine)
    provider.delete(mine)  # shutting down / terminated: success
    provider.delete(mine.model_copy(update={"id": "i-0000000000000dead"}))  # unknown: success
    alive = {i["InstanceId"] for i in all_instances(ec2, "pending", "running")}
    assert alive == {other.id, partial.id}


# -- validate ----------------------------------------------------------------------------------------


def test_validate_accepts_a_good_group_and_changes_nothing(provider: AwsProvider, ec2: Any, world: World) -> None:
    assert provider.validate([spec("web-0", 0), spec("web-1", 1, image=world.ami_id)]) == []
    assert all_instances(ec2) == []
    calls = moto_world.CallCounter(provider.client)
    assert provider.validate([spec("web-0", 0), spec("web-1", 1, image=world.ami_id)]) == []
    assert sum(calls.counts.values()) == 0  # what was found once is not asked about every pass


def test_validate_catches_missing_image_type_and_network(
    world: World, ec2: Any, tmp_path: Path
) -> None:
    missing_subnet = "subnet-0000000000000dead"
    config = world.provider_config(subnets=[world.subnets[0], missing_subnet], security_group_ids=["sg-00000000dead"])
    provider = AwsProvider.open(config, stack="st", state_dir=tmp_path)
    problems = provider.validate([
        spec("web-0", group="web", image="ami-0000000000000dead"),
        spec("db-0", group="db", image="no-such-image"),
        spec("q-0", group="q", machine_type="q9.huge"),
        spec("n-0", group="n", image=None),
        spec("big-0", group="big", files=(ConfigFile(path="big/blob", content="x" * 17_000),)),
        spec("g-0", group="g", provider_config={**config, "subnets": ["subnet-0000000000000beef"]}),
    ])
    found = {(p.field, p.message.split(":")[0]) for p in problems}
    assert ("groups.web.image", "image 'ami-0000000000000dead'") in found
    assert ("groups.db.image", "image 'no-such-image'") in found
    assert ("groups.q.machine_type", "instance type 'q9.huge' is not offered in us-east-1") in found
    assert ("groups.n.image", "an AMI id (ami-...) or AMI name is required on aws") in found
    assert ("provider_config.subnets", f"subnet {missing_subnet} does not exist in us-east-1") in found
    assert ("groups.g.provider_config.subnets", "subnet subnet-0000000000000beef does not exist in us-east-1") in found
    assert ("provider_config.security_group_ids", "security group sg-00000000dead does not exist in us-east-1") in found
    assert any(p.field == "groups.big" and "16384" in p.message for p in problems)
    assert all(p.is_error for p in problems)
    assert all_instances(ec2) == []


def test_validate_names_the_default_instance_type_setting(world: World, tmp_path: Path) -> None:
    provider = AwsProvider.open(world.provider_config(instance_type="q9.huge"), stack="st", state_dir=tmp_path)
    problems = provider.validate([spec(machine_type=None)])
    assert [p.field for p in problems] == ["provider_config.instance_type"]


def test_launching_a_missing_ami_or_type_is_permanent(provider: AwsProvider) -> None:
    with pytest.raises(PermanentError, match="InvalidAMIID"):
        provider.create(spec(image="ami-0000000000000dead"))
    with pytest.raises(PermanentError, match=r"q9\.huge"):
        provider.create(spec(machine_type="q9.huge"))
    with pytest.raises(PermanentError, match="no AMI named 'nope'"):
        provider.create(spec(image="nope"))


# -- fixed addresses -----------------------------------------------------------------------------------


def test_fixed_addresses_are_known_before_launch_and_used(provider: AwsProvider, ec2: Any, world: World) -> None:
    pc = {**world.provider_config(), "address_offset": 10}
    specs = [spec(f"etcd-{i}", i, group="etcd", provider_config=pc) for i in range(3)]
    addresses = [provider.address_for(s) for s in specs]
    assert addresses == ["10.20.0.10", "10.20.16.10", "10.20.0.11"]
    assert provider.validate(specs) == []
    for s, address in zip(specs, addresses, strict=True):
        inst = provider.create(s.model_copy(update={"address": address}))
        assert inst.address == address
    assert provider.address_for(spec()) is None  # no address_offset: EC2 picks
    clash = [spec("other-0", 0, group="other", provider_config=pc)]
    problems = provider.validate(specs + clash)
    assert [p.field for p in problems] == ["groups.other.provider_config.address_offset"]
    assert "etcd-0 and other-0 would both get address 10.20.0.10" in problems[0].message


# -- discovery ----------------------------------------------------------------------------------------


def test_discovery_is_an_ec2_sd_fragment_prometheus_accepts(provider: AwsProvider, tmp_path: Path) -> None:
    from plugins.prometheus.scrape import Job, render
    from reconciler.kit.role import MetricsTarget

    sd = provider.discovery({"infra-stack": "st", "infra-group": "etcd"}, 2379)
    assert sd == {
        "ec2_sd_configs": [{
            "region": REGION,
            "port": 2379,
            "refresh_interval": "30s",
            "filters": [
                {"name": "tag:infra-group", "values": ["etcd"]},
                {"name": "tag:infra-stack", "values": ["st"]},
                {"name": "instance-state-name", "values": ["running"]},
            ],
        }]
    }
    text = render([Job(name="etcd", group="etcd", target=MetricsTarget(port=2379), discovery=sd)],
                  stack="st", interval="5s", timeout="5s")
    assert "10.20." not in text  # no address anywhere
    (tmp_path / "prometheus.yml").write_text(text)
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Prometheus 2.42) must be installed"
    proc = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert yaml.safe_load(text)["scrape_configs"][0]["ec2_sd_configs"][0]["filters"][1]["values"] == ["st"]


def test_address_setting_chooses_which_ip_infra_reports(world: World, tmp_path: Path) -> None:
    raw: Any = {"InstanceId": "i-0123456789abcdef0", "State": {"Name": "running"}, "PrivateIpAddress": "10.20.0.9",
                "PublicIpAddress": "203.0.113.9", "Tags": [{"Key": "Name", "Value": "n"}, {"Key": "aws:x", "Value": "y"}]}
    private = AwsProvider.open(world.provider_config(), stack="st", state_dir=tmp_path)
    public = AwsProvider.open(world.provider_config(address="public"), stack="st", state_dir=tmp_path)
    assert private._to_instance(raw).address == "10.20.0.9"
    assert public._to_instance(raw).address == "203.0.113.9"
    no_public: Any = {**raw, "PublicIpAddress": None}
    assert public._to_instance(no_public).address == "10.20.0.9"  # none yet: private
    assert dict(private._to_instance(raw).labels) == {}  # Name is the name; aws:* tags are EC2's own
    dying: Any = {**raw, "State": {"Name": "shutting-down"}, "StateReason": {"Message": "user"}}
    gone = private._to_instance(dying)
    assert gone.status is InstanceStatus.DEAD and gone.detail == "user"


def test_instances_answer_imdsv2_only_unless_the_stack_says_otherwise(
    provider: AwsProvider, ec2: Any, world: World, tmp_path: Path
) -> None:
    made = provider.create(spec("web-0", 0))
    raw = ec2.describe_instances(InstanceIds=[made.id])["Reservations"][0]["Instances"][0]
    assert raw["MetadataOptions"]["HttpTokens"] == "required"
    assert raw["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    # A group booting a LinuxKit image infra builds cannot fetch its user-data with IMDSv2 only.
    built = spec("db-0", group="db", image="infra-db-0123456789ab").model_copy(
        update={"image_digest": "0123456789ab" * 3})
    (problem,) = [p for p in provider.validate([built]) if p.field.endswith("metadata_tokens")]
    assert problem.is_error and "IMDSv1" in problem.message and "optional" in problem.message
    optional = AwsProvider.open(world.provider_config(metadata_tokens="optional"), stack="st", state_dir=tmp_path)
    assert not [p for p in optional.validate([built]) if p.field.endswith("metadata_tokens")]
