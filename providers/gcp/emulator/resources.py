"""The GCE emulator's values: API errors, operations, instances, and their JSON.

Shared by every part of the emulator (:mod:`providers.gcp.emulator.compute` and its API
modules); no state, no I/O. What the emulator reproduces of the real API is in
:mod:`providers.gcp.emulator.compute`'s docstring.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
MUTATING = {"instances.insert", "instances.delete", "instances.setLabels"}


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
        self.status: str | None = None  # the error's ``status`` (``UNAUTHENTICATED``), when it has one

    def body(self) -> JsonDict:
        error: JsonDict = {
            "code": self.code,
            "message": self.message,
            "errors": [{"message": self.message, "domain": self.domain, "reason": self.reason}],
        }
        if self.status:
            error["status"] = self.status
        return {"error": error}


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
            "labelFingerprint": label_fingerprint(self.labels),
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


def label_fingerprint(labels: Mapping[str, str]) -> str:
    """The fingerprint of a label set, as ``setLabels`` must be sent it (changes with the labels)."""
    digest = hashlib.sha256(json.dumps(dict(labels), sort_keys=True).encode()).digest()[:8]
    return base64.b64encode(digest).decode()


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

