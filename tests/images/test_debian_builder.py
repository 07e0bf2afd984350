"""The Debian image builder: images from Debian packages that boot under QEMU.

The builder (:mod:`reconciler.engine.debianbuild`) is driven with a document of two services:
etcd from Debian's ``etcd-server``, and a busybox one that prints a user-data file. Checked:
the same document gives the same bytes; the initramfs holds what the document names; a changed
service gives a new digest; and the image boots under QEMU (software emulation), loads its network
modules, takes a DHCP lease, fetches its user-data from a metadata server at 169.254.169.254 the
GCE way (``Metadata-Flavor: Google``) and the EC2 way (IMDSv2: a PUT for a token first), writes it
under ``/run/config`` (refusing a path that climbs out), and runs etcd, which answers ``/health``
from the host. The VM's network is QEMU's user-mode stack with the metadata range as its subnet
and the metadata server as its "host" address: the guest reaches only this test's own server on
127.0.0.1:80 (in the suite's private network namespace) and its forwarded etcd port.

The packages come from the builder's cache, filled while online by scripts/install.sh
(``python -m reconciler.engine.debianbuild fetch``): the suite runs without a network.
"""

from __future__ import annotations

import gzip
import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.engine import debianbuild

ETCD = {
    "name": "etcd", "image": "registry.k8s.io/etcd:3.4.23",
    "command": ["etcd", "--name", "m0", "--data-dir", "/var/lib/infra/data",
                "--listen-client-urls", "http://0.0.0.0:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
                "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                "--initial-cluster", "m0=http://127.0.0.1:2380"],
    "env": ["ETCD_LOG_LEVEL=info"],
}
SHOW = {"name": "show", "image": "busybox", "command": ["/bin/sh", "-c", "cat /run/config/app/message; exec sleep 1000000"]}
DOCUMENT = {"services": [ETCD, SHOW]}
PACKAGES = {"etcd": "etcd-server", "show": "busybox-static"}
USERDATA = {"app": {"entries": {"message": {"content": "hello from user-data $(reboot) 'quoted'\n", "perm": "0600"}}},
            "..": {"entries": {"escaped": {"content": "must not be written"}}}}


def build(tmp: Path, document: dict[str, Any] = DOCUMENT) -> debianbuild.Built:
    try:
        return debianbuild.build(document, PACKAGES, tmp)
    except debianbuild.BuildError as exc:
        pytest.fail(f"{exc.message}\n  hint: {exc.hint}", pytrace=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> debianbuild.Built:
    return build(tmp_path_factory.mktemp("debian-image"))


def listing(initrd: Path) -> dict[str, str]:
    """Name → its ``cpio -itv --numeric-uid-gid`` row (mode, links, uid, gid, size, date, name)."""
    raw = gzip.decompress(initrd.read_bytes())
    out = subprocess.run(["cpio", "-itv", "--quiet", "--numeric-uid-gid"], input=raw, capture_output=True, check=True)
    rows: dict[str, str] = {}
    for line in out.stdout.decode().splitlines():
        parts = line.split()
        name = parts[8] if len(parts) > 8 else parts[-1]
        rows[name] = line
    return rows


def extract(initrd: Path, name: str, tmp: Path) -> str:
    raw = gzip.decompress(initrd.read_bytes())
    subprocess.run(["cpio", "-id", "--quiet", name], input=raw, cwd=tmp, check=True)
    return (tmp / name).read_text()


def test_the_same_document_gives_the_same_bytes(built: debianbuild.Built, tmp_path: Path) -> None:
    again = build(tmp_path)
    assert again.digest == built.digest
    assert again.initrd.read_bytes() == built.initrd.read_bytes()
    assert again.kernel.read_bytes() == built.kernel.read_bytes()
    assert debianbuild.disk(again).read_bytes() == debianbuild.disk(built).read_bytes()  # the bootable disk too
    assert built.packages[0].name.startswith("linux-image-") and "cloud-amd64" in built.packages[0].name


def test_the_initramfs_holds_what_the_document_names(built: debianbuild.Built, tmp_path: Path) -> None:
    files = listing(built.initrd)
    for name in ("init", "bin/busybox", "usr/bin/etcd", "usr/bin/jq", "lib64/ld-linux-x86-64.so.2",
                 "etc/infra/services/etcd", "etc/infra/services/show", "etc/infra/userdata.jq"):
        assert name in files, name
    modules = extract(built.initrd, "etc/infra/modules", tmp_path).split()
    assert modules[-1].endswith("virtio_net.ko") and any(m.endswith("virtio_pci.ko") for m in modules)
    assert all(f"lib/modules/{built.packages[0].name.removeprefix('linux-image-')}/{m}" in files for m in modules)
    script = extract(built.initrd, "etc/infra/services/etcd", tmp_path)
    assert "exec etcd --name m0" in script and "export ETCD_LOG_LEVEL=info" in script
    assert all(row.split()[2:4] == ["0", "0"] for row in files.values())  # owned by root, whoever built it
    assert all(" 1970 " in row for row in files.values())  # every time stamp at 0


def test_a_changed_service_rolls_the_digest(built: debianbuild.Built, tmp_path: Path) -> None:
    changed = {"services": [{**ETCD, "command": [*ETCD["command"], "--snapshot-count", "5000"]}, SHOW]}
    other = build(tmp_path, changed)
    assert other.digest != built.digest
    assert other.initrd.read_bytes() != built.initrd.read_bytes()


class Metadata(http.server.BaseHTTPRequestHandler):
    """GCE's and EC2's (IMDSv2) user-data endpoints, nothing else."""

    token = "imds-token-for-this-test"

    def _answer(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        body = json.dumps(USERDATA).encode()
        if (self.path == "/computeMetadata/v1/instance/attributes/user-data" and \
                self.headers.get("Metadata-Flavor") == "Google") or (self.path == "/latest/user-data" and self.headers.get("X-aws-ec2-metadata-token") == self.token):
            self._answer(200, body)
        else:
            self._answer(403, b"forbidden")

    def do_PUT(self) -> None:
        ok = self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        self._answer(200 if ok else 403, self.token.encode() if ok else b"forbidden")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def metadata_server() -> Iterator[None]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 80), Metadata)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield
    server.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.vm
# The disk through its bootloader, the GCE way, with hostile user-data; the emulators' VM tests boot
# both clouds' pushed disks (EC2's IMDSv2 included) with the roles' real user-data
# (tests/emulator/test_vm.py), the qemu provider's test the raw-bios disk.
@pytest.mark.parametrize(("cloud", "boot"), [("gcp", "disk")])
def test_the_image_boots_finds_its_user_data_and_runs_etcd(built: debianbuild.Built, metadata_server: None,
                                                         cloud: str, boot: str, tmp_path: Path) -> None:
    """``kernel``: QEMU loads the kernel and initrd itself; ``disk``: the raw disk boots through its
    own bootloader (SYSLINUX from the MBR, BIOS), as a cloud boots it."""
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu, "qemu-system-x86_64 is missing: apt-get install qemu-system-x86 (scripts/install.sh does)"
    port = free_port()
    console = tmp_path / "console.log"
    net = ("user,id=n,net=169.254.169.0/24,host=169.254.169.254,dhcpstart=169.254.169.15,restrict=off,"
           f"hostfwd=tcp:127.0.0.1:{port}-:2379")
    started = time.monotonic()
    with open(console, "wb") as out:
        if boot == "disk":
            media = ["-drive", f"file={debianbuild.disk(built)},format=raw,if=virtio,snapshot=on"]
        else:
            media = ["-kernel", str(built.kernel), "-initrd", str(built.initrd), "-append",
                     f"console=ttyS0 panic=-1 infra.metadata={cloud}"]
        vm = subprocess.Popen([qemu, "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", *media,
                               "-netdev", net, "-device", "virtio-net-pci,netdev=n"],
                              stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        healthy = None
        deadline = time.monotonic() + 120
        while healthy is None:
            assert vm.poll() is None, f"the VM stopped:\n{console.read_text(errors='replace')[-3000:]}"
            assert time.monotonic() < deadline, f"etcd in the VM never answered:\n{console.read_text(errors='replace')[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    if json.loads(resp.read()).get("health") == "true":
                        healthy = time.monotonic() - started
            except (OSError, ValueError):
                time.sleep(0.5)
        print(f"{cloud}, {boot}: etcd inside the VM healthy {healthy:.1f}s after QEMU started (software emulation)")
        deadline = time.monotonic() + 30
        while "[show] hello from user-data" not in console.read_text(errors="replace"):
            assert time.monotonic() < deadline, console.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        text = console.read_text(errors="replace")
        assert "Linux version 6.1" in text and "] booted" in text  # the kernel's boot on the console
        if boot == "disk":
            assert "SYSLINUX" in text  # booted by the disk's own bootloader
        assert "] network eth0 169.254.169.15/24" in text
        assert "[show] hello from user-data $(reboot) 'quoted'" in text  # the value, not run
        assert "refused user-data path ../escaped" in text and "user-data: 1 files under /run/config" in text
    finally:
        vm.kill()
        vm.wait(timeout=30)


def test_the_roles_declare_their_services_debian_packages() -> None:
    """etcd and Prometheus say which Debian package runs them; a service that says none is a clear
    error, not a guess."""
    from plugins.etcd.config import EtcdConfig
    from plugins.etcd.render import service as etcd_service
    from reconciler.core.errors import ConfigError
    from reconciler.core.model import Service

    etcd = etcd_service(EtcdConfig())
    assert debianbuild.packages_of([etcd]) == {"etcd": "etcd-server"}
    with pytest.raises(ConfigError, match=r"no Debian package declared for service.*web"):
        debianbuild.packages_of([etcd, Service(name="web", image="nginx", command=("nginx",))])
