"""The GCE emulator's HTTP front: who may ask, routes, JSON bodies, answers, and where faults land.

:class:`Handler` serves one request. First it checks who is asking (:meth:`Handler._refusal`):
the ``Host`` header must name this server by its loopback address (a page that rebinds a name of
its own to 127.0.0.1 sends its own name, and is refused, 403), and ``Authorization: Bearer`` must
carry the emulator's random per-run token (401 otherwise; ``/_emulator/sd/...``, read-only, also
takes the discovery token Prometheus is given). A body sent to the Compute or admin API must be
declared ``application/json`` (a browser's form or ``text/plain`` POST is refused, 415), no CORS
header is ever sent, and ``OPTIONS`` (a preflight) is refused (405). Then Cloud Storage paths go
to the emulator's storage, ``/_admin``
and ``/_emulator`` to the admin API, and the Compute API's routes (:data:`ROUTES`) to
:meth:`Front.call` under the lock, after :meth:`Front.fault_for` said which fault, if any, the
call gets. It knows the emulator only through :class:`Front`, which
:class:`~providers.gcp.emulator.compute.FakeCompute` implements.
"""

from __future__ import annotations

import hmac
import json
import re
import threading
import time
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from providers.gcp.emulator.resources import (
    ApiError,
    JsonDict,
    invalid,
    not_found,
)
from providers.gcp.emulator.storage import FakeStorage


class Front(Protocol):
    """What the handler needs of the emulator."""

    storage: FakeStorage
    latency: float
    host: str
    port: int
    token: str
    sd_token: str
    lock: threading.RLock
    cond: threading.Condition

    def emulator_api(self, path: str, query: Mapping[str, str]) -> Any: ...

    def admin(self, verb: str, path: str, body: JsonDict) -> JsonDict: ...

    def fault_for(self, method: str) -> tuple[ApiError | None, int | None, bool]: ...

    def call(self, method: str, args: Sequence[str], query: Mapping[str, str], body: JsonDict) -> JsonDict: ...


#: The largest request body accepted (an image upload is a stream of chunks of at most this).
MAX_BODY = 1 << 30

ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"/compute/v1/projects/([^/]+)/zones/([^/]+)/instances"), "instances.insert"),
    ("GET", re.compile(r"/compute/v1/projects/([^/]+)/zones/([^/]+)/instances"), "instances.list"),
    ("GET", re.compile(r"/compute/v1/projects/([^/]+)/aggregated/instances"), "instances.aggregatedList"),
    ("GET", re.compile(r"/compute/v1/projects/([^/]+)/zones/([^/]+)/instances/([^/]+)"), "instances.get"),
    ("GET", re.compile(r"/compute/v1/projects/([^/]+)/zones/([^/]+)/instances/([^/]+)/serialPort"),
     "instances.getSerialPortOutput"),
    ("DELETE", re.compile(r"/compute/v1/projects/([^/]+)/zones/([^/]+)/instances/([^/]+)"), "instances.delete"),
    ("POST", re.compile(r"/compute/v1/projects/([^/]+)/zones/([^/]+)/instances/([^/]+)/setLabels"),
     "instances.setLabels"),
    ("GET", re.compile(r"/compute/v1/projects/([^/]+)/zones/([^/]+)/operations/([^/]+)"), "zoneOperations.get"),
    ("POST", re.compile(r"/compute/v1/projects/([^/]+)/zones/([^/]+)/operations/([^/]+)/wait"), "zoneOperations.wait"),
    ("GET", re.compile(r"/compute/v1/projects/([^/]+)/zones/([^/]+)/machineTypes/([^/]+)"), "machineTypes.get"),
    ("GET", re.compile(r"/compute/v1/projects/([^/]+)/zones/([^/]+)/machineTypes"), "machineTypes.list"),
    ("GET", re.compile(r"/compute/v1/projects/([^/]+)/global/images/family/([^/]+)"), "images.getFromFamily"),
    ("GET", re.compile(r"/compute/v1/projects/([^/]+)/global/images/([^/]+)"), "images.get"),
    ("GET", re.compile(r"/compute/v1/projects/([^/]+)/global/images"), "images.list"),
    ("POST", re.compile(r"/compute/v1/projects/([^/]+)/global/images"), "images.insert"),
    ("DELETE", re.compile(r"/compute/v1/projects/([^/]+)/global/images/([^/]+)"), "images.delete"),
    ("GET", re.compile(r"/compute/v1/projects/([^/]+)/global/operations/([^/]+)"), "globalOperations.get"),
    ("POST", re.compile(r"/compute/v1/projects/([^/]+)/global/operations/([^/]+)/wait"), "globalOperations.wait"),
]


