"""End to end: the real ``infra`` CLI, as a subprocess, against the fake Compute API.

The fake runs in this test process on 127.0.0.1; the CLI reaches it through
``INFRA_GCP_ENDPOINT``. What a user would see: apply creates labelled members carrying their
user-data, the next plan is empty, an instance deleted out of band is replaced, foreign VMs are
never touched, destroy leaves nothing, a plan over 1500 instances costs at most 4 list calls, and
30% throttling/5xx answers still converge with no duplicate instance.

``infra apply stacks/etcd-gcp.py --yes`` runs end to end too: it builds the two groups' LinuxKit
images (with the tests' linuxkit stand-in), uploads them to the fake's Cloud Storage and registers
them, then creates members that boot them; a second apply pushes nothing. The fake's VMs run
nothing and sit on made-up 10.128.x addresses outside ``INFRA_NETWORK_ALLOW``, so the roles
bootstrap without probing them (static bootstrap needs no API) and say so, and a later membership
change refuses instead of guessing. Its plan, fixed etcd addresses and Prometheus GCE discovery are
also checked in process. A change to what a group's image holds rolls its members onto a new
image; a missing ``linuxkit`` is one clear error that changes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.engine.engine import Engine
from reconciler.engine.loader import load_stack
from tests.gcp.support import PROJECT, add_foreign, admin, calls
from tests.gcp_fake import FakeCompute
from tests.linuxkit_standin.artefact import STANDIN

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "tests" / "gcp" / "stacks" / "web-gcp.py"
ETCD = ROOT / "stacks" / "etcd-gcp.py"


BUCKET = "my-project-infra-images"


@pytest.fixture
def fake() -> Iterator[FakeCompute]:
    with FakeCompute(op_delay=0.05, boot_delay=0.05, seed=7) as server:
        server.storage.add_bucket(BUCKET)
        yield server


def infra(fake: FakeCompute, state: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI against the fake, with the linuxkit stand-in (``INFRA_LINUXKIT``) unless ``env`` overrides it."""
    exe = shutil.which("infra")
    assert exe, "the infra console script is not installed (pip install -e .)"
    full = {**os.environ, **fake.env(), "INFRA_STATE_DIR": str(state), "NO_COLOR": "1",
            "INFRA_LINUXKIT": str(STANDIN), "INFRA_GCP_IMAGE_BUCKET": BUCKET, **env}
    return subprocess.run([exe, *args], capture_output=True, text=True, env=full, timeout=240, check=False)


def members_of(fake: FakeCompute, stack: str) -> list[dict[str, Any]]:
    return [i for i in fake.all_instances() if (i.get("labels") or {}).get("infra-stack") == stack]


def user_data(instance: dict[str, Any]) -> dict[str, Any]:
    items = {i["key"]: i["value"] for i in instance["metadata"]["items"]}
    return dict(json.loads(items["user-data"]))


