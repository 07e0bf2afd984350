"""The local provider on real processes: layout, liveness, delete, errors, metadata, discovery."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from providers.local import LocalProvider, network, procs
from reconciler.core.errors import ConfigError, PermanentError
from reconciler.core.model import (
    LABEL_SPEC,
    ConfigFile,
    Instance,
    InstanceStatus,
    Service,
    group_selector,
    stack_selector,
)
from tests.providers.test_local_support import (
    PORT,
    group_alive,
    http_get,
    http_service,
    is_dead,
    local_provider,
    local_root,
    member,
    processes_under,
    record,
    wait_for,
)

__all__ = ["local_provider", "local_root"]  # fixtures used below

STACK = "lt"
NET = ipaddress.ip_network("127.77.0.0/16")


def sh(name: str, script: str) -> Service:
    return Service(name=name, image="alpine:3.20", command=("sh", "-c", script))


# -- opening ---------------------------------------------------------------------------------


def test_bad_config_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"provider_config\.grace"):
        LocalProvider.open({"grace": -1}, stack="s", state_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"provider_config\.zones"):
        LocalProvider.open({"zones": ["a"]}, stack="s", state_dir=tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match=r"provider_config\.root"):
        LocalProvider.open({"root": str(blocker / "sub")}, stack="s", state_dir=tmp_path)


def test_default_root_is_under_the_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFRA_STATE_DIR", str(tmp_path / "state"))
    provider = LocalProvider.open({}, stack="s", state_dir=tmp_path)
    assert provider.root == tmp_path / "state" / "local"
    assert not (tmp_path / "state").exists()  # opening makes nothing: the root is made on first write
    with provider.store.lock():
        pass
    assert (tmp_path / "state" / "local" / "instances").is_dir()


# -- what an instance is ---------------------------------------------------------------------


def test_instance_directory_holds_record_linuxkit_yaml_logs_and_data(local_provider: LocalProvider) -> None:
    spec = member(STACK)
    before = time.time()
    inst = local_provider.create(spec)
    assert inst.status is InstanceStatus.RUNNING
    assert inst.address is not None and ipaddress.ip_address(inst.address) in NET
    assert http_get(inst.address) == 200

    directory = local_provider.root / "instances" / spec.name
    doc = record(local_provider, spec.name)
    assert doc["id"] == inst.id and doc["name"] == spec.name
    assert doc["labels"] == spec.labels
    assert doc["address"] == inst.address
    assert before - 1 <= doc["created"] <= time.time()
    processes = doc["processes"]
    assert processes["pgid"] == processes["supervisor"]["pid"]
    assert psutil.Process(processes["supervisor"]["pid"]).status() != psutil.STATUS_ZOMBIE
    web = processes["services"]["web"]
    assert os.getpgid(web["pid"]) == processes["pgid"]  # the service runs in the instance's group
    assert web["start"] > 0

    lk = yaml.safe_load((directory / "linuxkit.yml").read_text())
    assert lk["kernel"]["image"].startswith("linuxkit/kernel:6.6.")
    metadata = [s for s in lk["onboot"] if s["name"] == "metadata"]
    assert metadata and metadata[0]["command"] == ["/usr/bin/metadata", "cdrom"]
    assert lk["services"][0]["name"] == "web"
    assert inst.address not in (directory / "linuxkit.yml").read_text()  # the image holds no member data
    assert "/run/config/infra/address" in lk["services"][0]["command"][-1]  # read at boot from user-data
    assert (directory / "config" / "infra" / "address").read_text() == inst.address
    assert (directory / "config" / "infra" / "name").read_text() == spec.name

    assert (directory / "data").is_dir()
    assert (directory / "logs" / "web.log").exists()


def test_create_is_idempotent_across_provider_objects(local_provider: LocalProvider, local_root: Path) -> None:
    spec = member(STACK)
    first = local_provider.create(spec)
    second = LocalProvider.open({"root": str(local_root)}, stack=STACK, state_dir=local_root).create(spec)
    assert second.id == first.id and second.address == first.address
    supervisors = [p for p in processes_under(local_root) if "providers.local.supervisor" in " ".join(p.cmdline())]
    assert len(supervisors) == 1


def test_address_for_reserves_the_address_create_then_uses(local_provider: LocalProvider) -> None:
    a, b = member(STACK, "web-0"), member(STACK, "web-1", index=1)
    addr_a = local_provider.address_for(a)
    assert local_provider.address_for(a) == addr_a  # stable
    addr_b = local_provider.address_for(b)
    assert addr_b != addr_a
    other = local_provider.create(member(STACK, "web-2", index=2))
    assert other.address not in (addr_a, addr_b)  # reserved addresses are not handed out again
    assert local_provider.create(b).address == addr_b
    assert local_provider.create(a.model_copy(update={"address": addr_a})).address == addr_a


def test_services_get_placeholders_and_infra_environment(local_provider: LocalProvider) -> None:
    probe = Service(
        name="probe",
        image="alpine:3.20",
        command=("sh", "-c", "env > {data}/env; echo {name} {address} {config} > {data}/args; exec sleep 600"),
        env={"GREETING": "hello from {name}"},
    )
    spec = member(STACK, services=(probe,))
    inst = local_provider.create(spec)
    data = local_provider.root / "instances" / spec.name / "data"
    config = local_provider.root / "instances" / spec.name / "config"
    deadline = time.monotonic() + 10
    while not (data / "args").exists() or not (data / "args").read_text():
        assert time.monotonic() < deadline, "the service never wrote its files"
        time.sleep(0.02)
    assert (data / "args").read_text().split() == [spec.name, str(inst.address), str(config)]
    env = dict(line.split("=", 1) for line in (data / "env").read_text().splitlines() if "=" in line)
    assert env["INFRA_ADDRESS"] == inst.address
    assert env["INFRA_CONFIG_DIR"] == str(config)
    assert env["INFRA_DATA_DIR"] == str(data)
    assert env["INFRA_INSTANCE"] == spec.name
    assert env["GREETING"] == f"hello from {spec.name}"


def test_config_is_delivered_like_linuxkit_metadata_and_secrets_stay_private(
    local_provider: LocalProvider,
) -> None:
    secret = "-----BEGIN PRIVATE KEY-----\nS3CR3T-KEY-MATERIAL\n-----END PRIVATE KEY-----\n"
    files = (
        ConfigFile(path="app/greeting.txt", content="hello\n"),
        ConfigFile(path="app/run.sh", content="#!/bin/sh\n", mode=0o755),
        ConfigFile(path="tls/server.key", content=secret, mode=0o644, secret=True),
    )
    reader = Service(
        name="reader",
        image="alpine:3.20",
        command=("sh", "-c", "cat {config}/app/greeting.txt > {data}/seen; exec sleep 600"),
    )
    spec = member(STACK, services=(reader,), files=files)
    inst = local_provider.create(spec)
    directory = local_provider.root / "instances" / spec.name
    config = directory / "config"

    # the member's user-data, with the address the instance got (as a cloud's metadata would hold it)
    assert json.loads((config / "userdata").read_text()) == spec.model_copy(update={"address": inst.address}).userdata()
    assert (config / "app" / "greeting.txt").read_text() == "hello\n"
    assert stat.S_IMODE((config / "app" / "greeting.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((config / "app" / "run.sh").stat().st_mode) == 0o755
    assert (config / "tls" / "server.key").read_text() == secret
    assert stat.S_IMODE((config / "tls" / "server.key").stat().st_mode) == 0o600  # whatever mode said
    assert stat.S_IMODE((config / "userdata").stat().st_mode) == 0o600
    assert stat.S_IMODE(config.stat().st_mode) == 0o700

    deadline = time.monotonic() + 10
    while not (directory / "data" / "seen").exists() or not (directory / "data" / "seen").read_text():
        assert time.monotonic() < deadline, "the service never read its configuration"
        time.sleep(0.02)
    assert (directory / "data" / "seen").read_text() == "hello\n"

    for path in [directory / "instance.json", directory / "linuxkit.yml", *(directory / "logs").iterdir()]:
        assert "S3CR3T" not in path.read_text(), f"secret leaked into {path}"


# -- liveness --------------------------------------------------------------------------------


def test_instance_outlives_the_process_that_created_it(local_root: Path) -> None:
    spec = member(STACK)
    script = (
        "import json, sys\n"
        "from providers.local import LocalProvider\n"
        "from reconciler.core.model import MemberSpec\n"
        "spec = MemberSpec.model_validate_json(sys.argv[2])\n"
        "p = LocalProvider.open({'root': sys.argv[1]}, stack=spec.stack, state_dir=None)\n"
        "print(p.create(spec).model_dump_json())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(local_root), spec.model_dump_json(exclude={"spec_hash"})],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    created = Instance.model_validate_json(out.stdout)
    provider = LocalProvider.open({"root": str(local_root)}, stack=STACK, state_dir=local_root)
    seen = provider.list(stack_selector(STACK))
    assert [(i.id, i.status) for i in seen] == [(created.id, InstanceStatus.RUNNING)]
    assert created.address is not None
    assert http_get(created.address) == 200


def test_kill_9_of_all_its_processes_makes_it_dead(local_provider: LocalProvider) -> None:
    spec = member(STACK)
    inst = local_provider.create(spec)
    assert inst.address is not None
    http_get(inst.address)
    os.killpg(record(local_provider, spec.name)["processes"]["pgid"], signal.SIGKILL)
    # While the kernel is still delivering the signals, list may catch a half-killed group;
    # once the signals have landed it says exactly what happened.
    dead = wait_for(local_provider, spec.name, lambda i: is_dead(i) and i.detail == "processes gone (killed?)")
    assert not dead.alive
    local_provider.delete(dead)
    assert local_provider.list(stack_selector(STACK)) == []


def test_kill_9_of_a_service_makes_it_dead_and_says_which(local_provider: LocalProvider) -> None:
    spec = member(STACK, services=(http_service(), sh("idle", "exec sleep 600")))
    local_provider.create(spec)
    doc = record(local_provider, spec.name)
    os.kill(doc["processes"]["services"]["web"]["pid"], signal.SIGKILL)
    dead = wait_for(local_provider, spec.name, is_dead)
    assert dead.detail == "service web was killed by signal 9"
    # The supervisor treats the instance as broken and stops the rest of it.
    deadline = time.monotonic() + 10
    while group_alive(doc["processes"]["pgid"]):
        assert time.monotonic() < deadline, "the rest of the instance kept running"
        time.sleep(0.05)


def test_a_crashing_service_makes_it_dead_with_its_exit_code(local_provider: LocalProvider) -> None:
    spec = member(STACK, services=(http_service(), sh("crash", "sleep 0.3; exit 3")))
    inst = local_provider.create(spec)
    assert inst.status is InstanceStatus.RUNNING
    dead = wait_for(local_provider, spec.name, is_dead)
    assert dead.detail == "service crash exited with code 3"
    exits = json.loads((local_provider.root / "instances" / spec.name / "logs" / "exits.json").read_text())
    assert exits["exits"][0]["service"] == "crash" and exits["exits"][0]["code"] == 3


def test_a_service_that_cannot_start_fails_create_and_leaves_nothing(local_provider: LocalProvider) -> None:
    broken = Service(name="ghost", image="x", command=("/nonexistent/infra-test-binary",))
    with pytest.raises(PermanentError, match="ghost"):
        local_provider.create(member(STACK, services=(broken,)))
    assert local_provider.list({}) == []
    assert [p for p in (local_provider.root / "instances").iterdir() if not p.name.startswith(".")] == []


def test_half_created_directories_do_not_break_list(local_provider: LocalProvider) -> None:
    good = local_provider.create(member(STACK))
    instances = local_provider.root / "instances"
    (instances / ".tmp-crashed").mkdir()
    (instances / ".tmp-crashed" / "instance.json").write_text('{"id": "x", "na')
    (instances / "no-record").mkdir()
    (instances / "garbage").mkdir()
    (instances / "garbage" / "instance.json").write_text("not json")
    # A record whose creator died before starting anything (crash between rename and start).
    crashed = member(STACK, "web-9", index=9)
    (instances / crashed.name).mkdir()
    (instances / crashed.name / "instance.json").write_text(
        json.dumps({"id": "local-crashed", "name": crashed.name, "labels": crashed.labels, "address": "127.77.250.1",
                    "created": time.time() - 3600, "creator": {"pid": 1, "start": 1}})
    )
    seen = {i.name: i for i in local_provider.list(stack_selector(STACK))}
    assert set(seen) == {good.name, crashed.name}
    assert seen[good.name].status is InstanceStatus.RUNNING
    assert seen[crashed.name].status is InstanceStatus.DEAD
    assert "did not finish" in (seen[crashed.name].detail or "")
    local_provider.delete(seen[crashed.name])
    local_provider.create(member(STACK, "web-1", index=1))  # a create sweeps the crash leftovers
    assert not (instances / ".tmp-crashed").exists()


# -- delete ----------------------------------------------------------------------------------


def test_delete_stops_every_process_and_removes_the_directory(local_root: Path) -> None:
    provider = LocalProvider.open({"root": str(local_root), "grace": 0.5}, stack=STACK, state_dir=local_root)
    stubborn = sh("stubborn", "trap '' TERM; while :; do sleep 0.1; done")
    spec = member(STACK, services=(http_service(), stubborn))
    inst = provider.create(spec)
    doc = record(provider, spec.name)
    pgid = doc["processes"]["pgid"]
    assert len(group_alive(pgid)) >= 3  # supervisor, http server, shell
    started = time.monotonic()
    provider.delete(inst)
    assert time.monotonic() - started >= 0.5  # TERM was ignored: KILL came after the grace
    assert group_alive(pgid) == []
    assert not (local_root / "instances" / spec.name).exists()
    assert provider.list({}) == []
    provider.delete(inst)  # already gone: still success


def test_delete_reads_its_own_record_and_refuses_without_ownership_labels(local_provider: LocalProvider) -> None:
    spec = member(STACK)
    inst = local_provider.create(spec)
    path = local_provider.root / "instances" / spec.name / "instance.json"
    doc = json.loads(path.read_text())
    del doc["labels"][LABEL_SPEC]
    path.write_text(json.dumps(doc))
    # The caller passes full labels; the provider trusts only the record on disk.
    with pytest.raises(PermanentError, match="lacks infra's ownership labels"):
        local_provider.delete(inst)
    assert path.exists()
    assert group_alive(doc["processes"]["pgid"])
    doc["labels"][LABEL_SPEC] = spec.spec_hash
    path.write_text(json.dumps(doc))
    local_provider.delete(inst)


# -- ports -----------------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """Something else listening on a port on every address (0.0.0.0)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", 0))
    sock.listen()
    yield sock
    sock.close()


