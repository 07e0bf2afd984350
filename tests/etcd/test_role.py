"""The etcd role without a cluster: settings, validation, what expand hands the provider, and how
the hooks refuse when they cannot see the cluster (the cloud-from-outside case)."""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from plugins.etcd import EtcdConfig, EtcdRole, render
from plugins.etcd.client import EtcdApiError, _raise_for
from reconciler.core.errors import QuorumLostError, RoleError
from reconciler.core.model import Health, Instance, InstanceStatus, MemberSpec, Problem
from reconciler.core.stack import Group, Stack
from reconciler.kit.role import MetricsTarget, RoleContext, UpdatePolicy


@dataclass
class AddressBook:
    """A provider stand-in: hands out addresses per instance name (or none at all)."""

    addresses: dict[str, str] = field(default_factory=dict)
    base: str = "10.0.0."
    give: bool = True
    name: ClassVar[str] = "book"

    def address_for(self, spec: MemberSpec) -> str | None:
        if not self.give:
            return None
        return self.addresses.setdefault(spec.name, f"{self.base}{len(self.addresses) + 10}")

    def list(self, selector: Mapping[str, str]) -> list[Instance]:
        return []

    def create(self, spec: MemberSpec) -> Instance:
        raise AssertionError("not called")

    def delete(self, instance: Instance) -> None:
        raise AssertionError("not called")

    def validate(self, members: Sequence[MemberSpec]) -> list[Problem]:
        return []

    def discovery(self, selector: Mapping[str, str], port: int) -> None:
        return None

    def close(self) -> None:
        return None


def make_ctx(
    tmp_path: Path,
    *,
    size: int = 3,
    config: dict[str, Any] | None = None,
    provider: Any = None,
    stack_provider: str = "memory",
    instances: list[Instance] | None = None,
) -> RoleContext:
    group = Group(name="etcd", size=size, role="etcd", config=config or {})
    stack = Stack(name="s", provider=stack_provider, groups=(group,))
    return RoleContext(
        stack=stack,
        group=group,
        config=EtcdConfig.model_validate(config or {}),
        provider=provider or AddressBook(),
        state_dir=tmp_path / "state",
        observed={"etcd": instances or []},
        log=lambda message: None,
    )


