"""The coordinating etcd: where it is and how to talk to it (``etcd://HOST:PORT`` and its TLS files).

Daemons on several machines share one coordinating etcd (never the cluster infra manages): the
daemon's leadership keys (:mod:`reconciler.daemon.leader`) and the stacks' shared secrets
(:mod:`reconciler.kit.secretstore`) live there. Called by the daemon's ``--lock`` and by every
command's ``INFRA_COORDINATION`` setting (:func:`from_environment`). The client is etcd3gw over
etcd's v3 JSON gateway (pure Python over ``requests``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from reconciler.core.errors import ConfigError

if TYPE_CHECKING:
    import requests
    from etcd3gw.client import Etcd3Client

#: Environment: the coordinating etcd every command and daemon uses (``etcd://HOST:PORT``).
COORDINATION_ENV = "INFRA_COORDINATION"
#: Environment: its TLS files (as ``--lock-cacert/--lock-cert/--lock-key``).
CACERT_ENV, CERT_ENV, KEY_ENV = "INFRA_COORDINATION_CACERT", "INFRA_COORDINATION_CERT", "INFRA_COORDINATION_KEY"
#: Environment: infra's etcd user there and the file holding its password (as ``--lock-user`` and
#: ``--lock-password-file``), when the coordinating etcd has RBAC on.
USER_ENV, PASSWORD_FILE_ENV = "INFRA_COORDINATION_USER", "INFRA_COORDINATION_PASSWORD_FILE"


@dataclass(frozen=True)
class EtcdTarget:
    """A parsed ``etcd://HOST:PORT`` (``--lock`` or ``INFRA_COORDINATION``) with its TLS files and,
    when its RBAC is on, infra's user there and the file of its password (read at each login, never
    kept in the target, never printed)."""

    host: str
    port: int
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password_file: str | None = None

    @property
    def tls(self) -> bool:
        return bool(self.cacert or self.cert)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


def parse_lock(value: str, *, cacert: str | None = None, cert: str | None = None,
               key: str | None = None, user: str | None = None,
               password_file: str | None = None) -> EtcdTarget | None:
    """``file`` → None; ``etcd://HOST:PORT`` → an EtcdTarget. ConfigError otherwise."""
    if value == "file":
        if cacert or cert or key or user or password_file:
            raise ConfigError("--lock-cacert/--lock-cert/--lock-key/--lock-user/--lock-password-file apply only "
                              "to --lock etcd://HOST:PORT")
        return None
    parts = urlsplit(value)
    if parts.scheme != "etcd" or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(f"--lock {value!r}: expected 'file' or 'etcd://HOST:PORT'")
    try:
        port = parts.port or 2379
    except ValueError:
        raise ConfigError(f"--lock {value!r}: the port is not a number") from None
    if bool(cert) != bool(key):
        raise ConfigError("--lock-cert and --lock-key go together (a client certificate and its key)")
    if bool(user) != bool(password_file):
        raise ConfigError("--lock-user and --lock-password-file go together (infra's etcd user and its password)")
    for flag, path in (("--lock-cacert", cacert), ("--lock-cert", cert), ("--lock-key", key),
                       ("--lock-password-file", password_file)):
        if path and not Path(path).is_file():
            raise ConfigError(f"{flag} {path}: no such file")
    return EtcdTarget(parts.hostname, port, cacert, cert, key, user, password_file)


def http_session(target: EtcdTarget, timeout: float) -> requests.Session:
    """The ``requests`` session every call to ``target`` goes through: its TLS files, and its login
    when ``target.user`` is set (:class:`reconciler.kit.etcd_login.PasswordSession`).

    With ``--lock-cacert`` the session ignores the environment (``trust_env = False``):
    ``requests`` would otherwise let ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` override the CA
    given on the command line (psf/requests#3829), and a proxy has no business between a daemon
    and its coordinating etcd when its certificate is pinned.
    """
    import requests

    if target.user:
        from reconciler.kit.etcd_login import PasswordSession

        session: requests.Session = PasswordSession(target.user, str(target.password_file), str(target), timeout)
    else:
        session = requests.Session()
    if target.cacert:
        session.verify = target.cacert
        session.trust_env = False
    if target.cert and target.key:
        session.cert = (target.cert, target.key)
    return session


def etcd_client(target: EtcdTarget, timeout: float) -> Etcd3Client:
    """An etcd3gw client for ``target`` (the v3 gateway path is fixed: etcd ≥ 3.4)."""
    from etcd3gw.client import Etcd3Client

    return Etcd3Client(
        host=target.host, port=target.port, protocol="https" if target.tls else "http",
        timeout=timeout, api_path="/v3/", session=http_session(target, timeout),
    )


def from_environment() -> EtcdTarget | None:
    """The coordinating etcd ``INFRA_COORDINATION`` names (None when unset or ``file``)."""
    value = os.environ.get(COORDINATION_ENV, "").strip()
    if not value or value == "file":
        return None
    try:
        return parse_lock(value, cacert=os.environ.get(CACERT_ENV) or None, cert=os.environ.get(CERT_ENV) or None,
                          key=os.environ.get(KEY_ENV) or None, user=os.environ.get(USER_ENV) or None,
                          password_file=os.environ.get(PASSWORD_FILE_ENV) or None)
    except ConfigError as exc:
        raise ConfigError(f"{COORDINATION_ENV}: {exc.message}", hint=exc.hint) from None


def check_login(target: EtcdTarget, timeout: float = 5.0) -> bool:
    """Log in once: ConfigError when the etcd refuses the user or password; False when it cannot be
    reached now (the caller goes on and retries as it would anyway); True when it worked."""
    import requests

    from reconciler.kit.etcd_login import PasswordSession

    session = http_session(target, timeout)
    assert isinstance(session, PasswordSession)
    try:
        session.login(f"{target}/v3/")
    except requests.RequestException:
        return False
    finally:
        session.close()
    return True
