"""Logging in to a coordinating etcd whose RBAC is on: user and password, a token on every call.

Used by :func:`reconciler.kit.coordination.etcd_client` when the target names a user
(``--lock-user``/``INFRA_COORDINATION_USER``). Password authentication, not client-certificate
names: etcd's JSON gateway (which etcd3gw talks to) reaches etcd with the *server's* certificate,
so a client certificate's name never becomes the etcd user behind the gateway.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import requests

from reconciler.core.errors import ConfigError


def _password(user: str, password_file: str) -> str:
    try:
        lines = Path(password_file).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"the password file of etcd user {user!r} ({password_file}): cannot read "
                          f"it: {exc.strerror or exc}") from None
    if not lines or not lines[0]:
        raise ConfigError(f"the password file of etcd user {user!r} ({password_file}) is empty")
    return lines[0]


class PasswordSession(requests.Session):
    """A ``requests`` session that logs in as ``user`` to the etcd at ``where`` (etcd's
    ``/v3/auth/authenticate``) and sends the token with every call; when etcd refuses the token
    (401: it expired, or the etcd restarted) it logs in again once and repeats the call. A refused
    login is a ConfigError naming the user, never the password."""

    def __init__(self, user: str, password_file: str, where: str, timeout: float) -> None:
        super().__init__()
        self._user = user
        self._password_file = password_file
        self._where = where
        self._timeout = timeout
        self._token: str | None = None
        self._lock = threading.Lock()

    def login(self, url: str) -> str:
        """Log in now (``url``: any URL of the etcd's gateway); the token, kept for the next calls."""
        base = url.split("/v3/", 1)[0]
        resp = super().request("POST", f"{base}/v3/auth/authenticate", timeout=self._timeout,
                               json={"name": self._user, "password": _password(self._user, self._password_file)})
        if resp.status_code != 200:
            try:
                why = str(resp.json().get("error") or resp.json().get("message") or resp.status_code)
            except ValueError:
                why = f"HTTP {resp.status_code}"
            raise ConfigError(f"the coordinating etcd {self._where} refused the login of user "
                              f"{self._user!r}: {why}",
                              hint="check --lock-user/--lock-password-file (INFRA_COORDINATION_USER, "
                                   "INFRA_COORDINATION_PASSWORD_FILE) and that the user exists there")
        token = str(resp.json().get("token", ""))
        with self._lock:
            self._token = token
        return token

    def request(self, method: str | bytes, url: str | bytes,
                *args: Any, **kwargs: Any) -> requests.Response:
        target = url.decode() if isinstance(url, bytes) else url
        with self._lock:
            token = self._token
        if token is None:
            token = self.login(target)
        headers = dict(kwargs.pop("headers", None) or {})
        kwargs["headers"] = {**headers, "Authorization": token}
        resp = super().request(method, url, *args, **kwargs)
        if resp.status_code == 401:
            kwargs["headers"] = {**headers, "Authorization": self.login(target)}
            resp = super().request(method, url, *args, **kwargs)
        return resp
