"""Prometheus metrics of the reconcile daemon, and the HTTP endpoint that serves them.

Created once per ``infra daemon`` process by :mod:`reconciler.daemon` (the only caller); each
daemon has its own :class:`~prometheus_client.CollectorRegistry`, so nothing leaks between
daemons started in one test process. Served on ``--metrics-addr`` (loopback by default) at:

``/metrics``
    the Prometheus text exposition of everything below, plus the process collector;
``/healthz``
    200 while the daemon's loops are alive and not stuck, 503 otherwise, with a JSON body
    saying which stack is late and by how much (see :class:`Health`);
``/``
    the live page (HTML, :mod:`reconciler.daemon.page`).

Every metric carries a ``stack`` label. What they mean:

======================================  =====================================================
``infra_passes_total{result}``          passes run, by result: ``ok`` (nothing to change),
                                        ``applied``, ``error``, ``quorum_lost``, ``interrupted``
``infra_pass_duration_seconds``         histogram of pass durations (observe → plan → apply)
``infra_changes_applied_total``         changes done, by ``group``, ``action`` and ``reason``
``infra_changes_failed_total``          changes that failed, same labels
``infra_drift_detected_total``          passes whose plan was not empty
``infra_planned_changes``               changes in the last pass's plan
``infra_instances_observed{group}``     instances the last pass observed in each group
``infra_provider_errors_total``         provider calls that raised, by ``call`` and ``type``
                                        (every attempt, retries included)
``infra_leader``                        1 while this daemon holds the stack's lock, else 0
``infra_stack_reloads_total{result}``   stack-file reloads, ``ok`` or ``error``
``infra_backoff_seconds``               current error backoff (0 after a healthy pass)
``infra_last_pass_timestamp_seconds``   when the last pass ended (Unix time)
======================================  =====================================================
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

#: Pass durations: a no-op pass of a small stack takes milliseconds; a quorum change minutes.
PASS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class DaemonMetrics:
    """The daemon's metric families, registered in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        self.passes = Counter("infra_passes", "Reconcile passes, by result.", ["stack", "result"], registry=r)
        self.pass_seconds = Histogram("infra_pass_duration_seconds", "Duration of a reconcile pass.",
                                      ["stack"], buckets=PASS_BUCKETS, registry=r)
        self.changes_applied = Counter("infra_changes_applied", "Changes applied, by action and reason.",
                                       ["stack", "group", "action", "reason"], registry=r)
        self.changes_failed = Counter("infra_changes_failed", "Changes that failed, by action and reason.",
                                      ["stack", "group", "action", "reason"], registry=r)
        self.drift = Counter("infra_drift_detected", "Passes whose plan was not empty (drift from the stack).",
                             ["stack"], registry=r)
        self.planned = Gauge("infra_planned_changes", "Changes in the last pass's plan that it carries out.",
                             ["stack"], registry=r)
        self.observed = Gauge("infra_instances_observed", "Instances observed by the last pass, per group.",
                              ["stack", "group"], registry=r)
        self.provider_errors = Counter("infra_provider_errors", "Provider calls that raised, by call and type.",
                                       ["stack", "call", "type"], registry=r)
        self.leader = Gauge("infra_leader", "1 while this daemon holds the stack's lock (leads), else 0.",
                            ["stack"], registry=r)
        self.reloads = Counter("infra_stack_reloads", "Stack file reloads, by result.", ["stack", "result"],
                               registry=r)
        self.daemon_id = Gauge("infra_daemon_info", "This daemon's id among the daemons sharing the stacks "
                               "(--lock etcd://); with infra_leader it says which daemon leads which stack.",
                               ["daemon"], registry=r)
        self.backoff = Gauge("infra_backoff_seconds", "Current error backoff of the stack (0 when healthy).",
                             ["stack"], registry=r)
        self.last_pass = Gauge("infra_last_pass_timestamp_seconds", "When the last pass ended (Unix time).",
                               ["stack"], registry=r)
        self.held = Gauge("infra_changes_held", "Changes the last pass planned and held (not applied), by why: "
                          "remediation (limits), stopped, crash_loop, paused, other.", ["stack", "group", "why"],
                          registry=r)
        self.paused = Gauge("infra_paused", "1 while the stack (group \"\") or a group is paused, else 0.",
                            ["stack", "group"], registry=r)
        self.undeclared = Gauge("infra_undeclared_instances", "Instances of a group the stack file no longer "
                                "declares (kept, never deleted implicitly).", ["stack", "group"], registry=r)

    def init_stack(self, stack: str, groups: list[str]) -> None:
        """Make every series of ``stack`` visible at 0 before its first pass."""
        for result in ("ok", "applied", "error", "quorum_lost", "interrupted"):
            self.passes.labels(stack, result)
        self.pass_seconds.labels(stack)
        self.drift.labels(stack)
        self.planned.labels(stack).set(0)
        self.leader.labels(stack).set(0)
        self.backoff.labels(stack).set(0)
        for result in ("ok", "error"):
            self.reloads.labels(stack, result)
        self.paused.labels(stack, "").set(0)
        for group in groups:
            self.observed.labels(stack, group)
            self.paused.labels(stack, group).set(0)

    def set_observed(self, stack: str, counts: Mapping[str, int]) -> None:
        for group, n in counts.items():
            self.observed.labels(stack, group).set(n)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@dataclass
class HealthReport:
    healthy: bool
    detail: dict[str, Any]


#: What ``/healthz`` asks: is every loop alive and not stuck?
Health = Callable[[], HealthReport]


#: Seconds a connection may take to send its request (a slow client is cut off).
HANDLER_TIMEOUT = 10.0
#: Connections served at once; more are answered 503 at once instead of queued.
MAX_CONNECTIONS = 16


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    timeout = HANDLER_TIMEOUT

    def do_GET(self) -> None:
        if not self._authorized():
            self._send(401, "text/plain; charset=utf-8", b"a bearer token is required\n",
                       {"WWW-Authenticate": 'Bearer realm="infra daemon"'})
            return
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body = self.server.metrics.exposition()
            self._send(200, CONTENT_TYPE_LATEST, body)
        elif path in ("/healthz", "/health"):
            report = self.server.health()
            body = json.dumps({"healthy": report.healthy, **report.detail}, default=str).encode()
            self._send(200 if report.healthy else 503, "application/json", body)
        elif path == "/":
            if self.server.page is None:
                self._send(200, "text/plain; charset=utf-8", b"infra daemon: /metrics /healthz\n")
            else:
                self._send(200, "text/html; charset=utf-8", self.server.page().encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        given = self.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def _send(self, code: int, ctype: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None  # scrapes are not worth a log line each


class MetricsServer(ThreadingHTTPServer):
    """``/metrics``, ``/healthz`` and the page on one address, served from a daemon thread.

    At most :data:`MAX_CONNECTIONS` at once (more are answered 503 and closed), each cut off after
    :data:`HANDLER_TIMEOUT` seconds of silence; with a ``token``, every request must carry
    ``Authorization: Bearer <token>`` (the daemon requires one to listen beyond loopback).
    """

    daemon_threads = True

    def __init__(self, host: str, port: int, metrics: DaemonMetrics, health: Health,
                 page: Callable[[], str] | None = None, token: str | None = None) -> None:
        self.metrics = metrics
        self.health = health
        self.page = page
        self.token = token
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__((host, port), _Handler)
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="infra-metrics", daemon=True)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):  # full: answer at once, queue nothing
            try:
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)
