"""The ``gcp`` provider: instances are Compute Engine VMs.

Built by the CLI through the ``infra.providers`` entry point (``GcpProvider.open``); called by the
engine for one stack. Every Compute call goes through one :class:`~providers.gcp.api.ComputeApi`
that honours the endpoint override (``INFRA_GCP_ENDPOINT``): reads as JSON over google-auth's
session, inserts and deletes through google-cloud-compute's ``*_unary`` methods (imported on the
first write), and this module waits on their operations itself with ``zoneOperations.wait``, so
no hidden default client ever talks to the real API.

How the protocol maps onto Compute Engine:

* ownership labels are GCE labels, set in the insert request itself (atomically);
* the instance name is the deterministic member name (``MemberSpec.name``), unique per zone, so a
  repeated insert answers 409 ``alreadyExists``, which create treats as success after reading the
  instance back (and after checking it carries the stack's labels);
* inserts carry a ``requestId`` derived (uuid5) from zone, name and an attempt number: a retried
  insert whose response was lost gets the same operation back. An answer that is an *old, finished*
  operation (the instance was deleted since, or that attempt failed) moves on to the next attempt
  number, so a replay never hides a needed create;
* observation is one paginated ``instances.list`` (one zone) or ``instances.aggregatedList``
  (several zones) with a label filter and ``maxResults=500``: ceil(N/500) calls for N instances;
* the member's files travel in the ``user-data`` metadata key as the JSON LinuxKit's metadata
  package reads on GCP;
* members are spread over the configured zones round-robin by ``MemberSpec.placement``;
* inserts, deletes and their operation waits are tried once per call: a throttled (429, with its
  ``Retry-After``) or failed answer is a TransientError that the executor retries under the one
  retry policy (:mod:`reconciler.kit.retry`), so attempts are never multiplied by a second retry loop
  here. Only reads that nothing above retries (a listing's pages, ``validate``'s lookups) are
  retried inside the call, under the same policy for up to ``retry_deadline`` seconds.

Instance ids are ``<zone>/<name>``: what Compute needs to address an instance.
"""

from __future__ import annotations

import builtins
import datetime
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import requests

from providers.gcp import errors
from providers.gcp import images as gcp_images
from providers.gcp.api import ComputeApi, JsonDict, done
from providers.gcp.config import ENDPOINT_ENV, SD_TOKEN_ENV, GcpConfig, parse_config
from reconciler.core.errors import ConfigError, InfraError, NotFoundError, PermanentError, TransientError
from reconciler.core.image import ImageRecord, ImageSpec
from reconciler.core.model import Instance, InstanceStatus, MemberSpec, Problem
from reconciler.kit import RetryPolicy, merged_labels, require_label_update, require_owned
from reconciler.kit.provider import Progress, SdConfig

if TYPE_CHECKING:
    from google.cloud import compute_v1

T = TypeVar("T")

#: Page size of list calls (the Compute API's maximum).
PAGE_SIZE = 500
#: GCE limits one metadata value to 256 KiB.
METADATA_VALUE_MAX = 256 * 1024
#: How many requestId attempts create makes before giving up on stale replays.
MAX_ATTEMPTS = 5
#: Namespace of the uuid5 request ids (fixed: ids must be the same in every process).
REQUEST_ID_NAMESPACE = uuid.UUID("8f0c6d1e-5b7a-4c1e-9a51-6a1d2f3b4c5d")
USER_DATA_KEY = "user-data"

_NAME_RE = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
_API_PREFIXES = ("https://www.googleapis.com/compute/v1/", "https://compute.googleapis.com/compute/v1/")

_STATUS: Mapping[str, InstanceStatus] = {
    "PROVISIONING": InstanceStatus.PENDING,
    "STAGING": InstanceStatus.PENDING,
    "RUNNING": InstanceStatus.RUNNING,
    "STOPPING": InstanceStatus.STOPPING,
    "SUSPENDING": InstanceStatus.STOPPING,
    "PENDING_STOP": InstanceStatus.STOPPING,
    "TERMINATED": InstanceStatus.STOPPED,
    "STOPPED": InstanceStatus.STOPPED,
    "SUSPENDED": InstanceStatus.STOPPED,
    "REPAIRING": InstanceStatus.UNKNOWN,
}


