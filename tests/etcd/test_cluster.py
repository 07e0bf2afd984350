"""End-to-end: a real etcd cluster on the local provider, driven through the ``infra`` CLI.

What a user would notice: the cluster comes up over mutual TLS and refuses clients without a
certificate; a killed member is healed without losing data; the cluster grows and shrinks; a
configuration change rolls through the members while writes keep being acknowledged and none
is lost; and when a majority is dead, ``infra apply`` refuses, explains, and touches nothing.
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from plugins.etcd.client import EtcdApiError, EtcdClient, EtcdError
from plugins.etcd.role import quorum
from tests.etcd.conftest import EtcdStack
from tests.polling import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.etcd]


def _started(stack: EtcdStack) -> list[str]:
    members = stack.member_list()
    return sorted(m.name for m in members.members if m.started)


def _ask_health_without_certificate(host: str, cafile: str) -> None:
    ctx = ssl.create_default_context(cafile=cafile)
    with socket.create_connection((host, 2379), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        if not tls.recv(1024):
            raise ConnectionError("closed without an answer")


def test_apply_brings_up_three_members_over_mutual_tls(etcd_stack: EtcdStack) -> None:
    out = etcd_stack.apply()
    assert "BEGIN" not in out.stdout + out.stderr  # no certificate or key material printed

    env = etcd_stack.env(fresh=True)
    assert env["ETCDCTL_API"] == "3"
    assert len(env["ETCDCTL_ENDPOINTS"].split(",")) == 3
    assert all(ep.startswith("https://") and ep.endswith(":2379") for ep in env["ETCDCTL_ENDPOINTS"].split(","))
    for key in ("ETCDCTL_KEY",):
        assert stat.S_IMODE(os.stat(env[key]).st_mode) == 0o600
    ca_key = Path(env["ETCDCTL_CACERT"]).with_name("ca.key")
    assert stat.S_IMODE(os.stat(ca_key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(ca_key.parent).st_mode) == 0o700
    for rec in etcd_stack.records():  # each member's key, as delivered to it, is private too
        key = etcd_stack.state / "local" / "instances" / rec["name"] / "config" / "etcd" / "member.key"
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600

    listed = etcd_stack.etcdctl("member", "list", "-w", "simple", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split(", ") for line in listed.stdout.strip().splitlines()]
    assert len(rows) == 3 and all(row[1] == "started" for row in rows)

    health = etcd_stack.etcdctl("endpoint", "health", "--cluster", env=env)
    assert health.returncode == 0, health.stderr
    assert (health.stdout + health.stderr).count("is healthy") == 3

    assert etcd_stack.etcdctl("put", "greeting", "hello", env=env).returncode == 0
    got = etcd_stack.etcdctl("get", "greeting", "--print-value-only", env=env)
    assert got.stdout.strip() == "hello"

    # A client without a certificate is refused, by etcdctl and at the TLS handshake itself.
    no_cert = {k: v for k, v in env.items() if k not in ("ETCDCTL_CERT", "ETCDCTL_KEY")}
    refused = etcd_stack.etcdctl("get", "greeting", "--dial-timeout=2s", "--command-timeout=3s", env=no_cert)
    assert refused.returncode != 0
    assert "hello" not in refused.stdout
    host = env["ETCDCTL_ENDPOINTS"].split(",")[0].removeprefix("https://").rsplit(":", 1)[0]
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _ask_health_without_certificate(host, env["ETCDCTL_CACERT"])

    # The plan is empty afterwards: nothing flaps.
    again = etcd_stack.infra("plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr

    status = etcd_stack.infra("status", "--json")
    assert status.returncode == 0, status.stderr
    assert "leader" in status.stdout and "cluster_id" in status.stdout


def test_kill_one_member_and_apply_heals_it_with_data_intact(etcd_stack: EtcdStack) -> None:
    etcd_stack.apply()
    env = etcd_stack.env()
    for i in range(20):
        assert etcd_stack.etcdctl("put", f"k{i}", f"v{i}", env=env).returncode == 0
    before = {m.name: m.id for m in etcd_stack.member_list().members}
    # Kill the leader, the hardest member to lose, and apply at once, while the survivors elect.
    client = etcd_stack.client()
    leader_id = client.status(etcd_stack.endpoints()[0]).leader
    victim = next(r for r in etcd_stack.records() if before[r["name"]] == leader_id)
    victim_member = victim["labels"]["infra-member"]

    etcd_stack.kill(victim_member)
    out = etcd_stack.apply()
    assert victim_member in out.stdout

    after = etcd_stack.member_list()
    assert len(after.members) == 3 and all(m.started for m in after.members)
    assert before[victim["name"]] not in after.ids, "the dead member must be removed"
    assert victim["name"] in {m.name for m in after.members}, "and a new one added in its place"
    env = etcd_stack.env()
    for i in range(20):
        got = etcd_stack.etcdctl("get", f"k{i}", "--print-value-only", env=env)
        assert got.stdout.strip() == f"v{i}"
    health = etcd_stack.etcdctl("endpoint", "health", "--cluster", env=env)
    assert (health.stdout + health.stderr).count("is healthy") == 3, health.stderr


def test_scale_three_to_five_and_back(etcd_stack: EtcdStack) -> None:
    etcd_stack.apply()
    assert etcd_stack.etcdctl("put", "scale", "before").returncode == 0
    # A run that crashed between 'member add' and starting the instance leaves a member that
    # never started; the next change removes it before adding anyone.
    client = etcd_stack.client()
    deadline = time.monotonic() + 20
    while True:  # etcd refuses reconfiguration until its members have been connected for 5 s
        try:
            phantom, _ = client.member_add(etcd_stack.endpoints()[0], ["https://127.77.255.254:2380"])
            break
        except EtcdApiError as exc:
            assert exc.unhealthy_cluster and time.monotonic() < deadline, exc
            time.sleep(0.5)
    assert len(etcd_stack.member_list().members) == 4

    etcd_stack.write(size=5)
    out = etcd_stack.apply()
    assert "stale member" in out.stdout + out.stderr
    grown = etcd_stack.member_list()
    assert len(grown.members) == 5 and all(m.started for m in grown.members)
    assert phantom.id not in grown.ids
    assert len(etcd_stack.records()) == 5

    etcd_stack.write(size=3)
    etcd_stack.apply()
    shrunk = etcd_stack.member_list()
    assert len(shrunk.members) == 3 and all(m.started for m in shrunk.members)
    members = sorted(r["labels"]["infra-member"] for r in etcd_stack.records())
    assert members == ["etcd-0", "etcd-1", "etcd-2"], "shrinking removes the highest ids"
    got = etcd_stack.etcdctl("get", "scale", "--print-value-only")
    assert got.stdout.strip() == "before"


@dataclass
class Writer:
    """Writes keys continuously through whichever member answers; remembers what was acknowledged."""

    client: EtcdClient
    endpoints: list[str]
    acked: dict[str, str] = field(default_factory=dict)
    failures: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            key, value = f"w/{i:06d}", f"value-{i}"
            for ep in list(self.endpoints):
                try:
                    self.client.put(ep, key, value, timeout=3)
                except EtcdError:
                    self.failures += 1
                    continue
                self.acked[key] = value
                break
            else:
                time.sleep(0.05)
            i += 1
            self.refresh()

    def refresh(self) -> None:
        for ep in list(self.endpoints):
            try:
                listed = self.client.member_list(ep)
            except EtcdError:
                continue
            urls = [u for m in listed.members for u in m.client_urls]
            if urls:
                self.endpoints[:] = urls
            return


@dataclass
class QuorumWatch:
    """Polls the cluster: at every poll a majority of the listed members must answer."""

    client: EtcdClient
    endpoints: list[str]
    polls: int = 0
    violations: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _answers(self, url: str) -> bool:
        try:
            self.client.status(url, timeout=2)
        except EtcdError:
            return False
        return True

    def run(self) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            while not self.stop.is_set():
                listed = None
                for ep in list(self.endpoints):
                    try:
                        listed = self.client.member_list(ep)
                        break
                    except EtcdError:
                        continue
                if listed is None:
                    self.violations.append("no member answered member list")
                else:
                    started = [m for m in listed.members if m.client_urls]
                    urls = [m.client_urls[0] for m in started]
                    answering = sum(pool.map(self._answers, urls))
                    need = quorum(len(listed.members))
                    if answering < need:
                        self.violations.append(f"{answering} of {len(listed.members)} members answer, {need} needed")
                    self.endpoints[:] = urls or self.endpoints
                self.polls += 1
                time.sleep(0.1)


def test_rolling_flag_change_under_writes_loses_nothing(etcd_stack: EtcdStack) -> None:
    etcd_stack.apply()
    before = {r["labels"]["infra-member"]: r["labels"]["infra-spec"] for r in etcd_stack.records()}
    client = etcd_stack.client(timeout=3)
    writer = Writer(client, etcd_stack.endpoints())
    watch = QuorumWatch(client, etcd_stack.endpoints())
    threads = [threading.Thread(target=writer.run), threading.Thread(target=watch.run)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(writer.acked) >= 5, "the writer's first acknowledged writes")
        etcd_stack.write(flags={"snapshot-count": 5000})
        plan = etcd_stack.infra("plan", "--detailed-exitcode")
        assert plan.returncode == 2 and plan.stdout.count("spec changed") == 3, plan.stdout
        etcd_stack.apply()
        done = len(writer.acked)
        wait_for(lambda: len(writer.acked) >= done + 5, "writes acknowledged after the roll")
    finally:
        writer.stop.set()
        watch.stop.set()
        for t in threads:
            t.join(timeout=30)

    after = {r["labels"]["infra-member"]: r["labels"]["infra-spec"] for r in etcd_stack.records()}
    assert sorted(after) == ["etcd-0", "etcd-1", "etcd-2"]
    assert all(after[m] != before[m] for m in after), "every member runs the new spec"
    assert watch.polls > 5
    assert watch.violations == [], watch.violations
    assert len(writer.acked) > 20
    stored = client.get_prefix(etcd_stack.endpoints()[0], "w/")
    lost = {k: v for k, v in writer.acked.items() if stored.get(k) != v}
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {sorted(lost)[:5]}"
    members = etcd_stack.member_list()
    assert len(members.members) == 3 and all(m.started for m in members.members)


def test_majority_dead_apply_refuses_and_changes_nothing(etcd_stack: EtcdStack) -> None:
    etcd_stack.apply()
    survivor = etcd_stack.record("etcd-0")
    env = etcd_stack.env()
    members_before = etcd_stack.member_list().ids
    etcd_stack.kill("etcd-1")
    etcd_stack.kill("etcd-2")
    records_before = {r["name"]: r["id"] for r in etcd_stack.records()}
    survivor_pid = etcd_stack.etcd_pid("etcd-0")

    out = etcd_stack.infra("apply", "--yes")
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "lost its quorum" in text
    assert "etcdctl snapshot save" in text and "etcdctl snapshot restore" in text
    assert "--force-new-cluster" in text
    assert "changed nothing" in text

    # Nothing was deleted or created, the survivor still runs, and it still lists 3 members.
    assert {r["name"]: r["id"] for r in etcd_stack.records()} == records_before
    assert etcd_stack.etcd_pid("etcd-0") == survivor_pid
    os.kill(survivor_pid, 0)
    survivor_ep = f"https://{survivor['address']}:2379"
    listed = etcd_stack.etcdctl("member", "list", env={**env, "ETCDCTL_ENDPOINTS": survivor_ep})
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.strip().splitlines()) == 3
    assert etcd_stack.client().member_list(survivor_ep).ids == members_before
