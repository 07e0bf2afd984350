"""The EC2 emulator's machines: each running instance boots as a supervised local process group.

Attached to the emulator's moto server by :mod:`providers.aws.emulator.main`. A watcher thread
asks the emulator's own EC2 and EBS APIs (through boto3, as any client would) every ``interval``
seconds:

* a ``running`` instance boots: its AMI's ``infra-image`` tag names the image's EBS snapshot
  (tagged with the same digest), whose first block holds the image's LinuxKit document when infra
  registered the YAML itself (what its push does against this emulator without linuxkit); the
  instance's user-data is delivered as LinuxKit's metadata package does on EC2 (the JSON tree
  under ``/run/config``, plus ``local_ipv4`` and ``hostname``); the document's services run as one
  local process group at the instance's private IP (:class:`reconciler.kit.machines.Machines`);
* a stopped, shutting-down or terminated instance stops its group;
* a dead service leaves the instance running, as on a real VM. ``GetConsoleOutput`` returns the
  machine's service logs.

An AMI without such a document (one registered by hand, or a built disk) boots nothing; its
console output says so.

With ``--machines vm`` (a :class:`~reconciler.kit.vmhost.VmHost` given), a running instance boots
as a QEMU VM instead, from the **disk its AMI's snapshot holds** (the snapshot tagged with the AMI's
digest): every block read back through the EBS direct API into a sparse file (once per snapshot),
never from a document. The VM gets its
private IP by DHCP and its user-data from the metadata server (IMDSv2; IMDSv1 only when the
instance's ``HttpTokens`` is ``optional``), which knows it by that address;
``GetConsoleOutput`` is the VM's serial console.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from reconciler.core import linuxkit
from reconciler.core.image import LABEL_IMAGE
from reconciler.core.model import ConfigFile, MemberSpec
from reconciler.kit.machines import BootError, Machines, VmBoot
from reconciler.kit.vmhost import GuestInfo, VmHost

#: The EBS direct APIs' one block size, in bytes.
EBS_BLOCK = 512 * 1024


class Ec2Machines(Machines[str]):
    """Boots and stops the emulated instances, by instance id. See the module docstring."""

    stack = "ec2-emulator"
    title = "infra EC2 emulator"

    def __init__(self, ec2: Any, ebs: Any, root: Path, *, interval: float = 0.3,
                 log: Callable[[str], None] = lambda m: None, vms: VmHost | None = None) -> None:
        super().__init__(root, interval=interval, log=log, vms=vms)
        self.ec2 = ec2
        self.ebs = ebs

    def observe(self) -> Mapping[str, tuple[bool, Any]]:
        seen: dict[str, tuple[bool, Any]] = {}
        for page in self.ec2.get_paginator("describe_instances").paginate():
            for res in page.get("Reservations", []):
                for raw in res.get("Instances", []):
                    seen[raw["InstanceId"]] = (raw["State"]["Name"] == "running", raw)
        return seen

    def spec_of(self, raw: Mapping[str, Any]) -> MemberSpec:
        iid = str(raw["InstanceId"])
        address = str(raw.get("PrivateIpAddress") or "")
        if not address.startswith("127."):
            raise BootError(f"private IP {address!r} is not a loopback address")
        document = self.document(str(raw["ImageId"]))
        attr = self.ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
        encoded = attr.get("UserData", {}).get("Value")
        try:
            userdata = json.loads(base64.b64decode(encoded)) if encoded else {}
        except ValueError as exc:
            raise BootError(f"user-data is not JSON: {exc}") from None
        hostname = f"ip-{address.replace('.', '-')}"
        files = (*linuxkit.userdata_files(userdata if isinstance(userdata, Mapping) else {}),
                 ConfigFile(path="local_ipv4", content=address, in_spec=False),
                 ConfigFile(path="hostname", content=hostname, in_spec=False))
        return MemberSpec(stack=self.stack, group="vm", member=f"vm-{iid.removeprefix('i-')}", role="ec2-instance",
                          services=linuxkit.host_services(document), files=files, address=address)

    def vm_of(self, raw: Mapping[str, Any]) -> VmBoot:
        """The instance's VM: the disk of its AMI's snapshot (the one tagged with the AMI's digest:
        moto's RegisterImage names a copy the EBS direct API does not know), at its private IP."""
        image_id = str(raw["ImageId"])
        snaps = self._snapshots(image_id, "no pushed disk to boot")
        if not snaps:
            raise BootError(f"AMI {image_id}: no snapshot tagged with its {LABEL_IMAGE} digest")
        snapshot = str(snaps[0]["SnapshotId"])
        disk = self.root / "disks" / f"{snapshot}.raw"
        if not disk.exists():
            disk.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = disk.with_name(f".{disk.name}.tmp")
            size = 0
            with open(tmp, "wb") as fh:
                token: str | None = None
                while True:
                    page = self.ebs.list_snapshot_blocks(SnapshotId=snapshot, **({"NextToken": token} if token else {}))
                    if page.get("VolumeSize"):
                        size = int(page["VolumeSize"]) << 30
                    step = EBS_BLOCK  # moto's BlockSize says 512 (KiB); EBS's blocks are 512 KiB
                    for block in page.get("Blocks", []):
                        data = self.ebs.get_snapshot_block(SnapshotId=snapshot, BlockIndex=block["BlockIndex"],
                                                           BlockToken=block["BlockToken"])["BlockData"].read()
                        fh.seek(int(block["BlockIndex"]) * step)
                        fh.write(data)
                    token = page.get("NextToken")
                    if not token:
                        break
                if size:
                    fh.truncate(size)
            tmp.replace(disk)
        return VmBoot(disk=disk, address=str(raw.get("PrivateIpAddress") or ""))

    def guest(self, address: str) -> GuestInfo | None:
        """What the metadata server tells the VM at ``address`` (a running instance's private IP)."""
        pages = self.ec2.describe_instances(Filters=[{"Name": "private-ip-address", "Values": [address]},
                                                     {"Name": "instance-state-name", "Values": ["running"]}])
        found = [i for r in pages.get("Reservations", []) for i in r.get("Instances", [])]
        if not found:
            return None
        inst = found[0]
        attr = self.ec2.describe_instance_attribute(InstanceId=inst["InstanceId"], Attribute="userData")
        encoded = attr.get("UserData", {}).get("Value")
        required = (inst.get("MetadataOptions") or {}).get("HttpTokens") == "required"
        return GuestInfo(user_data=base64.b64decode(encoded).decode(errors="replace") if encoded else "",
                         hostname=f"ip-{address.replace('.', '-')}.ec2.internal", address=address,
                         require_token=required)

    def _snapshots(self, image_id: str, missing: str) -> list[Any]:
        """The snapshots tagged with AMI ``image_id``'s digest; BootError (saying ``missing``) when
        the AMI has no digest."""
        images = self.ec2.describe_images(ImageIds=[image_id]).get("Images", [])
        tags = {t["Key"]: t["Value"] for t in (images[0].get("Tags", []) if images else [])}
        digest = tags.get(LABEL_IMAGE)
        if not digest:
            raise BootError(f"AMI {image_id} has no {LABEL_IMAGE} tag: {missing}")
        return list(self.ec2.describe_snapshots(OwnerIds=["self"], Filters=[
            {"Name": f"tag:{LABEL_IMAGE}", "Values": [digest]}]).get("Snapshots", []))

    def document(self, image_id: str) -> Mapping[str, Any]:
        """The LinuxKit document of AMI ``image_id``, from block 0 of its tagged snapshot."""
        for snap in self._snapshots(image_id, "no LinuxKit document to boot"):
            blocks = self.ebs.list_snapshot_blocks(SnapshotId=snap["SnapshotId"]).get("Blocks", [])
            first = [b for b in blocks if b["BlockIndex"] == 0]
            if not first:
                continue
            data = self.ebs.get_snapshot_block(SnapshotId=snap["SnapshotId"], BlockIndex=0,
                                               BlockToken=first[0]["BlockToken"])["BlockData"].read()
            try:
                doc = yaml.safe_load(data.rstrip(b"\0").decode())
            except (UnicodeDecodeError, yaml.YAMLError):
                continue
            if isinstance(doc, Mapping) and "kernel" in doc:
                return doc
        raise BootError(f"AMI {image_id}: its snapshot holds a disk, not a LinuxKit document (the emulator "
                        "boots images pushed without linuxkit)")
