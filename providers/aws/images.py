"""LinuxKit images on EC2: an EBS snapshot written through the EBS direct APIs, registered as an AMI.

Called by :class:`providers.aws.provider.AwsProvider`'s image methods, with its
:class:`~providers.aws.session.Ec2Session` (the optional
:class:`reconciler.kit.provider.ImageStore` protocol), so by the engine's image pipeline and
``infra image push|list`` and ``infra destroy --images``. ``linuxkit push aws`` needs an S3 bucket
and the ``vmimport`` service role; this needs neither, the way AWS's coldsnap uploads disks:

1. **find** (:func:`find`): one ``DescribeImages`` (owner ``self``) filtered on the tag
   ``infra-image=<digest>``. An available AMI is reused as it is: nothing is uploaded. When none
   is tagged, an AMI of this account named ``image.name`` (a name derived from the digest) while a
   snapshot tagged with the full digest exists is infra's own too: a server that dropped the tags
   of ``RegisterImage`` (a plain moto server does) registered it; ``push`` tags it and reuses it.
2. **snapshot**: a completed snapshot tagged with the digest (a push that crashed after its
   upload) is registered without uploading again, and a pending one (a crash during its upload)
   is written again and completed. Otherwise ``StartSnapshot`` (tagged, ``ClientToken`` derived
   from the digest) and one ``PutSnapshotBlock`` per 512 KiB block of the ``<name>.raw`` disk
   that is not all zeros (SHA-256 checksum per block), then ``CompleteSnapshot`` with the
   changed-block count and the LINEAR aggregate checksum, then a wait until EC2 says completed.
3. **register**: ``RegisterImage`` named ``image.name`` (x86_64, HVM, ENA, IMDSv2 only
   (``ImdsSupport v2.0``) unless the stack's ``metadata_tokens`` is ``optional``, root
   ``/dev/sda1`` on gp3 from the snapshot, deleted with the instance), tagged with the digest
   in the same call, and tagged again (``CreateTags``) when the server dropped those tags.
   ``InvalidAMIName.Duplicate`` is success when the AMI of that name carries the digest.

The EBS direct APIs are a service of their own (``ebs``); its client shares the provider's
session, its settings (no hidden retries) and the endpoint override (``AWS_ENDPOINT_URL_EBS``,
else ``AWS_ENDPOINT_URL``). Every failure goes through :mod:`providers.aws.errors`.
"""

from __future__ import annotations

import base64
import hashlib
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from providers.aws import errors
from reconciler.core.errors import PermanentError, TransientError
from reconciler.core.image import LABEL_IMAGE, ImageRecord, ImageSpec
from reconciler.kit.provider import Progress

if TYPE_CHECKING:
    from providers.aws.session import Ec2Session

#: The EBS direct APIs' block size.
BLOCK = 512 * 1024
_ZERO = bytes(BLOCK)
ROOT_DEVICE = "/dev/sda1"
#: How long a snapshot may take to complete, and an AMI to become available.
WAIT_DEADLINE = 1800.0
_STATES = {"available": "ready", "pending": "pending", "failed": "failed", "invalid": "failed",
           "error": "failed", "deregistered": "failed"}


def _tag_filter(digest: str) -> list[Any]:
    return [{"Name": f"tag:{LABEL_IMAGE}", "Values": [digest]}]


def _tags(image: ImageSpec) -> list[Any]:
    return [{"Key": LABEL_IMAGE, "Value": image.digest}, {"Key": "Name", "Value": image.name}]


def _record(raw: Any) -> ImageRecord:
    tags = {t.get("Key"): t.get("Value") for t in raw.get("Tags", [])}
    size = None
    for bdm in raw.get("BlockDeviceMappings", []):
        if bdm.get("DeviceName") == raw.get("RootDeviceName") and bdm.get("Ebs", {}).get("VolumeSize"):
            size = int(bdm["Ebs"]["VolumeSize"]) << 30
    return ImageRecord(name=raw.get("Name", ""), id=raw.get("ImageId", ""), digest=tags.get(LABEL_IMAGE, ""),
                       size=size, status=_STATES.get(raw.get("State", ""), "pending"))


def _order(image: ImageSpec) -> Any:
    return lambda raw: (raw.get("State") != "available", raw.get("Name") != image.name, raw.get("CreationDate", ""),
                        raw.get("ImageId", ""))


def find(api: Ec2Session, image: ImageSpec) -> ImageRecord | None:
    """The AMI owned by this account tagged with ``image.digest`` (one DescribeImages), else an
    untagged one of infra's own (see the module docstring; two more reads). Reads only."""
    found = _lookup(api, image)
    return None if found is None else _with_digest(_record(found[0]), image)


