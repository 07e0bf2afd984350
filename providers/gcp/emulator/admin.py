"""The GCE emulator's faults and admin API: knobs, injected failures, out-of-band changes.

:class:`AdminApi` holds what tests and demos use and the real API has not: ``configure`` (fault
rate and codes, delays, quotas, stockouts, latency), queued failures (``queue_failure``) and the
decision of which fault a call gets (:meth:`AdminApi.fault_for`), calls counted per method,
instances put or removed out of band, and the ``/_admin`` and ``/_emulator`` endpoints.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Mapping
from typing import Any

from providers.gcp.emulator.base import ComputeState
from providers.gcp.emulator.resources import (
    MUTATING,
    ApiError,
    JsonDict,
    _image_json,
    _instance_path,
    not_found,
)


class AdminApi(ComputeState):
    """Faults, counters and the admin endpoints."""

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

    def admin(self, verb: str, path: str, body: JsonDict) -> JsonDict:
        """The ``/_admin/...`` API (see the compute module's docstring); no faults, not counted."""
        fake = self
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

    def fault_for(self, method: str) -> tuple[ApiError | None, int | None, bool]:
        """Under the lock: count the call, then what it gets: an error to answer at once (a queued
        one), or a fault code and whether it comes ``after`` the call took effect (a lost answer)."""
        self.calls[method] = self.calls.get(method, 0) + 1
        queued = self.failures.get(method)
        if queued:
            err = queued.pop(0)
            if not err.after:
                return err, None, False
            return None, err.code, True
        if self.fault_rate and self.rng.random() < self.fault_rate:
            code = self.rng.choice(self.fault_codes)
            return None, code, method in MUTATING and self.rng.random() < self.fault_after_share
        return None, None, False
