"""Tests of the stack-owned CA (reconciler/pki.py): caching, reissue on SAN change, modes, and
that etcd-style mutual TLS really verifies against it (Python's ssl stands in for a client)."""

from __future__ import annotations

import contextlib
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from reconciler.core.errors import ConfigError
from reconciler.kit.pki import StackCA


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_ca_created_once_with_private_modes(tmp_path: Path) -> None:
    ca = StackCA(tmp_path / "stack")
    first = ca.ca_cert_pem
    assert _mode(ca.ca_key_path) == 0o600
    assert _mode(ca.dir) == 0o700
    assert _mode(ca.issued_dir) == 0o700
    # A second object (a second `infra` run) reuses the same CA instead of making a new one.
    assert StackCA(tmp_path / "stack").ca_cert_pem == first


def test_issue_is_cached_and_reissued_only_when_sans_change(tmp_path: Path) -> None:
    ca = StackCA(tmp_path)
    a = ca.issue("etcd-0", sans=["127.77.0.1"], server=True, client=True)
    assert _mode(a.key_path) == 0o600
    assert StackCA(tmp_path).issue("etcd-0", sans=["127.77.0.1"], server=True, client=True) == a
    b = ca.issue("etcd-0", sans=["127.77.0.2", "etcd-0.example"], server=True, client=True)
    assert b.cert_pem != a.cert_pem and b.key_pem != a.key_pem
    cert = x509.load_pem_x509_certificate(b.cert_pem.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.77.0.2"]
    assert san.get_values_for_type(x509.DNSName) == ["etcd-0.example"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    # Changing the usage alone reissues too.
    c = ca.issue("etcd-0", sans=["127.77.0.2", "etcd-0.example"], server=True)
    assert c.cert_pem != b.cert_pem


def test_key_never_in_repr(tmp_path: Path) -> None:
    issued = StackCA(tmp_path).issue("prometheus", client=True)
    assert "PRIVATE KEY" not in repr(issued)
    assert "PRIVATE KEY" in issued.key_pem


def test_incomplete_ca_is_refused_not_replaced(tmp_path: Path) -> None:
    ca = StackCA(tmp_path)
    ca.ensure()
    ca.ca_key_path.unlink()
    with pytest.raises(ConfigError, match="incomplete"):
        StackCA(tmp_path).issue("x", client=True)
    assert ca.ca_cert_path.exists()


def test_bad_requests_are_config_errors(tmp_path: Path) -> None:
    ca = StackCA(tmp_path)
    with pytest.raises(ConfigError):
        ca.issue("x")
    with pytest.raises(ConfigError):
        ca.issue("x", server=True)  # a server certificate without a SAN
    with pytest.raises(ConfigError):
        ca.issue("../escape", client=True)


def test_issued_chain_verifies_with_ssl(tmp_path: Path) -> None:
    ca = StackCA(tmp_path)
    server = ca.issue("etcd-0", sans=["127.0.0.1"], server=True, client=True)
    client = ca.issue("infra", client=True)
    srv_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca.ca_cert_path))
    srv_ctx.load_cert_chain(server.cert_path, server.key_path)
    srv_ctx.verify_mode = ssl.CERT_REQUIRED
    cli_ctx = ssl.create_default_context(cafile=str(ca.ca_cert_path))
    cli_ctx.load_cert_chain(client.cert_path, client.key_path)
    a, b = ssl.MemoryBIO(), ssl.MemoryBIO()
    c, d = ssl.MemoryBIO(), ssl.MemoryBIO()
    srv = srv_ctx.wrap_bio(a, b, server_side=True)
    cli = cli_ctx.wrap_bio(c, d, server_hostname="127.0.0.1")
    for _ in range(10):
        for side in (cli, srv):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        a.write(d.read())
        c.write(b.read())
    assert srv.getpeercert() is not None and srv.getpeercert()["subject"]
    assert cli.getpeercert() is not None
