"""The Compute Engine v1 REST API of the GCE emulator, and the tests' fake of it.

``infra emulator gcp`` (:mod:`providers.gcp.emulator.main`) serves it on 127.0.0.1 with the
emulator's machines attached (:mod:`providers.gcp.emulator.machines`: instances boot); test
fixtures run it bare in the test process (:class:`FakeCompute` is a context manager running a
threaded HTTP server), where instances are records and nothing runs. The provider reaches it by
setting ``INFRA_GCP_ENDPOINT=http://127.0.0.1:PORT``.

Reproduced, because the provider depends on it:

* ``instances``: insert, get, list, aggregatedList, delete; ``zoneOperations``: get, wait;
  ``machineTypes``: get, list; ``images``: get, getFromFamily. Paths, query parameters and JSON
  field names are the real ones (``/compute/v1/projects/{p}/zones/{z}/instances`` ...).
* Asynchronous operations: an operation is PENDING, then RUNNING, then DONE ``op_delay`` seconds
  after it was accepted. An inserted instance is PROVISIONING until its operation is DONE, then
  STAGING for ``boot_delay`` seconds, then RUNNING. A deleted instance is STOPPING until its
  operation is DONE, then gone.
* ``zoneOperations.wait`` blocks until the operation is DONE or ``wait_max`` seconds have passed
  (the real API's limit is about two minutes) and then answers with the operation as it is.
* ``requestId``: a second insert or delete with the same requestId in the same project answers
  with the *same* operation (in whatever state it has reached, DONE included) and does nothing
  else, for ``request_id_ttl`` seconds (the real API keeps them at least 60 minutes).
* Label filters (``(labels.k = "v") AND (labels.k2 = "v2")``, ``!=``, ``eq``/``ne`` regexes,
  ``OR``, ``NOT``, parentheses; fields ``name``, ``status``, ``zone``, ``machineType``); a filter
  it cannot parse gets 400 like the real API.
* ``maxResults`` (0..500, default 500) and opaque ``pageToken`` pagination; ``nextPageToken`` is
  present only while results remain; ``items`` is omitted from an empty page; aggregatedList
  answers per-zone scopes with ``NO_RESULTS_ON_PAGE`` warnings for empty ones.
* Error bodies shaped like Google's: ``{"error": {"code", "message", "errors": [{"domain",
  "reason", "message"}]}}`` for 400 ``invalid`` (bad name, labels, machine type, filter, page
  token), 404 ``notFound`` (instance, operation, zone, machine type, image), 409 ``alreadyExists``
  (an instance of that name exists in the zone), 429 ``rateLimitExceeded``, 503 ``backendError``.
* Operation errors (``operation.error.errors[].code``): ``QUOTA_EXCEEDED`` when a project's
  instance quota (``quota_instances``) is exhausted, ``ZONE_RESOURCE_POOL_EXHAUSTED`` in
  ``stockout_zones``; the instance then never appears.
* Fault injection: a fraction ``fault_rate`` of API requests answers 429 or 503 (``fault_codes``).
  For inserts and deletes, a share ``fault_after_share`` of those faults happens *after* the change
  was made, like a lost response, which is what makes requestId and 409 handling matter.
* A call counter per API method (``instances.list``, ``zoneOperations.wait`` ...), every request
  counted, injected failures included.

Not reproduced (the provider does not depend on it, or tests must not): authentication (any or no
``Authorization`` header is accepted; real credentials are never needed), IAM and 401/403
answers (403 only through the admin ``/_admin/fail`` queue), real VMs (nothing boots; addresses
are allocated from ``address_prefix`` and nothing listens on them), regions, networks and
subnetworks (accepted and echoed, not checked), disks as separate resources, global and region
operations, ``orderBy``, ``returnPartialSuccess``, label fingerprints and setLabels, quotas other
than an instance count, and eventual consistency of list after insert (the fake is immediately
consistent).

Admin API (no faults, not counted), for tests and demos:

* ``GET /_admin/calls`` → ``{"calls": {method: n}}``; ``POST /_admin/calls/reset``
* ``POST /_admin/config`` with any of ``fault_rate``, ``fault_codes``, ``fault_after_share``,
  ``seed``, ``op_delay``, ``boot_delay``, ``wait_max``, ``quota_instances``, ``stockout_zones``,
  ``latency`` (seconds added to every API answer)
* ``POST /_admin/fail`` ``{"method": "instances.insert", "code": 403, "reason": "quotaExceeded",
  "message": "...", "after": false, "retry_after": null}`` queues one specific failure for the
  next call of that method (``after``: answer with it once the call took effect, a lost
  response; ``retry_after``: seconds sent in a ``Retry-After`` header)
* ``GET /_admin/instances``; ``POST /_admin/instances`` (one ``{"project", "zone", "name",
  "labels", "status"}`` or ``{"instances": [...]}``) puts instances there without any operation,
  as another tool would; ``DELETE /_admin/instances/{project}/{zone}/{name}`` removes one at once
  (out of band); ``POST /_admin/instances/{project}/{zone}/{name}/status`` ``{"status": ...}``
* ``GET /_emulator/info`` (what this server is: ``{"emulator": "gce", "boots": bool}``, which
  infra's image push asks before it registers a LinuxKit YAML as an image);
  ``GET /_emulator/sd/{project}?filter=...&port=N``: Prometheus HTTP service discovery of the
  RUNNING instances matching the label filter (``gce_sd`` has no endpoint setting);
* ``POST /_admin/images`` ``{"project", "name", "family"}``; ``GET /_admin/images``;
  ``POST /_admin/buckets`` ``{"name"}``; ``GET /_admin/storage/calls``; ``GET /_admin/health``

Images (for the image pipeline): ``images.list`` (label filters, pagination), ``images.insert``
from ``rawDisk.source`` (an object in the fake's Cloud Storage, :mod:`providers.gcp.emulator.storage`,
served on the same port; the image is PENDING until its *global* operation is DONE, then READY,
and the operation fails when the object is missing or not a tar.gz holding ``disk.raw``),
``images.delete``, ``globalOperations.get``/``wait``, ``requestId`` replay for both; an instance
cannot be inserted from an image that is not READY.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from providers.gcp.emulator.filters import FilterError, compile_filter
from providers.gcp.emulator.storage import FakeStorage

JsonDict = dict[str, Any]

API = "https://www.googleapis.com/compute/v1"
DEFAULT_ZONES = (
    "us-central1-a",
    "us-central1-b",
    "us-central1-c",
    "us-central1-f",
    "europe-west1-b",
    "europe-west1-c",
    "europe-west1-d",
)
DEFAULT_MACHINE_TYPES: Mapping[str, tuple[int, int]] = {
    # name: (vCPUs, memory MiB)
    "e2-micro": (2, 1024),
    "e2-small": (2, 2048),
    "e2-medium": (2, 4096),
    "e2-standard-2": (2, 8192),
    "e2-standard-4": (4, 16384),
    "n2-standard-2": (2, 8192),
    "n2-standard-4": (4, 16384),
}
DEFAULT_IMAGES: tuple[tuple[str, str, str | None], ...] = (
    # (project, name, family)
    ("debian-cloud", "debian-12-bookworm-v20240110", "debian-12"),
    ("my-project", "infra-etcd-v1", "infra-etcd"),
    ("my-project", "infra-prometheus-v1", "infra-prometheus"),
)

NAME_RE = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
MAX_RESULTS = 500
METADATA_VALUE_MAX = 256 * 1024

#: Methods whose faults may happen after the change was applied (a lost response).
MUTATING = {"instances.insert", "instances.delete"}


class ApiError(Exception):
    """An HTTP error answer in Google's JSON error shape."""

    def __init__(self, code: int, reason: str, message: str, *, domain: str = "global") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.domain = domain
        self.after = False  # for queued failures: answer with it after the call took effect
        self.retry_after: float | None = None  # for queued failures: the Retry-After header sent

    def body(self) -> JsonDict:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [{"message": self.message, "domain": self.domain, "reason": self.reason}],
            }
        }


