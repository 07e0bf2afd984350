"""The GCE emulator's HTTP front: routes, JSON bodies, answers, and where injected faults land.

:class:`Handler` serves one request: Cloud Storage paths go to the emulator's storage, ``/_admin``
and ``/_emulator`` to the admin API, and the Compute API's routes (:data:`ROUTES`) to
:meth:`Front.call` under the lock, after :meth:`Front.fault_for` said which fault, if any, the
call gets. It knows the emulator only through :class:`Front`, which
:class:`~providers.gcp.emulator.compute.FakeCompute` implements.
"""

from __future__ import annotations

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
    lock: threading.RLock
    cond: threading.Condition

    def emulator_api(self, path: str, query: Mapping[str, str]) -> Any: ...

    def admin(self, verb: str, path: str, body: JsonDict) -> JsonDict: ...

    def fault_for(self, method: str) -> tuple[ApiError | None, int | None, bool]: ...

    def call(self, method: str, args: Sequence[str], query: Mapping[str, str], body: JsonDict) -> JsonDict: ...


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
