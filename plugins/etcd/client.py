"""A small etcd v3 client over mutual TLS: cluster membership, health, status, key-value.

Called by :mod:`plugins.etcd.role` (membership hooks, health, status) and by the etcd tests.

Why etcd's JSON gRPC gateway over HTTPS, through the standard library's ``http.client``, rather
than ``etcdctl`` in a subprocess or a gRPC client:

* every call the role makes (member list/add/remove, status, leadership transfer, ``/health``)
  is one HTTPS POST/GET with a JSON body, served by every etcd 3.4+ member on its client port —
  the same endpoint and the same mutual-TLS certificates as ``etcdctl``, with no extra binary to
  install where ``infra`` runs (the cloud case: the operator's laptop);
* errors come back as JSON with the gRPC code and etcd's own message (``etcdserver: unhealthy
  cluster``), which :func:`_raise_for` maps to typed exceptions in one place, instead of parsing
  a CLI's human-readable stderr;
* timeouts are per call and short (health checks must be quick), with no process spawned per
  check;
* no new dependency: ``ssl`` + ``http.client`` do mutual TLS with hostname (IP SAN) checking.

Exceptions (internal to the plugin; the role turns them into :mod:`reconciler.core.errors` types)::

    EtcdError                   any failure talking to one endpoint
    ├── EtcdUnreachable         connect/TLS/timeout: the member could not be asked
    └── EtcdApiError            the member answered with an error (``code``, ``message``)
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

#: A JSON object as etcd's gateway returns it.
Json = dict[str, Any]

# gRPC status codes etcd uses in gateway errors.
CODE_FAILED_PRECONDITION = 9
CODE_UNAVAILABLE = 14
CODE_NOT_FOUND = 5
CODE_UNAUTHENTICATED = 16
CODE_PERMISSION_DENIED = 7

#: Simple auth tokens by (endpoint, user): a token is valid only on the member that issued it,
#: for ``--auth-token-ttl`` (5 min) after its last use; shared by every client of the process.
_TOKENS: dict[tuple[str, str], str] = {}
_TOKENS_LOCK = threading.Lock()


class EtcdError(Exception):
    """A call to one etcd endpoint failed. ``endpoint`` says which."""

    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint
        self.message = message


class EtcdUnreachable(EtcdError):
    """The endpoint could not be asked (refused, timed out, TLS handshake failed)."""

    def __init__(self, endpoint: str, message: str, *, tls: bool = False) -> None:
        super().__init__(endpoint, message)
        self.tls = tls


class EtcdApiError(EtcdError):
    """The endpoint answered with an error: ``code`` is the gRPC code, ``message`` etcd's text."""

    def __init__(self, endpoint: str, message: str, code: int | None, status: int) -> None:
        super().__init__(endpoint, message)
        self.code = code
        self.status = status

    @property
    def unhealthy_cluster(self) -> bool:
        """etcd refused a reconfiguration because its members are not all connected yet."""
        return "unhealthy cluster" in self.message or "not enough started members" in self.message

    @property
    def member_not_found(self) -> bool:
        return "member not found" in self.message

    @property
    def peer_url_exists(self) -> bool:
        return "peerURL exists" in self.message or "Peer URLs already exists" in self.message

    @property
    def needs_auth(self) -> bool:
        """RBAC is on and the request carried no valid token (a new one may help). Without a
        token the gateway acts as the member's own certificate, whose name is no user."""
        return self.code in (CODE_UNAUTHENTICATED, CODE_PERMISSION_DENIED) or any(
            text in self.message for text in ("user name is empty", "user name not found", "invalid auth token",
                                              "auth token", "permission denied"))

    @property
    def auth_not_enabled(self) -> bool:
        return "authentication is not enabled" in self.message

    @property
    def already_exists(self) -> bool:
        return "already exists" in self.message or "already granted" in self.message