class Handler(BaseHTTPRequestHandler):
    fake: Front
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; with Nagle on, a keep-alive client's delayed ACK held
    # every answer's body back ~40 ms (the real API answers in one go). TCP_NODELAY, as servers set.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return None

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_OPTIONS(self) -> None:
        """A CORS preflight: refused, and no ``Access-Control-*`` header is sent."""
        self._drain()
        self._send(405, ApiError(405, "methodNotAllowed", "OPTIONS is not served: this emulator "
                                 "answers no browser").body(), {"Allow": "GET, POST, PUT, PATCH, DELETE"})

    def _drain(self) -> None:
        """Read and drop the request's body, so a refused request leaves the connection usable."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            return
        if 0 < length <= MAX_BODY:
            self.rfile.read(length)
        elif length:
            self.close_connection = True

    def _refusal(self, verb: str, path: str) -> ApiError | None:
        """Why this request is refused before it is looked at, or None (see the module docstring)."""
        port = self.fake.port
        host = (self.headers.get("Host") or "").strip().lower()
        if host not in {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"{self.fake.host}:{port}"}:
            return ApiError(403, "forbidden", f"Host {host[:80]!r} is not this emulator ({self.fake.host}:{port}); "
                            "requests through another name are refused")
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        given = given.strip()
        tokens = [self.fake.token] + ([self.fake.sd_token] if path.startswith("/_emulator/sd/") else [])
        if scheme.lower() != "bearer" or not any(hmac.compare_digest(given.encode(), t.encode()) for t in tokens):
            error = ApiError(401, "required", "Request is missing a valid authentication credential: send "
                             "'Authorization: Bearer $INFRA_GCP_ACCESS_TOKEN' (printed by infra emulator gcp)")
            error.status = "UNAUTHENTICATED"
            return error
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return ApiError(400, "invalid", "Content-Length is not a number")
        if length > MAX_BODY:
            return ApiError(413, "invalid", f"request body over {MAX_BODY} bytes")
        storage = path.startswith(("/storage/", "/upload/storage/", "/download/storage/"))
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if length and not storage and kind != "application/json":
            return ApiError(415, "invalid", f"a {verb} body must be application/json, not {kind or 'undeclared'!r}")
        return None

    def _storage(self, verb: str, path: str, query: Mapping[str, str]) -> bool:
        """Answer a Cloud Storage request (providers.gcp.emulator.storage); False when it is not one."""
        if not path.startswith(("/storage/", "/upload/storage/", "/download/storage/")):
            return False
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = self.fake.storage.handle(verb, path, query, headers, raw)
        code, out_headers, body = answer or (404, {"Content-Type": "application/json"},
                                             json.dumps(not_found(path).body()).encode())
        try:
            self.send_response(code)
            for k, v in out_headers.items():
                self.send_header(k, v)
            if "Content-Length" not in out_headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        return True

    def _send(self, code: int, body: JsonDict, headers: Mapping[str, str] | None = None) -> None:
        raw = json.dumps(body).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(raw)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (its own timeout), as clients do

    def _body(self) -> JsonDict:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        data = json.loads(self.rfile.read(length) or b"{}")
        if not isinstance(data, dict):
            raise invalid("request body must be a JSON object")
        return data

    def _dispatch(self, verb: str) -> None:
        parts = urlsplit(self.path)
        refusal = self._refusal(verb, parts.path)
        if refusal is not None:
            self._drain()
            self.close_connection = True
            self._send(refusal.code, refusal.body(),
                       {"WWW-Authenticate": 'Bearer realm="infra emulator"'} if refusal.code == 401 else None)
            return
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if self._storage(verb, parts.path, query):
            return
        try:
            body = self._body()
        except (ValueError, ApiError) as exc:
            self._send(400, invalid(f"Invalid JSON payload received. {exc}").body())
            return
        if parts.path.startswith("/_emulator/"):
            try:
                self._send(200, self.fake.emulator_api(parts.path, query))
            except ApiError as exc:
                self._send(exc.code, exc.body())
            return
        if parts.path.startswith("/_admin/"):
            try:
                self._send(200, self.fake.admin(verb, parts.path, body))
            except ApiError as exc:
                self._send(exc.code, exc.body())
            except (ValueError, KeyError, TypeError) as exc:
                self._send(400, invalid(str(exc)).body())
            return
        for route_verb, pattern, method in ROUTES:
            m = pattern.fullmatch(parts.path)
            if m and route_verb == verb:
                self._api(method, m.groups(), query, body)
                return
        self._send(404, not_found(parts.path).body())

    def _fault(self, code: int) -> None:
        if code == 429:
            err = ApiError(429, "rateLimitExceeded", "Rate Limit Exceeded", domain="usageLimits")
            self._send(429, err.body(), {"Retry-After": "0"})
        else:
            err = ApiError(code, "backendError", "The service is currently unavailable.")
            self._send(code, err.body())

    def _api(self, method: str, args: Sequence[str], query: Mapping[str, str], body: JsonDict) -> None:
        fake = self.fake
        if fake.latency:
            time.sleep(fake.latency)  # outside the lock: concurrent requests overlap, as for real
        with fake.lock:
            queued, fault, after = fake.fault_for(method)
            if queued is not None:
                extra = {"Retry-After": f"{queued.retry_after:g}"} if queued.retry_after is not None else None
                self._send(queued.code, queued.body(), extra)
                return
            if fault is not None and not after:
                self._fault(fault)
                return
            try:
                result = fake.call(method, args, query, body)
            except ApiError as exc:
                if fault is not None:
                    self._fault(fault)
                else:
                    self._send(exc.code, exc.body())
                return
            if fault is not None:
                self._fault(fault)
                return
            fake.cond.notify_all()
        self._send(200, result)