def test_role_registration_facts() -> None:
    assert EtcdRole.name == "etcd"
    assert EtcdRole.policy is UpdatePolicy.QUORUM
    assert EtcdRole.config_model is EtcdConfig


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"flags": {"initial-cluster": "x=y"}}, "managed by the etcd role"),
        ({"flags": {"data-dir": "/tmp"}}, "managed by the etcd role"),
        ({"flags": {"--snapshot-count": 1}}, "without dashes"),
        ({"flags": {"snapshotcount": 1}}, "not an etcd 3.4 configuration setting"),
        ({"heartbeat_interval_ms": 200, "election_timeout_ms": 500}, "at least 5 times"),
        ({"client_port": 2380}, "must differ"),
        ({"version": "2.3.8"}, "not supported"),
        ({"version": "latest"}, "not an etcd version"),
        ({"nope": 1}, "Extra inputs"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(config: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        EtcdConfig.model_validate(config)


def test_default_image_follows_the_version() -> None:
    assert EtcdConfig().effective_image == "quay.io/coreos/etcd:v3.4.23"
    assert EtcdConfig(version="v3.4.27").effective_image == "quay.io/coreos/etcd:v3.4.27"


def test_check_size_limits() -> None:
    role = EtcdRole()

    def check(size: int) -> list[Problem]:
        return role.check(Group(name="etcd", size=size, role="etcd"), EtcdConfig())

    too_big = check(9)
    assert [(p.field, p.severity) for p in too_big] == [("size", "error")]
    assert "at most 7" in too_big[0].message and "replicated" in too_big[0].message
    even = check(4)
    assert [p.severity for p in even] == ["warning"]
    assert "4 tolerate 1, like 3" in even[0].message
    for ok in (0, 1, 3, 5, 7):
        assert check(ok) == []


def test_validate_on_local_checks_the_host_etcd(tmp_path: Path) -> None:
    problems = EtcdRole().validate(make_ctx(tmp_path, stack_provider="local"))
    assert not [p for p in problems if p.is_error], problems
    other = EtcdRole().validate(make_ctx(tmp_path, stack_provider="local", config={"version": "3.4.99"}))
    assert [p.severity for p in other] == ["warning"] and "3.4.99" in other[0].message


def test_expand_static_bootstrap_members(tmp_path: Path) -> None:
    book = AddressBook()
    ctx = make_ctx(tmp_path, provider=book)
    role = EtcdRole()
    members = role.expand(ctx)
    assert [m.member for m in members] == ["etcd-0", "etcd-1", "etcd-2"]
    assert len({m.address for m in members}) == 3
    assert not (ctx.state_dir / "pki").exists(), "planning must not create the CA"
    assert {f.path for f in members[0].files} == {render.SETTINGS_FILE, render.CLUSTER_FILE}
    ctx.bootstrapping = True
    created = [role.before_create(ctx, m) for m in members]
    assert (ctx.state_dir / "pki" / "ca.key").exists()
    assert [c.spec_hash for c in created] == [m.spec_hash for m in members]
    for m in created:
        files = {f.path: f for f in m.files}
        assert set(files) == {
            render.SETTINGS_FILE,
            render.CLUSTER_FILE,
            render.CA_FILE,
            render.CRL_FILE,
            render.CERT_FILE,
            render.KEY_FILE,
            render.PEER_CERT_FILE,
            render.PEER_KEY_FILE,
        }
        assert files[render.SETTINGS_FILE].in_spec
        assert not files[render.CLUSTER_FILE].in_spec and not files[render.CERT_FILE].in_spec
        for key in (render.KEY_FILE, render.PEER_KEY_FILE):
            assert files[key].secret and files[key].mode == 0o600
        conf = flags(files[render.CLUSTER_FILE].content)
        assert conf["initial-cluster-state"] == "new"
        assert conf["name"] == m.name
        assert conf["listen-client-urls"] == f"https://{m.address}:2379"
        assert conf["initial-advertise-peer-urls"] == f"https://{m.address}:2380"
        assert conf["peer-cert-allowed-cn"] == render.peer_name(ctx.stack.name, ctx.group.name)  # a new cluster
        assert sorted(conf["initial-cluster"].split(",")) == sorted(
            f"{o.name}=https://{o.address}:2380" for o in created
        )
        settings = flags(files[render.SETTINGS_FILE].content)
        assert settings["strict-reconfig-check"] == "true"
        cert = x509.load_pem_x509_certificate(files[render.CERT_FILE].content.encode())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [m.address]
        peer = x509.load_pem_x509_certificate(files[render.PEER_CERT_FILE].content.encode())
        assert peer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == conf["peer-cert-allowed-cn"]
        # Secrets never show in what a plan or log may print.
        assert "PRIVATE KEY" not in repr(m) and "PRIVATE KEY" not in str(m.public_view())
        assert m.services[0].command[-2:] == ("{config}", "{data}")


def flags(text: str) -> dict[str, str]:
    """A ``.flags`` file (one ``--name=value`` a line) as a mapping."""
    return dict(line[2:].split("=", 1) for line in text.splitlines() if line.startswith("--"))


def test_every_instance_gets_new_keys_and_infra_keeps_none(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, provider=AddressBook())
    ctx.bootstrapping = True
    role = EtcdRole()
    (first,) = [m for m in role.expand(ctx) if m.member == "etcd-0"]
    keys = [{f.path: f.content for f in role.before_create(ctx, first).files} for _ in range(2)]
    assert keys[0][render.KEY_FILE] != keys[1][render.KEY_FILE]
    assert keys[0][render.PEER_KEY_FILE] != keys[1][render.PEER_KEY_FILE]
    assert not list((ctx.state_dir / "pki" / "issued").glob("etcd-0*"))  # never stored


def test_a_flag_value_cannot_add_a_flag(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="line break"):
        EtcdConfig(flags={"log-level": "info\n--force-new-cluster=true"})
    with pytest.raises(ValueError, match="managed by the etcd role"):
        EtcdConfig(flags={"peer-cert-allowed-cn": "anyone"})


def test_spec_hash_ignores_addresses_but_follows_settings(tmp_path: Path) -> None:
    role = EtcdRole()
    a = role.expand(make_ctx(tmp_path, provider=AddressBook(base="10.0.0.")))
    b = role.expand(make_ctx(tmp_path, provider=AddressBook(base="10.9.9.")))
    assert [m.spec_hash for m in a] == [m.spec_hash for m in b]
    assert a[0].address != b[0].address
    rolled = role.expand(make_ctx(tmp_path, config={"flags": {"snapshot-count": 5000}}))
    assert rolled[0].spec_hash != a[0].spec_hash
    newer = role.expand(make_ctx(tmp_path, config={"version": "3.4.27"}))
    assert newer[0].spec_hash != a[0].spec_hash
    assert newer[0].services[0].image == "quay.io/coreos/etcd:v3.4.27"


def test_loopback_members_also_certify_the_loopback_source(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, provider=AddressBook(base="127.77.0."))
    ctx.bootstrapping = True
    members = [EtcdRole().before_create(ctx, m) for m in EtcdRole().expand(ctx)]
    cert = next(f for f in members[0].files if f.path == render.CERT_FILE)
    san = x509.load_pem_x509_certificate(cert.content.encode()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert {str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)} == {members[0].address, "127.0.0.1"}


def test_without_advance_addresses_create_is_refused_clearly(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, provider=AddressBook(give=False))
    role = EtcdRole()
    members = role.expand(ctx)
    assert all(m.address is None for m in members)
    ctx.bootstrapping = True
    with pytest.raises(RoleError, match="cannot tell the address of etcd-0 before creating it"):
        role.before_create(ctx, members[0])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _instance(i: int, status: InstanceStatus, address: str | None = "127.0.0.1") -> Instance:
    labels = {"infra-stack": "s", "infra-group": "etcd", "infra-member": f"etcd-{i}", "infra-spec": "x"}
    return Instance(id=f"i-{i}", name=f"s-etcd-etcd-{i}-x", labels=labels, address=address, status=status)


def test_no_reachable_member_refuses_instead_of_guessing(tmp_path: Path) -> None:
    port = _closed_port()
    instances = [_instance(i, InstanceStatus.RUNNING) for i in range(3)]
    ctx = make_ctx(tmp_path, config={"client_port": port, "request_timeout": 1}, instances=instances)
    role = EtcdRole()
    with pytest.raises(RoleError, match="can be reached from here") as caught:
        role.preflight(ctx)
    assert not isinstance(caught.value, QuorumLostError)
    assert role.health(ctx, instances[0]) is Health.UNKNOWN
    assert role.health(ctx, _instance(0, InstanceStatus.RUNNING, address=None)) is Health.UNKNOWN


def test_every_member_dead_is_quorum_lost(tmp_path: Path) -> None:
    instances = [_instance(i, InstanceStatus.DEAD) for i in range(3)]
    ctx = make_ctx(tmp_path, instances=instances)
    with pytest.raises(QuorumLostError, match="lost its quorum") as caught:
        EtcdRole().preflight(ctx)
    assert "--force-new-cluster" in str(caught.value) and "etcdctl snapshot restore" in str(caught.value)


def test_destroy_skips_membership_hooks(tmp_path: Path) -> None:
    instances = [_instance(i, InstanceStatus.DEAD) for i in range(3)]
    ctx = make_ctx(tmp_path, instances=instances)
    ctx.destroying = True
    role = EtcdRole()
    role.preflight(ctx)
    role.before_delete(ctx, instances[0])


def test_env_and_metrics(tmp_path: Path) -> None:
    instances = [_instance(i, InstanceStatus.RUNNING, address=f"127.77.0.{i + 2}") for i in range(3)]
    ctx = make_ctx(tmp_path, instances=instances)
    env = EtcdRole().env(ctx)
    assert env["ETCDCTL_API"] == "3"
    assert env["ETCDCTL_ENDPOINTS"] == ",".join(f"https://127.77.0.{i + 2}:2379" for i in range(3))
    for key in ("ETCDCTL_CACERT", "ETCDCTL_CERT", "ETCDCTL_KEY"):
        assert Path(env[key]).is_file() and str(Path(env[key])).startswith(str(ctx.state_dir))
    assert EtcdRole().metrics(ctx) == [MetricsTarget(port=2379, scheme="https", mtls=True)]


def test_gateway_errors_are_typed() -> None:
    with pytest.raises(EtcdApiError) as caught:
        _raise_for("https://x:2379", 503, b'{"error":"etcdserver: unhealthy cluster","code":14}')
    assert caught.value.unhealthy_cluster and caught.value.code == 14
    with pytest.raises(EtcdApiError) as caught:
        _raise_for("https://x:2379", 404, b"not json")
    assert not caught.value.unhealthy_cluster


def test_members_outside_the_allowed_networks_are_never_probed(tmp_path: Path) -> None:
    # tests/conftest.py allows only loopback: 10.0.0.x stands for a cloud seen from outside.
    instances = [_instance(i, InstanceStatus.RUNNING, address=f"10.0.0.{i + 10}") for i in range(3)]
    ctx = make_ctx(tmp_path, instances=instances)
    role = EtcdRole()
    assert all(role.health(ctx, inst) is Health.UNKNOWN for inst in instances)
    with pytest.raises(RoleError, match="INFRA_NETWORK_ALLOW") as caught:
        role.preflight(ctx)
    assert not isinstance(caught.value, QuorumLostError)
    members = role.expand(ctx)
    with pytest.raises(RoleError, match="can be reached from here"):
        role.before_create(ctx, members[0])
    logged: list[str] = []
    ctx.log = logged.append
    role.after_create(ctx, members[0], instances[0])  # returns at once instead of timing out
    assert logged and "not waiting" in logged[0]
