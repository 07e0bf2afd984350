"""Where a stack's secrets live when several writers share the stack: its CA, its passwords.

Used by :class:`reconciler.kit.pki.StackCA` when a store is given (roles pass
``RoleContext.secrets``, which the engine sets from ``INFRA_COORDINATION``). Without a store the
secrets stay in the stack's local state directory, as they always did. With daemons (or people) on
several machines coordinating through one etcd, every writer must act with the *same* CA and the
same passwords, so they live there:

* under ``/infra/secrets/<stack>/<name>`` of the coordinating etcd (a prefix of infra's own; give
  only infra's etcd identity a role on ``/infra/``: docs/daemon.md);
* encrypted at rest with AES-256-GCM under a key the operator provides (``INFRA_SECRETS_KEY``: a
  file holding 32 random bytes in base64, mode 0600), the key's path as associated data, so a
  value copied to another key or stack does not decrypt;
* made once: :meth:`EtcdSecretStore.create` is a transaction that writes only if the key has never
  existed (``create_revision == 0``) and returns what is stored, so two first-time writers on two
  machines end with the one CA that won.

A cloud secret manager is a third implementation of :class:`SecretStore`. Errors: the etcd cannot
be reached → TransientError (nothing is written meanwhile); a value that does not decrypt →
PermanentError naming the key file.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from reconciler.core.errors import ConfigError, PermanentError, TransientError

if TYPE_CHECKING:
    from etcd3gw.client import Etcd3Client

#: Environment: the file holding the operator's encryption key of shared secrets.
KEY_ENV = "INFRA_SECRETS_KEY"
PREFIX = "/infra/secrets/"
T = TypeVar("T")
_NONCE = 12


class SecretStore(Protocol):
    """A place for a stack's secrets that every writer of the stack sees."""

    #: Where it is, for messages ("etcd http://10.0.0.5:2379").
    where: str

    def get(self, stack: str, name: str) -> bytes | None:
        """The secret, or None when it was never made."""
        ...

    def create(self, stack: str, name: str, value: bytes) -> bytes:
        """Store ``value`` unless the secret exists; returns what is stored (the winner's)."""
        ...

    def list(self, stack: str, prefix: str) -> dict[str, bytes]:
        """Every entry whose name starts with ``prefix`` → its value (records such as revocations)."""
        ...

    def delete(self, stack: str, name: str) -> None:
        """Remove one entry (harmless when absent)."""
        ...


def load_key(path: str | None = None) -> bytes:
    """The 32-byte key in ``path`` (default ``$INFRA_SECRETS_KEY``); ConfigError saying what to do."""
    where = path or os.environ.get(KEY_ENV, "").strip()
    if not where:
        raise ConfigError(f"shared secrets need an encryption key: set {KEY_ENV} to a file holding 32 random "
                          "bytes in base64", hint=f"head -c 32 /dev/urandom | base64 > infra.key; chmod 600 "
                          f"infra.key; export {KEY_ENV}=$PWD/infra.key (the same file on every machine)")
    try:
        info = os.stat(where)
        raw = Path(where).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{KEY_ENV} {where}: cannot read it ({exc})") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{KEY_ENV} {where}: readable by others (mode {stat.S_IMODE(info.st_mode):o})",
                          hint=f"chmod 600 {where}")
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(f"{KEY_ENV} {where}: not 32 bytes in base64",
                          hint="head -c 32 /dev/urandom | base64 > infra.key")
    return key


class EtcdSecretStore:
    """Secrets in the coordinating etcd, encrypted (see the module docstring)."""

    def __init__(self, client: Etcd3Client, key: bytes, *, where: str, prefix: str = PREFIX) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.client = client
        self.where = f"etcd {where}"
        self.prefix = prefix
        self._aead = AESGCM(key)

    def __repr__(self) -> str:  # never the key
        return f"EtcdSecretStore({self.where!r})"

    def _path(self, stack: str, name: str) -> str:
        return f"{self.prefix}{stack}/{name}"

    def _call(self, action: str, call: Callable[[], T]) -> T:
        import requests

        try:
            return call()
        except requests.RequestException as exc:
            raise TransientError(f"the coordinating {self.where} cannot be reached to {action}: {type(exc).__name__}",
                                 hint="nothing is changed until it answers; check it and the network") from None
        except Exception as exc:  # etcd3gw's own errors (an HTTP error from the gateway)
            raise TransientError(f"the coordinating {self.where} refused to {action}: {exc}") from None

    def _seal(self, path: str, value: bytes) -> str:
        nonce = secrets.token_bytes(_NONCE)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, value, path.encode())).decode()

    def _open(self, path: str, sealed: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            raw = base64.b64decode(sealed)
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], path.encode())
        except (InvalidTag, binascii.Error, ValueError):
            raise PermanentError(f"the shared secret {path} in the coordinating {self.where} does not decrypt with "
                                 f"this {KEY_ENV}", hint="use the key file the other machines use") from None

    def get(self, stack: str, name: str) -> bytes | None:
        path = self._path(stack, name)
        found = self._call(f"read {path}", lambda: self.client.get(path))
        if not found:
            return None
        return self._open(path, _raw(found[0]))

    def create(self, stack: str, name: str, value: bytes) -> bytes:
        path = self._path(stack, name)
        self._call(f"create {path}", lambda: self.client.create(path, self._seal(path, value)))
        stored = self.get(stack, name)
        if stored is None:
            raise TransientError(f"the shared secret {path} vanished right after it was made in the coordinating "
                                 f"{self.where}")
        return stored

    def list(self, stack: str, prefix: str) -> dict[str, bytes]:
        path = self._path(stack, prefix)
        found = self._call(f"list {path}*", lambda: self.client.get_prefix(path))
        out: dict[str, bytes] = {}
        for value, meta in found:
            key = meta["key"]
            full = _raw(key).decode()
            out[full[len(self._path(stack, "")):]] = self._open(full, _raw(value))
        return out

    def delete(self, stack: str, name: str) -> None:
        path = self._path(stack, name)
        self._call(f"delete {path}", lambda: self.client.delete(path))


def _raw(value: object) -> bytes:
    """A key or value as etcd3gw returns it (bytes, or str on some paths) as bytes."""
    return value if isinstance(value, bytes) else str(value).encode()


def from_environment() -> SecretStore | None:
    """The shared store ``INFRA_COORDINATION`` names (with ``INFRA_SECRETS_KEY``), or None."""
    from reconciler.kit import coordination

    target = coordination.from_environment()
    if target is None:
        return None
    return EtcdSecretStore(coordination.etcd_client(target, timeout=5.0), load_key(), where=str(target))
