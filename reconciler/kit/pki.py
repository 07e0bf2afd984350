"""The stack-owned certificate authority: mutual TLS for etcd peers, clients and Prometheus.

Every stack that needs TLS (the etcd role, the prometheus role that scrapes it, ``infra env``)
shares one CA kept in the stack's private state directory, so the cluster's identity is
cryptographic and no part of its control plane speaks plain text (the SwarmKit lesson from the
2017 demo). Called by roles from ``expand``/``env``/``status`` with ``RoleContext.state_dir``.

Layout under ``state_dir/pki`` (directories 0700, private keys 0600)::

    ca.crt  ca.key              the CA, created on first use; the key never leaves this directory
    issued/<name>.crt, .key     leaf certificates of long-lived identities (infra's own client,
                                Prometheus), cached: reissued only when the requested SANs,
                                usages or name change, the CA changed, or a third of the lifetime
                                is left
    secrets/<name>              random secrets made once (a role's service password), 0600
    minted.json                 serials of the certificates :meth:`StackCA.mint` made (never
                                stored: a member's key exists only in its user-data), by member
    revoked.json                serials revoked (a deleted member's), served as a CRL by
                                :meth:`StackCA.crl_pem` until they expire

Keys are ECDSA P-256, signatures SHA-256. A SAN that parses as an IP address becomes an
``IPAddress`` entry, anything else a ``DNSName``. Private keys are never logged or put in an
error message; :class:`Issued` hides its key from ``repr``.

Several threads (parallel creates) and several ``infra`` processes (``apply`` next to ``env``)
may issue at once: a file lock (``pki/.lock``) plus a thread lock serialise writers, and files
are replaced atomically.

**Read-only passes write nothing.** A role builds its ``StackCA`` with ``create=ctx.writing``: a
pass that does not hold the stack's lock (``infra plan``, ``validate``, ``status``, ``graph``)
reads the CA and the cached certificates that exist, and never creates the state directory, the
CA or a certificate there. With no CA on disk yet (nothing was ever applied), it uses a throwaway
CA held in memory; what it must hand out as files (a certificate that needs issuing) goes to a
private temporary directory removed with the object. Only a writer (``apply``, ``destroy``, the
leading daemon) makes the stack's CA, under the stack's lock.

**Shared.** With a :class:`~reconciler.kit.secretstore.SecretStore` (``store=``: the roles pass
``RoleContext.secrets``, set when writers coordinate through an etcd), the CA and the secrets live
there instead, so writers on several machines act with one CA: the first writer makes it in a
create-if-absent transaction and every other one uses what is stored. Only the CA's certificate is
kept on this machine (``ca.crt``, for ``etcdctl``); its key never is. A stack whose CA exists only
here is moved there with ``infra secrets push``; until then a writer refuses to make a second one.
Leaf certificates of long-lived identities stay cached per machine (signed by the shared CA,
they are valid everywhere); the records of minted and revoked certificates are kept there too, one
entry per certificate (``minted/<member>/<serial>``, ``revoked/<serial>``), so a member healed by
another machine's writer has its old certificate revoked and every new member's CRL lists it.

Failure: anything that cannot be read or written raises :class:`reconciler.core.errors.ConfigError`
naming the path (a corrupt or foreign CA is never silently replaced: that would orphan every
member's certificate).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets as _secrets
import shutil
import tempfile
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from filelock import FileLock

from reconciler.core.errors import ConfigError

if TYPE_CHECKING:
    from reconciler.kit.secretstore import SecretStore

CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=365)
#: Leaf certificates with less than this fraction of their lifetime left are reissued.
RENEW_FRACTION = 1 / 3

_THREAD_LOCK = threading.RLock()


@dataclass(frozen=True)
class Issued:
    """A leaf certificate and its key, both as PEM text and as files (key 0600)."""

    cert_pem: str
    key_pem: str = field(repr=False)
    cert_path: Path
    key_path: Path


@dataclass(frozen=True)
class Minted:
    """A certificate made for one instance and never stored: its key lives only in user-data."""

    cert_pem: str
    key_pem: str = field(repr=False)
    serial: int
    not_after: dt.datetime


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` atomically with ``mode`` set before any byte is written."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _san_entries(sans: Sequence[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for san in sans:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            entries.append(x509.DNSName(san))
    return entries


def _normalise_sans(sans: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for san in sans:
        try:
            value = str(ipaddress.ip_address(san))
        except ValueError:
            value = san.strip().lower()
        if not value:
            raise ConfigError("an empty subject alternative name was requested")
        if value not in out:
            out.append(value)
    return tuple(out)


def _cert_sans(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    ips = {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}
    return ips | {d.lower() for d in ext.get_values_for_type(x509.DNSName)}


def _cert_usages(cert: x509.Certificate) -> tuple[bool, bool]:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return (False, False)
    return (ExtendedKeyUsageOID.SERVER_AUTH in eku, ExtendedKeyUsageOID.CLIENT_AUTH in eku)


def _safe_name(name: str) -> str:
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise ConfigError(f"{name!r} is not a valid certificate name: use letters, digits, '-', '_' and '.'")
    return name


class StackCA:
    """The CA of one stack, kept under ``state_dir/pki``; created on first use.

    ``StackCA(ctx.state_dir).issue("etcd-0", sans=["127.77.0.3"], server=True, client=True)``
    returns the member's certificate, reusing the cached one when nothing it certifies changed.
    """

    def __init__(self, state_dir: Path, *, common_name: str | None = None, create: bool = True,
                 store: SecretStore | None = None) -> None:
        """``create``: whether this caller may write the stack's state (it holds the stack's lock);
        when False nothing is written under ``state_dir`` (see the module docstring). ``store``:
        where the CA and secrets are shared (None: this machine only)."""
        self.state_dir = Path(state_dir)
        self.store = store
        #: The stack's name, as the shared store knows it (``stacks/<stack>``).
        self.stack = self.state_dir.name
        #: The CA certificate is not on this machine's disk (read-only with a shared store).
        self._cert_elsewhere = False
        self.dir = self.state_dir / "pki"
        self.issued_dir = self.dir / "issued"
        self.ca_cert_path = self.dir / "ca.crt"
        self.ca_key_path = self.dir / "ca.key"
        self._common_name = common_name or f"infra stack CA ({self.state_dir.name})"
        self._ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None
        self.create = create
        #: read-only: a private temporary directory for what must be handed out as files
        self._scratch: Path | None = None
        #: read-only: the CA is a throwaway one held in memory (none exists on disk)
        self._throwaway = False
        if not create:
            return
        try:
            for d in (self.state_dir, self.dir, self.issued_dir):
                d.mkdir(parents=True, exist_ok=True, mode=0o700)
            for d in (self.dir, self.issued_dir):
                os.chmod(d, 0o700)
        except OSError as exc:
            raise ConfigError(f"cannot create the stack's certificate directory {self.dir}: {exc}") from exc
        self._file_lock = FileLock(str(self.dir / ".lock"))

    # -- the CA ---------------------------------------------------------------------------------

    @property
    def ca_cert_pem(self) -> str:
        """The CA certificate (public), creating the CA on first use."""
        cert, _ = self._load_or_create_ca()
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    def ensure(self) -> Path:
        """Create the CA when it does not exist yet; returns the CA certificate's path."""
        cert, _ = self._load_or_create_ca()
        if self._throwaway or self._cert_elsewhere:
            path = self._scratch_dir() / "ca.crt"
            if not path.exists():
                _write_private(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
            return path
        return self.ca_cert_path

    def _scratch_dir(self) -> Path:
        """Read-only: the private temporary directory (0700), removed with this object."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="infra-pki-"))
            weakref.finalize(self, shutil.rmtree, str(self._scratch), True)
        return self._scratch

    def _load_or_create_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        if self._ca is not None:
            return self._ca
        if self.store is not None:
            with _THREAD_LOCK:
                if self._ca is None:
                    self._ca = self._shared_ca(self.store)
            return self._ca
        if not self.create:
            with _THREAD_LOCK:
                if self._ca is None:
                    if self.ca_cert_path.exists() and self.ca_key_path.exists():
                        self._ca = self._read_ca()
                    else:  # nothing applied yet (or a writer is making it now): a throwaway CA
                        self._ca, self._throwaway = self._new_ca(), True
            return self._ca
        with _THREAD_LOCK, self._file_lock:
            if self.ca_cert_path.exists() and self.ca_key_path.exists():
                self._ca = self._read_ca()
            elif self.ca_cert_path.exists() or self.ca_key_path.exists():
                raise ConfigError(
                    f"the stack's CA in {self.dir} is incomplete (one of ca.crt, ca.key is missing)",
                    hint="restore the missing file from a backup; a new CA would invalidate every member's certificate",
                )
            else:
                self._ca = self._create_ca()
        return self._ca

    def _shared_ca(self, store: SecretStore) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """The CA in the shared store, made there by the first writer (see the module docstring)."""
        bundle = store.get(self.stack, "ca")
        here = self.ca_key_path.exists()
        if bundle is None:
            if not self.create:
                self._throwaway = True
                return self._new_ca()
            if here:
                raise ConfigError(
                    f"stack {self.stack!r} has a CA on this machine only ({self.dir}), not in the shared "
                    f"{store.where}: a second CA would lock every member out",
                    hint="move it there first: infra secrets push <stack file> (on this machine)")
            cert, key = self._new_ca()
            bundle = store.create(self.stack, "ca", _bundle(cert, key))
        cert, key = _unbundle(bundle, where=f"the shared CA of stack {self.stack!r} in {store.where}")
        if here or self.ca_cert_path.exists():
            try:
                mine = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
            except (OSError, ValueError):
                mine = None
            if mine is not None and mine != cert:
                raise ConfigError(
                    f"stack {self.stack!r}: the CA on this machine ({self.dir}) is not the shared one in "
                    f"{store.where}", hint="members made with this machine's CA cannot talk to the others': "
                    "keep the shared one (move this machine's pki/ aside) or push this one to a store without a CA")
        if self.create:
            try:
                _write_private(self.ca_cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
            except OSError as exc:
                raise ConfigError(f"cannot write the stack's CA certificate in {self.dir}: {exc.strerror}") from None
        else:
            self._cert_elsewhere = True
        return cert, key

    def push(self, store: SecretStore) -> list[str]:
        """Copy this machine's CA and secrets into ``store`` (what ``infra secrets push`` does);
        returns what was copied. ConfigError when the store holds another CA already."""
        cert, key = self._read_ca()
        stored = store.create(self.stack, "ca", _bundle(cert, key))
        theirs, _ = _unbundle(stored, where=f"the shared CA of stack {self.stack!r} in {store.where}")
        if theirs != cert:
            raise ConfigError(f"stack {self.stack!r}: {store.where} holds another CA already",
                              hint="one stack has one CA: use the shared one on this machine instead")
        copied = ["ca"]
        secrets_dir = self.dir / "secrets"
        for path in sorted(secrets_dir.iterdir()) if secrets_dir.is_dir() else []:
            value = path.read_text(encoding="utf-8").strip()
            if store.create(self.stack, f"secret/{path.name}", value.encode()).decode() != value:
                raise ConfigError(f"stack {self.stack!r}: secret {path.name} differs in {store.where}")
            copied.append(f"secret/{path.name}")
        minted = self._read_json(self.dir / "minted.json", {})
        for name, entries in sorted(minted.items()):
            for entry in entries:
                store.create(self.stack, _minted_key(name, entry["serial"]), json.dumps(entry).encode())
        for record in self._read_json(self.dir / "revoked.json", {"revoked": []})["revoked"]:
            store.create(self.stack, f"revoked/{record['serial']}", json.dumps(record).encode())
        if minted or (self.dir / "revoked.json").exists():
            copied.append("certificate records (minted.json, revoked.json)")
        return copied

    def _read_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        try:
            cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
            key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read the stack's CA in {self.dir}: {type(exc).__name__}",
                hint="restore ca.crt and ca.key from a backup",
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise ConfigError(f"the stack's CA key in {self.dir} does not match its certificate")
        os.chmod(self.ca_key_path, 0o600)
        return cert, key

    def _create_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        cert, key = self._new_ca()
        try:
            _write_private(
                self.ca_key_path,
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
                0o600,
            )
            _write_private(self.ca_cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot write the stack's CA in {self.dir}: {exc.strerror}") from None
        return cert, key

    def _new_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "infra"),
                x509.NameAttribute(NameOID.COMMON_NAME, self._common_name[:64]),
            ]
        )
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cert, key

    # -- leaf certificates ----------------------------------------------------------------------

    def paths(self, name: str) -> tuple[Path, Path]:
        """Where the certificate and key of ``name`` are (or will be) kept."""
        safe = _safe_name(name)
        return self.issued_dir / f"{safe}.crt", self.issued_dir / f"{safe}.key"

    def issue(
        self,
        name: str,
        *,
        sans: Sequence[str] = (),
        server: bool = False,
        client: bool = False,
        anonymous: bool = False,
    ) -> Issued:
        """The certificate ``name`` for ``sans`` with the requested usages, cached on disk.

        ``server`` adds the TLS server usage (SANs are what clients verify), ``client`` the TLS
        client usage (what ``--client-cert-auth`` checks). ``anonymous``: no common name in the
        subject (etcd's gateway refuses a client certificate with one once RBAC is on; the
        identity then comes from a token). The cached certificate is returned
        unchanged when it was signed by this CA, has exactly these SANs and usages, and has more
        than a third of its lifetime left; otherwise a new key and certificate replace it.
        Raises ConfigError when neither usage is requested or the files cannot be written.
        """
        wanted = _requested(name, sans, server, client)
        cert_path, key_path = self.paths(name)
        ca_cert, ca_key = self._load_or_create_ca()
        if not self.create:
            with _THREAD_LOCK:
                cached = None if self._throwaway else self._cached(cert_path, key_path, ca_cert, wanted, server,
                                                                   client, anonymous)
                if cached is not None:
                    return cached
                scratch = self._scratch_dir()
                return self._issue(name, scratch / cert_path.name, scratch / key_path.name, ca_cert, ca_key,
                                   wanted, server, client, anonymous)
        with _THREAD_LOCK, self._file_lock:
            cached = self._cached(cert_path, key_path, ca_cert, wanted, server, client, anonymous)
            if cached is not None:
                return cached
            return self._issue(name, cert_path, key_path, ca_cert, ca_key, wanted, server, client, anonymous)

    def mint(
        self,
        name: str,
        *,
        sans: Sequence[str] = (),
        server: bool = False,
        client: bool = False,
        common_name: str | None = None,
        validity: dt.timedelta = LEAF_VALIDITY,
    ) -> Minted:
        """A new key and certificate for one instance, never stored: call it once per instance.

        Its serial is recorded under ``name`` in ``minted.json`` (a writer only), so
        :meth:`revoke_member` can revoke it when the instance goes. ``common_name`` defaults to
        ``name``. A read-only caller gets one signed by whatever CA it reads (or a throwaway).
        """
        wanted = _requested(name, sans, server, client)
        ca_cert, ca_key = self._load_or_create_ca()
        cert, key = _build(common_name or name, ca_cert, ca_key, wanted, server, client, anonymous=False,
                           validity=validity)
        minted = Minted(
            cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode(),
            cert.serial_number,
            cert.not_valid_after_utc,
        )
        entry = {"serial": str(minted.serial), "at": _now().timestamp(), "not_after": minted.not_after.timestamp()}
        if self.create and not self._throwaway and self.store is not None:
            self.store.create(self.stack, _minted_key(name, minted.serial), json.dumps(entry).encode())
        elif self.create and not self._throwaway:
            with _THREAD_LOCK, self._file_lock:
                doc = self._read_json(self.dir / "minted.json", {})
                doc.setdefault(name, []).append(entry)
                self._write_json(self.dir / "minted.json", doc)
        return minted

    def revoke_member(self, name: str, *, minted_before: float | None = None) -> list[int]:
        """Revoke the certificates minted for ``name`` (those minted before ``minted_before``,
        Unix time, when given); returns their serials. A read-only caller revokes nothing."""
        if not self.create or self._throwaway:
            return []
        if self.store is not None:
            return self._revoke_shared(self.store, name, minted_before)
        with _THREAD_LOCK, self._file_lock:
            minted = self._read_json(self.dir / "minted.json", {})
            revoked = self._read_json(self.dir / "revoked.json", {"revoked": []})
            keep, out = [], []
            for entry in minted.get(name, []):
                if minted_before is not None and float(entry["at"]) > minted_before:
                    keep.append(entry)
                else:
                    out.append(entry)
            if not out:
                return []
            now = _now().timestamp()
            revoked["revoked"] = [r for r in revoked["revoked"] if float(r["not_after"]) > now] + [
                {"serial": e["serial"], "name": name, "at": now, "not_after": e["not_after"]} for e in out]
            self._write_json(self.dir / "revoked.json", revoked)
            if keep:
                minted[name] = keep
            else:
                minted.pop(name, None)
            self._write_json(self.dir / "minted.json", minted)
        return [int(e["serial"]) for e in out]

    def _revoke_shared(self, store: SecretStore, name: str, minted_before: float | None) -> list[int]:
        """:meth:`revoke_member` in the shared store: every writer's mints and revocations are seen
        by every other (one entry per certificate, so two writers never overwrite each other)."""
        out = []
        now = _now().timestamp()
        for key, raw in sorted(store.list(self.stack, _minted_key(name, "")).items()):
            entry = json.loads(raw)
            if minted_before is not None and float(entry["at"]) > minted_before:
                continue
            record = {"serial": entry["serial"], "name": name, "at": now, "not_after": entry["not_after"]}
            store.create(self.stack, f"revoked/{entry['serial']}", json.dumps(record).encode())
            store.delete(self.stack, f"minted/{key}")
            out.append(int(entry["serial"]))
        return out

    def revoked(self) -> list[int]:
        """The serials revoked and not yet expired."""
        now = _now().timestamp()
        if self.store is not None and not self._throwaway:
            records = [json.loads(raw) for raw in self.store.list(self.stack, "revoked/").values()]
            return [int(r["serial"]) for r in records if float(r["not_after"]) > now]
        doc = self._read_json(self.dir / "revoked.json", {"revoked": []}) if not self._throwaway else {"revoked": []}
        return [int(r["serial"]) for r in doc["revoked"] if float(r["not_after"]) > now]

    def crl_pem(self) -> str:
        """A CRL signed by the CA listing :meth:`revoked` (valid for a year; new on every call)."""
        ca_cert, ca_key = self._load_or_create_ca()
        now = _now()
        builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
                   .last_update(now - dt.timedelta(minutes=5)).next_update(now + dt.timedelta(days=365)))
        for serial in sorted(set(self.revoked())):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
        return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()

    def secret(self, name: str) -> str:
        """A random secret kept as ``secrets/<name>`` (0600), made on first use by a writer.

        A read-only caller reads it, or gets a throwaway one when it does not exist yet.
        """
        if self.store is not None:
            key = f"secret/{_safe_name(name)}"
            found = self.store.get(self.stack, key)
            if found is not None:
                return found.decode()
            if not self.create:
                return _secrets.token_urlsafe(32)
            return self.store.create(self.stack, key, _secrets.token_urlsafe(32).encode()).decode()
        path = self.dir / "secrets" / _safe_name(name)
        try:
            return path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ConfigError(f"cannot read the stack's secret {path}: {exc.strerror}") from None
        if not self.create or self._throwaway:
            return _secrets.token_urlsafe(32)
        with _THREAD_LOCK, self._file_lock:
            if path.exists():
                return path.read_text(encoding="utf-8").strip()
            value = _secrets.token_urlsafe(32)
            try:
                path.parent.mkdir(mode=0o700, exist_ok=True)
                _write_private(path, value.encode(), 0o600)
            except OSError as exc:
                raise ConfigError(f"cannot write the stack's secret {path}: {exc.strerror}") from None
            return value

    @staticmethod
    def _read_json(path: Path, default: dict[str, Any]) -> dict[str, Any]:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return default
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}", hint="it is infra's own record: restore it "
                              "from a backup or remove it (revocations listed there are then forgotten)") from None
        return doc if isinstance(doc, dict) else default

    @staticmethod
    def _write_json(path: Path, doc: dict[str, Any]) -> None:
        try:
            _write_private(path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(), 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror}") from None

    def forget(self, name: str) -> None:
        """Delete the cached certificate and key of ``name`` (a member that is gone for good)."""
        if not self.create:
            return
        cert_path, key_path = self.paths(name)
        with _THREAD_LOCK, self._file_lock:
            key_path.unlink(missing_ok=True)
            cert_path.unlink(missing_ok=True)

    def _cached(
        self,
        cert_path: Path,
        key_path: Path,
        ca_cert: x509.Certificate,
        wanted: tuple[str, ...],
        server: bool,
        client: bool,
        anonymous: bool = False,
    ) -> Issued | None:
        if not (cert_path.exists() and key_path.exists()):
            return None
        try:
            cert_pem = cert_path.read_bytes()
            key_pem = key_path.read_bytes()
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (OSError, ValueError):
            return None
        if key.public_key() != cert.public_key():
            return None
        if cert.issuer != ca_cert.subject:
            return None
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (InvalidSignature, ValueError, TypeError):
            return None
        if _cert_sans(cert) != set(wanted) or _cert_usages(cert) != (server, client):
            return None
        if bool(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)) == anonymous:
            return None
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        if cert.not_valid_after_utc - _now() < lifetime * RENEW_FRACTION:
            return None
        if (key_path.stat().st_mode & 0o777) != 0o600:
            os.chmod(key_path, 0o600)
        return Issued(cert_pem.decode(), key_pem.decode(), cert_path, key_path)

    def _issue(
        self,
        name: str,
        cert_path: Path,
        key_path: Path,
        ca_cert: x509.Certificate,
        ca_key: ec.EllipticCurvePrivateKey,
        wanted: tuple[str, ...],
        server: bool,
        client: bool,
        anonymous: bool = False,
    ) -> Issued:
        cert, key = _build(name, ca_cert, ca_key, wanted, server, client, anonymous=anonymous, validity=LEAF_VALIDITY)
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            # Both under the file lock; readers through issue() never see a mismatched pair.
            _write_private(key_path, key_pem, 0o600)
            _write_private(cert_path, cert_pem, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot write certificate {name!r} in {self.issued_dir}: {exc.strerror}") from None
        return Issued(cert_pem.decode(), key_pem.decode(), cert_path, key_path)


def _bundle(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bytes:
    """The CA as one PEM text: certificate, then key (what a shared store keeps, encrypted)."""
    return cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _unbundle(bundle: bytes, *, where: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(bundle)
        key = serialization.load_pem_private_key(bundle, password=None)
    except ValueError:
        raise ConfigError(f"{where} is not a certificate and key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise ConfigError(f"{where}: the key does not match the certificate")
    return cert, key


def _requested(name: str, sans: Sequence[str], server: bool, client: bool) -> tuple[str, ...]:
    """The SANs of a requested certificate; ConfigError when its usages or SANs make no sense."""
    if not (server or client):
        raise ConfigError(f"certificate {name!r}: request server and/or client usage")
    wanted = _normalise_sans(sans)
    if server and not wanted:
        raise ConfigError(f"certificate {name!r}: a server certificate needs at least one SAN")
    return wanted


def _build(
    name: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    wanted: tuple[str, ...],
    server: bool,
    client: bool,
    *,
    anonymous: bool,
    validity: dt.timedelta,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new key, and its leaf certificate signed by the CA (see :meth:`StackCA.issue`)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    usages = [
        oid
        for oid, on in (
            (ExtendedKeyUsageOID.SERVER_AUTH, server),
            (ExtendedKeyUsageOID.CLIENT_AUTH, client),
        )
        if on
    ]
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "infra"),
                    *([] if anonymous else [x509.NameAttribute(NameOID.COMMON_NAME, name[:64])]),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + validity, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if wanted:
        builder = builder.add_extension(x509.SubjectAlternativeName(_san_entries(wanted)), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _minted_key(member: str, serial: object) -> str:
    """The shared store's record of one certificate minted for ``member`` (``serial=""``: all of them)."""
    return f"minted/{_safe_name(member)}/{serial}"
