"""The GCE emulator's machines: each RUNNING instance boots as a supervised local process group.

Attached to a :class:`~providers.gcp.emulator.compute.FakeCompute` by
:mod:`providers.gcp.emulator.main`. A watcher thread looks at the emulated instances every
``interval`` seconds:

* an instance that has become RUNNING boots: the emulator finds its image's LinuxKit document
  (``sourceImage`` → the image → its ``rawDisk.source`` object in the emulator's Cloud Storage: the
  ``.yml`` document itself, or the ``.yml`` that infra's push uploads beside a built disk),
  delivers the instance's ``user-data`` metadata as LinuxKit's metadata package does on GCE
  (``/run/config/<dir>/<file>``, here the machine's ``config/``), and runs the document's
  ``services`` as one local process group at the instance's (loopback) network IP
  (:class:`reconciler.kit.machines.Machines`: the ``local`` provider's supervisor, found by entry
  point). A service's LinuxKit paths map back to the machine's directories
  (``/run/config`` → ``config/``, ``/var/lib/infra`` → ``data/``) and its command runs as a host
  command (``etcd``, ``prometheus`` on PATH), as the local provider runs a role's services;
* an instance that is deleted, TERMINATED, STOPPING or SUSPENDED stops its process group;
* a service that dies leaves the instance RUNNING, as on a real VM: infra's health checks are
  what notice it. ``getSerialPortOutput`` returns the machine's service logs.

An instance whose image has no LinuxKit document (one of the emulator's stock images) boots
nothing; its console says so.

With ``--machines vm`` (a :class:`~reconciler.kit.vmhost.VmHost` given), a RUNNING instance boots
as a QEMU VM instead, from the **disk that was pushed**: ``disk.raw`` out of the ``rawDisk.source``
tarball of its image (extracted once per image, sparse), never from the document. The VM gets its
``networkIP`` by DHCP and its ``user-data`` from the metadata server, which knows it by that
address; ``getSerialPortOutput`` is the VM's serial console.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from providers.gcp.emulator.compute import FakeCompute, FakeInstance, JsonDict
from reconciler.core import linuxkit
from reconciler.core.model import MemberSpec
from reconciler.kit.machines import BootError, Machines, VmBoot
from reconciler.kit.vmhost import GuestInfo, VmHost

STOPPED = {"TERMINATED", "STOPPING", "STOPPED", "SUSPENDING", "SUSPENDED"}

#: (project, zone, name, id): a deleted and re-created instance of one name is another machine.
Key = tuple[str, str, str, int]


def key_of(inst: FakeInstance) -> Key:
    return (inst.project, inst.zone, inst.name, inst.id)


class GceMachines(Machines[Key]):
    """Boots and stops the emulated instances of ``compute``. See the module docstring."""

    stack = "gce-emulator"
    title = "infra GCE emulator"

    def __init__(self, compute: FakeCompute, root: Path, *, interval: float = 0.2,
                 log: Callable[[str], None] = lambda m: None, vms: VmHost | None = None) -> None:
        super().__init__(root, interval=interval, log=log, vms=vms)
        self.compute = compute
        compute.boots = True
        compute.console = lambda inst: self.console(key_of(inst))

    def name_of(self, key: Key) -> str:
        return key[2]

    def observe(self) -> Mapping[Key, tuple[bool, Any]]:
        with self.compute.lock:
            self.compute._tick()
            now = time.monotonic()
            return {key_of(inst): (inst.status(now) == "RUNNING", inst) for inst in self.compute.instances.values()}

    def spec_of(self, inst: FakeInstance) -> MemberSpec:
        document = self.document(inst)
        items = {i.get("key"): i.get("value") for i in (inst.body.get("metadata") or {}).get("items") or []}
        raw = items.get("user-data")
        try:
            userdata = yaml.safe_load(raw) if raw else {}
        except yaml.YAMLError as exc:
            raise BootError(f"user-data is not JSON: {exc}") from None
        files = linuxkit.userdata_files(userdata if isinstance(userdata, Mapping) else {})
        return MemberSpec(stack=self.stack, group="vm", member=f"vm-{inst.id}", role="gce-instance",
                          services=linuxkit.host_services(document), files=files, address=inst.address)

    def _image(self, inst: FakeInstance) -> JsonDict:
        disks = [d for d in inst.body.get("disks") or [] if d.get("boot")]
        source = (disks[0].get("initializeParams") or {}).get("sourceImage") if disks else None
        if not source:
            raise BootError("it has no boot disk image")
        with self.compute.lock:
            return self.compute._resolve_image(inst.project, str(source))

    def vm_of(self, inst: FakeInstance) -> VmBoot:
        """The instance's VM: ``disk.raw`` of its image's pushed tarball, at its ``networkIP``."""
        image = self._image(inst)
        raw_source = str((image.get("rawDisk") or {}).get("source") or "")
        prefix = "https://storage.googleapis.com/"
        if not raw_source.startswith(prefix):
            raise BootError(f"image {image['name']} has no pushed disk (a stock image)")
        disk = self.root / "disks" / f"{image['name']}-{image['id']}.raw"
        if not disk.exists():
            bucket, _, name = raw_source[len(prefix):].partition("/")
            obj = self.compute.storage.get(bucket, name)
            if obj is None:
                raise BootError(f"image {image['name']}: {raw_source} is gone")
            disk.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                with tarfile.open(fileobj=io.BytesIO(obj.data), mode="r:gz") as tar:
                    member = tar.getmember("disk.raw")
                    if not member.isfile():
                        raise BootError(f"image {image['name']}: disk.raw is not a file")
                    tar.extract(member, disk.parent / ".extract", filter="data")
            except (tarfile.TarError, KeyError, OSError) as exc:
                raise BootError(f"image {image['name']}: its tarball holds no bootable disk.raw ({exc})") from None
            (disk.parent / ".extract" / "disk.raw").replace(disk)
        return VmBoot(disk=disk, address=inst.address)

    def guest(self, address: str) -> GuestInfo | None:
        """What the metadata server tells the VM at ``address`` (a RUNNING instance's networkIP)."""
        with self.compute.lock:
            now = time.monotonic()
            for inst in self.compute.instances.values():
                if inst.address == address and inst.status(now) == "RUNNING":
                    items = {i.get("key"): i.get("value") for i in (inst.body.get("metadata") or {}).get("items") or []}
                    return GuestInfo(user_data=str(items.get("user-data") or ""), address=address,
                                     hostname=f"{inst.name}.{inst.zone}.c.{inst.project}.internal")
        return None

    def document(self, inst: FakeInstance) -> Mapping[str, Any]:
        """The LinuxKit document of the instance's boot image. Raises BootError."""
        image = self._image(inst)
        raw_source = str((image.get("rawDisk") or {}).get("source") or "")
        prefix = "https://storage.googleapis.com/"
        if not raw_source.startswith(prefix):
            raise BootError(f"image {image['name']} has no LinuxKit document (a stock image)")
        bucket, _, name = raw_source[len(prefix):].partition("/")
        candidates = [name] if name.endswith(".yml") else []
        folder = name.rsplit("/", 1)[0] + "/"
        with self.compute.storage.lock:
            candidates += sorted(n for (b, n) in self.compute.storage.objects if b == bucket
                                 and n.startswith(folder) and n.endswith(".yml"))
        for candidate in candidates:
            obj = self.compute.storage.get(bucket, candidate)
            if obj is not None:
                doc = yaml.safe_load(obj.data)
                if isinstance(doc, Mapping):
                    return doc
        raise BootError(f"image {image['name']}: no LinuxKit document beside {raw_source}")