def request_id(zone: str, name: str, attempt: int = 0) -> str:
    """The insert ``requestId`` of attempt ``attempt`` for instance ``name`` in ``zone``.

    A UUID (what Compute requires) derived from the zone, the deterministic name (which holds the
    stack, group, member and spec hash) and the attempt number: identical in every process.
    """
    return str(uuid.uuid5(REQUEST_ID_NAMESPACE, f"{zone}/{name}#{attempt}"))


def label_filter(selector: Mapping[str, str]) -> str:
    """The Compute list filter selecting instances whose labels include all of ``selector``."""
    for key, value in selector.items():
        if not _LABEL_RE.match(key) or not key or not _LABEL_RE.match(value):
            raise PermanentError(f"gcp: cannot filter on label {key}={value!r}: not a valid GCE label")
    return " AND ".join(f'(labels.{k} = "{v}")' for k, v in sorted(selector.items()))


def image_source(image: str, project: str) -> str:
    """The ``sourceImage`` path for a stack's image reference.

    Accepted: ``family/F`` and a bare image name (in the stack's project), ``global/images/...``,
    ``projects/P/global/images/NAME`` or ``.../images/family/F``, or the full API URL.
    """
    ref = image
    for prefix in _API_PREFIXES:
        if ref.startswith(prefix):
            ref = ref[len(prefix) :]
    if m := re.fullmatch(r"family/([a-z][-a-z0-9]*)", ref):
        return f"projects/{project}/global/images/family/{m.group(1)}"
    if m := re.fullmatch(r"global/images/((?:family/)?[a-z][-a-z0-9]*)", ref):
        return f"projects/{project}/global/images/{m.group(1)}"
    if re.fullmatch(r"projects/[-a-z0-9.:]+/global/images/(?:family/)?[a-z][-a-z0-9]*", ref):
        return ref
    if _NAME_RE.match(ref):
        return f"projects/{project}/global/images/{ref}"
    raise ValueError(
        f"{image!r} is not an image reference: use 'family/NAME', an image name, or "
        "'projects/PROJECT/global/images/[family/]NAME'"
    )


