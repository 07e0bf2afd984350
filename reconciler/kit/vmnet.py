"""The emulated cloud network VMs live on: a bridge with the cloud's subnets, in a private namespace.

Used by :class:`reconciler.kit.vmhost.VmHost` (the emulators' ``--machines vm``). Cloud-shaped
addresses (GCE's 10.128.0.0/20, a VPC's 10.0.0.0/20) and the metadata address 169.254.169.254
exist only on a bridge inside a **private network namespace**: :func:`require_private` refuses to
create them anywhere else, so nothing here can send a packet to a real network.

:class:`Bridge` owns, for its lifetime:

* the bridge device (its name carries the owner's pid in the interface alias, so a bridge left by
  a killed emulator is recognised and replaced, and a live one is refused), holding the first
  address of each subnet (the instances' gateway) and 169.254.169.254/32; with several subnets
  (a VPC's), the namespace forwards between them, as a VPC's router does;
* one ``dnsmasq`` (Debian's ``dnsmasq-base``) answering DHCP on the bridge only, no DNS, with one
  fixed lease per instance (MAC → address, :meth:`Bridge.lease`), re-read on SIGHUP; it dies with
  the emulator (parent-death signal);
* the script QEMU runs to put each VM's tap device on the bridge (:attr:`Bridge.ifup`). Taps are
  QEMU's own (non-persistent): they vanish with their VM.

``detached=True`` (the ``qemu`` provider, whose VMs outlive the command that made them): dnsmasq
runs in a session of its own and is found again by its pid file, the bridge's alias names
dnsmasq's pid, and :meth:`Bridge.start` reuses a bridge whose dnsmasq still runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

from reconciler.core.errors import ConfigError

#: The metadata server's address on every cloud.
METADATA_ADDRESS = "169.254.169.254"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """For ``preexec_fn``: the child is killed when the process that started it ends, however."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def running(pidfile: Path, *markers: str) -> int | None:
    """The pid in ``pidfile`` when that process runs with every one of ``markers`` in its command
    line (so a pid reused by another process is not taken for it), else None."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if all(m.encode() in cmdline for m in markers) else None


def in_private_namespace() -> tuple[bool, str]:
    """Whether this process's network namespace is a private one: not the one of PID 1 (when that
    can be read), no default route (nothing leads out), and no interface but ``lo`` and infra's own
    bridges (``infra-*``) with the taps on them. With the reason when not."""
    try:
        if os.readlink("/proc/self/ns/net") == os.readlink("/proc/1/ns/net"):
            return False, "this is the machine's own network namespace"
    except OSError:
        pass  # PID 1 is out of reach (a container): the namespace's contents decide
    for family in ("-4", "-6"):
        routes = subprocess.run(["ip", family, "-o", "route", "show", "default"], capture_output=True, text=True,
                                check=False)
        if routes.stdout.strip():
            return False, "this network namespace has a default route (it leads out)"
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=False).stdout
    for line in links.splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0] if line.count(":") >= 2 else ""
        if name == "lo" or name.startswith("infra-") or " master infra-" in line:
            continue
        return False, f"this network namespace has the interface {name!r} (it may lead out)"
    return True, ""


def require_private(what: str) -> None:
    """ConfigError unless :func:`in_private_namespace`."""
    private, why = in_private_namespace()
    if not private:
        raise ConfigError(f"{what} creates cloud-shaped addresses and runs only inside a private network "
                          f"namespace: {why}",
                          hint="run it under 'unshare -n' (as root), or give it a command to run in a namespace "
                               "of its own: infra emulator gcp --machines vm -- bash")


#: Runs ``"$@"`` (dnsmasq) until its standard input closes, then stops it.
WATCHDOG = 'set -e; "$@" </dev/null & child=$!; read -r _ || true; kill "$child" 2>/dev/null; wait "$child" || true'


def mac_of(address: str) -> str:
    """The MAC of the VM at ``address``: QEMU's 52:54 prefix and the address's four bytes."""
    return "52:54:" + ":".join(f"{int(b):02x}" for b in address.split("."))


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


class Bridge:
    """The bridge, its gateways and its DHCP server. See the module docstring."""

    def __init__(self, name: str, subnets: Sequence[str], root: Path, *, detached: bool = False) -> None:
        if len(name) > 15:
            raise ValueError(f"bridge name {name!r} is longer than 15 characters")
        self.name = name
        self.subnets = [ipaddress.ip_network(s) for s in subnets]
        self.root = root
        self.hosts = root / "dhcp-hosts"
        self.ifup = root / "qemu-ifup"
        self._leases: dict[str, str] = {}
        self._lock = threading.Lock()
        self._dnsmasq: subprocess.Popen[bytes] | None = None
        self.detached = detached
        self.pidfile = root / "dnsmasq.pid"

    def gateway(self, subnet: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
        return str(next(subnet.hosts()))

    def running_pid(self) -> int | None:
        """The pid of this bridge's dnsmasq when it runs (from its pid file), else None."""
        return running(self.pidfile, "dnsmasq", str(self.hosts))

    def start(self) -> Bridge:
        require_private("a VM network")
        if self.detached and self.running_pid() is not None and _ip("link", "show", self.name).returncode == 0:
            self._leases = dict(line.split(",", 1) for line in self.hosts.read_text().split() if "," in line)
            return self
        for tool in ("ip", "dnsmasq"):
            if shutil.which(tool) is None:
                raise ConfigError(f"VM networking needs {tool}", hint="scripts/install.sh --vm installs it "
                                  "(Debian's iproute2 and dnsmasq-base)")
        self._take_over()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        steps: list[tuple[str, ...]] = [("link", "add", self.name, "type", "bridge")]
        if not self.detached:
            steps.append(("link", "set", self.name, "alias", f"infra pid={os.getpid()}"))
        for subnet in self.subnets:
            steps.append(("addr", "add", f"{self.gateway(subnet)}/{subnet.prefixlen}", "dev", self.name))
        steps += [("addr", "add", f"{METADATA_ADDRESS}/32", "dev", self.name), ("link", "set", self.name, "up")]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                self.stop()
                raise ConfigError(f"cannot set up the VM bridge: ip {' '.join(step)}: {done.stderr.strip()}",
                                  hint="VM mode needs root (CAP_NET_ADMIN) in its network namespace")
        if len(self.subnets) > 1:
            # A VPC's router joins its subnets: forward between them (this namespace only; it has
            # no other interface), without redirects (the guests keep their gateway).
            for path, value in ((Path("/proc/sys/net/ipv4/ip_forward"), "1"),
                                (Path(f"/proc/sys/net/ipv4/conf/{self.name}/send_redirects"), "0")):
                path.write_text(value)
        self.ifup.write_text(f'#!/bin/sh\nip link set "$1" master {self.name} && ip link set "$1" up\n')
        self.ifup.chmod(0o700)
        self.hosts.write_text("")
        command = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", f"--interface={self.name}",
                   "--bind-interfaces", "--except-interface=lo", "--port=0", "--leasefile-ro",
                   "--dhcp-authoritative", f"--dhcp-hostsfile={self.hosts}", "--log-facility=-",
                   f"--pid-file={self.pidfile}", "--user=root"]
        for subnet in self.subnets:
            command.append(f"--dhcp-range={subnet.network_address},static,{subnet.netmask},12h")
        with open(self.root / "dnsmasq.log", "ab") as log:
            if self.detached:  # outlives this process: found again through its pid file
                daemon = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                          start_new_session=True)
                self.pidfile.write_text(f"{daemon.pid}\n")
                _ip("link", "set", self.name, "alias", f"infra pid={daemon.pid}")
            else:
                # dnsmasq changes its credentials, which clears a parent-death signal: a shell
                # watches the pipe from this process instead and stops dnsmasq when it closes
                # (this process ended, however).
                self._dnsmasq = subprocess.Popen(["sh", "-c", WATCHDOG, "sh", *command], stdin=subprocess.PIPE,
                                                 stdout=subprocess.DEVNULL, stderr=log)
        return self

    def _take_over(self) -> None:
        """Remove a bridge of this name left by a dead owner; refuse one whose owner lives."""
        shown = _ip("-o", "link", "show", self.name)
        if shown.returncode != 0:
            return
        alias = shown.stdout.split("alias ", 1)[-1].strip() if "alias " in shown.stdout else ""
        pid = alias.split("pid=", 1)[-1].split()[0] if "pid=" in alias else ""
        if pid.isdigit() and int(pid) != os.getpid() and Path(f"/proc/{pid}").exists():
            raise ConfigError(f"another emulator in VM mode (pid {pid}) owns the bridge {self.name} in this "
                              "network namespace", hint="stop it first, or run this one in another namespace")
        _ip("link", "del", self.name)

    def lease(self, address: str) -> str:
        """Give ``address`` to the VM with its MAC (:func:`mac_of`) from now on; the MAC."""
        mac = mac_of(address)
        with self._lock:
            self._leases[mac] = address
            self.hosts.write_text("".join(f"{m},{a}\n" for m, a in sorted(self._leases.items())))
            pid = self.running_pid()  # dnsmasq's own pid (its pid file), not the watchdog's
            if pid is not None:
                os.kill(pid, signal.SIGHUP)
        return mac

    def release(self, address: str) -> None:
        with self._lock:
            self._leases.pop(mac_of(address), None)
            if self.detached:
                self.hosts.write_text("".join(f"{m},{a}\n" for m, a in sorted(self._leases.items())))

    def stop(self) -> None:
        pid = self.running_pid() if self.detached and self._dnsmasq is None else None
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
        if self._dnsmasq is not None:
            if self._dnsmasq.stdin is not None:
                self._dnsmasq.stdin.close()  # the watchdog stops dnsmasq
            try:
                self._dnsmasq.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._dnsmasq.kill()
                with contextlib.suppress(OSError):
                    if (pid := self.running_pid()) is not None:
                        os.kill(pid, signal.SIGKILL)
            self._dnsmasq = None
        _ip("link", "del", self.name)
