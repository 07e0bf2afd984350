"""The GCE emulator's machines: each RUNNING instance boots as a supervised local process group.

Attached to a :class:`~providers.gcp.emulator.compute.FakeCompute` by
:mod:`providers.gcp.emulator.main`. A watcher thread looks at the emulated instances every
``interval`` seconds:

* an instance that has become RUNNING boots: the emulator finds its image's LinuxKit document
  (``sourceImage`` → the image → its ``rawDisk.source`` object in the emulator's Cloud Storage: the
  ``.yml`` document itself, or the ``.yml`` that infra's push uploads beside a built disk),
  delivers the instance's ``user-data`` metadata as LinuxKit's metadata package does on GCE
  (``/run/config/<dir>/<file>``, here the machine's ``config/``), and runs the document's
  ``services`` as one local process group at the instance's (loopback) network IP. The process
  groups are the ``local`` provider's instances (found through the ``infra.providers`` entry
  point, so this package imports no other provider): its supervisor, its user-data delivery and
  its placeholders. A service's LinuxKit paths map back to the machine's directories
  (``/run/config`` → ``config/``, ``/var/lib/infra`` → ``data/``) and its command runs as a host
  command (``etcd``, ``prometheus`` on PATH), as the local provider runs a role's services;
* an instance that is deleted, TERMINATED, STOPPING or SUSPENDED stops its process group;
* a service that dies leaves the instance RUNNING, as on a real VM: infra's health checks are
  what notice it. ``getSerialPortOutput`` returns the machine's service logs.

An instance whose image has no LinuxKit document (one of the emulator's stock images) boots
nothing; its console says so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from providers.gcp.emulator.compute import FakeCompute, FakeInstance
from reconciler import linuxkit, registry
from reconciler.model import Instance, MemberSpec
from reconciler.provider import Provider

#: The stack the machines' process groups are recorded under in the emulator's own local root.
STACK = "gce-emulator"
CONSOLE_MAX = 64 * 1024
STOPPED = {"TERMINATED", "STOPPING", "STOPPED", "SUSPENDING", "SUSPENDED"}

Key = tuple[str, str, str]


class BootError(Exception):
    """The instance cannot boot (no LinuxKit document, bad user-data); its console says why."""


class Machines:
    """Boots and stops the emulated instances of ``compute``. See the module docstring."""

    def __init__(self, compute: FakeCompute, root: Path, *, interval: float = 0.2,
                 log: Callable[[str], None] = lambda m: None) -> None:
        self.compute = compute
        self.root = root
        self.interval = interval
        self.log = log
        local = registry.provider_class("local", where="the GCE emulator's machines")
        self.local: Provider = local.open({"root": str(root / "machines"), "grace": 3.0, "start_timeout": 60.0},
                                          stack=STACK, state_dir=root)
        self.booted: dict[Key, tuple[int, Instance]] = {}  # instance key -> (its id, the process group)
        self.failed: dict[Key, tuple[int, str]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        compute.boots = True
        compute.console = self.console

    def start(self) -> Machines:
        self._thread = threading.Thread(target=self._run, name="gce-machines", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching, then stop every machine this emulator booted."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            for key in list(self.booted):
                self._halt(key)

    # -- the watcher -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.step()
            except Exception as exc:  # keep watching: one bad instance must not stop the others
                self.log(f"machines: {type(exc).__name__}: {exc}")

    def step(self) -> None:
        """One look at the instances: boot the newly RUNNING, stop the gone and the stopped."""
        with self.compute.lock:
            self.compute._tick()
            now = time.monotonic()
            seen = {key: (inst.id, inst.status(now), inst) for key, inst in self.compute.instances.items()}
        with self._lock:
            for key, (iid, _) in list(self.booted.items()):
                current = seen.get(key)
                if current is None or current[0] != iid or current[1] in STOPPED:
                    self._halt(key)
            for key, (iid, status, inst) in seen.items():
                if status != "RUNNING" or key in self.booted or self.failed.get(key, (None,))[0] == iid:
                    continue
                try:
                    self.booted[key] = (iid, self._boot(inst))
                    self.failed.pop(key, None)
                except (BootError, linuxkit.DocumentError) as exc:
                    self.failed[key] = (iid, str(exc))
                    self.log(f"machines: {inst.name} boots nothing: {exc}")
                except Exception as exc:
                    self.failed[key] = (iid, f"{type(exc).__name__}: {exc}")
                    self.log(f"machines: {inst.name} failed to boot: {exc}")

    def _halt(self, key: Key) -> None:
        _, machine = self.booted.pop(key)
        self.local.delete(machine)
        self.log(f"machines: stopped {key[2]}")

    # -- booting -----------------------------------------------------------------------------

    def _boot(self, inst: FakeInstance) -> Instance:
        document = self.document(inst)
        items = {i.get("key"): i.get("value") for i in (inst.body.get("metadata") or {}).get("items") or []}
        raw = items.get("user-data")
        try:
            userdata = yaml.safe_load(raw) if raw else {}
        except yaml.YAMLError as exc:
            raise BootError(f"user-data is not JSON: {exc}") from None
        files = linuxkit.userdata_files(userdata if isinstance(userdata, Mapping) else {})
        spec = MemberSpec(stack=STACK, group="vm", member=f"vm-{inst.id}", role="gce-instance",
                          services=linuxkit.host_services(document), files=files, address=inst.address)
        machine = self.local.create(spec)
        self.log(f"machines: booted {inst.name} at {inst.address} ({len(spec.services)} services)")
        return machine

    def document(self, inst: FakeInstance) -> Mapping[str, Any]:
        """The LinuxKit document of the instance's boot image. Raises BootError."""
        disks = [d for d in inst.body.get("disks") or [] if d.get("boot")]
        source = (disks[0].get("initializeParams") or {}).get("sourceImage") if disks else None
        if not source:
            raise BootError("it has no boot disk image")
        with self.compute.lock:
            image = self.compute._resolve_image(inst.project, str(source))
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

    def console(self, inst: FakeInstance) -> str:
        """The instance's serial console: boot messages and its services' logs."""
        key = (inst.project, inst.zone, inst.name)
        with self._lock:
            failed = self.failed.get(key)
            booted = self.booted.get(key)
        if failed is not None and failed[0] == inst.id:
            return f"infra GCE emulator: {inst.name} boots nothing: {failed[1]}\n"
        if booted is None:
            return ""
        logs = self.root / "machines" / "instances" / booted[1].name / "logs"
        text = "".join(f"==> {p.name} <==\n{p.read_text(errors='replace')[-CONSOLE_MAX:]}\n"
                       for p in sorted(logs.glob("*.log")) if p.is_file())
        return text[-CONSOLE_MAX:]
