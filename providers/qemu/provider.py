"""The ``qemu`` provider: every member is a QEMU virtual machine on a bridge of this machine.

The same VMs the emulators boot in ``--machines vm``, as a provider of their own: the disk of the
image infra built (``image_builder="debian"``, format ``raw-bios``), a virtio NIC on the bridge
``infra-qemu`` with the subnet ``10.77.0.0/24`` (``provider_config.subnet``), an address by DHCP
(Debian's dnsmasq), the user-data from a GCE-shaped metadata server at 169.254.169.254 and
Prometheus discovery on the gateway (:mod:`providers.qemu.hostd`). The bridge and its subnet
exist only in a **private network namespace**: the provider refuses to create anything elsewhere
(``unshare -n``, as root; run every infra command of the stack in that namespace).

Under ``<root>`` (``provider_config.root``, default ``<state root>/qemu``):

* ``images/<digest>/disk.raw`` with ``image.json``: the pushed images (:meth:`push_image` copies
  the built artefact; ``find_image`` looks the digest up);
* ``instances/<name>/``: ``instance.json`` (id, name, labels, address, image), ``user-data``
  (0600), ``console.log`` (the serial console), ``qemu.pid``;
* ``addresses.json``: the address of every instance name, reserved before it is created
  (:meth:`address_for`), released when it is deleted (or, never taken, after 10 minutes);
* ``net/``: the bridge's DHCP hosts, dnsmasq's and the host process's pid files and logs.

VMs outlive the ``infra`` command that started them (QEMU ``-daemonize``); dnsmasq and the host
process run while any VM does and stop with the last one. An instance whose QEMU process is
gone is DEAD (the planner replaces it). Every OS failure is translated in one place (``TABLE``).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlencode

from providers.qemu.config import QemuConfig, parse_config
from providers.qemu.hostd import qemu_pid, records
from reconciler.core.errors import ConfigError, InfraError, PermanentError, TransientError
from reconciler.core.image import ImageRecord, ImageSpec
from reconciler.core.model import Instance, InstanceStatus, MemberSpec, Problem
from reconciler.kit.errormap import ErrorTable
from reconciler.kit.ownership import require_owned
from reconciler.kit.provider import Progress, SdConfig
from reconciler.kit.vmhost import qemu_command
from reconciler.kit.vmnet import Bridge, in_private_namespace, running

#: The first host number of the subnet given to members (below: the gateway and spares).
FIRST_HOST = 10
#: A reservation (:meth:`QemuProvider.address_for`) that no VM took within this time is dropped.
RESERVATION_TTL = 600.0
_TRANSIENT = frozenset({errno.EAGAIN, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EINTR, errno.EBUSY})


def _map(exc: BaseException, action: str) -> InfraError | None:
    if isinstance(exc, subprocess.TimeoutExpired):
        return TransientError(f"qemu: {action}: timed out")
    if isinstance(exc, OSError):
        what = f"qemu: {action}: {exc.strerror or exc}"
        return TransientError(what) if exc.errno in _TRANSIENT else PermanentError(what)
    return None


TABLE = ErrorTable("qemu", _map)


class QemuProvider:
    """VMs on this machine. See the module docstring."""

    name: ClassVar[str] = "qemu"
    image_format: ClassVar[str] = "raw-bios"
    image_metadata: ClassVar[str] = "gcp"  # the metadata server's shape (the init and LinuxKit read it)

    def __init__(self, cfg: QemuConfig, *, stack: str) -> None:
        self.cfg = cfg
        self.stack = stack
        self.root = cfg.root_path()
        self.bridge = Bridge(cfg.bridge, [cfg.subnet], self.root / "net", detached=True)

    @classmethod
    def open(cls, config: Mapping[str, Any], *, stack: str, state_dir: Path) -> QemuProvider:
        """Validate ``config`` (:class:`QemuConfig`); nothing is created until the first VM."""
        return cls(parse_config(dict(config)), stack=stack)

    # -- the pieces on disk ------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return self.root / "instances" / name

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer of the root at a time (addresses, the host's start and stop)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.root / "lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _addresses(self) -> dict[str, dict[str, Any]]:
        """Under the lock: name → {"address", "time"}; a reservation no VM took within
        :data:`RESERVATION_TTL` is dropped (the names a plan asks about are not all created)."""
        try:
            found = json.loads((self.root / "addresses.json").read_text())
        except (OSError, ValueError):
            return {}
        now = time.time()
        return {str(k): v for k, v in found.items() if isinstance(v, dict) and "address" in v
                and (self._dir(str(k)).is_dir() or now - float(v.get("time", 0)) < RESERVATION_TTL)} \
            if isinstance(found, dict) else {}

    def _save_addresses(self, addresses: Mapping[str, dict[str, Any]]) -> None:
        tmp = self.root / ".addresses.json.tmp"
        tmp.write_text(json.dumps(dict(sorted(addresses.items())), indent=1))
        tmp.replace(self.root / "addresses.json")

    # -- observing ---------------------------------------------------------------------------

    def list(self, selector: Mapping[str, str]) -> builtins.list[Instance]:
        with TABLE.translate("list the VMs"):
            found = records(self.root)
        out = []
        for record in found:
            labels = {str(k): str(v) for k, v in (record.get("labels") or {}).items()}
            if any(labels.get(k) != v for k, v in selector.items()):
                continue
            up = bool(record["alive"])
            out.append(Instance(id=str(record["id"]), name=str(record["name"]), labels=labels,
                                address=record.get("address"),
                                status=InstanceStatus.RUNNING if up else InstanceStatus.DEAD,
                                detail=None if up else "its VM is gone (the QEMU process exited)",
                                created_at=record.get("created")))
        return out

    def address_for(self, spec: MemberSpec) -> str:
        """The address reserved for ``spec.name``: the 10th host of the subnet and up."""
        with TABLE.translate("reserve an address"), self._locked():
            addresses = self._addresses()
            held = addresses.get(spec.name)
            if held is not None:
                held["time"] = time.time()
                self._save_addresses(addresses)
                return str(held["address"])
            net = ipaddress.ip_network(self.cfg.subnet)
            used = {str(v["address"]) for v in addresses.values()}
            for n, host in enumerate(net.hosts(), start=1):
                if n >= FIRST_HOST and str(host) not in used:
                    addresses[spec.name] = {"address": str(host), "time": time.time()}
                    self._save_addresses(addresses)
                    return str(host)
        raise PermanentError(f"qemu: no free address left in {self.cfg.subnet}",
                             hint="give provider_config.subnet a larger subnet")

    # -- the host: bridge, DHCP, metadata --------------------------------------------------------

    def _hostd_pid(self) -> int | None:
        return running(self.root / "net" / "hostd.pid", "providers.qemu.hostd", str(self.root))

    def _start_host(self) -> None:
        """The bridge, dnsmasq and the host process, unless they run. Under the lock."""
        self.bridge.start()
        if self._hostd_pid() is not None:
            return
        net = self.root / "net"
        with open(net / "hostd.log", "ab") as log:
            subprocess.Popen([sys.executable, "-m", "providers.qemu.hostd", str(self.root), self.cfg.gateway(),
                              str(self.cfg.sd_port)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((self.cfg.gateway(), self.cfg.sd_port), 0.5):
                return
            time.sleep(0.1)
        raise TransientError(f"qemu: the host process did not start: {(net / 'hostd.log').read_text()[-500:]}")

    def _stop_host(self) -> None:
        """Stop dnsmasq and the host process and remove the bridge. Under the lock."""
        pid = self._hostd_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
        self.bridge.stop()

    # -- creating and deleting ---------------------------------------------------------------

    def create(self, spec: MemberSpec) -> Instance:
        """Boot the VM of ``spec`` from its pipeline image at its reserved address."""
        directory = self._dir(spec.name)
        for live in self.list({}):
            if live.name == spec.name and live.owned_by(self.stack):
                return live
        if not spec.image_digest:
            raise PermanentError(f"qemu: {spec.name}: no image infra built; the qemu provider boots only "
                                 "pipeline images", hint="leave image= unset and set image_builder='debian'")
        disk = self.root / "images" / spec.image_digest / "disk.raw"
        if not disk.is_file():
            raise PermanentError(f"qemu: image {spec.image} is not pushed ({disk} is missing)")
        qemu = shutil.which("qemu-system-x86_64")
        if qemu is None:
            raise ConfigError("the qemu provider needs qemu-system-x86_64", hint="scripts/install.sh --vm")
        address = spec.address or self.address_for(spec)
        with TABLE.translate(f"boot {spec.name}"), self._locked():
            self._start_host()
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            user_data = directory / "user-data"
            fd = os.open(user_data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(spec.userdata(), sort_keys=True, separators=(",", ":")))
            record = {"id": f"qemu-{uuid.uuid4().hex[:12]}", "name": spec.name, "labels": spec.labels,
                      "address": address, "image": spec.image, "created": time.time()}
            (directory / "instance.json").write_text(json.dumps(record, indent=1))
            mac = self.bridge.lease(address)
            command = qemu_command(qemu, spec.name, disk, mac, directory / "console.log", self.bridge.ifup,
                                   self.cfg.memory_mib)
            done = subprocess.run([*command, "-daemonize", "-pidfile", str(directory / "qemu.pid")],
                                  capture_output=True, text=True, timeout=60, check=False, cwd=directory)
            if done.returncode != 0:
                raise PermanentError(f"qemu: {spec.name}: QEMU failed to start: {done.stderr.strip()[-400:]}")
        return Instance(id=str(record["id"]), name=spec.name, labels=spec.labels, address=address,
                        status=InstanceStatus.RUNNING, created_at=float(str(record["created"])))

    def delete(self, instance: Instance) -> None:
        """Power the VM off and remove its directory; the last VM stops the host."""
        require_owned(self.name, instance, self.stack)
        directory = self._dir(instance.name)
        with TABLE.translate(f"delete {instance.name}"), self._locked():
            if directory.is_dir():
                record: dict[str, Any] = {}
                with contextlib.suppress(OSError, ValueError):
                    record = json.loads((directory / "instance.json").read_text())
                pid = qemu_pid(directory)
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    deadline = time.monotonic() + 10
                    while qemu_pid(directory) is not None and time.monotonic() < deadline:
                        time.sleep(0.05)
                if record.get("address"):
                    self.bridge.release(str(record["address"]))
                shutil.rmtree(directory)
            addresses = self._addresses()
            if addresses.pop(instance.name, None) is not None:
                self._save_addresses(addresses)
            if not any((self.root / "instances").glob("*/instance.json")):
                self._stop_host()

    # -- checks and discovery ------------------------------------------------------------------

    def validate(self, members: Sequence[MemberSpec]) -> builtins.list[Problem]:
        problems = []
        if members and shutil.which("qemu-system-x86_64") is None:
            problems.append(Problem(field="provider", message="qemu-system-x86_64 is missing: scripts/install.sh --vm "
                                    "installs it (Debian's qemu-system-x86, and dnsmasq-base)"))
        private, why = in_private_namespace()
        if members and not private and not self.list({}):
            problems.append(Problem(field="provider", message="the qemu provider puts its VMs on a bridge of "
                                    f"their own subnet, only inside a private network namespace: {why}; run "
                                    "infra under 'unshare -n' (as root)"))
        for spec in members:
            if not spec.image_digest:
                problems.append(Problem(field=f"groups.{spec.group}.image", message="the qemu provider boots only "
                                        "the images infra builds: leave image= unset and set image_builder='debian'"))
                break
        return problems

    def discovery(self, selector: Mapping[str, str], port: int) -> SdConfig | None:
        """HTTP discovery from the host process on the gateway (labels and addresses only)."""
        query = urlencode({**dict(sorted(selector.items())), "port": port})
        return {"http_sd_configs": [{"url": f"http://{self.cfg.gateway()}:{self.cfg.sd_port}/sd?{query}"}]}

    def close(self) -> None:
        pass

    # -- images ------------------------------------------------------------------------------

    def find_image(self, image: ImageSpec) -> ImageRecord | None:
        folder = self.root / "images" / image.digest
        if not (folder / "disk.raw").is_file() or not (folder / "image.json").is_file():
            return None
        with TABLE.translate(f"look up image {image.name}"):
            doc = json.loads((folder / "image.json").read_text())
            size = (folder / "disk.raw").stat().st_size
        return ImageRecord(name=str(doc["name"]), id=str(folder), digest=image.digest, size=size)

    def push_image(self, image: ImageSpec, artefact: Path, progress: Progress) -> ImageRecord:
        """Copy the built disk into the root (idempotent by digest)."""
        found = self.find_image(image)
        if found is not None:
            return found
        folder = self.root / "images" / image.digest
        with TABLE.translate(f"store image {image.name}"):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = folder / ".disk.raw.tmp"
            total = artefact.stat().st_size
            with open(artefact, "rb") as src, open(tmp, "wb") as dst:
                done = 0
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
                    done += len(chunk)
                    progress(done, total)
            tmp.replace(folder / "disk.raw")
            (folder / "image.json").write_text(json.dumps({"name": image.name, "digest": image.digest,
                                                           "group": image.group}))
        record = self.find_image(image)
        assert record is not None
        return record

    def delete_image(self, record: ImageRecord) -> None:
        if not record.digest:
            raise PermanentError(f"qemu: refusing to delete {record.name}: it has no infra-image digest")
        with TABLE.translate(f"delete image {record.name}"):
            shutil.rmtree(self.root / "images" / record.digest, ignore_errors=True)
