"""A real etcd cluster survives the edits that used to destroy it, and changes only when asked.

* A one-letter typo in the group's name (``etdc``): ``plan``, ``apply`` and the daemon (several
  passes) keep every member and the data; the group is reported as no longer declared; declaring
  it ``removed`` then deletes it through the etcd role (one member at a time, as quorum).
* ``apply --replace etcd/etcd-1`` under a continuous writer: one member replaced through the role,
  no acknowledged write lost, three healthy members.
* A label (a cost centre) added to the group updates every member in place: the same instances
  and the same etcd member ids.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading

import pytest

from tests.etcd.conftest import EtcdStack, infra_command
from tests.etcd.test_cluster import Writer, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.etcd]


def ids(stack: EtcdStack, group: str) -> dict[str, str]:
    """member → instance id, for one group's instances."""
    return {r["labels"]["infra-member"]: r["id"] for r in stack.records() if r["labels"]["infra-group"] == group}


def endpoints(stack: EtcdStack, group: str) -> list[str]:
    return [f"https://{r['address']}:2379" for r in stack.records()
            if r["labels"]["infra-group"] == group and r.get("address")]


def daemon_passes(stack: EtcdStack, passes: int) -> list[dict[str, object]]:
    """Run ``infra daemon`` on the stack file until it logged ``passes`` passes, then stop it."""
    log = stack.root / "daemon.log"
    env = {**os.environ, "INFRA_STATE_DIR": str(stack.state)}
    with open(log, "wb") as fh:
        proc = subprocess.Popen([*infra_command(), "daemon", str(stack.stack_file), "--interval", "0.5",
                                 "--log-format", "json", "--metrics-addr", "127.0.0.1:0"],
                                env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        events: list[dict[str, object]] = []

        def enough() -> bool:
            events[:] = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
            return sum(1 for e in events if e.get("event") == "pass") >= passes

        wait_for(enough, f"{passes} daemon passes", timeout=120)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return events


def test_a_typo_keeps_the_cluster_and_removed_deletes_it_through_its_role(etcd_stack: EtcdStack) -> None:
    etcd_stack.apply()
    client = etcd_stack.client(timeout=5)
    old = endpoints(etcd_stack, "etcd")
    client.put(old[0], "precious", "data")
    members, instances = etcd_stack.member_list().ids, ids(etcd_stack, "etcd")

    etcd_stack.group = "etdc"  # the typo
    etcd_stack.write()
    plan = etcd_stack.infra("plan")
    assert plan.returncode == 0, plan.stderr
    assert "group etcd (etcd) is no longer declared: 3 members kept" in plan.stdout
    assert "- etcd-" not in plan.stdout, plan.stdout
    applied = etcd_stack.infra("apply", "--yes")
    assert applied.returncode == 0, applied.stderr
    events = daemon_passes(etcd_stack, 4)
    assert not [e for e in events if e.get("event") == "change" and str(e.get("member", "")).startswith("etcd-")]
    assert any(e.get("event") == "undeclared" for e in events), "the daemon did not report the undeclared group"

    assert ids(etcd_stack, "etcd") == instances, "the typo cost a member"
    assert client.member_list(old[0]).ids == members
    assert client.get_prefix(old[0], "precious") == {"precious": "data"}

    etcd_stack.write(removed=("etcd",))
    removed = etcd_stack.infra("apply", "--yes")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert "# group etcd (quorum)" in removed.stdout, removed.stdout
    assert ids(etcd_stack, "etcd") == {}
    health = etcd_stack.etcdctl("endpoint", "health", env={**etcd_stack.env(), "ETCDCTL_ENDPOINTS":
                                                          ",".join(endpoints(etcd_stack, "etdc"))})
    assert (health.stdout + health.stderr).count("is healthy") == 3, health.stdout + health.stderr


def test_replace_one_healthy_member_under_a_continuous_writer(etcd_stack: EtcdStack) -> None:
    etcd_stack.apply()
    client = etcd_stack.client(timeout=3)
    before_ids, before_members = ids(etcd_stack, "etcd"), etcd_stack.member_list()
    writer = Writer(client, etcd_stack.endpoints())
    thread = threading.Thread(target=writer.run)
    thread.start()
    try:
        wait_for(lambda: len(writer.acked) >= 5, "the writer's first acknowledged writes")
        out = etcd_stack.infra("apply", "--yes", "--replace", "etcd/etcd-1")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "replace requested" in out.stdout
        done = len(writer.acked)
        wait_for(lambda: len(writer.acked) >= done + 5, "writes acknowledged after the replacement")
    finally:
        writer.stop.set()
        thread.join(timeout=30)
    after_ids = ids(etcd_stack, "etcd")
    assert [m for m in after_ids if after_ids[m] != before_ids[m]] == ["etcd-1"]
    after_members = etcd_stack.member_list()
    assert len(set(after_members.ids) - set(before_members.ids)) == 1 and len(after_members.ids) == 3
    health = etcd_stack.etcdctl("endpoint", "health", "--cluster")
    assert (health.stdout + health.stderr).count("is healthy") == 3
    stored = client.get_prefix(etcd_stack.endpoints()[0], "w/")
    lost = {k: v for k, v in writer.acked.items() if stored.get(k) != v}
    assert not lost, f"{len(lost)} acknowledged writes lost"
    bad = etcd_stack.infra("apply", "--yes", "--replace", "etcd/etcd-7")
    assert bad.returncode == 1 and "etcd/etcd-7 is not a member" in bad.stderr


def test_a_label_change_updates_every_member_in_place(etcd_stack: EtcdStack) -> None:
    etcd_stack.apply()
    before_ids, members = ids(etcd_stack, "etcd"), etcd_stack.member_list().ids
    etcd_stack.write(group_kw={"labels": {"cost-centre": "cc-7"}})
    plan = etcd_stack.infra("plan")
    assert plan.stdout.count("labels changed") == 3 and "replace" not in plan.stdout.split("Plan:")[0], plan.stdout
    applied = etcd_stack.infra("apply", "--yes")
    assert applied.returncode == 0, applied.stderr
    assert ids(etcd_stack, "etcd") == before_ids
    assert etcd_stack.member_list().ids == members
    assert all(r["labels"]["cost-centre"] == "cc-7" for r in etcd_stack.records())
    assert etcd_stack.infra("plan", "--detailed-exitcode").returncode == 0
