"""QEMU virtual machines on an emulated cloud network, with the cloud's metadata server.

Used by the emulators in ``--machines vm`` (:class:`reconciler.kit.machines.Machines` boots each
running instance through :meth:`VmHost.boot`). One :class:`VmHost` owns, for its lifetime:

* the network (:class:`reconciler.kit.vmnet.Bridge`: bridge, gateways, DHCP), in a private
  network namespace only;
* a metadata server on 169.254.169.254:80 shaped like the cloud's (``flavor``): GCE's
  ``/computeMetadata/v1/`` (only with ``Metadata-Flavor: Google``) or EC2's IMDS (IMDSv2's
  ``PUT /latest/api/token`` then ``X-aws-ec2-metadata-token``; IMDSv1 too unless the instance
  requires tokens). It knows each VM **by its source address**: ``metadata(address)`` returns that
  instance's values (user-data, hostname, address), so one VM never reads another's user-data;
* the QEMU processes: software emulation (``-accel tcg``, no KVM on these machines), the disk the
  instance booted from attached read-only with its writes kept apart (``snapshot=on``: VMs of one
  image share it), a virtio NIC on the bridge with a MAC derived from the address, the serial
  console written to a file (:meth:`VmHost.console`), and a parent-death signal, so every VM dies
  with the emulator however it ends.

What a VM does not have (it is an emulation, not a cloud): persistent disks (a stopped VM loses
its writes), more than one NIC, live migration, a guest agent. QEMU's translation cache is kept
small (``tb-size``), which costs a little speed for a lot of memory.
"""

from __future__ import annotations

import http.server
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.core.errors import ConfigError
from reconciler.kit.vmnet import METADATA_ADDRESS, Bridge, die_with_parent

#: What :meth:`VmHost.console` returns at most (the end of the console).
CONSOLE_MAX = 256 * 1024
#: QEMU's translation cache, MiB (its default is a quarter of the guest's memory).
TB_SIZE_MIB = 64


@dataclass(frozen=True)
class GuestInfo:
    """What the metadata server tells one VM about itself."""

    user_data: str
    hostname: str
    address: str
    require_token: bool = False  # EC2: HttpTokens=required


@dataclass
class Vm:
    """One running VM."""

    name: str
    address: str
    disk: Path
    console: Path
    process: subprocess.Popen[bytes] = field(repr=False)


class MetadataServer:
    """The metadata server on 169.254.169.254:80 (see the module docstring): ``metadata(address)``
    says what the VM at ``address`` may read. Used by :class:`VmHost` and by the ``qemu``
    provider's host process."""

    def __init__(self, flavor: str, metadata: Callable[[str], GuestInfo | None],
                 address: str = METADATA_ADDRESS, port: int = 80) -> None:
        if flavor not in ("gcp", "aws"):
            raise ValueError(f"flavor {flavor!r}")
        self.flavor = flavor
        self.metadata = metadata
        self.lock = threading.Lock()
        self.tokens: dict[str, tuple[str, float]] = {}
        handler = type("Metadata", (_Metadata,), {"host": self})
        try:
            self._server = http.server.ThreadingHTTPServer((address, port), handler)
        except OSError as exc:
            raise ConfigError(f"cannot serve the metadata server on {address}:{port}: {exc}") from None
        self._server.daemon_threads = True

    def start(self) -> MetadataServer:
        threading.Thread(target=self._server.serve_forever, name="metadata", daemon=True).start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def qemu_command(qemu: str, name: str, disk: Path, mac: str, console: Path, ifup: Path, memory_mib: int) -> list[str]:
    """The QEMU command line of one VM (see the module docstring)."""
    return [qemu, "-name", name, "-accel", f"tcg,tb-size={TB_SIZE_MIB}", "-m", str(memory_mib), "-smp", "1",
            "-nodefaults", "-display", "none", "-no-reboot", "-serial", f"file:{console}",
            "-drive", f"file={disk},format=raw,if=virtio,snapshot=on",
            "-netdev", f"tap,id=n0,script={ifup},downscript=no", "-device", f"virtio-net-pci,netdev=n0,mac={mac}"]


