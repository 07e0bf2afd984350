"""What an emulator's instances run on: booted machines as the ``local`` provider's process groups.

Used by the GCE and EC2 emulators (``providers/gcp/emulator/machines.py``,
``providers/aws/emulator/machines.py``), which subclass :class:`Machines` with two methods:
``observe()`` (every instance of the emulated cloud, whether it should be running, and what to
boot it from) and ``spec_of(item)`` (the member spec of its process group, from its image's
LinuxKit document and its user-data: :func:`reconciler.core.linuxkit.host_services`,
:func:`reconciler.core.linuxkit.userdata_files`). This module runs the watcher: every ``interval``
seconds it boots what should run and is not booted, and stops what is booted and should not
run. The process groups are the ``local`` provider's instances, found through the
``infra.providers`` entry point, so no provider package imports another.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from reconciler.core import linuxkit
from reconciler.core.model import Instance, MemberSpec
from reconciler.kit import registry
from reconciler.kit.provider import Provider

K = TypeVar("K", bound=Hashable)
CONSOLE_MAX = 64 * 1024


class BootError(Exception):
    """The instance cannot boot (no LinuxKit document, bad user-data); its console says why."""


class Machines(Generic[K]):
    """The booted machines of one emulator, and the thread that keeps them matching the cloud."""

    #: The stack the process groups are recorded under in the emulator's own local root.
    stack: str = "emulator"
    #: How the console introduces a machine that booted nothing ("infra GCE emulator").
    title: str = "infra emulator"

    def __init__(self, root: Path, *, interval: float, log: Callable[[str], None] = lambda m: None) -> None:
        self.root = root
        self.interval = interval
        self.log = log
        local = registry.provider_class("local", where=f"{self.title}'s machines")
        # owner_pid: the machines die with this emulator, however it ends (kill -9 included).
        self.local: Provider = local.open({"root": str(root / "machines"), "grace": 3.0, "start_timeout": 60.0,
                                           "owner_pid": os.getpid()},
                                          stack=self.stack, state_dir=root)
        self.booted: dict[K, Instance] = {}
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
            for key in list(self.booted):
                if not seen.get(key, (False, None))[0]:
                    self._halt(key)
            for key, (running, item) in seen.items():
                if not running or key in self.booted or key in self.failed:
                    continue
                try:
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
        self.local.delete(self.booted.pop(key))
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
        logs = self.root / "machines" / "instances" / booted.name / "logs"
        text = "".join(f"==> {p.name} <==\n{p.read_text(errors='replace')[-CONSOLE_MAX:]}\n"
                       for p in sorted(logs.glob("*.log")) if p.is_file())
        return text[-CONSOLE_MAX:]
