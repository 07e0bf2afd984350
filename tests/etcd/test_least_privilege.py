"""Least privilege in a real etcd cluster infra made: who can change what, and whose keys.

Through the real CLI on the local provider: the operator's ``infra env`` identity can write;
Prometheus's certificate (as the prometheus role issues it), a member's own client-port
certificate and infra's nameless gateway certificate without root's token cannot write, list keys
or change membership; the peer port refuses every certificate but its cluster's peer name; a
healed member boots with new private keys, and the certificates of the member it replaced are
revoked: the new member refuses them at the handshake.
"""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from plugins.etcd import render
from reconciler.kit.pki import StackCA
from tests.etcd.conftest import EtcdStack

pytestmark = [pytest.mark.e2e, pytest.mark.etcd]


def config_dir(stack: EtcdStack, member: str) -> Path:
    (rec,) = [r for r in stack.records() if r.get("labels", {}).get("infra-member") == member]
    return stack.state / "local" / "instances" / rec["name"] / "config" / "etcd"


def as_identity(stack: EtcdStack, cert: Path, key: Path) -> dict[str, str]:
    return {**stack.env(), "ETCDCTL_CERT": str(cert), "ETCDCTL_KEY": str(key)}


def handshake(address: str, port: int, ca: Path, cert: Path, key: Path) -> str:
    """Ask the peer port for its member list with this certificate: 'ok' or why it failed."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    try:
        with socket.create_connection((address, port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname=address) as tls:
            tls.sendall(f"GET /members HTTP/1.1\r\nHost: {address}:{port}\r\nConnection: close\r\n\r\n".encode())
            answer = tls.recv(4096)
    except (OSError, ssl.SSLError) as exc:
        return f"refused: {exc}"
    return "ok" if answer.startswith(b"HTTP/1.1 200") else f"refused: {answer[:80]!r}"


def write_pair(directory: Path, name: str, cert_pem: str, key_pem: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_text(cert_pem)
    key.write_text(key_pem)
    key.chmod(0o600)
    return cert, key


def serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def test_only_infras_identity_changes_data_or_membership(etcd_stack: EtcdStack, tmp_path: Path) -> None:
    etcd_stack.apply()
    env = etcd_stack.env(fresh=True)
    state = Path(env["ETCDCTL_CACERT"]).parent.parent
    assert etcd_stack.etcdctl("put", "/owner", "operator", env=env).returncode == 0  # infra env: root

    ca = StackCA(state)
    prom = ca.issue("prometheus-monitoring", client=True)  # what the prometheus role issues
    member_dir = config_dir(etcd_stack, "etcd-0")
    gateway = ca.issue("infra-gateway", client=True, anonymous=True)
    others = {
        "prometheus": (prom.cert_path, prom.key_path),
        "a member's client-port certificate": (member_dir / "member.crt", member_dir / "member.key"),
        "infra's gateway certificate without root's token": (gateway.cert_path, gateway.key_path),
    }
    for who, (cert, key) in others.items():
        as_them = as_identity(etcd_stack, cert, key)
        for args in (("put", "/owner", who), ("get", "/owner"),
                     ("member", "add", "intruder", "--peer-urls=https://127.0.0.9:2380")):
            out = etcd_stack.etcdctl(*args, "--command-timeout=5s", env=as_them)
            assert out.returncode != 0, (who, args, out.stdout)
            assert "operator" not in out.stdout
    listed = etcd_stack.etcdctl("member", "list", env=env)
    assert listed.returncode == 0 and "intruder" not in listed.stdout and listed.stdout.count("started") == 3
    got = etcd_stack.etcdctl("get", "/owner", "--print-value-only", env=env)
    assert got.stdout.strip() == "operator"

    # The peer port: only this cluster's peer name; the operator's root certificate is refused.
    address = str(etcd_stack.record("etcd-1")["address"])
    ca_file = Path(env["ETCDCTL_CACERT"])
    assert handshake(address, 2380, ca_file, Path(env["ETCDCTL_CERT"]), Path(env["ETCDCTL_KEY"])).startswith("refused")
    assert handshake(address, 2380, ca_file, prom.cert_path, prom.key_path).startswith("refused")
    peer_name = render.peer_name(etcd_stack.name, "etcd")
    delivered = x509.load_pem_x509_certificate((member_dir / "peer.crt").read_bytes())
    assert delivered.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == peer_name
    assert handshake(address, 2380, ca_file, member_dir / "peer.crt", member_dir / "peer.key") == "ok"
    # No member's key is kept by infra: only the operator's, the gateway's and Prometheus's.
    assert sorted(p.stem for p in (state / "pki" / "issued").glob("*.key")) == [
        "infra-gateway", "prometheus-monitoring", "root"]


def test_a_healed_member_gets_new_keys_and_the_old_certificates_are_revoked(
    etcd_stack: EtcdStack, tmp_path: Path
) -> None:
    etcd_stack.apply()
    env = etcd_stack.env(fresh=True)
    ca_file = Path(env["ETCDCTL_CACERT"])
    old_dir = config_dir(etcd_stack, "etcd-1")
    kept = tmp_path / "old"
    kept.mkdir()
    old = {name: write_pair(kept, name, (old_dir / f"{name}.crt").read_text(), (old_dir / f"{name}.key").read_text())
           for name in ("member", "peer")}

    old_id = etcd_stack.record("etcd-1")["id"]
    etcd_stack.kill("etcd-1")
    healed = etcd_stack.apply()
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert etcd_stack.record("etcd-1")["id"] != old_id  # a new instance (its directory has the same name)
    new_dir = config_dir(etcd_stack, "etcd-1")
    for name in ("member", "peer"):
        assert (new_dir / f"{name}.key").read_text() != old[name][1].read_text()  # a new private key
        assert serial(new_dir / f"{name}.crt") != serial(old[name][0])

    revoked = json.loads((ca_file.parent / "revoked.json").read_text())["revoked"]
    assert {int(r["serial"]) for r in revoked} >= {serial(old["member"][0]), serial(old["peer"][0])}
    crl = x509.load_pem_x509_crl((new_dir / "revoked.crl").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial(old["peer"][0])) is not None

    # The replaced member's peer certificate is refused by the new member; its own is accepted.
    address = str(etcd_stack.record("etcd-1")["address"])
    assert handshake(address, 2380, ca_file, *old["peer"]).startswith("refused")
    assert handshake(address, 2380, ca_file, new_dir / "peer.crt", new_dir / "peer.key") == "ok"
    # ... and on every member its client certificate opens nothing.
    as_old = as_identity(etcd_stack, *old["member"])
    assert etcd_stack.etcdctl("put", "/x", "y", "--command-timeout=5s", env=as_old).returncode != 0
    health = etcd_stack.etcdctl("endpoint", "health", "--cluster", env=env)
    assert (health.stdout + health.stderr).count("is healthy") == 3
