"""The EC2 emulator's machines: each running instance boots as a supervised local process group.

Attached to the emulator's moto server by :mod:`providers.aws.emulator.main`. A watcher thread
asks the emulator's own EC2 and EBS APIs (through boto3, as any client would) every ``interval``
seconds:

* a ``running`` instance boots: its AMI's ``infra-image`` tag names the image's EBS snapshot
  (tagged with the same digest), whose first block holds the image's LinuxKit document when infra
  registered the YAML itself (what its push does against this emulator without linuxkit); the
  instance's user-data is delivered as LinuxKit's metadata package does on EC2 (the JSON tree
  under ``/run/config``, plus ``local_ipv4`` and ``hostname``); the document's services run as one
  local process group at the instance's private IP, through the ``local`` provider (found by
  entry point: this package imports no other provider), paths mapped back to the machine's
  ``config/`` and ``data/`` as in the GCE emulator;
* a stopped, shutting-down or terminated instance stops its group;
* a dead service leaves the instance running, as on a real VM. ``GetConsoleOutput`` returns the
  machine's service logs.

An AMI without such a document (one registered by hand, or a built disk) boots nothing; its
console output says so.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from reconciler import linuxkit, registry
from reconciler.image import LABEL_IMAGE
from reconciler.model import ConfigFile, Instance, MemberSpec
from reconciler.provider import Provider

STACK = "ec2-emulator"
CONSOLE_MAX = 64 * 1024


class BootError(Exception):
    """The instance cannot boot (no LinuxKit document, bad user-data); its console says why."""


class Machines:
    """Boots and stops the emulated instances. See the module docstring."""

    def __init__(self, ec2: Any, ebs: Any, root: Path, *, interval: float = 0.3,
                 log: Callable[[str], None] = lambda m: None) -> None:
        self.ec2 = ec2
        self.ebs = ebs
        self.root = root
        self.interval = interval
        self.log = log
        local = registry.provider_class("local", where="the EC2 emulator's machines")
        self.local: Provider = local.open({"root": str(root / "machines"), "grace": 3.0, "start_timeout": 60.0},
                                          stack=STACK, state_dir=root)
        self.booted: dict[str, Instance] = {}
        self.failed: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> Machines:
        self._thread = threading.Thread(target=self._run, name="ec2-machines", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            for iid in list(self.booted):
                self._halt(iid)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.step()
            except Exception as exc:  # keep watching
                self.log(f"machines: {type(exc).__name__}: {exc}")

    def step(self) -> None:
        states: dict[str, tuple[str, dict[str, Any]]] = {}
        for page in self.ec2.get_paginator("describe_instances").paginate():
            for res in page.get("Reservations", []):
                for raw in res.get("Instances", []):
                    states[raw["InstanceId"]] = (raw["State"]["Name"], raw)
        with self._lock:
            for iid in list(self.booted):
                if states.get(iid, ("gone",))[0] != "running":
                    self._halt(iid)
            for iid, (state, raw) in states.items():
                if state != "running" or iid in self.booted or iid in self.failed:
                    continue
                try:
                    self.booted[iid] = self._boot(raw)
                except (BootError, linuxkit.DocumentError) as exc:
                    self.failed[iid] = str(exc)
                    self.log(f"machines: {iid} boots nothing: {exc}")
                except Exception as exc:
                    self.failed[iid] = f"{type(exc).__name__}: {exc}"
                    self.log(f"machines: {iid} failed to boot: {exc}")

    def _halt(self, iid: str) -> None:
        self.local.delete(self.booted.pop(iid))
        self.log(f"machines: stopped {iid}")

    def _boot(self, raw: Mapping[str, Any]) -> Instance:
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
        spec = MemberSpec(stack=STACK, group="vm", member=f"vm-{iid.removeprefix('i-')}", role="ec2-instance",
                          services=linuxkit.host_services(document), files=files, address=address)
        machine = self.local.create(spec)
        self.log(f"machines: booted {iid} at {address} ({len(spec.services)} services)")
        return machine

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

    def console(self, iid: str) -> str:
        with self._lock:
            failed = self.failed.get(iid)
            booted = self.booted.get(iid)
        if failed is not None:
            return f"infra EC2 emulator: {iid} boots nothing: {failed}\n"
        if booted is None:
            return ""
        logs = self.root / "machines" / "instances" / booted.name / "logs"
        text = "".join(f"==> {p.name} <==\n{p.read_text(errors='replace')[-CONSOLE_MAX:]}\n"
                       for p in sorted(logs.glob("*.log")) if p.is_file())
        return text[-CONSOLE_MAX:]
