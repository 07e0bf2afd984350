"""The GCE emulator's state: instances, images, operations, requestIds, the clock, the lock.

:class:`ComputeState` holds what every part of the API shares and the internals they call under
``lock``: the operations' clock (``_tick`` applies what became DONE), new operations and
``requestId`` replay, paging and label filters. The API itself is in
:mod:`~providers.gcp.emulator.instances`, :mod:`~providers.gcp.emulator.images` and
:mod:`~providers.gcp.emulator.admin`; :class:`~providers.gcp.emulator.compute.FakeCompute` puts
them together behind its HTTP server.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from http.server import ThreadingHTTPServer
from typing import Any

from providers.gcp.emulator.filters import FilterError, compile_filter
from providers.gcp.emulator.resources import (
    API,
    DEFAULT_IMAGES,
    DEFAULT_MACHINE_TYPES,
    DEFAULT_ZONES,
    MAX_RESULTS,
    ApiError,
    FakeInstance,
    JsonDict,
    Operation,
    _rfc3339,
    invalid,
    not_found,
)
from providers.gcp.emulator.storage import FakeStorage


class ComputeState:
    """The emulator's state and the internals its API methods share (called under ``lock``)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        op_delay: float = 0.1,
        boot_delay: float = 0.1,
        wait_max: float = 120.0,
        request_id_ttl: float = 3600.0,
        zones: Sequence[str] = DEFAULT_ZONES,
        machine_types: Mapping[str, tuple[int, int]] = DEFAULT_MACHINE_TYPES,
        images: Iterable[tuple[str, str, str | None]] = DEFAULT_IMAGES,
        fault_rate: float = 0.0,
        fault_codes: Sequence[int] = (429, 503),
        fault_after_share: float = 0.5,
        seed: int | None = None,
        quota_instances: int | None = None,
        stockout_zones: Sequence[str] = (),
        address_prefix: str = "10.128",
        latency: float = 0.0,
        token: str | None = None,
        sd_token: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        #: The credential every request must carry (``Authorization: Bearer <token>``), random per
        #: run unless given; ``sd_token`` is the read-only one Prometheus's discovery presents.
        self.token = token or secrets.token_urlsafe(32)
        self.sd_token = sd_token or secrets.token_urlsafe(32)
        self.op_delay = op_delay
        self.boot_delay = boot_delay
        self.wait_max = wait_max
        self.request_id_ttl = request_id_ttl
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.zones = list(zones)
        self.machine_types = dict(machine_types)
        self.images: dict[tuple[str, str], JsonDict] = {}
        for project, name, family in images:
            self.add_image(project, name, family)
        self.fault_rate = fault_rate
        self.fault_codes = list(fault_codes)
        self.fault_after_share = fault_after_share
        self.rng = random.Random(seed)
        self.quota_instances = quota_instances
        self.stockout_zones = set(stockout_zones)
        self.address_prefix = address_prefix
        self.latency = latency
        self.instances: dict[tuple[str, str, str], FakeInstance] = {}
        self.operations: dict[tuple[str, str, str], Operation] = {}
        self.request_ids: dict[tuple[str, str], tuple[tuple[str, str, str], float]] = {}
        self.pending: list[Operation] = []
        self.calls: dict[str, int] = {}
        self.failures: dict[str, list[ApiError]] = {}
        self.ids = itertools.count(4_000_000_000_000_000_001)
        self.addresses = itertools.count(2)
        self.closing = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.storage = FakeStorage()
        #: Set by the emulator's machines: instances boot, and their console output comes from here.
        self.boots = False
        self.console: Callable[[FakeInstance], str] | None = None

    def _new_instance(
        self,
        project: str,
        zone: str,
        name: str,
        labels: dict[str, str],
        machine_type: str,
        body: JsonDict,
        now: float,
        ready_at: float,
        address: str | None = None,
    ) -> FakeInstance:
        if address is None:
            used = {i.address for i in self.instances.values()}
            while True:
                n = next(self.addresses)
                address = f"{self.address_prefix}.{n // 250 % 250}.{n % 250 + 2}"
                if address not in used:
                    break
        return FakeInstance(
            project=project,
            zone=zone,
            name=name,
            id=next(self.ids),
            labels=labels,
            machine_type=machine_type,
            address=address,
            created=now,
            wall=time.time(),
            ready_at=ready_at,
            boot_delay=self.boot_delay,
            body=body,
        )

    def _tick(self) -> None:
        """Apply the effects of operations that have become DONE (called under the lock)."""
        now = time.monotonic()
        still: list[Operation] = []
        for op in self.pending:
            if now < op.done_at:
                still.append(op)
                continue
            op.finished = True
            if op.resource == "images":
                image = self.images.get((op.project, op.target))
                if op.kind == "delete" and image is not None and image["id"] == str(op.target_id):
                    del self.images[(op.project, op.target)]
                continue
            key = (op.project, op.zone, op.target)
            inst = self.instances.get(key)
            if op.kind == "delete" and inst is not None and inst.id == op.target_id:
                del self.instances[key]
        self.pending = still
        expired = [k for k, (_, at) in self.request_ids.items() if now - at > self.request_id_ttl]
        for k in expired:
            del self.request_ids[k]

    def _check_zone(self, project: str, zone: str) -> None:
        if zone not in self.zones:
            raise not_found(f"projects/{project}/zones/{zone}")

    def _new_op(
        self, project: str, zone: str, kind: str, target: str, target_id: int, request_id: str | None,
        *, resource: str = "instances",
    ) -> Operation:
        now = time.monotonic()
        op_id = next(self.ids)
        name = f"operation-{int(time.time() * 1000)}-{uuid.uuid4().hex[:13]}-{uuid.uuid4().hex[:8]}"
        op = Operation(
            project=project,
            zone=zone,
            name=name,
            id=op_id,
            kind=kind,
            target=target,
            target_id=target_id,
            accepted=now,
            done_at=now + self.op_delay,
            wall=time.time(),
            request_id=request_id,
            resource=resource,
        )
        self.operations[(project, zone, name)] = op
        self.pending.append(op)
        if request_id:
            self.request_ids[(project, request_id)] = ((project, zone, name), now)
        return op

    def _replayed(self, project: str, request_id: str | None) -> JsonDict | None:
        """The answer to a repeated ``requestId``: the operation it started, as it stands now."""
        if not request_id:
            return None
        hit = self.request_ids.get((project, request_id))
        op = self.operations.get(hit[0]) if hit else None
        return op.to_json(time.monotonic()) if op is not None else None

    def _page(self, query: Mapping[str, str], items: list[Any], filt: str) -> tuple[list[Any], str | None]:
        try:
            max_results = int(query.get("maxResults") or MAX_RESULTS)
        except ValueError:
            raise invalid(f"Invalid value for field 'maxResults': '{query.get('maxResults')}'.") from None
        if not 0 <= max_results <= MAX_RESULTS:
            raise invalid(f"Invalid value for field 'maxResults': '{max_results}'. Must be less than or equal to 500")
        if max_results == 0:
            max_results = MAX_RESULTS
        digest = hashlib.sha256(filt.encode()).hexdigest()[:12]
        offset = 0
        token = query.get("pageToken")
        if token:
            try:
                doc = json.loads(base64.urlsafe_b64decode(token.encode()))
                offset = int(doc["o"])
                if doc["f"] != digest:
                    raise ValueError("filter changed")
            except (ValueError, KeyError, TypeError):
                raise invalid(f"Invalid value for field 'pageToken': '{token}'.") from None
        page = items[offset : offset + max_results]
        nxt = None
        if offset + max_results < len(items):
            nxt = base64.urlsafe_b64encode(json.dumps({"o": offset + max_results, "f": digest}).encode()).decode()
        return page, nxt

    def _filtered(self, project: str, zones: Sequence[str], filt: str) -> list[FakeInstance]:
        try:
            pred = compile_filter(filt)
        except FilterError as exc:
            raise invalid(f"Invalid value for field 'filter': '{filt}'. {exc}") from None
        now = time.monotonic()
        out = []
        for inst in sorted(self.instances.values(), key=lambda i: i.id):
            if inst.project == project and inst.zone in zones and pred(inst.to_json(now)):
                out.append(inst)
        return out

    def add_image(self, project: str, name: str, family: str | None = None,
                  labels: Mapping[str, str] | None = None) -> JsonDict:
        image: JsonDict = {
            "kind": "compute#image",
            "id": str(abs(hash((project, name))) % 10**18),
            "name": name,
            "status": "READY",
            "selfLink": f"{API}/projects/{project}/global/images/{name}",
            "creationTimestamp": _rfc3339(time.time()),
            "diskSizeGb": "10",
        }
        if family:
            image["family"] = family
        if labels:
            image["labels"] = dict(labels)
        with self.lock:
            self.images[(project, name)] = image
        return image

    def _wait(self, op: Operation) -> JsonDict:
        """``op`` once DONE or after ``wait_max`` (called holding ``cond``, which waiting releases)."""
        deadline = time.monotonic() + self.wait_max
        while True:
            now = time.monotonic()
            if op.status(now) == "DONE" or now >= deadline or self.closing:
                self._tick()
                return op.to_json(now)
            self.cond.wait(timeout=min(op.done_at, deadline) - now + 0.001)