def read_console(path: Path) -> str:
    """The end of a VM's serial console (at most :data:`CONSOLE_MAX`)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - CONSOLE_MAX))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


class _Metadata(http.server.BaseHTTPRequestHandler):
    """The metadata server's requests (see the module docstring)."""

    host: MetadataServer
    protocol_version = "HTTP/1.0"

    def _answer(self, code: int, body: str, content_type: str = "text/plain") -> None:
        data = body.encode()
        self.send_response(code)
        if self.host.flavor == "gcp":
            self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _guest(self) -> GuestInfo | None:
        try:
            return self.host.metadata(self.client_address[0])
        except Exception:  # the cloud's state could not be read: the guest retries
            return None

    def do_PUT(self) -> None:
        if self.host.flavor != "aws" or self.path != "/latest/api/token":
            self._answer(404, "not found")
            return
        try:
            ttl = int(self.headers.get("X-aws-ec2-metadata-token-ttl-seconds") or "")
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= 21600:
            self._answer(400, "X-aws-ec2-metadata-token-ttl-seconds must be 1..21600")
            return
        token = secrets.token_urlsafe(32)
        with self.host.lock:
            self.host.tokens[token] = (self.client_address[0], time.monotonic() + ttl)
        self._answer(200, token)

    def do_GET(self) -> None:
        guest = self._guest()
        if guest is None:
            self._answer(404, "no instance has this address")
            return
        values = self._values(guest)
        if values is None:
            return
        path = self.path.split("?", 1)[0]
        if path in values:
            self._answer(200, values[path])
        else:
            self._answer(404, "not found")

    def _values(self, guest: GuestInfo) -> dict[str, str] | None:
        if self.host.flavor == "gcp":
            if self.headers.get("Metadata-Flavor") != "Google":
                self._answer(403, "Missing Metadata-Flavor:Google header.")
                return None
            base = "/computeMetadata/v1/instance/"
            return {base + "attributes/user-data": guest.user_data, base + "hostname": guest.hostname,
                    base + "network-interfaces/0/ip": guest.address, base + "name": guest.hostname.split(".")[0]}
        token = self.headers.get("X-aws-ec2-metadata-token")
        if token is not None or guest.require_token:
            with self.host.lock:
                held = self.host.tokens.get(token or "")
            if held is None or held[0] != self.client_address[0] or held[1] < time.monotonic():
                self._answer(401, "Unauthorized")
                return None
        return {"/latest/user-data": guest.user_data, "/latest/meta-data/local-ipv4": guest.address,
                "/latest/meta-data/hostname": guest.hostname, "/latest/meta-data/local-hostname": guest.hostname}

    def log_message(self, format: str, *args: Any) -> None:
        pass


class VmHost:
    """The VMs of one emulator, their network and their metadata server. See the module docstring."""

    def __init__(self, root: Path, *, bridge: str, subnets: Sequence[str], flavor: str,
                 metadata: Callable[[str], GuestInfo | None], memory_mib: int = 512,
                 log: Callable[[str], None] = lambda m: None) -> None:
        if flavor not in ("gcp", "aws"):
            raise ValueError(f"flavor {flavor!r}")
        self.root = root
        self.flavor = flavor
        self.metadata = metadata
        self.memory_mib = memory_mib
        self.log = log
        self.bridge = Bridge(bridge, subnets, root / "net")
        self._server: MetadataServer | None = None
        self.qemu = shutil.which("qemu-system-x86_64") or ""

    def start(self) -> VmHost:
        if not self.qemu:
            raise ConfigError("VM mode needs qemu-system-x86_64",
                              hint="scripts/install.sh --vm installs it (Debian's qemu-system-x86)")
        self.bridge.start()
        try:
            self._server = MetadataServer(self.flavor, self.metadata).start()
        except ConfigError:
            self.bridge.stop()
            raise
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        self.bridge.stop()

    def boot(self, name: str, disk: Path, address: str, *, memory_mib: int | None = None) -> Vm:
        """Start the VM ``name`` from ``disk`` at ``address``; returns at once (it boots meanwhile)."""
        mac = self.bridge.lease(address)
        folder = self.root / "vms" / name
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        console = folder / "console.log"
        console.write_bytes(b"")
        command = qemu_command(self.qemu, name, disk, mac, console, self.bridge.ifup, memory_mib or self.memory_mib)
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=open(folder / "qemu.log", "ab"),  # noqa: SIM115
                                   preexec_fn=die_with_parent, cwd=folder)
        self.log(f"machines: VM {name} (pid {process.pid}) boots {disk.name} at {address}")
        return Vm(name=name, address=address, disk=disk, console=console, process=process)

    def halt(self, vm: Vm) -> None:
        """Stop the VM (power off: no shutdown inside)."""
        if vm.process.poll() is None:
            vm.process.kill()
        vm.process.wait(timeout=10)
        self.bridge.release(vm.address)

    def console(self, vm: Vm) -> str:
        """The end of the VM's serial console."""
        text = read_console(vm.console)
        if vm.process.poll() is not None:
            text += f"\n[the VM's QEMU process has exited ({vm.process.returncode})]\n"
        return text