def _lookup(api: Ec2Session, image: ImageSpec) -> tuple[Any, bool] | None:
    """The AMI :func:`find` means, and whether it carries the digest tag already."""
    found = api.planning_read(
        f"look up image {image.name}",
        lambda: api.client.describe_images(Owners=["self"], Filters=_tag_filter(image.digest)),
    ).get("Images", [])
    if found:
        return sorted(found, key=_order(image))[0], True
    untagged = _untagged_own(api, image)
    return None if untagged is None else (untagged, False)


def _untagged_own(api: Ec2Session, image: ImageSpec) -> Any:
    """The oldest AMI named ``image.name`` with no digest tag, when a snapshot carries the digest."""
    named = api.planning_read(
        f"look up image {image.name} by name",
        lambda: api.client.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [image.name]}]),
    ).get("Images", [])
    named = [raw for raw in named if raw.get("Name") == image.name and not _record(raw).digest]
    if not named:
        return None
    snapshots = api.planning_read(
        f"look up snapshots of image {image.name}",
        lambda: api.client.describe_snapshots(OwnerIds=["self"], Filters=_tag_filter(image.digest)),
    ).get("Snapshots", [])
    if not any(s.get("State") == "completed" for s in snapshots):
        return None
    return sorted(named, key=_order(image))[0]


def _with_digest(record: ImageRecord, image: ImageSpec) -> ImageRecord:
    return ImageRecord(record.name, record.id, image.digest, record.size, record.status)


def _ensure_tags(api: Ec2Session, image: ImageSpec, image_id: str) -> None:
    """Tag the AMI with the digest when it lacks the tag (a server that dropped RegisterImage's)."""
    with errors.translate(f"describe image {image_id}"):
        found = api.client.describe_images(ImageIds=[image_id]).get("Images", [])
    if found and _record(found[0]).digest == image.digest:
        return
    with errors.translate(f"tag image {image_id}"):
        api.client.create_tags(Resources=[image_id], Tags=_tags(image))


def _snapshots(api: Ec2Session, image: ImageSpec) -> list[Any]:
    with errors.translate(f"look up snapshots of image {image.name}"):
        found = api.client.describe_snapshots(OwnerIds=["self"], Filters=_tag_filter(image.digest))
    return [s for s in found.get("Snapshots", []) if s.get("State") in ("completed", "pending")]


def _write(api: Ec2Session, image: ImageSpec, artefact: Path, progress: Progress,
           snapshot_id: str | None) -> str:
    """Write the disk's non-zero blocks to a snapshot (new, or the pending ``snapshot_id``)."""
    ebs = api.ebs()
    size = artefact.stat().st_size
    gib = max(1, math.ceil(size / (1 << 30)))
    if snapshot_id is None:
        with errors.translate(f"start the snapshot of image {image.name}"):
            started = ebs.start_snapshot(
                VolumeSize=gib, Tags=_tags(image), Timeout=60,
                Description=f"LinuxKit image {image.name} (infra, digest {image.digest})",
                ClientToken=f"infra-image-{image.digest}"[:64],
            )
        snapshot_id = str(started["SnapshotId"])
    digests: list[bytes] = []
    with open(artefact, "rb") as fh:
        index = 0
        done = 0
        while True:
            data = fh.read(BLOCK)
            if not data:
                break
            done += len(data)
            if len(data) < BLOCK:
                data = data.ljust(BLOCK, b"\0")
            if data != _ZERO:
                digest = hashlib.sha256(data).digest()
                digests.append(digest)
                with errors.translate(f"write block {index} of image {image.name}"):
                    ebs.put_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index, BlockData=data,
                                           DataLength=BLOCK, Checksum=base64.b64encode(digest).decode(),
                                           ChecksumAlgorithm="SHA256")
            progress(done, size)
            index += 1
    aggregate = base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode()
    with errors.translate(f"complete the snapshot of image {image.name}"):
        ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=len(digests), Checksum=aggregate,
                              ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    return snapshot_id


def _wait_snapshot(api: Ec2Session, snapshot_id: str, name: str) -> None:
    deadline = time.monotonic() + WAIT_DEADLINE
    while True:
        with errors.translate(f"describe snapshot {snapshot_id}"):
            snaps = api.client.describe_snapshots(SnapshotIds=[snapshot_id]).get("Snapshots", [])
        state = snaps[0].get("State") if snaps else "missing"
        if state == "completed":
            return
        if state in ("error", "missing"):
            raise TransientError(f"aws: snapshot {snapshot_id} of image {name} is {state}",
                                 hint="push again: a new snapshot is written")
        if time.monotonic() > deadline:
            raise TransientError(f"aws: snapshot {snapshot_id} of image {name} still {state}")
        time.sleep(1.0)