@dataclass(frozen=True)
class Member:
    """One etcd member as the cluster lists it. ``name`` is empty until the member has started."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False

    @property
    def started(self) -> bool:
        return bool(self.name)

    @property
    def hex_id(self) -> str:
        return f"{self.id:x}"

    @property
    def peer_hosts(self) -> set[str]:
        return {host for url in self.peer_urls if (host := url_host(url))}


@dataclass(frozen=True)
class MemberList:
    """``member list`` from one endpoint: the cluster id, who answered, and the members."""

    cluster_id: int
    answered_by: int
    members: tuple[Member, ...]

    def by_host(self, host: str) -> Member | None:
        for member in self.members:
            if host in member.peer_hosts:
                return member
        return None

    @property
    def ids(self) -> frozenset[int]:
        return frozenset(m.id for m in self.members)


@dataclass(frozen=True)
class Status:
    """``endpoint status``: the member that answered, its view of the leader, raft progress."""

    cluster_id: int
    member_id: int
    leader: int
    raft_term: int
    raft_index: int
    version: str
    errors: tuple[str, ...] = ()


def url_host(url: str) -> str:
    """The host of ``https://host:port`` (IPv6 brackets removed)."""
    host = urlsplit(url).hostname
    return host or ""


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _uint(value: object) -> int:
    """etcd's gateway renders uint64 as a JSON string; absent means zero."""
    if value is None or value == "":
        return 0
    return int(cast(str | int, value))


def _member(doc: Json) -> Member:
    return Member(
        id=_uint(doc.get("ID")),
        name=str(doc.get("name", "")),
        peer_urls=tuple(doc.get("peerURLs") or ()),
        client_urls=tuple(doc.get("clientURLs") or ()),
        is_learner=bool(doc.get("isLearner", False)),
    )


def _member_list(endpoint: str, doc: Json) -> MemberList:
    header = doc.get("header") or {}
    return MemberList(
        cluster_id=_uint(header.get("cluster_id")),
        answered_by=_uint(header.get("member_id")),
        members=tuple(_member(m) for m in doc.get("members") or ()),
    )


def _raise_for(endpoint: str, status: int, body: bytes) -> None:
    """Map a gateway error response to :class:`EtcdApiError` (the one place that parses them)."""
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    message = str(doc.get("message") or doc.get("error") or body[:200].decode("utf-8", "replace"))
    code = doc.get("code")
    raise EtcdApiError(endpoint, message.strip() or f"HTTP {status}", code if isinstance(code, int) else None, status)


