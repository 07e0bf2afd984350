"""What an emulator's instances run on: process groups, or QEMU virtual machines.

Used by the GCE and EC2 emulators (``providers/gcp/emulator/machines.py``,
``providers/aws/emulator/machines.py``), which subclass :class:`Machines` with
``observe()`` (every instance of the emulated cloud, whether it should be running, and what to
boot it from) and, per mode:

* ``--machines process`` (the default): ``spec_of(item)``, the member spec of its process group,
  from its image's LinuxKit document and its user-data
  (:func:`reconciler.core.linuxkit.host_services`, :func:`reconciler.core.linuxkit.userdata_files`).
  The process groups are the ``local`` provider's instances, found through the ``infra.providers``
  entry point, so no provider package imports another;
* ``--machines vm``: ``vm_of(item)``, the disk the instance boots (the bytes that were pushed)
  and its address; the VM runs on a :class:`reconciler.kit.vmhost.VmHost`, which also serves the
  metadata the VM asks for.

This module runs the watcher: every ``interval`` seconds it boots what should run and is not
booted, and stops what is booted and should not run.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from reconciler.core import linuxkit
from reconciler.core.model import Instance, MemberSpec
from reconciler.kit import registry
from reconciler.kit.provider import Provider
from reconciler.kit.vmhost import Vm, VmHost

K = TypeVar("K", bound=Hashable)
CONSOLE_MAX = 64 * 1024


class BootError(Exception):
    """The instance cannot boot (no LinuxKit document, bad user-data); its console says why."""


@dataclass(frozen=True)
class VmBoot:
    """What a VM boots: its disk, its address, its memory (MiB; None: the host's default)."""

    disk: Path
    address: str
    memory_mib: int | None = None


class Machines(Generic[K]):
    """The booted machines of one emulator, and the thread that keeps them matching the cloud."""

    #: The stack the process groups are recorded under in the emulator's own local root.
    stack: str = "emulator"
    #: How the console introduces a machine that booted nothing ("infra GCE emulator").
    title: str = "infra emulator"

    def __init__(self, root: Path, *, interval: float, log: Callable[[str], None] = lambda m: None,
                 vms: VmHost | None = None) -> None:
        self.root = root
        self.interval = interval
        self.log = log
        self.vms = vms
        self.local: Provider | None = None
        if vms is None:
            local = registry.provider_class("local", where=f"{self.title}'s machines")
            # owner_pid: the machines die with this emulator, however it ends (kill -9 included).
            self.local = local.open({"root": str(root / "machines"), "grace": 3.0, "start_timeout": 60.0,
                                     "owner_pid": os.getpid()},
                                    stack=self.stack, state_dir=root)
        self.booted: dict[K, Instance | Vm] = {}
        self.failed: dict[K, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- what a subclass says ----------------------------------------------------------------

    def observe(self) -> Mapping[K, tuple[bool, Any]]:
        """Every instance: whether it should be running now, and what :meth:`spec_of` takes."""
        raise NotImplementedError

    def spec_of(self, item: Any) -> MemberSpec:
        """The process group's spec. Raises BootError (or DocumentError) when it cannot boot."""
        raise NotImplementedError

    def vm_of(self, item: Any) -> VmBoot:
        """What the instance's VM boots. Raises BootError when it cannot boot."""
        raise NotImplementedError

    def name_of(self, key: K) -> str:
        return str(key)

    # -- the watcher -------------------------------------------------------------------------

    def start(self) -> Machines[K]:
        self._thread = threading.Thread(target=self._run, name=f"{self.stack}-machines", daemon=True)
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

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.step()
            except Exception as exc:  # keep watching: one bad instance must not stop the others
                self.log(f"machines: {type(exc).__name__}: {exc}")

    def step(self) -> None:
        """One look: boot what should run and is not booted, stop what is booted and should not."""
        seen = self.observe()
        with self._lock:
            for key, machine in self.booted.items():
                exited = isinstance(machine, Vm) and machine.process.returncode is None \
                    and machine.process.poll() is not None
                if exited:
                    # reaped; the instance stays RUNNING, as a crashed guest's does: health checks see it
                    self.log(f"machines: the VM of {self.name_of(key)} exited")
            for key in list(self.booted):
                if not seen.get(key, (False, None))[0]:
                    self._halt(key)
            for key, (running, item) in seen.items():
                if not running or key in self.booted or key in self.failed:
                    continue
                try:
                    if self.vms is not None:
                        boot = self.vm_of(item)
                        self.booted[key] = self.vms.boot(self.name_of(key), boot.disk, boot.address,
                                                         memory_mib=boot.memory_mib)
                        continue
                    assert self.local is not None
                    spec = self.spec_of(item)
                    self.booted[key] = self.local.create(spec)
                    self.log(f"machines: booted {self.name_of(key)} at {spec.address} ({len(spec.services)} services)")
                except (BootError, linuxkit.DocumentError) as exc:
                    self.failed[key] = str(exc)
                    self.log(f"machines: {self.name_of(key)} boots nothing: {exc}")
                except Exception as exc:
                    self.failed[key] = f"{type(exc).__name__}: {exc}"
                    self.log(f"machines: {self.name_of(key)} failed to boot: {exc}")

    def _halt(self, key: K) -> None:
        machine = self.booted.pop(key)
        if isinstance(machine, Vm):
            assert self.vms is not None
            self.vms.halt(machine)
        else:
            assert self.local is not None
            self.local.delete(machine)
        self.log(f"machines: stopped {self.name_of(key)}")

    def console(self, key: K) -> str:
        """A machine's serial console: why it booted nothing, or its services' logs."""
        with self._lock:
            failed = self.failed.get(key)
            booted = self.booted.get(key)
        if failed is not None:
            return f"{self.title}: {self.name_of(key)} boots nothing: {failed}\n"
        if booted is None:
            return ""
        if isinstance(booted, Vm):
            assert self.vms is not None
            return self.vms.console(booted)
        logs = self.root / "machines" / "instances" / booted.name / "logs"
        text = "".join(f"==> {p.name} <==\n{p.read_text(errors='replace')[-CONSOLE_MAX:]}\n"
                       for p in sorted(logs.glob("*.log")) if p.is_file())
        return text[-CONSOLE_MAX:]