def test_a_port_in_use_everywhere_is_a_permanent_error_naming_address_and_port(
    local_provider: LocalProvider, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    with pytest.raises(PermanentError, match=rf"127\.77\.\d+\.\d+:{port}\b"):
        local_provider.create(member(STACK, services=(http_service(port=port),)))
    assert local_provider.list({}) == []


def test_a_port_in_use_at_the_given_address_is_a_permanent_error(local_provider: LocalProvider) -> None:
    address = "127.77.251.7"
    with socket.socket() as sock:
        sock.bind((address, 0))
        sock.listen()
        port = sock.getsockname()[1]
        spec = member(STACK, services=(http_service(port=port),), address=address)
        with pytest.raises(PermanentError, match=rf"127\.77\.251\.7:{port}"):
            local_provider.create(spec)
        (problem,) = local_provider.validate([spec])
        assert problem.field == "groups.web.address"
        assert problem.message == f"web-0: port already in use at {address}:{port}"
    assert local_provider.list({}) == []


def test_allocation_skips_addresses_held_by_stray_listeners() -> None:
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        port = probe.getsockname()[1]  # free on every address once closed
    squatters = []
    try:
        for host in ("127.77.0.1", "127.77.0.2"):
            sock = socket.socket()
            sock.bind((host, port))
            sock.listen()
            squatters.append(sock)
        assert network.allocate(set(), [port]) == "127.77.0.3"
        assert network.allocate({"127.77.0.3"}, [port]) == "127.77.0.4"
        sock = socket.socket()
        sock.bind(("127.77.0.3", port))
        sock.listen()
        squatters.append(sock)
        # Busy at three addresses in a row: it is taken everywhere, say so.
        with pytest.raises(PermanentError, match=rf"127\.77\.0\.1:{port}"):
            network.allocate(set(), [port])
    finally:
        for sock in squatters:
            sock.close()


# -- validate --------------------------------------------------------------------------------


def test_validate_flags_missing_binaries_with_the_package_and_changes_nothing(
    local_provider: LocalProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    etcd = Service(name="etcd", image="quay.io/coreos/etcd:v3.4", command=("etcd", "--name", "{name}"))
    prom = Service(name="prometheus", image="prom/prometheus", command=("prometheus",))
    odd = Service(name="odd", image="x", command=("infra-no-such-tool",))
    before = sorted(str(p) for p in local_provider.root.rglob("*"))
    problems = local_provider.validate([member(STACK, services=(etcd, prom, odd))])
    messages = {p.field: p.message for p in problems}
    assert all(p.is_error for p in problems)
    assert "apt-get install etcd-server" in messages["groups.web.services.etcd.command"]
    assert "apt-get install prometheus" in messages["groups.web.services.prometheus.command"]
    assert "'infra-no-such-tool'" in messages["groups.web.services.odd.command"]
    assert sorted(str(p) for p in local_provider.root.rglob("*")) == before


def test_validate_flags_duplicate_ports_and_bad_paths(local_provider: LocalProvider) -> None:
    a = http_service("a", port=9000)
    b = http_service("b", port=9000)
    spec = member(STACK, services=(a, b), files=(ConfigFile(path="../escape", content="x"),))
    problems = local_provider.validate([spec])
    text = " ".join(p.message for p in problems)
    assert "port 9000 is declared by services 'a' and 'b'" in text
    assert "'../escape'" in text
    assert local_provider.validate([member(STACK)]) == []
    with pytest.raises(PermanentError, match="port 9000"):
        local_provider.create(spec)


def test_validate_flags_address_collisions(local_provider: LocalProvider) -> None:
    taken = local_provider.create(member(STACK, "web-0"))
    clash = member(STACK, "web-1", index=1, address=taken.address)
    problems = local_provider.validate([clash, member(STACK, "web-2", address="10.0.0.1")])
    text = " ".join(p.message for p in problems)
    assert f"address {taken.address} is already used by {taken.name}" in text
    assert "'10.0.0.1' is not an IPv4 loopback address" in text
    with pytest.raises(PermanentError, match="already used"):
        local_provider.create(clash)


# -- discovery -------------------------------------------------------------------------------


def _targets(path: str) -> dict[str, dict[str, str]]:
    groups = json.loads(Path(path).read_text())
    return {t: g["labels"] for g in groups for t in g["targets"]}


def test_discovery_file_lists_exactly_the_alive_instances(local_provider: LocalProvider, local_root: Path) -> None:
    sd = local_provider.discovery(group_selector(STACK, "web"), PORT)
    assert sd is not None
    (path,) = sd["file_sd_configs"][0]["files"]
    assert os.path.isabs(path) and sd["file_sd_configs"][0]["refresh_interval"] == "5s"
    assert _targets(path) == {}

    insts = [local_provider.create(member(STACK, f"web-{n}", index=n)) for n in range(3)]
    other_group = local_provider.create(member(STACK, "db-0", group="db"))
    targets = _targets(path)
    assert set(targets) == {f"{i.address}:{PORT}" for i in insts}
    assert other_group.address is not None and f"{other_group.address}:{PORT}" not in targets
    assert targets[f"{insts[0].address}:{PORT}"] == {
        "infra_instance": insts[0].name,
        "infra_stack": STACK,
        "infra_group": "web",
        "infra_member": "web-0",
    }

    # A later infra process (a fresh provider on the same root) keeps the file current.
    later = LocalProvider.open({"root": str(local_root)}, stack=STACK, state_dir=local_root)
    os.killpg(record(later, insts[0].name)["processes"]["pgid"], signal.SIGKILL)
    wait_for(later, insts[0].name, is_dead)
    assert set(_targets(path)) == {f"{i.address}:{PORT}" for i in insts[1:]}
    later.delete(insts[1])
    assert set(_targets(path)) == {f"{insts[2].address}:{PORT}"}


# -- settings and environment ----------------------------------------------------------------


def test_group_provider_settings_apply_per_member(local_provider: LocalProvider, local_root: Path) -> None:
    patient = LocalProvider.open({"root": str(local_root), "grace": 30.0}, stack=STACK, state_dir=local_root)
    stubborn = sh("stubborn", "trap '' TERM; while :; do sleep 0.1; done")
    spec = member(STACK, services=(stubborn,), provider_config={"root": str(local_root), "grace": 0.1})
    assert patient.validate([spec]) == []
    inst = patient.create(spec)
    assert record(patient, spec.name)["grace"] == 0.1
    started = time.monotonic()
    patient.delete(inst)  # the provider's own grace is 30 s; the group's 0.1 s applies
    assert time.monotonic() - started < 15.0  # with the provider's grace it would take over 30 s

    elsewhere = member(STACK, "web-1", provider_config={"root": str(local_root / "other")})
    (problem,) = local_provider.validate([elsewhere])
    assert problem.field == "provider_config.root"
    bad = member(STACK, "web-2", provider_config={"grace": "soon"})
    assert [p.field for p in local_provider.validate([bad])] == ["groups.web.provider_config.grace"]


def test_infra_environment_does_not_leak_into_instances(
    local_provider: LocalProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak-0123")
    spec = member(STACK, services=(sh("idle", "exec sleep 600"),))
    local_provider.create(spec)
    processes = record(local_provider, spec.name)["processes"]
    for pid in [processes["supervisor"]["pid"], processes["services"]["idle"]["pid"]]:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"do-not-leak" not in environ
        assert b"PATH=" in environ


def test_a_zombie_or_a_reused_pid_counts_as_dead() -> None:
    child = subprocess.Popen(["sleep", "60"])
    try:
        ref = procs.ref_of(child.pid)
        assert ref is not None and procs.alive(ref)
        assert not procs.alive(procs.ProcRef(pid=child.pid, start=ref.start + 1))  # same pid, other process
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:  # killed, not yet reaped
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not procs.alive(ref)
    finally:
        child.kill()
        child.wait()


def test_a_member_without_services_is_an_idle_machine_until_deleted(local_provider: LocalProvider) -> None:
    spec = member(STACK, services=())
    inst = local_provider.create(spec)
    (seen,) = local_provider.list(stack_selector(STACK))
    assert seen.status is InstanceStatus.RUNNING and seen.address == inst.address
    pgid = record(local_provider, spec.name)["processes"]["pgid"]
    local_provider.delete(inst)
    assert group_alive(pgid) == []