def _register(api: Ec2Session, image: ImageSpec, snapshot_id: str, *, imds_v2: bool) -> ImageRecord:
    action = f"register image {image.name}"
    imds: dict[str, Any] = {"ImdsSupport": "v2.0"} if imds_v2 else {}
    try:
        with errors.translate(action):
            resp = api.client.register_image(
                Name=image.name, Description=f"LinuxKit image of group {image.group} (infra, digest {image.digest})",
                Architecture="x86_64", VirtualizationType="hvm", EnaSupport=True, RootDeviceName=ROOT_DEVICE,
                **imds,
                BlockDeviceMappings=[{"DeviceName": ROOT_DEVICE, "Ebs": {
                    "SnapshotId": snapshot_id, "DeleteOnTermination": True, "VolumeType": "gp3"}}],
                TagSpecifications=[{"ResourceType": "image", "Tags": _tags(image)}],
            )
        image_id = str(resp["ImageId"])
        _ensure_tags(api, image, image_id)
    except PermanentError as exc:
        if errors.error_code(exc.__cause__ or exc) != "InvalidAMIName.Duplicate":
            raise
        with errors.translate(f"look up image {image.name}"):
            same = api.client.describe_images(Owners=["self"], Filters=[
                {"Name": "name", "Values": [image.name]}]).get("Images", [])
        mine = [raw for raw in same if _record(raw).digest == image.digest]
        if not mine:
            raise PermanentError(f"aws: an AMI named {image.name} exists without tag {LABEL_IMAGE}={image.digest}; "
                                 "infra will not use or replace it", hint="deregister or rename that AMI") from exc
        image_id = str(mine[0]["ImageId"])
    return _available(api, image, image_id)


def _available(api: Ec2Session, image: ImageSpec, image_id: str) -> ImageRecord:
    deadline = time.monotonic() + WAIT_DEADLINE
    while True:
        with errors.translate(f"describe image {image_id}"):
            found = api.client.describe_images(ImageIds=[image_id]).get("Images", [])
        if found:
            record = _record(found[0])
            if record.ready:
                return record if record.digest else ImageRecord(
                    record.name, record.id, image.digest, record.size, record.status)
            if record.status == "failed":
                raise PermanentError(f"aws: image {image.name} ({image_id}) failed: "
                                     f"{found[0].get('StateReason', {}).get('Message', 'no reason given')}")
        if time.monotonic() > deadline:
            raise TransientError(f"aws: image {image.name} ({image_id}) is not available after {WAIT_DEADLINE:g}s")
        time.sleep(1.0)


def push(
    api: Ec2Session, image: ImageSpec, artefact: Path, progress: Progress, *, imds_v2: bool = True
) -> ImageRecord:
    """See the module docstring."""
    looked_up = _lookup(api, image)
    if looked_up is not None:
        found = _with_digest(_record(looked_up[0]), image)
        if not looked_up[1]:
            with errors.translate(f"tag image {found.id}"):
                api.client.create_tags(Resources=[found.id], Tags=_tags(image))
        if found.status == "failed":
            raise PermanentError(f"aws: AMI {found.id} ({found.name}) with digest {image.digest} is {found.status}",
                                 hint=f"deregister it (aws ec2 deregister-image --image-id {found.id}) and push again")
        return found if found.ready else _available(api, image, found.id)
    snapshots = _snapshots(api, image)
    done = [s for s in snapshots if s.get("State") == "completed"]
    if done:
        snapshot_id = str(done[0]["SnapshotId"])
        progress(artefact.stat().st_size, artefact.stat().st_size)
    else:
        pending = [s for s in snapshots if s.get("State") == "pending"]
        snapshot_id = _write(api, image, artefact, progress, str(pending[0]["SnapshotId"]) if pending else None)
        _wait_snapshot(api, snapshot_id, image.name)
    return _register(api, image, snapshot_id, imds_v2=imds_v2)


def delete(api: Ec2Session, record: ImageRecord) -> None:
    """Deregister the AMI and delete its snapshots. Already gone is success."""
    if not record.digest:
        raise PermanentError(f"aws: refusing to delete image {record.name}: it lacks the {LABEL_IMAGE} tag")
    with errors.translate(f"describe image {record.id}"):
        found = api.client.describe_images(Owners=["self"], Filters=_tag_filter(record.digest)).get("Images", [])
    snapshot_ids = {bdm["Ebs"]["SnapshotId"] for raw in found for bdm in raw.get("BlockDeviceMappings", [])
                    if bdm.get("Ebs", {}).get("SnapshotId")}
    for raw in found:
        with errors.translate(f"deregister image {raw.get('ImageId')}"):
            api.client.deregister_image(ImageId=raw["ImageId"])
    with errors.translate(f"look up snapshots of image {record.name}"):
        tagged = api.client.describe_snapshots(OwnerIds=["self"], Filters=_tag_filter(record.digest))
    snapshot_ids |= {s["SnapshotId"] for s in tagged.get("Snapshots", [])}
    for snapshot_id in sorted(snapshot_ids):
        with errors.translate(f"delete snapshot {snapshot_id}"):
            api.client.delete_snapshot(SnapshotId=snapshot_id)