def not_found(resource: str) -> ApiError:
    return ApiError(404, "notFound", f"The resource '{resource}' was not found")


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid", message)


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}-00:00"


@dataclass
class Operation:
    project: str
    zone: str
    name: str
    id: int
    kind: str  # "insert" | "delete"
    target: str
    target_id: int
    accepted: float  # monotonic
    done_at: float
    wall: float
    request_id: str | None
    error: JsonDict | None = None
    finished: bool = False
    resource: str = "instances"  # "images" for a global operation on an image

    def status(self, now: float) -> str:
        if now >= self.done_at:
            return "DONE"
        if now < self.accepted + (self.done_at - self.accepted) / 3:
            return "PENDING"
        return "RUNNING"

    def to_json(self, now: float) -> JsonDict:
        status = self.status(now)
        zone_url = f"{API}/projects/{self.project}/" + (f"zones/{self.zone}" if self.zone else "global")
        body: JsonDict = {
            "kind": "compute#operation",
            "id": str(self.id),
            "name": self.name,
            "operationType": self.kind,
            "targetLink": f"{zone_url}/{self.resource}/{self.target}",
            "targetId": str(self.target_id),
            "status": status,
            "user": "fake@example.com",
            "progress": 100 if status == "DONE" else 0,
            "insertTime": _rfc3339(self.wall),
            "selfLink": f"{zone_url}/operations/{self.name}",
        }
        if self.zone:
            body["zone"] = zone_url
        if status != "PENDING":
            body["startTime"] = _rfc3339(self.wall)
        if status == "DONE":
            body["endTime"] = _rfc3339(self.wall + (self.done_at - self.accepted))
            if self.error is not None:
                body["error"] = self.error
                body["httpErrorStatusCode"] = 403 if self.error["errors"][0]["code"] == "QUOTA_EXCEEDED" else 503
                body["httpErrorMessage"] = "FORBIDDEN" if body["httpErrorStatusCode"] == 403 else "UNAVAILABLE"
        return body


