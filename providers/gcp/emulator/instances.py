"""The GCE emulator's instances API: instances, zone operations, machine types.

``instances.insert/get/list/aggregatedList/delete/getSerialPortOutput``, ``zoneOperations.get/wait``
and ``machineTypes.get/list``, as :class:`InstancesApi` over the shared
:class:`~providers.gcp.emulator.base.ComputeState`. Called by the HTTP handler under the lock.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

from providers.gcp.emulator.images import ImagesApi
from providers.gcp.emulator.resources import (
    API,
    METADATA_VALUE_MAX,
    NAME_RE,
    ApiError,
    JsonDict,
    Operation,
    _checked_labels,
    _instance_path,
    _op_error,
    _strip_api,
    invalid,
    label_fingerprint,
    not_found,
)


class InstancesApi(ImagesApi):
    """Instances and the zone operations that create and delete them (an instance boots an image)."""

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
        if self.boots and fixed and not fixed.startswith(f"{self.address_prefix}."):
            raise invalid(
                f"Invalid value for field 'resource.networkInterfaces[0].networkIP': '{fixed}'. The emulator "
                f"gives instances addresses of its subnetwork {self.address_prefix}.0.0/20 only: use an "
                f"address_range in it, e.g. INFRA_GCP_ADDRESS_RANGE={self.address_prefix}.15.0/28 (it exports one)."
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

    def api_set_labels(self, project: str, zone: str, name: str, query: Mapping[str, str],
                       body: JsonDict) -> JsonDict:
        """``instances.setLabels``: the labels replaced at once (the operation is DONE after op_delay),
        refused with 412 when ``labelFingerprint`` is not the instance's current one."""
        self._check_zone(project, zone)
        request_id = query.get("requestId")
        replayed = self._replayed(project, request_id)
        if replayed is not None:
            return replayed
        inst = self.instances.get((project, zone, name))
        if inst is None:
            raise not_found(_instance_path(project, zone, name))
        labels = _checked_labels(body)
        if body.get("labelFingerprint") != label_fingerprint(inst.labels):
            raise ApiError(412, "conditionNotMet", "Labels fingerprint either invalid or resource labels have changed")
        inst.labels = dict(labels)
        op = self._new_op(project, zone, "setLabels", name, inst.id, request_id)
        return op.to_json(time.monotonic())

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

