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
from reconciler.kit.machines import BootError, Machines


class Ec2Machines(Machines[str]):
    """Boots and stops the emulated instances, by instance id. See the module docstring."""

    stack = "ec2-emulator"
    title = "infra EC2 emulator"

    def __init__(self, ec2: Any, ebs: Any, root: Path, *, interval: float = 0.3,
                 log: Callable[[str], None] = lambda m: None) -> None:
        super().__init__(root, interval=interval, log=log)
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

    def document(self, image_id: str) -> Mapping[str, Any]:
        """The LinuxKit document of AMI ``image_id``, from block 0 of its tagged snapshot."""
        images = self.ec2.describe_images(ImageIds=[image_id]).get("Images", [])
        tags = {t["Key"]: t["Value"] for t in (images[0].get("Tags", []) if images else [])}
        digest = tags.get(LABEL_IMAGE)
        if not digest:
            raise BootError(f"AMI {image_id} has no {LABEL_IMAGE} tag: no LinuxKit document to boot")
        snaps = self.ec2.describe_snapshots(OwnerIds=["self"], Filters=[
            {"Name": f"tag:{LABEL_IMAGE}", "Values": [digest]}]).get("Snapshots", [])
        for snap in snaps:
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