@dataclass
class FakeInstance:
    project: str
    zone: str
    name: str
    id: int
    labels: dict[str, str]
    machine_type: str
    address: str
    created: float  # monotonic
    wall: float
    ready_at: float  # when PROVISIONING ends
    boot_delay: float
    body: JsonDict = field(default_factory=dict)  # other fields as inserted (disks, metadata ...)
    status_override: str | None = None

    def status(self, now: float) -> str:
        if self.status_override:
            return self.status_override
        if now < self.ready_at:
            return "PROVISIONING"
        if now < self.ready_at + self.boot_delay:
            return "STAGING"
        return "RUNNING"

    def to_json(self, now: float) -> JsonDict:
        zone_url = f"{API}/projects/{self.project}/zones/{self.zone}"
        region = self.zone.rsplit("-", 1)[0]
        nics = self.body.get("networkInterfaces") or [{}]
        nic = dict(nics[0])
        nic.update(
            {
                "kind": "compute#networkInterface",
                "name": "nic0",
                "networkIP": self.address,
                "network": _expand(nic.get("network") or "global/networks/default", self.project),
                "subnetwork": _expand(nic.get("subnetwork") or f"regions/{region}/subnetworks/default", self.project),
            }
        )
        disks = []
        for i, disk in enumerate(self.body.get("disks") or []):
            disks.append(
                {
                    "kind": "compute#attachedDisk",
                    "type": "PERSISTENT",
                    "mode": "READ_WRITE",
                    "source": f"{zone_url}/disks/{self.name}" + ("" if i == 0 else f"-{i}"),
                    "deviceName": disk.get("deviceName") or "persistent-disk-0",
                    "index": i,
                    "boot": bool(disk.get("boot")),
                    "autoDelete": bool(disk.get("autoDelete")),
                    "interface": "SCSI",
                }
            )
        metadata = dict(self.body.get("metadata") or {})
        metadata["kind"] = "compute#metadata"
        metadata["fingerprint"] = base64.b64encode(
            hashlib.sha256(json.dumps(metadata.get("items", []), sort_keys=True).encode()).digest()[:8]
        ).decode()
        out: JsonDict = {
            "kind": "compute#instance",
            "id": str(self.id),
            "creationTimestamp": _rfc3339(self.wall),
            "name": self.name,
            "machineType": f"{zone_url}/machineTypes/{self.machine_type}",
            "status": self.status(now),
            "zone": zone_url,
            "networkInterfaces": [nic],
            "disks": disks,
            "metadata": metadata,
            "labelFingerprint": "42WmSpB8rSM=",
            "selfLink": f"{zone_url}/instances/{self.name}",
            "cpuPlatform": "Intel Broadwell",
            "deletionProtection": False,
            "fingerprint": "fakeFingerprint=",
        }
        if self.labels:
            out["labels"] = dict(self.labels)
        for key in ("serviceAccounts", "tags", "scheduling", "description"):
            if key in self.body:
                out[key] = self.body[key]
        return out


def _expand(ref: str, project: str) -> str:
    if ref.startswith("https://"):
        return ref
    if ref.startswith("projects/"):
        return f"{API}/{ref}"
    return f"{API}/projects/{project}/{ref}"