def _last(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _timestamp(value: object) -> float | None:
    """An RFC 3339 ``creationTimestamp`` as Unix time (None when absent or unreadable)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class GcpProvider:
    """Compute Engine instances of one stack. See the module docstring."""

    name: ClassVar[str] = "gcp"
    #: LinuxKit images it boots (:mod:`providers.gcp.images`): ``linuxkit build --format gcp``,
    #: user-data read by the metadata package from GCE's metadata server.
    image_format: ClassVar[str] = "gcp"
    image_metadata: ClassVar[str] = "gcp"

    def __init__(self, config: GcpConfig, *, stack: str, endpoint: str | None = None) -> None:
        self.config = config
        self.stack = stack
        self.endpoint = endpoint
        self.api = ComputeApi(endpoint, timeout=config.request_timeout)
        self._emulator: bool | None = None  # whether the endpoint is infra's emulator (asked once)
        #: Reads that nothing above retries: throttling, 5xx and no answer are tried again for up to
        #: ``retry_deadline`` seconds (the deadline decides, not the number of attempts).
        self.read_retry = RetryPolicy(attempts=1000, base=0.1, cap=4.0, change_timeout=config.retry_deadline)

    @classmethod
    def open(cls, config: Mapping[str, Any], *, stack: str, state_dir: Path) -> GcpProvider:
        """Validate ``config`` and set up the way to Compute (credentials, one HTTP session).

        Raises ConfigError naming ``provider_config.<field>`` for bad settings, and
        PermanentError when no credentials are found (and no endpoint override is set).
        No API call is made here.
        """
        parsed = parse_config(config)
        endpoint = os.environ.get(ENDPOINT_ENV) or None
        if endpoint and not re.match(r"^https?://[^/\s]+/?$", endpoint):
            raise ConfigError(f"{ENDPOINT_ENV}={endpoint!r}: expected a URL like http://127.0.0.1:8089")
        return cls(parsed, stack=stack, endpoint=endpoint)

    def close(self) -> None:
        self.api.close()

    # -- helpers -----------------------------------------------------------------------------

    def _call(self, action: str, fn: Callable[..., T], **kwargs: Any) -> T:
        """One google-cloud-compute write, tried once, mapped to infra errors on failure.

        A throttled or failed answer is a TransientError (with the server's ``Retry-After``) that
        the executor retries under the one retry policy (:mod:`reconciler.kit.retry`), idempotently
        (requestId, then 409 adoption).
        """
        with errors.translate(action):
            return fn(retry=None, timeout=self.config.request_timeout, **kwargs)

    def member_config(self, spec: MemberSpec) -> GcpConfig:
        """The member's settings: the group's provider_config laid over the stack's."""
        if not spec.provider_config:
            return self.config
        merged = {**self.config.model_dump(exclude_unset=True), **dict(spec.provider_config)}
        return parse_config(merged, where=f"groups.{spec.group}.provider_config")

    def _get(self, zone: str, name: str) -> JsonDict | None:
        """The instance (the API's JSON), or None when it does not exist. Tried once."""
        try:
            return self.api.read(f"get instance {name} in {zone}", "instances.get",
                                 {"project": self.config.project, "zone": zone, "instance": name})
        except NotFoundError:
            return None

    def _wait(self, op: compute_v1.Operation, zone: str, action: str) -> compute_v1.Operation:
        """Wait until ``op`` is DONE, at most ``operation_deadline`` seconds.

        Raises TransientError when the deadline passes first (the change may still complete:
        the next ``list`` decides), or the mapped error of a failed operation.
        """
        deadline = time.monotonic() + self.config.operation_deadline
        while not done(op):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransientError(
                    f"gcp: {action}: operation {op.name} still {op.status.name} after "
                    f"{self.config.operation_deadline:g}s",
                    hint="it may still finish; the next plan shows what exists",
                )
            try:
                op = self.api.writes.operations.wait(
                    project=self.config.project,
                    zone=zone,
                    operation=op.name,
                    retry=None,
                    timeout=min(remaining, self.config.request_timeout + 130.0),
                )
            except requests.exceptions.Timeout:
                continue  # the deadline check above ends the loop
            except Exception as exc:  # a throttled wait is transient: the retried call replays its requestId
                raise errors.map_api_error(exc, action=f"{action}: wait for {op.name}") from exc
        return op

    @staticmethod
    def _to_instance(inst: JsonDict, zone: str | None = None) -> Instance:
        """An instance resource as the API's JSON gives it → infra's Instance."""
        zone = zone or _last(str(inst.get("zone", "")))
        status_name = str(inst.get("status") or "UNDEFINED")
        status = _STATUS.get(status_name, InstanceStatus.UNKNOWN)
        nics = inst.get("networkInterfaces") or []
        address = nics[0].get("networkIP") if nics else None
        detail = None
        if status is not InstanceStatus.RUNNING:
            message = inst.get("statusMessage")
            detail = f"GCE status {status_name}" + (f": {message}" if message else "")
        name = str(inst["name"])
        return Instance(
            id=f"{zone}/{name}",
            name=name,
            labels=dict(inst.get("labels") or {}),
            address=address or None,
            status=status,
            detail=detail,
            created_at=_timestamp(inst.get("creationTimestamp")),
        )

    def _instance_resource(self, spec: MemberSpec, cfg: GcpConfig, zone: str) -> compute_v1.Instance:
        from google.cloud import compute_v1

        machine_type = spec.machine_type or cfg.machine_type
        image = spec.image or cfg.image
        if not machine_type:
            raise ConfigError(f"groups.{spec.group}.machine_type: the gcp provider needs a machine type")
        if not image:
            raise ConfigError(f"groups.{spec.group}.image: the gcp provider needs an image (name or family)")
        try:
            source = image_source(image, cfg.project)
        except ValueError as exc:
            raise ConfigError(f"groups.{spec.group}.image: {exc}") from None
        user_data = json.dumps(spec.userdata(), sort_keys=True, separators=(",", ":"))
        if len(user_data.encode()) > METADATA_VALUE_MAX:
            raise PermanentError(
                f"gcp: the configuration of {spec.name} is {len(user_data.encode())} bytes; "
                f"GCE metadata values hold at most {METADATA_VALUE_MAX}"
            )
        region = zone.rsplit("-", 1)[0]
        nic = compute_v1.NetworkInterface(network=_network_path(cfg.network or "default", cfg.project))
        address = spec.address or self._fixed_address(spec, cfg)
        if address:
            nic.network_i_p = address
        if cfg.subnetwork:
            nic.subnetwork = _subnetwork_path(cfg.subnetwork, cfg.project, region)
        if cfg.external_ip:
            nic.access_configs = [compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")]
        resource = compute_v1.Instance(
            name=spec.name,
            labels=spec.labels,
            machine_type=f"zones/{zone}/machineTypes/{machine_type}",
            disks=[
                compute_v1.AttachedDisk(
                    boot=True,
                    auto_delete=True,
                    initialize_params=compute_v1.AttachedDiskInitializeParams(
                        source_image=source,
                        disk_size_gb=cfg.disk_size_gb,
                        disk_type=f"zones/{zone}/diskTypes/{cfg.disk_type}",
                    ),
                )
            ],
            network_interfaces=[nic],
            metadata=compute_v1.Metadata(items=[compute_v1.Items(key=USER_DATA_KEY, value=user_data)]),
        )
        if cfg.service_account:
            resource.service_accounts = [compute_v1.ServiceAccount(email=cfg.service_account, scopes=list(cfg.scopes))]
        if cfg.tags:
            resource.tags = compute_v1.Tags(items=list(cfg.tags))
        return resource

    @staticmethod
    def _fixed_address(spec: MemberSpec, cfg: GcpConfig) -> str | None:
        try:
            return cfg.address_of(spec.placement)
        except ValueError as exc:
            raise ConfigError(f"groups.{spec.group}.provider_config.address_range: {exc}") from None

    # -- images (reconciler.kit.provider.ImageStore) ------------------------------------------

    def find_image(self, image: ImageSpec) -> ImageRecord | None:
        """The image labelled ``infra-image=<digest>`` (one ``images.list``), or None."""
        return gcp_images.find(self, image)

    def push_image(self, image: ImageSpec, artefact: Path, progress: Progress) -> ImageRecord:
        """Upload to ``image_bucket`` and ``images.insert``, idempotent by digest (see images.py)."""
        return gcp_images.push(self, image, artefact, progress)

    def delete_image(self, record: ImageRecord) -> None:
        """Delete the image and its uploaded object; already gone is success."""
        gcp_images.delete(self, record)

    def accepts_documents(self) -> bool:
        """True against infra's GCE emulator (asked of an endpoint override only)."""
        return gcp_images.accepts_documents(self)

    # -- the protocol ------------------------------------------------------------------------

    def address_for(self, spec: MemberSpec) -> str | None:
        """The member's fixed internal IP when its group sets ``address_range``, else None.

        Deterministic (the (index+2)th address of the range), so it is known before the instance
        exists and is the same in every process; the instance is created with it as its
        ``networkIP``. A replacement of the member reuses the address, which the quorum policy's
        remove-before-add makes safe. Raises ConfigError when the member does not fit the range.
        """
        return self._fixed_address(spec, self.member_config(spec))

    def list(self, selector: Mapping[str, str]) -> list[Instance]:
        """Every instance whose labels include ``selector``, in the stack's zones.

        One ``instances.list`` (one zone) or ``instances.aggregatedList`` (several zones; any
        zone of the project) with a label filter and 500 results per page. Throttling and 5xx
        are retried page by page for up to ``retry_deadline`` seconds; after that a
        TransientError is raised and nothing is returned (never a partial listing).
        """
        filt = label_filter(selector)
        wanted = selector.items()
        out: list[Instance] = []
        zones = self.config.zones
        action = "list instances" + (f" in {zones[0]}" if len(zones) == 1 else "")
        project = {"project": self.config.project}
        query = {"filter": filt, "maxResults": PAGE_SIZE}
        if len(zones) == 1:
            for page in self.api.pages(action, "instances.list", {**project, "zone": zones[0]}, query,
                                       retry=self.read_retry):
                out.extend(self._to_instance(inst, zones[0]) for inst in page.get("items") or ())
        else:
            for page in self.api.pages(action, "instances.aggregatedList", project, query, retry=self.read_retry):
                for scope, scoped in (page.get("items") or {}).items():
                    out.extend(self._to_instance(inst, _last(scope)) for inst in scoped.get("instances") or ())
        # The server filtered already; check again so a lenient filter can never leak foreign VMs.
        return [i for i in out if wanted <= i.labels.items()]

    def create(self, spec: MemberSpec) -> Instance:
        """Insert the instance ``spec.name`` in its zone and wait for the operation.

        Idempotent: an existing instance of that name with the stack's labels (409
        ``alreadyExists``) is read back and returned. Raises QuotaError (quota), TransientError
        (throttling, stockout, operation deadline passed: the instance may exist, the next
        ``list`` decides), PermanentError (bad machine type or image, a foreign instance holding
        the name), ConfigError (bad group settings).
        """
        from google.cloud import compute_v1

        cfg = self.member_config(spec)
        zone = cfg.zone_for(spec.placement)
        resource = self._instance_resource(spec, cfg, zone)
        action = f"insert instance {spec.name} in {zone}"
        last: InfraError | None = None
        for attempt in range(MAX_ATTEMPTS):
            try:
                op = self._call(
                    action,
                    self.api.writes.instances.insert_unary,
                    request=compute_v1.InsertInstanceRequest(
                        project=cfg.project,
                        zone=zone,
                        instance_resource=resource,
                        request_id=request_id(zone, spec.name, attempt),
                    ),
                )
            except errors.AlreadyExists:
                return self._adopt(spec, zone)
            replayed = done(op)  # a fresh insert is never DONE at once: an old operation
            op = self._wait(op, zone, action)
            failure = errors.operation_error(op, action=action)
            if isinstance(failure, errors.AlreadyExists):
                return self._adopt(spec, zone)
            if failure is not None:
                if replayed:
                    last = failure
                    continue  # an earlier attempt's failure: try again with a fresh request id
                raise failure
            inst = self._get(zone, spec.name)
            if inst is not None:
                return self._to_instance(inst, zone)
            # DONE without error but no instance: a replay of an insert whose instance has since
            # been deleted (out of band). Insert again under the next request id.
            last = TransientError(f"gcp: {action}: the instance vanished after its insert finished")
        assert last is not None
        raise last

    def _adopt(self, spec: MemberSpec, zone: str) -> Instance:
        """The existing instance named ``spec.name``, if it is ours (the 409 path of create)."""
        inst = self._get(zone, spec.name)
        if inst is None:
            raise TransientError(f"gcp: instance {spec.name} in {zone} exists (409) but cannot be read yet")
        found = self._to_instance(inst, zone)
        if not found.owned_by(spec.stack):
            raise PermanentError(
                f"gcp: an instance named {spec.name} already exists in {zone} and does not carry "
                f"stack {spec.stack!r}'s labels; infra will not adopt it",
                hint="rename or delete that instance, or rename the stack",
            )
        return found

    def delete(self, instance: Instance) -> None:
        """Delete the instance and wait for the operation.

        Re-reads it first and refuses (PermanentError) when the live instance lacks this stack's
        ownership labels. An instance that is already gone is success. After a failed delete the
        instance is assumed to still exist.
        """
        zone, sep, name = instance.id.partition("/")
        if not sep or not _NAME_RE.match(name):
            raise PermanentError(f"gcp: {instance.id!r} is not a gcp instance id (<zone>/<name>)")
        current = self._get(zone, name)
        if current is None:
            return
        require_owned("gcp", self._to_instance(current, zone), self.stack)
        from google.cloud import compute_v1

        action = f"delete instance {name} in {zone}"
        try:
            op = self._call(
                action,
                self.api.writes.instances.delete_unary,
                request=compute_v1.DeleteInstanceRequest(
                    project=self.config.project,
                    zone=zone,
                    instance=name,
                    request_id=str(uuid.uuid4()),  # fresh per attempt: a replay must not skip a new instance
                ),
            )
        except NotFoundError:
            return
        op = self._wait(op, zone, action)
        failure = errors.operation_error(op, action=action)
        if failure is not None and not isinstance(failure, NotFoundError):
            raise failure

    def update_labels(self, instance: Instance, labels: Mapping[str, str]) -> Instance:
        """``instances.setLabels`` with the instance's current ``labelFingerprint``, then the
        instance as it is now. Re-reads it first and refuses an instance that is not this stack's,
        or a change of an ownership label; a fingerprint that changed meanwhile (412) is a
        TransientError, retried with a fresh read."""
        zone, sep, name = instance.id.partition("/")
        if not sep or not _NAME_RE.match(name):
            raise PermanentError(f"gcp: {instance.id!r} is not a gcp instance id (<zone>/<name>)")
        current = self._get(zone, name)
        if current is None:
            raise NotFoundError(f"gcp: instance {name} in {zone} is gone")
        require_label_update("gcp", self._to_instance(current, zone), labels, self.stack)
        from google.cloud import compute_v1

        action = f"set the labels of {name} in {zone}"
        op = self._call(
            action,
            self.api.writes.instances.set_labels_unary,
            request=compute_v1.SetLabelsInstanceRequest(
                project=self.config.project, zone=zone, instance=name, request_id=str(uuid.uuid4()),
                instances_set_labels_request_resource=compute_v1.InstancesSetLabelsRequest(
                    labels=merged_labels(current.get("labels") or {}, labels),
                    label_fingerprint=str(current.get("labelFingerprint") or "")),
            ),
        )
        op = self._wait(op, zone, action)
        failure = errors.operation_error(op, action=action)
        if failure is not None:
            raise failure
        after = self._get(zone, name)
        if after is None:
            raise NotFoundError(f"gcp: instance {name} in {zone} is gone")
        return self._to_instance(after, zone)

    def validate(self, members: Sequence[MemberSpec]) -> builtins.list[Problem]:
        """Problems found before anything is created; changes nothing.

        Checks each group's settings, that its zones are among the stack's (so ``list`` sees its
        instances), that names and user-data fit GCE's limits, and (one API call per distinct
        machine type and zone, and per image) that the machine types and images exist. Raises
        TransientError or PermanentError when the API itself cannot be asked.
        """
        problems: list[Problem] = []
        seen: set[tuple[str, str]] = set()
        machine_checks: dict[tuple[str, str], set[str]] = {}
        image_checks: dict[str, tuple[str, set[str]]] = {}
        for spec in members:
            group = f"groups.{spec.group}"

            def problem(where: str, message: str) -> None:
                key = (where, message)
                if key not in seen:
                    seen.add(key)
                    problems.append(Problem(field=where, message=message))

            try:
                cfg = self.member_config(spec)
            except ConfigError as exc:
                problem(exc.message.split(":", 1)[0], exc.message.split(": ", 1)[-1])
                continue
            outside = [z for z in cfg.zones if z not in self.config.zones]
            if outside:
                problem(
                    f"{group}.provider_config.zones",
                    f"zones {outside} are not in the stack's provider_config.zones "
                    f"{self.config.zones}; infra observes only the stack's zones",
                )
            if cfg.project != self.config.project:
                problem(f"{group}.provider_config.project", "a group cannot use another project than the stack")
            if not _NAME_RE.match(spec.name):
                problem(
                    group,
                    f"instance name {spec.name!r} is not valid on GCE (at most 63 characters, "
                    "lowercase letters, digits and '-'); shorten the stack or group name",
                )
            size = len(json.dumps(spec.userdata(), sort_keys=True, separators=(",", ":")).encode())
            if size > METADATA_VALUE_MAX:
                problem(group, f"member configuration is {size} bytes; GCE metadata holds {METADATA_VALUE_MAX}")
            zone = cfg.zone_for(spec.placement)
            try:
                cfg.address_of(spec.placement)
            except ValueError as exc:
                problem(f"{group}.provider_config.address_range", str(exc))
            machine_type = spec.machine_type or cfg.machine_type
            if not machine_type:
                problem(f"{group}.machine_type", "the gcp provider needs a machine type (e.g. 'e2-small')")
            else:
                machine_checks.setdefault((zone, machine_type), set()).add(spec.group)
            image = spec.image or cfg.image
            if spec.image_digest is not None:
                if not cfg.image_bucket:
                    problem(f"{group}.provider_config.image_bucket",
                            f"group {spec.group} boots an image built by infra ({spec.image}); name a Cloud "
                            "Storage bucket to upload it to (provider_config.image_bucket), or pin an image")
                continue  # built and pushed by the image pipeline before any create
            if not image:
                problem(f"{group}.image", "the gcp provider needs an image name or 'family/NAME'")
            else:
                try:
                    source = image_source(image, cfg.project)
                except ValueError as exc:
                    problem(f"{group}.image", str(exc))
                else:
                    image_checks.setdefault(source, (image, set()))[1].add(spec.group)
        for (zone, machine_type), groups in sorted(machine_checks.items()):
            if not self._exists(
                f"get machine type {machine_type} in {zone}",
                "machineTypes.get",
                project=self.config.project,
                zone=zone,
                machine_type=machine_type,
            ):
                for g in sorted(groups):
                    problems.append(
                        Problem(
                            field=f"groups.{g}.machine_type",
                            message=f"machine type {machine_type!r} does not exist in zone {zone}",
                        )
                    )
        for source, (image, groups) in sorted(image_checks.items()):
            m = re.fullmatch(r"projects/([^/]+)/global/images/(family/)?([^/]+)", source)
            assert m is not None
            if m.group(2):
                found = self._exists(
                    f"get image family {m.group(3)}", "images.getFromFamily", project=m.group(1), family=m.group(3)
                )
            else:
                found = self._exists(f"get image {m.group(3)}", "images.get", project=m.group(1), image=m.group(3))
            if not found:
                for g in sorted(groups):
                    problems.append(
                        Problem(
                            field=f"groups.{g}.image",
                            message=f"image {image!r} ({source}) does not exist; build and upload it first",
                        )
                    )
        return problems

    def _exists(self, action: str, method: str, **params: str) -> bool:
        """Whether a get finds the resource (404, or 400 for a malformed name, mean no)."""
        try:
            self.api.read(action, method, params, retry=self.read_retry)
        except (NotFoundError, PermanentError) as exc:
            from google.api_core import exceptions as gexc

            if isinstance(exc.__cause__, gexc.NotFound | gexc.BadRequest):
                return False
            raise
        return True

    def discovery(self, selector: Mapping[str, str], port: int) -> SdConfig | None:
        """``gce_sd_configs``, one per zone of the stack, filtered on ``selector``'s labels.

        Prometheus then finds the members itself (their primary internal addresses, on
        ``port``); its credentials come from the VM's service account. Under an endpoint
        override (``INFRA_GCP_ENDPOINT``, e.g. infra's GCE emulator) it is ``http_sd_configs``
        pointing at the endpoint's ``/_emulator/sd/{project}`` with the same filter, since
        ``gce_sd`` cannot be pointed at another endpoint.
        """
        filt = label_filter(selector)
        if self.endpoint:
            # gce_sd has no endpoint setting: under an override, the endpoint's HTTP discovery
            # (infra's GCE emulator serves it) with the same label filter.
            from urllib.parse import urlencode

            query = urlencode({"filter": filt, "port": port})
            http_sd: dict[str, Any] = {"url": f"{self.endpoint.rstrip('/')}/_emulator/sd/{self.config.project}?{query}",
                                       "refresh_interval": "5s"}
            sd_token = os.environ.get(SD_TOKEN_ENV, "").strip()
            if sd_token:
                # The emulator's read-only discovery token: it lists addresses and nothing else.
                http_sd["authorization"] = {"type": "Bearer", "credentials": sd_token}
            return {"http_sd_configs": [http_sd]}
        return {
            "gce_sd_configs": [
                {"project": self.config.project, "zone": zone, "port": port, "filter": filt}
                for zone in self.config.zones
            ]
        }


def _network_path(network: str, project: str) -> str:
    if "/" in network:
        return network
    return f"projects/{project}/global/networks/{network}"


def _subnetwork_path(subnetwork: str, project: str, region: str) -> str:
    if "/" in subnetwork:
        return subnetwork
    return f"projects/{project}/regions/{region}/subnetworks/{subnetwork}"
