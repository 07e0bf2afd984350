"""The gcp provider against the fake Compute API: what a user of ``infra`` on GCE would notice.

Create delivers labels and user-data; a repeated or lost-response insert never makes a second
instance; stale requestId replays do not hide a needed create; operation deadlines and failures
become the engine's error types; listing 1500 instances costs ceil(N/500) calls; validate catches
bad machine types and images before anything is created.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from providers.gcp import GcpProvider, image_source, label_filter, request_id
from reconciler.core.errors import ConfigError, PermanentError, QuotaError, TransientError
from reconciler.core.model import ConfigFile, Instance, InstanceStatus, MemberSpec, group_selector, stack_selector
from reconciler.kit import retry
from tests.gcp.support import IMAGE, MACHINE_TYPE, PROJECT, ZONES, add_foreign, admin, calls, open_provider
from tests.gcp_fake import FakeCompute
from tests.polling import wait_for


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeCompute]:
    with FakeCompute(op_delay=0.05, boot_delay=0.05) as server:
        yield server


@pytest.fixture
def provider(fake: FakeCompute, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[GcpProvider]:
    fake.configure(fault_rate=0.0, quota_instances=None, stockout_zones=[], op_delay=0.05)
    admin(fake, "POST", "/_admin/calls/reset")
    p = open_provider(fake, monkeypatch, tmp_path)
    yield p
    p.close()


def member(stack: str, index: int = 0, group: str = "web", **fields: object) -> MemberSpec:
    base: dict[str, Any] = {"image": IMAGE, "machine_type": MACHINE_TYPE}
    base.update(fields)
    return MemberSpec(
        stack=stack,
        group=group,
        member=f"{group}-{index}",
        role="command",
        placement=index,
        **base,
    )


def stored(fake: FakeCompute, name: str) -> dict[str, object]:
    hits = [i for i in fake.all_instances() if i["name"] == name]
    assert len(hits) == 1, f"expected one instance named {name}, found {len(hits)}"
    return hits[0]


# -- create ------------------------------------------------------------------------------------


def test_create_sets_labels_user_data_zone_and_machine_type(fake: FakeCompute, provider: GcpProvider) -> None:
    secret = ConfigFile(path="etcd/pki/member.key", content="PRIVATE", mode=0o600, secret=True)
    spec = member("crt", 1).with_files(ConfigFile(path="etcd/etcd.conf.yml", content="name: a\n"), secret)
    inst = provider.create(spec)
    assert inst.name == spec.name and inst.owned_by("crt") and inst.alive
    assert inst.id == f"{ZONES[1]}/{spec.name}"  # placement 1 → second zone (round-robin)
    body = stored(fake, spec.name)
    assert body["labels"] == spec.labels
    assert str(body["machineType"]).endswith(f"/zones/{ZONES[1]}/machineTypes/{MACHINE_TYPE}")
    items = {i["key"]: i["value"] for i in body["metadata"]["items"]}  # type: ignore[index]
    assert json.loads(items["user-data"]) == spec.userdata()
    assert json.loads(items["user-data"])["etcd"]["entries"]["etcd.conf.yml"]["content"] == "name: a\n"


def test_members_spread_over_zones_round_robin(provider: GcpProvider) -> None:
    made = [provider.create(member("rr", i)) for i in range(4)]
    assert [i.id.split("/")[0] for i in made] == [ZONES[0], ZONES[1], ZONES[0], ZONES[1]]


def test_second_insert_of_same_member_answers_409_and_returns_existing(
    fake: FakeCompute, provider: GcpProvider
) -> None:
    first = provider.create(member("dup"))
    # A new process (new attempt numbering is irrelevant: the name is the same) inserts again.
    fake.configure(request_id_ttl=0.0)  # forget request ids: the 409 path, not the replay path
    try:
        admin(fake, "POST", "/_admin/calls/reset")
        again = provider.create(member("dup"))
    finally:
        fake.configure(request_id_ttl=3600.0)
    assert again.id == first.id
    assert calls(fake).get("instances.insert") == 1  # answered 409
    assert len([i for i in fake.all_instances() if i["name"] == first.name]) == 1


def test_name_held_by_a_foreign_instance_is_refused(fake: FakeCompute, provider: GcpProvider) -> None:
    spec = member("hold")
    add_foreign(fake, spec.name, {}, zone=ZONES[0])
    with pytest.raises(PermanentError, match="does not carry"):
        provider.create(spec)
    assert stored(fake, spec.name).get("labels") is None  # untouched


def test_lost_insert_response_is_retried_with_the_same_request_id(fake: FakeCompute, provider: GcpProvider) -> None:
    spec = member("lost")
    admin(
        fake,
        "POST",
        "/_admin/fail",
        {"method": "instances.insert", "code": 503, "reason": "backendError", "after": True},
    )
    with pytest.raises(TransientError):  # the answer is lost: the provider does not retry it itself
        provider.create(spec)
    inst = retry.call(lambda: provider.create(spec), retry.RetryPolicy(base=0.001))  # as the executor does
    assert calls(fake)["instances.insert"] == 2  # the retry of the lost answer
    inserts = [op for op in fake.operations.values() if op.kind == "insert" and op.target == spec.name]
    assert len(inserts) == 1  # the retry replayed the first operation instead of a second insert
    assert inserts[0].request_id == request_id(inst.id.split("/")[0], spec.name, 0)
    assert stored(fake, spec.name)["name"] == spec.name


def test_request_id_is_deterministic_and_differs_per_member_spec_and_attempt() -> None:
    a, b = member("rid", 0), member("rid", 1)
    changed = member("rid", 0, machine_type="e2-medium")
    assert request_id("z", a.name) == request_id("z", a.name)
    ids = {request_id("z", a.name), request_id("z", b.name), request_id("z", changed.name), request_id("z", a.name, 1)}
    assert len(ids) == 4


def test_instance_deleted_out_of_band_is_created_again_despite_request_id_replay(
    fake: FakeCompute, provider: GcpProvider
) -> None:
    spec = member("oob")
    first = provider.create(spec)
    zone, name = first.id.split("/")
    admin(fake, "DELETE", f"/_admin/instances/{PROJECT}/{zone}/{name}")
    assert provider.list(stack_selector("oob")) == []
    again = provider.create(spec)  # attempt 0's request id replays the old DONE operation
    assert again.name == spec.name
    assert [i.name for i in provider.list(stack_selector("oob"))] == [spec.name]


def test_operation_deadline_raises_transient_and_the_instance_still_appears(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with FakeCompute(op_delay=4.0, wait_max=30.0) as slow:
        p = open_provider(slow, monkeypatch, tmp_path, operation_deadline=0.3)
        spec = member("slow")
        started = time.monotonic()
        with pytest.raises(TransientError, match="still"):
            p.create(spec)
        assert time.monotonic() - started < 3.5  # gave up at its deadline, not when the operation ended
        seen = p.list(stack_selector("slow"))
        assert [i.name for i in seen] == [spec.name] and seen[0].status is InstanceStatus.PENDING
        wait_for(lambda: [i.status for i in p.list(stack_selector("slow"))] == [InstanceStatus.RUNNING],
                 "the slow insert to finish", timeout=15)
        assert p.create(spec).name == spec.name  # the retry finds it; no second instance
        assert len(slow.all_instances()) == 1
        p.close()


# -- errors --------------------------------------------------------------------------------------


def test_quota_exhausted_operation_is_a_quota_error(fake: FakeCompute, provider: GcpProvider) -> None:
    fake.configure(quota_instances=0)
    with pytest.raises(QuotaError, match="QUOTA_EXCEEDED") as err:
        provider.create(member("quota"))
    assert err.value.hint and "quota" in err.value.hint.lower()
    assert provider.list(stack_selector("quota")) == []


def test_zone_stockout_is_transient(fake: FakeCompute, provider: GcpProvider) -> None:
    fake.configure(stockout_zones=[ZONES[0]])
    with pytest.raises(TransientError, match="ZONE_RESOURCE_POOL_EXHAUSTED"):
        provider.create(member("stock"))
    fake.configure(stockout_zones=[])
    assert provider.create(member("stock")).alive  # the next attempt succeeds


def test_403_quota_answer_is_a_quota_error(fake: FakeCompute, provider: GcpProvider) -> None:
    admin(
        fake,
        "POST",
        "/_admin/fail",
        {"method": "instances.insert", "code": 403, "reason": "quotaExceeded", "message": "Quota exceeded for CPUS"},
    )
    with pytest.raises(QuotaError):
        provider.create(member("q403"))


def test_403_permission_denied_is_permanent_with_a_hint(fake: FakeCompute, provider: GcpProvider) -> None:
    admin(
        fake,
        "POST",
        "/_admin/fail",
        {"method": "instances.aggregatedList", "code": 403, "reason": "forbidden", "message": "Required permission"},
    )
    with pytest.raises(PermanentError) as err:
        provider.list(stack_selector("perm"))
    assert not isinstance(err.value, QuotaError)
    assert err.value.hint and "roles/compute" in err.value.hint


def test_unknown_machine_type_and_image_on_insert_are_permanent_and_clear(provider: GcpProvider) -> None:
    with pytest.raises(PermanentError, match="machine type does not exist"):
        provider.create(member("bad", machine_type="e2-nonexistent"))
    with pytest.raises(PermanentError, match="image does not exist"):
        provider.create(member("bad", image="family/no-such-family"))


def test_throttling_and_5xx_are_retried_inside_a_call(fake: FakeCompute, provider: GcpProvider) -> None:
    for code in (429, 503, 500):
        admin(fake, "POST", "/_admin/fail", {"method": "instances.aggregatedList", "code": code, "reason": "x"})
    assert provider.list(stack_selector("retry")) == []
    assert calls(fake)["instances.aggregatedList"] == 4


def test_persistent_throttling_becomes_a_transient_error(
    fake: FakeCompute, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    p = open_provider(fake, monkeypatch, tmp_path, retry_deadline=0.5)
    fake.configure(fault_rate=1.0, fault_codes=[429])
    try:
        with pytest.raises(TransientError, match="429"):
            p.list(stack_selector("throttled"))
    finally:
        fake.configure(fault_rate=0.0, fault_codes=[429, 503])
        p.close()


def test_unreachable_endpoint_is_transient(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with FakeCompute() as gone:
        url = gone.url
    p = open_provider(url, monkeypatch, tmp_path, retry_deadline=0.3)
    with pytest.raises(TransientError, match="cannot reach"):
        p.list(stack_selector("x"))
    p.close()


# -- delete --------------------------------------------------------------------------------------


def test_delete_rereads_labels_and_refuses_foreign_even_with_forged_labels(
    fake: FakeCompute, provider: GcpProvider
) -> None:
    fid = add_foreign(fake, "someone-elses-vm", {"team": "db"})
    forged = Instance(id=fid, name="someone-elses-vm", labels=member("forge").labels)
    with pytest.raises(PermanentError, match="ownership labels"):
        provider.delete(forged)
    assert stored(fake, "someone-elses-vm")["status"] == "RUNNING"


def test_delete_waits_for_the_operation(fake: FakeCompute, provider: GcpProvider) -> None:
    inst = provider.create(member("conf"))  # the stack the provider is open for
    provider.delete(inst)
    assert [i for i in fake.all_instances() if i["name"] == inst.name] == []


# -- list ----------------------------------------------------------------------------------------


def test_gce_statuses_map_to_instance_statuses(fake: FakeCompute, provider: GcpProvider) -> None:
    spec = member("st")
    inst = provider.create(spec)
    zone, name = inst.id.split("/")
    expected = {
        "TERMINATED": InstanceStatus.STOPPED,
        "STOPPING": InstanceStatus.STOPPING,
        "SUSPENDED": InstanceStatus.STOPPED,
        "STAGING": InstanceStatus.PENDING,
        "REPAIRING": InstanceStatus.UNKNOWN,
    }
    for gce, ours in expected.items():
        admin(fake, "POST", f"/_admin/instances/{PROJECT}/{zone}/{name}/status", {"status": gce})
        (seen,) = provider.list(stack_selector("st"))
        assert seen.status is ours, gce
        assert seen.detail and gce in seen.detail
    admin(fake, "POST", f"/_admin/instances/{PROJECT}/{zone}/{name}/status", {"status": "RUNNING"})
    (seen,) = provider.list(stack_selector("st"))
    assert seen.status is InstanceStatus.RUNNING and seen.address


def test_listing_1500_instances_costs_at_most_four_calls(
    fake: FakeCompute, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec_labels = {"infra-stack": "big", "infra-group": "web", "infra-spec": "abcdef12"}
    batch = [
        {
            "project": PROJECT,
            "zone": ZONES[i % 2],
            "name": f"big-web-web-{i}-abcdef12",
            "labels": {**spec_labels, "infra-member": f"web-{i}"},
        }
        for i in range(1500)
    ]
    foreign = [
        {"project": PROJECT, "zone": ZONES[0], "name": f"other-{i}", "labels": {"infra-stack": "bigx"}}
        for i in range(50)
    ]
    admin(fake, "POST", "/_admin/instances", {"instances": batch + foreign})
    for zones in (ZONES, ZONES[:1]):
        admin(fake, "POST", "/_admin/calls/reset")
        p = open_provider(fake, monkeypatch, tmp_path, zones=zones)
        seen = p.list(group_selector("big", "web"))
        p.close()
        assert len(seen) == (1500 if len(zones) == 2 else 750)
        assert len({i.id for i in seen}) == len(seen)
        counted = calls(fake)
        list_calls = counted.get("instances.aggregatedList", 0) + counted.get("instances.list", 0)
        assert list_calls <= 4, counted
        assert set(counted) <= {"instances.aggregatedList", "instances.list"}  # never one read per instance


def test_label_filter_is_the_compute_syntax_and_rejects_bad_labels() -> None:
    assert label_filter({"infra-stack": "s", "infra-group": "g"}) == (
        '(labels.infra-group = "g") AND (labels.infra-stack = "s")'
    )
    with pytest.raises(PermanentError):
        label_filter({"infra-stack": 'x" OR name != "'})


# -- validate ------------------------------------------------------------------------------------


def test_validate_finds_bad_machine_type_and_image_without_creating(fake: FakeCompute, provider: GcpProvider) -> None:
    good = member("val", group="etcd")
    bad = [member("val", 0, group="db", machine_type="n9-huge"), member("val", 1, group="web", image="family/nope")]
    assert provider.validate([good]) == []
    problems = {p.field: p.message for p in provider.validate([good, *bad])}
    assert set(problems) == {"groups.db.machine_type", "groups.web.image"}
    assert "n9-huge" in problems["groups.db.machine_type"] and ZONES[0] in problems["groups.db.machine_type"]
    assert "family/nope" in problems["groups.web.image"]
    assert "instances.insert" not in calls(fake)


def test_validate_reports_missing_settings_and_bad_group_config(provider: GcpProvider) -> None:
    none = member("v2", machine_type=None, image=None)
    zones = member("v2", group="db", provider_config={"zones": ["europe-west1-b"]})
    typo = member("v2", group="etcd", provider_config={"zonez": ["x"]})
    rng = member("v2", 5, group="kv", provider_config={"address_range": "10.128.15.0/30"})
    fields = {p.field for p in provider.validate([none, zones, typo, rng])}
    assert fields == {
        "groups.web.machine_type",
        "groups.web.image",
        "groups.db.provider_config.zones",
        "groups.etcd.provider_config.zonez",
        "groups.kv.provider_config.address_range",
    }


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"zones": ZONES}, "provider_config.project"),
        ({"project": PROJECT, "zones": []}, "provider_config.zones"),
        ({"project": PROJECT, "zones": ["us-central1"]}, "provider_config.zones[0]"),
        ({"project": "Bad_Project", "zones": ZONES}, "provider_config.project"),
        ({"project": PROJECT, "zones": ZONES, "zone": "x"}, "provider_config.zone"),
        ({"project": PROJECT, "zones": ZONES, "operation_deadline": 0}, "provider_config.operation_deadline"),
        (
            {"project": PROJECT, "zones": ["us-central1-a", "europe-west1-b"], "address_range": "10.0.0.0/28"},
            "provider_config",
        ),
    ],
)
def test_bad_provider_config_names_the_field(
    config: dict[str, object], field: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("INFRA_GCP_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ConfigError) as err:
        GcpProvider.open(config, stack="s", state_dir=tmp_path)
    assert err.value.message.startswith(field + ":") or err.value.message.startswith(field + ".")


def test_missing_credentials_are_a_permanent_error_with_a_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("INFRA_GCP_ENDPOINT", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(PermanentError) as err:
        GcpProvider.open({"project": PROJECT, "zones": ZONES}, stack="s", state_dir=tmp_path)
    assert err.value.hint and "application-default login" in err.value.hint


def test_image_references() -> None:
    assert image_source("family/infra-etcd", "p1") == "projects/p1/global/images/family/infra-etcd"
    assert image_source("infra-etcd-v3", "p1") == "projects/p1/global/images/infra-etcd-v3"
    assert image_source("projects/debian-cloud/global/images/family/debian-12", "p1") == (
        "projects/debian-cloud/global/images/family/debian-12"
    )
    assert (
        image_source("https://www.googleapis.com/compute/v1/projects/p2/global/images/x-1", "p1")
        == "projects/p2/global/images/x-1"
    )
    with pytest.raises(ValueError):
        image_source("Not An Image", "p1")


def test_fixed_addresses_come_from_the_group_range(fake: FakeCompute, provider: GcpProvider) -> None:
    spec = member("addr", 2, group="etcd", provider_config={"address_range": "10.128.15.0/28"})
    assert provider.address_for(spec) == "10.128.15.4"
    assert provider.address_for(member("addr")) is None
    inst = provider.create(spec.model_copy(update={"address": provider.address_for(spec)}))
    assert inst.address == "10.128.15.4"


def test_discovery_is_gce_sd_per_zone_filtered_on_labels(provider: GcpProvider) -> None:
    endpoint, provider.endpoint = provider.endpoint, None  # as against the real API
    try:
        sd = provider.discovery(group_selector("s", "etcd"), 2379)
    finally:
        provider.endpoint = endpoint
    assert sd == {
        "gce_sd_configs": [
            {
                "project": PROJECT,
                "zone": z,
                "port": 2379,
                "filter": '(labels.infra-group = "etcd") AND (labels.infra-stack = "s")',
            }
            for z in ZONES
        ]
    }


def test_discovery_under_an_endpoint_override_is_the_endpoints_http_sd(provider: GcpProvider) -> None:
    """gce_sd cannot be pointed at another endpoint: the override's HTTP discovery, same filter."""
    (sd,) = provider.discovery(group_selector("s", "etcd"), 2379)["http_sd_configs"]  # type: ignore[index]
    url = urllib.parse.urlsplit(sd["url"])
    assert f"{url.scheme}://{url.netloc}" == provider.endpoint and url.path == f"/_emulator/sd/{PROJECT}"
    query = urllib.parse.parse_qs(url.query)
    assert query == {"filter": ['(labels.infra-group = "etcd") AND (labels.infra-stack = "s")'], "port": ["2379"]}


def test_a_throttled_insert_is_tried_once_and_retried_by_the_executor_after_retry_after(
    fake: FakeCompute, provider: GcpProvider
) -> None:
    admin(fake, "POST", "/_admin/fail", {"method": "instances.insert", "code": 429,
                                             "reason": "rateLimitExceeded", "retry_after": 0.4})
    spec = member("throttle")
    with pytest.raises(TransientError) as err:
        provider.create(spec)
    assert err.value.retry_after == 0.4
    assert calls(fake)["instances.insert"] == 1  # no second retry loop inside the provider

    admin(fake, "POST", "/_admin/fail", {"method": "instances.insert", "code": 429,
                                             "reason": "rateLimitExceeded", "retry_after": 0.4})
    policy = retry.RetryPolicy(attempts=5, base=0.001, cap=0.01)
    start = time.monotonic()
    created = retry.call(lambda: provider.create(spec), policy)
    assert time.monotonic() - start >= 0.4  # the server's Retry-After, not the 1 ms backoff
    assert created.name == spec.name and calls(fake)["instances.insert"] == 3  # 1 + 1 throttled + 1