def _strip_api(ref: str) -> str:
    for prefix in (API + "/", "https://compute.googleapis.com/compute/v1/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref


class FakeCompute:
    """The fake's state and its HTTP server. See the module docstring.

    Use as a context manager (``with FakeCompute() as fake: fake.url``) or ``start()``/``stop()``.
    Every knob is also settable at run time through ``configure`` (or ``POST /_admin/config``).
    """

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
    ) -> None:
        self.host = host
        self.port = port
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

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeCompute:
        handler = type("Handler", (_Handler,), {"fake": self})
        server = ThreadingHTTPServer((self.host, self.port), handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self.port = server.server_address[1]
        self.storage.base_url = self.url
        self._thread = threading.Thread(target=server.serve_forever, name="gcp-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> FakeCompute:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- admin -------------------------------------------------------------------------------

    def configure(self, **settings: Any) -> None:
        """Change knobs at run time (same names as the constructor's)."""
        allowed = {
            "fault_rate",
            "fault_codes",
            "fault_after_share",
            "op_delay",
            "boot_delay",
            "wait_max",
            "quota_instances",
            "stockout_zones",
            "seed",
            "request_id_ttl",
            "latency",
        }
        unknown = set(settings) - allowed
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        with self.lock:
            for key, value in settings.items():
                if key == "seed":
                    self.rng = random.Random(value)
                elif key == "stockout_zones":
                    self.stockout_zones = set(value)
                elif key == "fault_codes":
                    self.fault_codes = [int(c) for c in value]
                else:
                    setattr(self, key, value)

    def call_counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self.calls)

    def reset_calls(self) -> None:
        with self.lock:
            self.calls.clear()

    def queue_failure(self, method: str, code: int, reason: str, message: str, *, after: bool = False,
                      retry_after: float | None = None) -> None:
        """Answer the next call of ``method`` with this error; ``after``: once the call took effect;
        ``retry_after``: with that ``Retry-After`` header (seconds)."""
        with self.lock:
            err = ApiError(code, reason, message)
            err.after = after
            err.retry_after = retry_after
            self.failures.setdefault(method, []).append(err)

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

    def add_instance(
        self,
        project: str,
        zone: str,
        name: str,
        labels: Mapping[str, str] | None = None,
        *,
        status: str | None = "RUNNING",
        machine_type: str = "e2-small",
    ) -> JsonDict:
        """Put an instance there directly (no operation), as another tool or person would."""
        with self.lock:
            self._check_zone(project, zone)
            if (project, zone, name) in self.instances:
                raise ApiError(
                    409, "alreadyExists", f"The resource '{_instance_path(project, zone, name)}' already exists"
                )
            now = time.monotonic()
            inst = self._new_instance(project, zone, name, dict(labels or {}), machine_type, {}, now, now)
            inst.status_override = status
            self.instances[(project, zone, name)] = inst
            return inst.to_json(now)

    def remove_instance(self, project: str, zone: str, name: str) -> None:
        """Delete an instance at once, out of band (no operation)."""
        with self.lock:
            if self.instances.pop((project, zone, name), None) is None:
                raise not_found(_instance_path(project, zone, name))

    def set_status(self, project: str, zone: str, name: str, status: str | None) -> None:
        with self.lock:
            inst = self.instances.get((project, zone, name))
            if inst is None:
                raise not_found(_instance_path(project, zone, name))
            inst.status_override = status

    def all_instances(self) -> list[JsonDict]:
        with self.lock:
            self._tick()
            now = time.monotonic()
            return [i.to_json(now) for i in self.instances.values()]

    # -- internals ---------------------------------------------------------------------------

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

    # -- API methods (called by the handler under the lock) ----------------------------------

    def api_insert(self, project: str, zone: str, query: Mapping[str, str], body: JsonDict) -> JsonDict:
        self._check_zone(project, zone)
        request_id = query.get("requestId")
        replayed = self._replayed(project, request_id)
        if replayed is not None:
            return replayed
        now = time.monotonic()
        name = str(body.get("name") or "")
        if not NAME_RE.match(name):
            raise invalid(
                f"Invalid value for field 'resource.name': '{name}'. "
                "Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'"
            )
        labels = _checked_labels(body)
        mt_ref = _strip_api(str(body.get("machineType") or ""))
        m = re.fullmatch(r"(?:projects/[^/]+/)?zones/([^/]+)/machineTypes/([^/]+)", mt_ref)
        if not m:
            raise invalid(f"Invalid value for field 'resource.machineType': '{body.get('machineType')}'.")
        if m.group(1) != zone:
            raise invalid(
                f"Invalid value for field 'resource.machineType': '{body.get('machineType')}'. "
                f"Machine type must be in zone '{zone}'."
            )
        if m.group(2) not in self.machine_types:
            raise invalid(
                f"Invalid value for field 'resource.machineType': '{body.get('machineType')}'. "
                f"Machine type with name '{m.group(2)}' does not exist in zone '{zone}'."
            )
        disks = body.get("disks") or []
        boot = [d for d in disks if d.get("boot")]
        if len(boot) != 1:
            raise invalid("Invalid value for field 'resource.disks': exactly one boot disk is required.")
        source = (boot[0].get("initializeParams") or {}).get("sourceImage")
        if not source:
            raise invalid("Invalid value for field 'resource.disks[0].initializeParams.sourceImage': ''.")
        self._resolve_image(project, str(source))
        for item in (body.get("metadata") or {}).get("items") or []:
            if len(str(item.get("value", ""))) > METADATA_VALUE_MAX:
                raise invalid(
                    f"Invalid value for field 'resource.metadata': metadata value for key "
                    f"'{item.get('key')}' exceeds {METADATA_VALUE_MAX} bytes."
                )
        key = (project, zone, name)
        if key in self.instances:
            raise ApiError(409, "alreadyExists", f"The resource '{_instance_path(project, zone, name)}' already exists")
        error: JsonDict | None = None
        region = zone.rsplit("-", 1)[0]
        if zone in self.stockout_zones:
            error = _op_error(
                "ZONE_RESOURCE_POOL_EXHAUSTED",
                f"The zone 'projects/{project}/zones/{zone}' does not have enough resources available "
                "to fulfill the request. Try a different zone, or try again later.",
            )
        elif self.quota_instances is not None:
            used = sum(1 for (p, _, _) in self.instances if p == project)
            if used >= self.quota_instances:
                error = _op_error(
                    "QUOTA_EXCEEDED",
                    f"Quota 'INSTANCES' exceeded.  Limit: {float(self.quota_instances)} in region {region}.",
                )
        fixed = str(((body.get("networkInterfaces") or [{}])[0]).get("networkIP") or "")
        if self.boots and fixed and not fixed.startswith("127."):
            raise invalid(
                f"Invalid value for field 'resource.networkInterfaces[0].networkIP': '{fixed}'. The emulator "
                "gives instances loopback addresses only (its subnetwork is 127.128.0.0/20): use a loopback "
                "address_range, e.g. INFRA_GCP_ADDRESS_RANGE=127.128.15.0/28."
            )
        if error is None and fixed:
            holder = next((i for i in self.instances.values() if i.project == project and i.address == fixed), None)
            if holder is not None:
                error = _op_error(
                    "IP_IN_USE_BY_ANOTHER_RESOURCE",
                    f"IP '{fixed}' is already being used by another resource "
                    f"'{_instance_path(project, holder.zone, holder.name)}'.",
                )
        target_id = next(self.ids)
        op = self._new_op(project, zone, "insert", name, target_id, request_id)
        if error is not None:
            op.error = error
        else:
            inst = self._new_instance(
                project, zone, name, dict(labels), m.group(2), body, now, op.done_at, address=fixed or None
            )
            inst.id = target_id
            self.instances[key] = inst
        return op.to_json(now)

    def _resolve_image(self, project: str, source: str) -> JsonDict:
        ref = _strip_api(source)
        m = re.fullmatch(r"(?:projects/([^/]+)/)?global/images/(?:(family)/)?([^/]+)", ref)
        if not m:
            raise invalid(f"Invalid value for field 'resource.disks[0].initializeParams.sourceImage': '{source}'.")
        image_project = m.group(1) or project
        if m.group(2):
            image = self.api_image_family(image_project, m.group(3))
        else:
            image = self.api_image(image_project, m.group(3))
        if image.get("status") != "READY":
            raise ApiError(400, "resourceNotReady",
                           f"The resource 'projects/{image_project}/global/images/{image['name']}' is not ready")
        return image

    def api_get(self, project: str, zone: str, name: str) -> JsonDict:
        self._check_zone(project, zone)
        inst = self.instances.get((project, zone, name))
        if inst is None:
            raise not_found(_instance_path(project, zone, name))
        return inst.to_json(time.monotonic())

    def api_delete(self, project: str, zone: str, name: str, query: Mapping[str, str]) -> JsonDict:
        self._check_zone(project, zone)
        request_id = query.get("requestId")
        replayed = self._replayed(project, request_id)
        if replayed is not None:
            return replayed
        now = time.monotonic()
        inst = self.instances.get((project, zone, name))
        if inst is None:
            raise not_found(_instance_path(project, zone, name))
        inst.status_override = "STOPPING"
        op = self._new_op(project, zone, "delete", name, inst.id, request_id)
        return op.to_json(now)

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

    def api_list(self, project: str, zone: str, query: Mapping[str, str]) -> JsonDict:
        self._check_zone(project, zone)
        filt = query.get("filter", "")
        insts = self._filtered(project, [zone], filt)
        page, nxt = self._page(query, insts, filt + "|" + zone)
        now = time.monotonic()
        body: JsonDict = {
            "kind": "compute#instanceList",
            "id": f"projects/{project}/zones/{zone}/instances",
            "selfLink": f"{API}/projects/{project}/zones/{zone}/instances",
        }
        if page:
            body["items"] = [i.to_json(now) for i in page]
        if nxt:
            body["nextPageToken"] = nxt
        return body

    def api_aggregated(self, project: str, query: Mapping[str, str]) -> JsonDict:
        filt = query.get("filter", "")
        insts = self._filtered(project, self.zones, filt)
        insts.sort(key=lambda i: (self.zones.index(i.zone), i.id))
        page, nxt = self._page(query, insts, filt + "|aggregated")
        now = time.monotonic()
        items: JsonDict = {}
        for zone in self.zones:
            scope = f"zones/{zone}"
            mine = [i.to_json(now) for i in page if i.zone == zone]
            if mine:
                items[scope] = {"instances": mine}
            else:
                items[scope] = {
                    "warning": {
                        "code": "NO_RESULTS_ON_PAGE",
                        "message": f"There are no results for scope '{scope}' on this page.",
                        "data": [{"key": "scope", "value": scope}],
                    }
                }
        body: JsonDict = {
            "kind": "compute#instanceAggregatedList",
            "id": f"projects/{project}/aggregated/instances",
            "items": items,
            "selfLink": f"{API}/projects/{project}/aggregated/instances",
        }
        if nxt:
            body["nextPageToken"] = nxt
        return body

    def api_operation(self, project: str, zone: str, name: str) -> Operation:
        self._check_zone(project, zone)
        op = self.operations.get((project, zone, name))
        if op is None:
            raise not_found(f"projects/{project}/zones/{zone}/operations/{name}")
        return op

    def wait_operation(self, project: str, zone: str, name: str) -> JsonDict:
        """Block (releasing the lock) until the operation is DONE or ``wait_max`` has passed."""
        with self.cond:
            return self._wait(self.api_operation(project, zone, name))

    def _wait(self, op: Operation) -> JsonDict:
        """``op`` once DONE or after ``wait_max`` (called holding ``cond``, which waiting releases)."""
        deadline = time.monotonic() + self.wait_max
        while True:
            now = time.monotonic()
            if op.status(now) == "DONE" or now >= deadline or self.closing:
                self._tick()
                return op.to_json(now)
            self.cond.wait(timeout=min(op.done_at, deadline) - now + 0.001)

    def emulator_api(self, path: str, query: Mapping[str, str]) -> Any:
        """``/_emulator/info`` and ``/_emulator/sd/{project}`` (see the module docstring)."""
        if path == "/_emulator/info":
            return {"emulator": "gce", "boots": self.boots}
        m = re.fullmatch(r"/_emulator/sd/([^/]+)", path)
        if not m:
            raise not_found(path)
        port = int(query.get("port", "80"))
        with self.lock:
            self._tick()
            found = self._filtered(m.group(1), self.zones, query.get("filter", ""))
            now = time.monotonic()
            return [
                {"targets": [f"{i.address}:{port}"],
                 "labels": {**{k.replace("-", "_"): v for k, v in i.labels.items()}, "__meta_gce_zone": i.zone,
                            "__meta_gce_instance_name": i.name}}
                for i in found if i.status(now) == "RUNNING"
            ]

    def serial_output(self, project: str, zone: str, name: str) -> JsonDict:
        """``instances.getSerialPortOutput``: what the emulator's machine logged (empty when bare)."""
        self._check_zone(project, zone)
        inst = self.instances.get((project, zone, name))
        if inst is None:
            raise not_found(_instance_path(project, zone, name))
        text = self.console(inst) if self.console is not None else ""
        return {"kind": "compute#serialPortOutput", "contents": text, "start": "0", "next": str(len(text)),
                "selfLink": f"{API}/{_instance_path(project, zone, name)}/serialPort"}

    def api_machine_type(self, project: str, zone: str, name: str) -> JsonDict:
        self._check_zone(project, zone)
        if name not in self.machine_types:
            raise not_found(f"projects/{project}/zones/{zone}/machineTypes/{name}")
        return self._machine_type_json(project, zone, name)

    def _machine_type_json(self, project: str, zone: str, name: str) -> JsonDict:
        cpus, mem = self.machine_types[name]
        return {
            "kind": "compute#machineType",
            "id": str(abs(hash(name)) % 10**10),
            "name": name,
            "description": f"{cpus} vCPU, {mem / 1024:g} GB RAM",
            "guestCpus": cpus,
            "memoryMb": mem,
            "zone": zone,
            "selfLink": f"{API}/projects/{project}/zones/{zone}/machineTypes/{name}",
        }

    def api_machine_types(self, project: str, zone: str, query: Mapping[str, str]) -> JsonDict:
        self._check_zone(project, zone)
        names = sorted(self.machine_types)
        page, nxt = self._page(query, names, "mt|" + zone)
        body: JsonDict = {
            "kind": "compute#machineTypeList",
            "items": [self._machine_type_json(project, zone, n) for n in page],
        }
        if nxt:
            body["nextPageToken"] = nxt
        return body

    def api_image(self, project: str, name: str) -> JsonDict:
        image = self.images.get((project, name))
        if image is None:
            raise not_found(f"projects/{project}/global/images/{name}")
        return _image_json(image)

    def api_image_family(self, project: str, family: str) -> JsonDict:
        matches = [img for (p, _), img in self.images.items() if p == project and img.get("family") == family
                   and _image_json(img)["status"] == "READY"]
        if not matches:
            raise not_found(f"projects/{project}/global/images/family/{family}")
        return _image_json(max(matches, key=lambda img: str(img["creationTimestamp"]) + str(img["name"])))

    def api_images(self, project: str, query: Mapping[str, str]) -> JsonDict:
        filt = query.get("filter", "")
        try:
            pred = compile_filter(filt)
        except FilterError as exc:
            raise invalid(f"Invalid value for field 'filter': '{filt}'. {exc}") from None
        items = [_image_json(img) for (p, _), img in sorted(self.images.items()) if p == project]
        page, nxt = self._page(query, [i for i in items if pred(i)], filt)
        body: JsonDict = {"kind": "compute#imageList", "id": f"projects/{project}/global/images",
                          "selfLink": f"{API}/projects/{project}/global/images"}
        if page:
            body["items"] = page
        if nxt:
            body["nextPageToken"] = nxt
        return body

    def api_image_insert(self, project: str, query: Mapping[str, str], body: JsonDict) -> JsonDict:
        """``images.insert`` from ``rawDisk.source``: a tar.gz in the fake's Cloud Storage.

        PENDING until its global operation is DONE, then READY; FAILED (with the operation's
        error) when the object is missing or is not a gzipped tarball holding ``disk.raw``.
        """
        request_id = query.get("requestId")
        replayed = self._replayed(project, request_id)
        if replayed is not None:
            return replayed
        now = time.monotonic()
        name = str(body.get("name") or "")
        if not NAME_RE.match(name):
            raise invalid(f"Invalid value for field 'resource.name': '{name}'.")
        labels = _checked_labels(body)
        family = body.get("family")
        if family is not None and not NAME_RE.match(str(family)):
            raise invalid(f"Invalid value for field 'resource.family': '{family}'.")
        source = str((body.get("rawDisk") or {}).get("source") or "")
        m = re.fullmatch(r"https://storage\.googleapis\.com/([^/]+)/(.+)", source)
        if not m:
            raise invalid(f"Invalid value for field 'resource.rawDisk.source': '{source}'. "
                          "Use https://storage.googleapis.com/BUCKET/OBJECT.")
        if (project, name) in self.images:
            raise ApiError(409, "alreadyExists",
                           f"The resource 'projects/{project}/global/images/{name}' already exists")
        target_id = next(self.ids)
        op = self._new_op(project, "", "insert", name, target_id, request_id, resource="images")
        error, disk_bytes = _raw_disk(self.storage.get(m.group(1), m.group(2)), source)
        if error is not None:
            op.error = _op_error("INVALID_FIELD_VALUE", error)
            return op.to_json(now)
        obj = self.storage.get(m.group(1), m.group(2))
        assert obj is not None
        image: JsonDict = {
            "kind": "compute#image", "id": str(target_id), "name": name,
            "selfLink": f"{API}/projects/{project}/global/images/{name}",
            "creationTimestamp": _rfc3339(time.time()), "sourceType": "RAW",
            "rawDisk": {"source": source, "containerType": "TAR"},
            "archiveSizeBytes": str(len(obj.data)),
            "diskSizeGb": str(max(1, -(-disk_bytes // (1 << 30)))),
            "_ready_at": op.done_at,
        }
        if labels:
            image["labels"] = dict(labels)
        if family:
            image["family"] = family
        if body.get("description"):
            image["description"] = body["description"]
        self.images[(project, name)] = image
        return op.to_json(now)

    def api_image_delete(self, project: str, name: str, query: Mapping[str, str]) -> JsonDict:
        replayed = self._replayed(project, query.get("requestId"))
        if replayed is not None:
            return replayed
        now = time.monotonic()
        image = self.images.get((project, name))
        if image is None:
            raise not_found(f"projects/{project}/global/images/{name}")
        op = self._new_op(project, "", "delete", name, int(image["id"]), query.get("requestId"), resource="images")
        image["_deleting"] = True
        return op.to_json(now)

    def api_global_operation(self, project: str, name: str) -> Operation:
        op = self.operations.get((project, "", name))
        if op is None:
            raise not_found(f"projects/{project}/global/operations/{name}")
        return op

    def wait_global_operation(self, project: str, name: str) -> JsonDict:
        with self.cond:
            return self._wait(self.api_global_operation(project, name))


def _checked_labels(body: JsonDict) -> JsonDict:
    """A resource's ``labels``, refused (400) as the API refuses bad ones."""
    labels = body.get("labels") or {}
    if not isinstance(labels, dict) or len(labels) > 64:
        raise invalid("Invalid value for field 'resource.labels': too many labels or not a map")
    for key, value in labels.items():
        if not LABEL_KEY_RE.match(str(key)) or not LABEL_VALUE_RE.match(str(value)):
            raise invalid(f"Invalid value for field 'resource.labels': label '{key}={value}' is not valid")
    return labels


def _image_json(image: JsonDict) -> JsonDict:
    """An image as the API shows it: status from its operation, private fields dropped."""
    out = {k: v for k, v in image.items() if not k.startswith("_")}
    if image.get("_deleting"):
        out["status"] = "DELETING"
    elif "_ready_at" in image:
        out["status"] = "READY" if time.monotonic() >= image["_ready_at"] else "PENDING"
    return out


def _raw_disk(obj: Any, source: str) -> tuple[str | None, int]:
    """(why the object cannot be imported, or None; the size of its ``disk.raw``).

    The emulator's extension: a LinuxKit YAML document (``.yml``) is accepted as the image
    itself, since the emulator boots from the document (what infra registers when no linuxkit
    is installed). GCE itself accepts only the tarball.
    """
    import gzip
    import io
    import tarfile

    if obj is None:
        return f"The resource '{source}' of type 'storage object' was not found.", 0
    if obj.name.endswith(".yml"):
        import yaml

        try:
            doc = yaml.safe_load(obj.data)
        except yaml.YAMLError as exc:
            return f"'{source}' is not a LinuxKit YAML document: {exc}", 0
        if not isinstance(doc, dict) or "kernel" not in doc:
            return f"'{source}' is not a LinuxKit YAML document (no kernel)", 0
        return None, 1 << 30
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(obj.data)) as gz, tarfile.open(fileobj=gz, mode="r|") as tar:
            first = next(iter(tar), None)
    except (OSError, tarfile.TarError, EOFError) as exc:
        return f"'{source}' is not a gzip-compressed tar archive: {exc}", 0
    if first is None or first.name != "disk.raw":
        return f"'{source}': the archive must hold one file named disk.raw", 0
    return None, first.size


def _instance_path(project: str, zone: str, name: str) -> str:
    return f"projects/{project}/zones/{zone}/instances/{name}"


def _op_error(code: str, message: str) -> JsonDict:
    return {"errors": [{"code": code, "message": message}]}


_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"/compute/v1/projects/([^/]+)/zones/([^/]+)/instances"), "instances.insert"),
    ("GET", re.compile(r"/compute/v1/projects/([^/]+)/zones/([^/]+)/instances"), "instances.list"),
    ("GET", re.compile(r"/compute/v1/projects/([^/]+)/aggregated/instances"), "instances.aggregatedList"),
    ("GET", re.compile(r"/compute/v1/projects/([^/]+)/zones/([^/]+)/instances/([^/]+)"), "instances.get"),
    ("GET", re.compile(r"/compute/v1/projects/([^/]+)/zones/([^/]+)/instances/([^/]+)/serialPort"),
     "instances.getSerialPortOutput"),
    ("DELETE", re.compile(r"/compute/v1/projects/([^/]+)/zones/([^/]+)/instances/([^/]+)"), "instances.delete"),
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


class _Handler(BaseHTTPRequestHandler):
    fake: FakeCompute
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
                self._send(200, self._admin(verb, parts.path, body))
            except ApiError as exc:
                self._send(exc.code, exc.body())
            except (ValueError, KeyError, TypeError) as exc:
                self._send(400, invalid(str(exc)).body())
            return
        for route_verb, pattern, method in _ROUTES:
            m = pattern.fullmatch(parts.path)
            if m and route_verb == verb:
                self._api(method, m.groups(), query, body)
                return
        self._send(404, not_found(parts.path).body())

    def _api(self, method: str, args: Sequence[str], query: Mapping[str, str], body: JsonDict) -> None:
        fake = self.fake
        if fake.latency:
            time.sleep(fake.latency)  # outside the lock: concurrent requests overlap, as for real
        with fake.lock:
            fake.calls[method] = fake.calls.get(method, 0) + 1
            queued = fake.failures.get(method)
            fault: int | None = None
            after = False
            if queued:
                err = queued.pop(0)
                if not err.after:
                    extra = {"Retry-After": f"{err.retry_after:g}"} if err.retry_after is not None else None
                    self._send(err.code, err.body(), extra)
                    return
                fault, after = err.code, True
            elif fake.fault_rate and fake.rng.random() < fake.fault_rate:
                fault = fake.rng.choice(fake.fault_codes)
                after = method in MUTATING and fake.rng.random() < fake.fault_after_share
            if fault is not None and not after:
                self._fault(fault)
                return
            try:
                if method == "zoneOperations.wait":
                    result = fake.wait_operation(*args)
                elif method == "globalOperations.wait":
                    result = fake.wait_global_operation(*args)
                else:
                    fake._tick()
                    result = self._call(method, args, query, body)
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

    def _fault(self, code: int) -> None:
        if code == 429:
            err = ApiError(429, "rateLimitExceeded", "Rate Limit Exceeded", domain="usageLimits")
            self._send(429, err.body(), {"Retry-After": "0"})
        else:
            err = ApiError(code, "backendError", "The service is currently unavailable.")
            self._send(code, err.body())

    def _call(self, method: str, args: Sequence[str], query: Mapping[str, str], body: JsonDict) -> JsonDict:
        fake = self.fake
        if method == "instances.insert":
            return fake.api_insert(args[0], args[1], query, body)
        if method == "instances.list":
            return fake.api_list(args[0], args[1], query)
        if method == "instances.aggregatedList":
            return fake.api_aggregated(args[0], query)
        if method == "instances.get":
            return fake.api_get(*args)
        if method == "instances.getSerialPortOutput":
            return fake.serial_output(*args)
        if method == "instances.delete":
            return fake.api_delete(args[0], args[1], args[2], query)
        if method == "zoneOperations.get":
            return fake.api_operation(*args).to_json(time.monotonic())
        if method == "machineTypes.get":
            return fake.api_machine_type(*args)
        if method == "machineTypes.list":
            return fake.api_machine_types(args[0], args[1], query)
        if method == "images.getFromFamily":
            return fake.api_image_family(*args)
        if method == "images.get":
            return fake.api_image(*args)
        if method == "images.list":
            return fake.api_images(args[0], query)
        if method == "images.insert":
            return fake.api_image_insert(args[0], query, body)
        if method == "images.delete":
            return fake.api_image_delete(args[0], args[1], query)
        if method == "globalOperations.get":
            return fake.api_global_operation(*args).to_json(time.monotonic())
        raise not_found(method)

    def _admin(self, verb: str, path: str, body: JsonDict) -> JsonDict:
        fake = self.fake
        if path == "/_admin/health":
            return {"ok": True}
        if path == "/_admin/calls" and verb == "GET":
            return {"calls": fake.call_counts()}
        if path == "/_admin/calls/reset" and verb == "POST":
            fake.reset_calls()
            return {"calls": {}}
        if path == "/_admin/config" and verb == "POST":
            fake.configure(**body)
            return {"ok": True}
        if path == "/_admin/fail" and verb == "POST":
            fake.queue_failure(
                body["method"],
                int(body["code"]),
                body["reason"],
                body.get("message", "injected"),
                after=bool(body.get("after", False)),
                retry_after=float(body["retry_after"]) if body.get("retry_after") is not None else None,
            )
            return {"ok": True}
        if path == "/_admin/images" and verb == "POST":
            return fake.add_image(body["project"], body["name"], body.get("family"))
        if path == "/_admin/images" and verb == "GET":
            with fake.lock:
                return {"images": [_image_json(i) for i in fake.images.values()]}
        if path == "/_admin/buckets" and verb == "POST":
            return fake.storage.add_bucket(body["name"], body.get("project", "my-project"))
        if path == "/_admin/storage/calls" and verb == "GET":
            return {"calls": dict(fake.storage.calls)}
        if path == "/_admin/instances" and verb == "GET":
            return {"instances": fake.all_instances()}
        if path == "/_admin/instances" and verb == "POST":
            specs = body.get("instances", [body])
            created = [
                fake.add_instance(
                    s["project"],
                    s["zone"],
                    s["name"],
                    s.get("labels") or {},
                    status=s.get("status", "RUNNING"),
                    machine_type=s.get("machineType", "e2-small"),
                )
                for s in specs
            ]
            return {"instances": created}
        m = re.fullmatch(r"/_admin/instances/([^/]+)/([^/]+)/([^/]+)(/status)?", path)
        if m and verb == "DELETE" and not m.group(4):
            fake.remove_instance(m.group(1), m.group(2), m.group(3))
            return {"ok": True}
        if m and verb == "POST" and m.group(4):
            fake.set_status(m.group(1), m.group(2), m.group(3), body.get("status"))
            return {"ok": True}
        raise not_found(path)