class EtcdClient:
    """Talks to etcd endpoints (``https://host:2379``) with the stack's client certificate.

    Thread-safe: one TLS context is shared; each call opens its own connection (calls are rare
    and a member may be gone between two of them).
    """

    def __init__(self, ca_file: Path, cert_file: Path, key_file: Path, *, timeout: float = 5.0,
                 user: str | None = None, password: str | None = None) -> None:
        """``user``/``password``: the etcd user infra acts as once RBAC is on (the gateway takes
        its identity from a token, never from the certificate); without them, none."""
        self.timeout = timeout
        self._ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
        self._ctx.load_cert_chain(str(cert_file), str(key_file))
        self.user = user
        self._password = password

    def __repr__(self) -> str:  # never the password
        return f"EtcdClient(user={self.user!r}, timeout={self.timeout})"

    # -- transport -------------------------------------------------------------------------------

    def _request(
        self, endpoint: str, method: str, path: str, body: Json | None = None, *, timeout: float | None = None,
        token: str | None = None,
    ) -> Json:
        parts = urlsplit(endpoint)
        if parts.scheme != "https" or not parts.hostname:
            raise EtcdUnreachable(endpoint, "only https:// endpoints are supported (mutual TLS)")
        conn = http.client.HTTPSConnection(
            parts.hostname, parts.port or 2379, timeout=timeout or self.timeout, context=self._ctx
        )
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        if token:
            headers["Authorization"] = token
        try:
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except ssl.SSLCertVerificationError as exc:
            raise EtcdUnreachable(endpoint, f"TLS verification failed: {exc.verify_message}", tls=True) from None
        except ssl.SSLError as exc:
            raise EtcdUnreachable(endpoint, f"TLS handshake failed: {exc.reason or exc}", tls=True) from None
        except TimeoutError:
            raise EtcdUnreachable(endpoint, "timed out") from None
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise EtcdUnreachable(endpoint, str(reason)) from None
        finally:
            conn.close()
        if resp.status != 200:
            _raise_for(endpoint, resp.status, data)
        try:
            doc = json.loads(data or b"{}")
        except ValueError:
            raise EtcdApiError(endpoint, "answer is not JSON", None, resp.status) from None
        if not isinstance(doc, dict):
            raise EtcdApiError(endpoint, "answer is not a JSON object", None, resp.status)
        return doc

    def _post(self, endpoint: str, path: str, body: Json, *, timeout: float | None = None,
              auth: bool = True) -> Json:
        """One gateway call; with ``auth``, with this user's token when RBAC asks for one (fetched
        once per member and reused). A token the member does not know (it expired, or the member
        was replaced at that address: etcd 3.4 then holds the request until its own timeout) is
        dropped and fetched again: on "invalid token", and on a timeout while one was sent.
        Calls that need no identity (member list, status) never send one."""
        key = (endpoint, self.user or "")
        with _TOKENS_LOCK:
            token = _TOKENS.get(key) if self.user and auth else None
        try:
            return self._request(endpoint, "POST", path, body, timeout=timeout, token=token)
        except EtcdApiError as exc:
            if self.user is None or not auth or not exc.needs_auth:
                raise
        except EtcdUnreachable as exc:
            if token is None or exc.tls or exc.message != "timed out":
                raise
            with _TOKENS_LOCK:
                _TOKENS.pop(key, None)
        token = self.authenticate(endpoint, timeout=timeout)
        return self._request(endpoint, "POST", path, body, timeout=timeout, token=token)

    def peer_common_name(self, peer_url: str, *, timeout: float | None = None) -> str | None:
        """The common name of the certificate a member presents on its peer port ("" when it has
        none), or None when it cannot be asked. The handshake verifies it against the stack's CA."""
        parts = urlsplit(peer_url)
        if not parts.hostname:
            return None
        address = (parts.hostname, parts.port or 2380)
        try:
            with socket.create_connection(address, timeout=timeout or self.timeout) as raw, \
                    self._ctx.wrap_socket(raw, server_hostname=parts.hostname) as tls:
                cert = tls.getpeercert() or {}
        except (OSError, ssl.SSLError):
            return None
        for rdn in cert.get("subject", ()):
            for pair in rdn:
                if pair[0] == "commonName":
                    return str(pair[1])
        return ""

    # -- authentication (RBAC) ---------------------------------------------------------------------

    def authenticate(self, endpoint: str, *, timeout: float | None = None) -> str | None:
        """A new token for this user at ``endpoint``; None when RBAC is off there."""
        if self.user is None or self._password is None:
            return None
        try:
            doc = self._request(endpoint, "POST", "/v3/auth/authenticate",
                                {"name": self.user, "password": self._password}, timeout=timeout)
        except EtcdApiError as exc:
            if exc.auth_not_enabled:
                return None
            raise
        token = str(doc.get("token") or "")
        with _TOKENS_LOCK:
            _TOKENS[(endpoint, self.user)] = token
        return token or None

    def auth_enabled(self, endpoint: str) -> bool:
        """Whether RBAC is on (this user can authenticate); raises when it is on and cannot."""
        return self.authenticate(endpoint) is not None

    def enable_auth(self, endpoint: str) -> None:
        """Turn RBAC on: role ``root``, user ``root`` with this client's password and that role,
        then ``auth enable``. Steps already done are skipped; nothing is done when it is on."""
        if self.user != "root" or self._password is None:
            raise ValueError("enable_auth needs the client of user root, with its password")
        with _TOKENS_LOCK:
            if _TOKENS.get((endpoint, "root")):
                return  # a token was issued there: RBAC is on
        if self.auth_enabled(endpoint):
            return
        for path, body in (("/v3/auth/role/add", {"name": "root"}),
                           ("/v3/auth/user/add", {"name": "root", "password": self._password}),
                           ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
                           ("/v3/auth/enable", {})):
            try:
                self._request(endpoint, "POST", path, body)
            except EtcdApiError as exc:
                if not exc.already_exists:
                    raise

    # -- cluster ---------------------------------------------------------------------------------

    def health(self, endpoint: str, *, timeout: float | None = None) -> bool:
        """``GET /health``: True when the member has a leader and can serve a quorum read."""
        try:
            doc = self._request(endpoint, "GET", "/health", timeout=timeout)
        except EtcdApiError:
            return False  # 503 {"health":"false"}
        return str(doc.get("health")).lower() == "true"

    def member_list(self, endpoint: str) -> MemberList:
        return _member_list(endpoint, self._post(endpoint, "/v3/cluster/member/list", {}, auth=False))

    def member_add(self, endpoint: str, peer_urls: list[str]) -> tuple[Member, MemberList]:
        """Add a (voting) member; returns it and the member list after the change."""
        doc = self._post(endpoint, "/v3/cluster/member/add", {"peerURLs": peer_urls})
        return _member(doc.get("member") or {}), _member_list(endpoint, doc)

    def member_remove(self, endpoint: str, member_id: int) -> MemberList:
        doc = self._post(endpoint, "/v3/cluster/member/remove", {"ID": str(member_id)})
        return _member_list(endpoint, doc)

    def status(self, endpoint: str, *, timeout: float | None = None) -> Status:
        doc = self._post(endpoint, "/v3/maintenance/status", {}, timeout=timeout, auth=False)
        header = doc.get("header") or {}
        return Status(
            cluster_id=_uint(header.get("cluster_id")),
            member_id=_uint(header.get("member_id")),
            leader=_uint(doc.get("leader")),
            raft_term=_uint(doc.get("raftTerm")),
            raft_index=_uint(doc.get("raftIndex")),
            version=str(doc.get("version", "")),
            errors=tuple(str(e) for e in doc.get("errors") or ()),
        )

    def move_leader(self, leader_endpoint: str, target_id: int) -> None:
        """Ask the leader (it must be the one asked) to hand leadership to ``target_id``."""
        self._post(leader_endpoint, "/v3/maintenance/transfer-leadership", {"targetID": str(target_id)})

    # -- key-value (tests and benchmarks) ----------------------------------------------------------

    def put(self, endpoint: str, key: str, value: str, *, timeout: float | None = None) -> int:
        """Put ``key``; returns the revision of the write once etcd acknowledged it."""
        doc = self._post(
            endpoint,
            "/v3/kv/put",
            {"key": _b64(key), "value": _b64(value)},
            timeout=timeout,
        )
        return _uint((doc.get("header") or {}).get("revision"))

    def get(self, endpoint: str, key: str, *, timeout: float | None = None) -> str | None:
        doc = self._post(endpoint, "/v3/kv/range", {"key": _b64(key)}, timeout=timeout)
        kvs = doc.get("kvs") or []
        if not kvs:
            return None
        return base64.b64decode(kvs[0].get("value", "")).decode()

    def get_prefix(self, endpoint: str, prefix: str, *, timeout: float | None = None) -> dict[str, str]:
        raw = prefix.encode()
        end = raw[:-1] + bytes([raw[-1] + 1]) if raw else b"\0"
        doc = self._post(
            endpoint,
            "/v3/kv/range",
            {"key": _b64(prefix), "range_end": base64.b64encode(end).decode()},
            timeout=timeout,
        )
        out: dict[str, str] = {}
        for kv in doc.get("kvs") or []:
            out[base64.b64decode(kv.get("key", "")).decode()] = base64.b64decode(kv.get("value", "")).decode()
        return out


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