def test_apply_plan_heal_and_destroy_through_the_cli(fake: FakeCompute, tmp_path: Path) -> None:
    untagged = add_foreign(fake, "hand-made-vm", {})
    other = add_foreign(
        fake,
        "other-stack-vm",
        {"infra-stack": "other", "infra-group": "web", "infra-member": "web-0", "infra-spec": "00000000"},
    )
    env = {"WEB_GCP_STACK": "webgcp", "WEB_GCP_SIZE": "3"}

    applied = infra(fake, tmp_path, "apply", str(WEB), "--yes", **env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    made = members_of(fake, "webgcp")
    assert sorted(i["labels"]["infra-member"] for i in made) == ["web-0", "web-1", "web-2"]
    for inst in made:
        labels = inst["labels"]
        assert set(labels) == {"infra-stack", "infra-group", "infra-member", "infra-spec", "infra-role", "infra-policy"}
        assert inst["name"] == f"webgcp-web-{labels['infra-member']}-{labels['infra-spec']}"
        assert user_data(inst)["web"]["entries"]["index.html"]["content"] == "<h1>hello from gce</h1>\n"
    assert {i["zone"].rsplit("/", 1)[-1] for i in made} == {"us-central1-a", "us-central1-b"}

    again = infra(fake, tmp_path, "plan", str(WEB), "--detailed-exitcode", **env)
    assert again.returncode == 0, again.stdout + again.stderr

    victim = next(i for i in made if i["labels"]["infra-member"] == "web-1")
    zone = victim["zone"].rsplit("/", 1)[-1]
    admin(fake, "DELETE", f"/_admin/instances/{PROJECT}/{zone}/{victim['name']}")
    drift = infra(fake, tmp_path, "plan", str(WEB), "--json", "--detailed-exitcode", **env)
    assert drift.returncode == 2, drift.stdout + drift.stderr
    changes = json.loads(drift.stdout)["changes"]
    assert [(c["action"], c["member"], c["reason"]) for c in changes] == [("create", "web-1", "missing")]

    healed = infra(fake, tmp_path, "apply", str(WEB), "--yes", **env)
    assert healed.returncode == 0, healed.stdout + healed.stderr
    now = members_of(fake, "webgcp")
    assert sorted(i["labels"]["infra-member"] for i in now) == ["web-0", "web-1", "web-2"]
    assert next(i for i in now if i["labels"]["infra-member"] == "web-1")["id"] != victim["id"]

    gone = infra(fake, tmp_path, "destroy", str(WEB), "--yes", **env)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert members_of(fake, "webgcp") == []
    left = {i["name"] for i in fake.all_instances()}
    assert {untagged.split("/")[1], other.split("/")[1]} <= left  # foreign VMs never touched


def test_apply_converges_without_duplicates_under_30_percent_throttling_and_5xx(
    fake: FakeCompute, tmp_path: Path
) -> None:
    env = {"WEB_GCP_STACK": "flaky", "WEB_GCP_SIZE": "12"}
    fake.configure(fault_rate=0.3, fault_codes=[429, 503])
    results = []
    for _ in range(3):
        run = infra(fake, tmp_path, "apply", str(WEB), "--yes", **env)
        results.append(run)
        names = [i["name"] for i in members_of(fake, "flaky")]
        assert len(names) == len(set(names)), "a member exists twice"
        if run.returncode == 0:
            break
    assert results[-1].returncode == 0, "\n".join(r.stdout + r.stderr for r in results)
    members = sorted(i["labels"]["infra-member"] for i in members_of(fake, "flaky"))
    assert members == sorted(f"web-{i}" for i in range(12))
    counted = calls(fake)
    assert sum(counted.values()) > 0 and fake.fault_rate == 0.3
    check = infra(fake, tmp_path, "plan", str(WEB), "--detailed-exitcode", **env)
    assert check.returncode == 0, check.stdout + check.stderr


def test_plan_over_1500_instances_makes_at_most_4_list_calls(
    fake: FakeCompute, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in fake.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WEB_GCP_STACK", "big")
    monkeypatch.setenv("WEB_GCP_SIZE", "1500")
    engine = Engine.open(load_stack(WEB), root=tmp_path)
    try:
        (desire,) = engine.desired({})
        batch = [
            {
                "project": PROJECT,
                "zone": ["us-central1-a", "us-central1-b"][m.placement % 2],
                "name": m.name,
                "labels": m.labels,
            }
            for m in desire.members
        ]
    finally:
        engine.close()
    admin(fake, "POST", "/_admin/instances", {"instances": batch})
    admin(fake, "POST", "/_admin/calls/reset")
    started = time.monotonic()
    run = infra(
        fake, tmp_path, "plan", str(WEB), "--json", "--detailed-exitcode", WEB_GCP_STACK="big", WEB_GCP_SIZE="1500"
    )
    seconds = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr
    assert json.loads(run.stdout)["changes"] == []
    counted = calls(fake)
    list_calls = counted.get("instances.aggregatedList", 0) + counted.get("instances.list", 0)
    assert list_calls <= 4, counted
    assert "instances.get" not in counted  # never one read per instance
    print(f"plan over 1500 instances: {list_calls} list calls, {sum(counted.values())} calls, {seconds:.1f}s")


def test_etcd_gcp_stack_plans_etcd_with_fixed_addresses_and_prometheus_with_gce_discovery(
    fake: FakeCompute, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in fake.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("INFRA_LINUXKIT", str(STANDIN))
    monkeypatch.delenv("INFRA_GCP_PROJECT", raising=False)
    stack = load_stack(ETCD)
    assert stack.provider == "gcp" and stack.group("etcd").size == 3
    engine = Engine.open(stack, root=tmp_path)
    try:
        assert [p for p in engine.validate() if p.is_error] == []
        plan = engine.plan().plan
        creates = sorted((c.group, c.member) for c in plan.changes)
        assert creates == [("etcd", "etcd-0"), ("etcd", "etcd-1"), ("etcd", "etcd-2"), ("prometheus", "prometheus-0")]
        assert sorted(i.group for i in plan.images) == ["etcd", "prometheus"]  # pushed before any create
        desired = {d.name: d.members for d in engine.desired({})}
    finally:
        engine.close()
    assert [m.address for m in desired["etcd"]] == ["10.128.15.2", "10.128.15.3", "10.128.15.4"]
    (prom,) = desired["prometheus"]
    config_text = next(f.content for f in prom.files if f.path.endswith("prometheus.yml"))
    config = yaml.safe_load(config_text)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    etcd_job = jobs["etcd"]
    assert etcd_job["scheme"] == "https" and "tls_config" in etcd_job  # etcd's metrics are behind mTLS
    # Under the endpoint override, the endpoint's HTTP discovery (gce_sd has no endpoint setting).
    (sd,) = etcd_job["http_sd_configs"]
    assert sd["url"].startswith(f"{fake.url}/_emulator/sd/my-project?")
    assert "labels.infra-group" in urllib.parse.unquote_plus(sd["url"]) and "port=2379" in sd["url"]
    assert "10.128.15" not in config_text  # no address written into Prometheus's configuration
    assert calls(fake).get("instances.insert") is None  # planning changed nothing


def test_a_missing_linuxkit_is_one_clear_error_that_changes_nothing(fake: FakeCompute, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    for command in (["validate"], ["plan"], ["apply", "--yes"]):
        run = infra(fake, state, command[0], str(ETCD), *command[1:], INFRA_LINUXKIT="", PATH="/usr/bin:/bin")
        assert run.returncode == 1, run.stdout + run.stderr
        out = run.stdout + run.stderr
        assert "Traceback" not in out
        assert out.count("no 'linuxkit' on PATH") == 1 and "install the linuxkit CLI" in out  # one error
        assert "groups[0].image" in out and "infra-etcd-" in out and "infra-prometheus-" in out
    assert fake.all_instances() == [] and not [i for i in fake.images.values() if i.get("labels")]
    assert not fake.storage.objects
    assert list(state.iterdir()) == []  # not even a lock file


def test_validate_names_a_missing_pinned_image_before_anything_is_created(fake: FakeCompute, tmp_path: Path) -> None:
    run = infra(fake, tmp_path, "validate", str(WEB), WEB_GCP_IMAGE="family/no-such-family")
    assert run.returncode == 1
    out = run.stdout + run.stderr
    assert "web-gcp.py:25: groups[0].image: " in out and "family/no-such-family" in out  # the group's line
    assert fake.all_instances() == []


def test_a_change_to_what_the_image_holds_rolls_the_members_onto_a_new_image(fake: FakeCompute,
                                                                             tmp_path: Path) -> None:
    env = {"WEB_GCP_STACK": "rollgcp", "WEB_GCP_SIZE": "2", "WEB_GCP_IMAGE": ""}
    first = infra(fake, tmp_path, "apply", str(WEB), "--yes", **env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "1 image pushed" in first.stdout
    (old,) = [name for (_, name) in fake.images if name.startswith("infra-web-")]
    booted = {inst.body["disks"][0]["initializeParams"]["sourceImage"] for inst in fake.instances.values()}
    assert booted == {f"projects/{PROJECT}/global/images/{old}"}
    fake.reset_calls()
    fake.storage.calls.clear()
    again = infra(fake, tmp_path, "apply", str(WEB), "--yes", **env)
    assert again.returncode == 0 and "No changes" in again.stdout
    assert "images.insert" not in calls(fake) and "storage.objects.insert" not in fake.storage.calls

    plan = infra(fake, tmp_path, "plan", str(WEB), "--json", **env, WEB_GCP_PORT="8081")
    doc = json.loads(plan.stdout)
    (push,) = doc["images"]
    assert push["action"] == "push" and push["group"] == "web" and push["name"] != old
    assert [(c["action"], c["reason"]) for c in doc["changes"]] == [("replace", "spec changed")] * 2
    assert all(c["after"]["image"] == push["name"] for c in doc["changes"])
    text = infra(fake, tmp_path, "plan", str(WEB), **env, WEB_GCP_PORT="8081").stdout
    assert text.index(push["name"]) < text.index("# group web")  # images listed before member changes
    rolled = infra(fake, tmp_path, "apply", str(WEB), "--yes", **env, WEB_GCP_PORT="8081")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    booted = {inst.body["disks"][0]["initializeParams"]["sourceImage"] for inst in fake.instances.values()}
    assert booted == {f"projects/{PROJECT}/global/images/{push['name']}"}
    assert ("my-project", old) in fake.images  # the old image is left alone

    listed = json.loads(infra(fake, tmp_path, "image", "list", str(WEB), "--json", **env, WEB_GCP_PORT="8081").stdout)
    assert [(i["group"], i["name"], i["present"]) for i in listed["images"]] == [("web", push["name"], True)]
    kept = infra(fake, tmp_path, "destroy", str(WEB), "--yes", **env, WEB_GCP_PORT="8081")
    assert kept.returncode == 0 and ("my-project", push["name"]) in fake.images  # images stay by default
    assert members_of(fake, "rollgcp") == []
    gone = infra(fake, tmp_path, "destroy", str(WEB), "--yes", "--images", **env, WEB_GCP_PORT="8081")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert ("my-project", push["name"]) not in fake.images and ("my-project", old) in fake.images


def test_apply_etcd_gcp_stack_end_to_end(fake: FakeCompute, tmp_path: Path) -> None:
    foreign = add_foreign(fake, "someone-elses-vm", {})
    applied = infra(fake, tmp_path, "apply", str(ETCD), "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "cannot be reached from here" in applied.stderr  # honest about the health gate it skipped
    assert "2 images pushed" in applied.stdout
    images = {img["labels"]["infra-image"]: name for (_, name), img in fake.images.items() if img.get("labels")}
    assert sorted(n.rsplit("-", 1)[0] for n in images.values()) == ["infra-etcd", "infra-prometheus"]
    made = members_of(fake, "etcd-gcp")
    for inst in [i for i in fake.instances.values() if "infra-group" in i.labels]:
        source = inst.body["disks"][0]["initializeParams"]["sourceImage"]
        assert source.rsplit("/", 1)[-1] == next(n for n in images.values()
                                                  if n.startswith(f"infra-{inst.labels['infra-group']}-"))
    assert sorted(i["labels"]["infra-member"] for i in made) == ["etcd-0", "etcd-1", "etcd-2", "prometheus-0"]
    etcd = [i for i in made if i["labels"]["infra-group"] == "etcd"]
    for inst in etcd:
        assert inst["name"].startswith(f"etcd-gcp-etcd-{inst['labels']['infra-member']}-")
        data = user_data(inst)
        assert "etcd" in data  # the LinuxKit metadata tree of the etcd service
        assert "BEGIN" not in json.dumps(inst["labels"])
    assert sorted(i["networkInterfaces"][0]["networkIP"] for i in etcd) == ["10.128.15.2", "10.128.15.3",
                                                                            "10.128.15.4"]
    fake.reset_calls()
    again = infra(fake, tmp_path, "plan", str(ETCD), "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert calls(fake).get("images.list") == 2 and "images.insert" not in calls(fake)  # one lookup each
    # the plan output and the saved plan never carry the members' private keys
    assert "PRIVATE KEY" not in applied.stdout + applied.stderr + again.stdout

    victim = next(i for i in etcd if i["labels"]["infra-member"] == "etcd-1")
    zone = victim["zone"].rsplit("/", 1)[-1]
    admin(fake, "DELETE", f"/_admin/instances/{PROJECT}/{zone}/{victim['name']}")
    blind = infra(fake, tmp_path, "apply", str(ETCD), "--yes")
    assert blind.returncode == 1, blind.stdout + blind.stderr
    assert "etcd" in blind.stderr
    assert len(members_of(fake, "etcd-gcp")) == 3  # refused a membership change it could not make safely

    gone = infra(fake, tmp_path, "destroy", str(ETCD), "--yes")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert members_of(fake, "etcd-gcp") == []
    assert foreign.split("/")[1] in {i["name"] for i in fake.all_instances()}


def test_image_build_push_and_list_through_the_cli(fake: FakeCompute, tmp_path: Path) -> None:
    env = {"WEB_GCP_STACK": "imggcp", "WEB_GCP_IMAGE": ""}
    listed = json.loads(infra(fake, tmp_path, "image", "list", str(WEB), "--json", **env).stdout)
    (row,) = listed["images"]
    assert (row["group"], row["present"], row["built"]) == ("web", False, False)
    built = infra(fake, tmp_path, "image", "build", str(WEB), **env)
    assert built.returncode == 0, built.stdout + built.stderr
    assert f"web: {row['name']} built: " in built.stdout and row["digest"] in built.stdout
    assert "images.insert" not in calls(fake) and not fake.storage.objects  # build pushes nothing
    assert f"web: {row['name']} cached" in infra(fake, tmp_path, "image", "build", str(WEB), **env).stdout
    pushed = infra(fake, tmp_path, "image", "push", str(WEB), **env)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert "1 pushed, 0 already present" in pushed.stdout
    fake.reset_calls()
    fake.storage.calls.clear()
    again = infra(fake, tmp_path, "image", "push", str(WEB), **env)
    assert again.returncode == 0 and "0 pushed, 1 already present" in again.stdout
    assert calls(fake) == {"images.list": 1} and fake.storage.calls == {}  # one lookup, no upload
    row = json.loads(infra(fake, tmp_path, "image", "list", str(WEB), "--json", **env).stdout)["images"][0]
    assert row["present"] and row["size"] and row["id"].endswith(f"/global/images/{row['name']}")
    assert fake.all_instances() == []  # images alone: no member was created
    pinned = infra(fake, tmp_path, "image", "list", str(WEB), **{**env, "WEB_GCP_IMAGE": "family/infra-etcd"})
    assert pinned.returncode == 0 and "every group pins its image" in pinned.stdout


def test_an_image_that_cannot_be_pushed_changes_no_member(fake: FakeCompute, tmp_path: Path) -> None:
    env = {"WEB_GCP_STACK": "failgcp", "WEB_GCP_IMAGE": ""}
    name = json.loads(infra(fake, tmp_path, "image", "list", str(WEB), "--json", **env).stdout)["images"][0]["name"]
    fake.add_image(PROJECT, name, "someone-elses")  # a foreign image holds the name
    applied = infra(fake, tmp_path, "apply", str(WEB), "--yes", **env)
    assert applied.returncode == 1
    assert f"an image named {name} exists without label infra-image" in applied.stderr
    assert members_of(fake, "failgcp") == [] and fake.api_image(PROJECT, name)["family"] == "someone-elses"


def test_labels_change_in_place_and_a_renamed_group_is_kept_on_gce(fake: FakeCompute, tmp_path: Path) -> None:
    """Through the Compute API: setLabels (with its fingerprint) instead of a replacement; a group
    renamed in the file keeps its instances; protection refuses destroy."""
    env = {"WEB_GCP_STACK": "lab", "WEB_GCP_SIZE": "2", "WEB_GCP_LABELS": "team=blue"}
    assert infra(fake, tmp_path, "apply", str(WEB), "--yes", **env).returncode == 0
    before = {m["name"]: m["id"] for m in members_of(fake, "lab")}
    assert all(m["labels"]["team"] == "blue" and m["labels"]["infra-role"] == "command"
               for m in members_of(fake, "lab"))
    fake.reset_calls()
    env["WEB_GCP_LABELS"] = "team=green"
    changed = infra(fake, tmp_path, "apply", str(WEB), "--yes", **env, WEB_GCP_PROTECT="1")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert "2 to update in place" in changed.stdout and "0 to replace" in changed.stdout
    assert fake.call_counts().get("instances.setLabels") == 2 and "instances.insert" not in fake.call_counts()
    after = members_of(fake, "lab")
    assert {m["name"]: m["id"] for m in after} == before
    assert all(m["labels"]["team"] == "green" and m["labels"]["infra-protect"] == "true" for m in after)

    refused = infra(fake, tmp_path, "destroy", str(WEB), "--yes", **env, WEB_GCP_PROTECT="1")
    assert refused.returncode == 1 and "group web is protected" in refused.stdout + refused.stderr
    typo = {**env, "WEB_GCP_GROUP": "wbe", "WEB_GCP_SIZE": "0"}
    renamed = infra(fake, tmp_path, "plan", str(WEB), **typo)
    assert "group web (command, protected) is no longer declared: 2 members kept" in renamed.stdout
    assert infra(fake, tmp_path, "apply", str(WEB), "--yes", **typo).returncode == 0
    assert {m["name"]: m["id"] for m in members_of(fake, "lab")} == before
    assert infra(fake, tmp_path, "apply", str(WEB), "--yes", **env).returncode == 0  # protection lifted
    assert infra(fake, tmp_path, "destroy", str(WEB), "--yes", **env).returncode == 0
    assert members_of(fake, "lab") == []
