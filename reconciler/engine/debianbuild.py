"""The Debian image builder: an image document as ``kernel+initrd`` from Debian packages.

Beside the ``linuxkit`` builder (:mod:`reconciler.engine.imagebuild`), for machines without the
``linuxkit`` CLI or Docker, as the seed's last demo rebuilt its assembly "using Debian instead of
LinuxKit". Chosen by a stack (``Stack(image_builder="debian")``, or a group's own
``image_builder``): the engine asks :func:`pins` for what goes into the image digest while it
plans, and the image pipeline calls :func:`artefact` for the file it pushes (GCE's
``<name>.img.tar.gz`` holding ``disk.raw``, EC2's ``<name>.raw``), exactly what ``linuxkit build``
writes for those formats. Also ``python -m reconciler.engine.debianbuild fetch`` fills the cache.

From the document's services and a map service → the Debian package that provides its binaries
(``etcd`` → ``etcd-server``), it makes:

* ``kernel``: ``vmlinuz`` of the package ``linux-image-cloud-amd64`` resolves to;
* ``initrd``: a gzip'd newc cpio holding busybox (``busybox-static``), Debian's ``jq`` and the
  libraries it and the services link (``libc6``), the kernel modules of virtio networking with
  their dependencies (read from each module's ``modinfo``), infra's init
  (:mod:`reconciler.engine.debian_init`), one script per service (its command and env, as
  LinuxKit would run it), and of each service's package the binaries its command names
  (``prometheus``, not the package's 48 MB ``promtool``).

Packages come from apt (``apt-get download``, no root) into a cache
(``$XDG_CACHE_HOME/infra/debian``), each checked against the SHA-256 apt's lists give, and the
pipeline's builds are kept beside them by digest (:func:`builds_dir`, each renamed whole into
place); the digest
covers every package's name, version and SHA-256, the init, and the document, so a changed
service, package or init gives a new image. Reproducible: files in sorted order, owner 0, every
time stamp at 0 (``cpio --reproducible``), gzip without name or time. Builds offline when the
cache holds the packages (the tests' private network namespace).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.core.errors import ConfigError
from reconciler.core.image import ImageSpec
from reconciler.core.model import Service
from reconciler.engine import debian_init, imagebuild
from reconciler.engine.imagebuild import BuildError

#: The kernel: Debian's cloud kernel (virtio, no desktop drivers), through its metapackage.
KERNEL_PACKAGE = "linux-image-cloud-amd64"
#: What every image holds besides the services' packages.
BASE_PACKAGES = ("busybox-static", "jq", "libjq1", "libonig5", "libc6")
#: The binaries of the base packages the init uses (a service package's binaries are those its
#: command names).
BASE_BINARIES = frozenset({"jq"})
#: Modules the init loads (with their dependencies, in order).
MODULES = ("virtio_pci", "virtio_net")
#: Busybox applets linked into /bin.
APPLETS = ("sh", "mount", "umount", "mkdir", "cat", "echo", "ip", "udhcpc", "nc", "sed", "awk", "tr",
           "base64", "insmod", "sleep", "basename", "dirname", "uname", "hostname", "unshare", "chmod", "rm",
           "wc", "printf", "ls", "ps", "kill", "grep", "true", "false", "env", "test", "[", "ln", "cp", "mv",
           "head", "tail", "date", "id", "touch", "poweroff", "reboot")
#: Bumped when the layout of the initrd changes (part of every digest).
BUILDER_VERSION = "2"


@dataclass(frozen=True)
class Package:
    """One Debian package in the cache, as apt's lists describe it."""

    name: str
    version: str
    sha256: str
    path: Path


@dataclass(frozen=True)
class Built:
    """A built image: its kernel and initrd, and the digest of everything that went into it."""

    kernel: Path
    initrd: Path
    digest: str
    packages: tuple[Package, ...]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "infra" / "debian"


def builds_dir() -> Path:
    """Where builds are kept, by their digest (every input is in it, so any state directory on this
    machine may reuse one): ``<cache>/builds/<digest>/`` with ``kernel``, ``initrd``, ``disk.raw``."""
    return cache_dir() / "builds"


@functools.lru_cache(maxsize=256)
def _show_cached(name: str) -> tuple[tuple[str, str], ...]:
    return tuple(_show_uncached(name).items())


def _show(name: str) -> dict[str, str]:
    return dict(_show_cached(name))


def _show_uncached(name: str) -> dict[str, str]:
    """``apt-cache show`` of the candidate version of ``name`` (offline: apt's lists)."""
    out = subprocess.run(["apt-cache", "show", "--no-all-versions", name], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0 or not out.stdout.strip():
        raise BuildError(f"Debian package {name!r} is unknown to apt here: {out.stderr.strip()[:200]}",
                         hint="run 'apt-get update' (scripts/install.sh does), or check the package name")
    fields: dict[str, str] = {}
    for line in out.stdout.split("\n\n")[0].splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith(" "):
            fields[key] = value.strip()
    return fields


def resolve(name: str) -> str:
    """The real package behind ``name`` (a metapackage such as the kernel's → its one dependency)."""
    fields = _show(name)
    if name == KERNEL_PACKAGE:
        return fields["Depends"].split(",")[0].split()[0]
    return name


def fetch(name: str, cache: Path | None = None) -> Package:
    """The package ``name`` in the cache, downloaded with ``apt-get download`` when missing, and
    checked against apt's SHA-256."""
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    fields = _show(name)
    # apt-get download names the file name_version_arch.deb, the epoch's ':' written '%3a'
    filename = f"{name}_{fields['Version'].replace(':', '%3a')}_{fields['Architecture']}.deb"
    path = cache / filename
    if not path.exists():
        out = subprocess.run(["apt-get", "download", "-q", f"{name}={fields['Version']}"], cwd=cache,
                             capture_output=True, text=True, check=False)
        if out.returncode != 0 or not path.exists():
            raise BuildError(f"cannot download Debian package {name} {fields['Version']}: "
                             f"{out.stderr.strip()[-300:]}",
                             hint="fetch the packages while online: python -m reconciler.engine.debianbuild fetch")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != fields["SHA256"]:
        path.unlink()
        raise BuildError(f"Debian package {filename}: SHA-256 {digest} is not apt's {fields['SHA256']}")
    return Package(name, fields["Version"], digest, path)


def packages_for(services: Mapping[str, str]) -> list[str]:
    """Every package an image of ``services`` (service → package) needs, kernel first."""
    names = [resolve(KERNEL_PACKAGE), *BASE_PACKAGES]
    for package in sorted(set(services.values())):
        if package not in names:
            names.append(package)
    return names


def packages_of(services: Iterable[Service]) -> dict[str, str]:
    """Service name → its Debian package, as the roles declare them (``Service.debian_package``).
    ConfigError naming the services that declare none."""
    services = list(services)
    missing = [s.name for s in services if not s.debian_package]
    if missing:
        raise ConfigError(f"no Debian package declared for service(s) {', '.join(missing)}",
                          hint="the role declares each service's Debian package next to its OCI image "
                               "(Service.debian_package)")
    return {s.name: str(s.debian_package) for s in services}


def digest_of(document: Mapping[str, Any], pinned: Mapping[str, Any]) -> str:
    """The digest of a build: the document and its :func:`pins` (every package, the init, the layout)."""
    doc = {"document": document, **pinned}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:40]


def _module_deps(path: Path) -> list[str]:
    """The ``depends=`` of a kernel module's ``.modinfo`` (names, without ``.ko``)."""
    data = path.read_bytes()
    start = data.find(b"depends=")
    if start < 0:
        return []
    end = data.find(b"\0", start)
    return [d for d in data[start + len(b"depends="):end].decode().split(",") if d]


def _modules(root: Path, release: str, wanted: Iterable[str]) -> list[str]:
    """The module files (relative to ``lib/modules/<release>``) to load, dependencies first."""
    base = root / "lib" / "modules" / release
    by_name = {p.name.split(".ko")[0].replace("-", "_"): p for p in base.rglob("*.ko*")}
    order: list[str] = []

    def visit(name: str) -> None:
        key = name.replace("-", "_")
        path = by_name.get(key)
        if path is None:
            raise BuildError(f"kernel module {name} is not in the kernel package")
        for dep in _module_deps(path):
            visit(dep)
        rel = str(path.relative_to(base))
        if rel not in order:
            order.append(rel)

    for name in wanted:
        visit(name)
    if any(rel.endswith((".xz", ".zst", ".gz")) for rel in order):
        raise BuildError("compressed kernel modules: busybox insmod cannot load them")
    return order


def _service_script(entry: Mapping[str, Any]) -> str:
    """The service as LinuxKit runs it: its env, then its command (``{config}`` already expanded)."""
    lines = ["#!/bin/sh", f"# service {entry['name']} (image {entry.get('image', '')})"]
    for item in entry.get("env") or ():
        key, _, value = str(item).partition("=")
        lines.append(f"export {key}={shlex.quote(value)}")
    lines.append("exec " + " ".join(shlex.quote(str(word)) for word in entry["command"]))
    return "\n".join(lines) + "\n"


def _extract(package: Package, into: Path) -> None:
    out = subprocess.run(["dpkg-deb", "-x", str(package.path), str(into)], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise BuildError(f"cannot unpack {package.path.name}: {out.stderr.strip()[:300]}")


def build(document: Mapping[str, Any], services: Mapping[str, str], out_dir: Path, *,
          metadata: str = "gcp", cache: Path | None = None) -> Built:
    """Build ``kernel`` and ``initrd`` for ``document`` into ``out_dir/<digest>/`` (reused when there).

    ``services`` maps each service of the document to its Debian package. ConfigError when a
    service has none; BuildError when a package or a tool fails.
    """
    names = [str(s["name"]) for s in document.get("services", [])]
    missing = [n for n in names if n not in services]
    if missing:
        raise ConfigError(f"no Debian package for service(s) {', '.join(missing)}",
                          hint="the role declares each service's Debian package next to its OCI image")
    for tool in ("cpio", "dpkg-deb", "apt-get"):
        if shutil.which(tool) is None:
            raise BuildError(f"the Debian image builder needs {tool}", hint="apt-get install cpio dpkg apt")
    used = {n: services[n] for n in names}
    packages = tuple(fetch(name, cache) for name in packages_for(used))
    digest = digest_of(document, pins(used, metadata))  # the fetched packages are apt's: checked by fetch
    target = out_dir / digest
    if (target / "initrd").exists() and (target / "kernel").exists():
        return Built(target / "kernel", target / "initrd", digest, packages)
    with tempfile.TemporaryDirectory(prefix="infra-debian-") as tmp:
        full = Path(tmp) / "full"
        for package in packages:
            _extract(package, full)
        root = Path(tmp) / "root"
        kernel_pkg = packages[0]
        release = kernel_pkg.name.removeprefix("linux-image-")
        vmlinuz = full / "boot" / f"vmlinuz-{release}"
        modules = _modules(full, release, MODULES)
        _assemble(root, full, release, modules, document, metadata)
        out_dir.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=out_dir))  # renamed whole into place
        shutil.copyfile(vmlinuz, staged / "kernel")
        _cpio(root, staged / "initrd")
        try:
            staged.rename(target)
        except OSError:  # another build of the same digest finished first: keep that one
            shutil.rmtree(staged, ignore_errors=True)
    return Built(target / "kernel", target / "initrd", digest, packages)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        dst.symlink_to(os.readlink(src))
    else:
        shutil.copy2(src, dst)


def _assemble(root: Path, full: Path, release: str, modules: list[str], document: Mapping[str, Any],
              metadata: str) -> None:
    """Lay out the initramfs tree in ``root`` from the unpacked packages in ``full``."""
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc/infra/services", "proc", "sys", "dev", "run", "tmp",
              "var/lib/infra", "lib64", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    _copy(full / "bin" / "busybox", root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    # Libraries: all of libc6 and those of jq; then every executable the packages ship under /usr/bin.
    for pattern in ("lib/x86_64-linux-gnu/*.so*", "usr/lib/x86_64-linux-gnu/*.so*"):
        for lib in sorted(full.glob(pattern)):
            _copy(lib, root / lib.relative_to(full))
    ld = full / "lib64" / "ld-linux-x86-64.so.2"
    if ld.exists() or ld.is_symlink():
        _copy(ld, root / "lib64" / "ld-linux-x86-64.so.2")
    named = set(re.findall(r"[A-Za-z0-9_.+-]+", " ".join(
        " ".join(str(w) for w in entry.get("command") or ()) for entry in document.get("services", []))))
    for binary in sorted((full / "usr" / "bin").iterdir()):
        if binary.name in BASE_BINARIES or binary.name in named:
            _copy(binary, root / "usr" / "bin" / binary.name)
    base = Path("lib") / "modules" / release
    for rel in modules:
        _copy(full / base / rel, root / base / rel)
    infra = root / "etc" / "infra"
    (infra / "modules").write_text("".join(f"{rel}\n" for rel in modules))
    (infra / "metadata").write_text(metadata + "\n")
    (infra / "userdata.jq").write_text(debian_init.USERDATA_JQ)
    (infra / "udhcpc.sh").write_text(debian_init.UDHCPC)
    (infra / "udhcpc.sh").chmod(0o755)
    for entry in document.get("services", []):
        script = infra / "services" / str(entry["name"])
        script.write_text(_service_script(entry))
        script.chmod(0o755)
    (root / "etc" / "hostname").write_text("infra\n")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    init = root / "init"
    init.write_text(debian_init.INIT)
    init.chmod(0o755)


def _cpio(root: Path, out: Path) -> None:
    """``root`` as a reproducible gzip'd newc cpio: sorted names, owner 0, every mtime 0."""
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    for name in names:
        os.utime(root / name, (0, 0), follow_symlinks=False)
    raw = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "--reproducible", "-R", "0:0"], cwd=root,
                         input=("\n".join(names) + "\n").encode(), capture_output=True, check=False)
    if raw.returncode != 0:
        raise BuildError(f"cpio failed: {raw.stderr.decode(errors='replace')[:300]}")
    with open(out, "wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=6) as gz:
        gz.write(raw.stdout)


#: The boot mode of the disks: BIOS through SYSLINUX from an MBR-partitioned raw disk. GCE boots
#: BIOS images (``images.insert`` from a ``disk.raw`` in a tar.gz), and EC2 registers them with
#: ``BootMode=legacy-bios``; a BIOS disk also boots on every QEMU without firmware files. UEFI
#: (a GPT disk with an EFI system partition) would need signed shims for Secure Boot: later.
BOOT_MODE = "legacy-bios"
#: SYSLINUX's configuration: the kernel and initrd on the FAT partition, the console on serial.
SYSLINUX_CFG = """DEFAULT infra
PROMPT 0
TIMEOUT 0
LABEL infra
  KERNEL /vmlinuz
  INITRD /initrd
  APPEND {cmdline}
"""
#: Every time stamp on the disk (FAT cannot hold 1970): 1980-01-01.
FAT_EPOCH = 315532800
MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")


def disk(built: Built, *, cmdline: str = "console=ttyS0 panic=-1") -> Path:
    """A bootable raw disk (``disk.raw`` beside ``built``'s files, reused when there): an MBR
    partition table with SYSLINUX's boot code, one FAT partition with SYSLINUX, the kernel and
    the initrd. Reproducible: fixed volume id and label, every time stamp at 1980
    (``mkfs.fat --invariant``, mtools under ``SOURCE_DATE_EPOCH``). Needs Debian's ``syslinux``,
    ``syslinux-common``, ``mtools``, ``dosfstools`` and ``fdisk`` (scripts/install.sh --vm)."""
    out = built.kernel.parent / "disk.raw"
    if out.exists():
        return out
    for tool in ("syslinux", "mcopy", "mkfs.fat", "sfdisk"):
        if shutil.which(tool) is None:
            raise BuildError(f"a bootable disk needs {tool}",
                             hint="apt-get install syslinux syslinux-common mtools dosfstools fdisk")
    if not MBR.exists():
        raise BuildError(f"{MBR} is missing", hint="apt-get install syslinux-common")
    size_mib = (built.kernel.stat().st_size + built.initrd.stat().st_size) // (1 << 20) + 16
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(FAT_EPOCH), "MTOOLS_SKIP_CHECK": "1"}
    with tempfile.TemporaryDirectory(prefix="infra-disk-") as tmp:
        work = Path(tmp)
        shutil.copyfile(built.kernel, work / "vmlinuz")
        shutil.copyfile(built.initrd, work / "initrd")
        (work / "syslinux.cfg").write_text(SYSLINUX_CFG.format(cmdline=cmdline))
        for name in ("vmlinuz", "initrd", "syslinux.cfg"):
            os.utime(work / name, (FAT_EPOCH, FAT_EPOCH))
        part = work / "part.img"
        steps = [
            ["mkfs.fat", "--invariant", "-i", "494e4652", "-n", "INFRA", "-C", str(part), str(size_mib * 1024)],
            ["syslinux", "--install", str(part)],
            ["mcopy", "-i", str(part), "-m", "vmlinuz", "initrd", "syslinux.cfg", "::"],
        ]
        for step in steps:
            done = subprocess.run(step, cwd=work, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise BuildError(f"{step[0]} failed: {(done.stderr or done.stdout).strip()[:300]}")
        raw = work / "disk.raw"
        with open(raw, "wb") as fh:
            fh.truncate((1 << 20) + part.stat().st_size)
        table = "label: dos\nlabel-id: 0x494e4652\nstart=2048, type=c, bootable\n"
        done = subprocess.run(["sfdisk", "-q", str(raw)], input=table, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BuildError(f"sfdisk failed: {done.stderr.strip()[:300]}")
        with open(raw, "r+b") as fh:
            fh.write(MBR.read_bytes()[:440])  # the boot code; the partition table follows at 446
            fh.seek(1 << 20)
            with open(part, "rb") as src:
                shutil.copyfileobj(src, fh)
        staged = out.with_name(f".disk.raw.{os.getpid()}")
        shutil.copyfile(raw, staged)
        staged.replace(out)  # whole, or not there
    return out


def pins(services: Mapping[str, str], metadata: str) -> dict[str, Any]:
    """What an image of ``services`` (service → Debian package) adds to its digest: every package
    with the version and SHA-256 apt's lists give (nothing downloaded), the init, the layout.
    Called by the engine for each group that chooses this builder. BuildError when apt does not
    know a package."""
    packages = []
    for name in packages_for(services):
        fields = _show(name)
        packages.append([name, fields["Version"], fields["SHA256"]])
    return {
        "builder": f"debian/{BUILDER_VERSION}",
        "services": dict(sorted(services.items())),
        "packages": packages,
        "init": hashlib.sha256((debian_init.INIT + debian_init.UDHCPC + debian_init.USERDATA_JQ)
                               .encode()).hexdigest(),
        "metadata": metadata,
        "layout": {"modules": list(MODULES), "applets": list(APPLETS), "base": list(BASE_PACKAGES),
                   "binaries": sorted(BASE_BINARIES)},
    }


#: GCE imports a ``disk.raw`` whose size is a whole number of GiB.
GCE_DISK_MULTIPLE = 1 << 30


def artefact(image: ImageSpec, state_root: Path, *, log: Callable[[str], None] = lambda m: None) -> Path:
    """The file the pipeline pushes for ``image`` (``image.builder == "debian"``), built now unless
    cached, where :func:`reconciler.engine.imagebuild.artefact_path` says: for ``gcp`` a
    ``<name>.img.tar.gz`` holding ``disk.raw`` (padded to a whole GiB, stored sparse: GNU tar
    ``--sparse``, what GCE imports), for ``aws`` the ``<name>.raw`` disk (EC2 registers it from an
    EBS snapshot), for ``raw-bios`` the ``<name>-bios.img`` disk (the ``qemu`` provider boots it).
    All boot in legacy-BIOS mode through SYSLINUX (:data:`BOOT_MODE`).

    The packages must still be those of ``image.pins`` (apt's lists may have changed since the
    plan): BuildError otherwise, and nothing is built."""
    final = imagebuild.artefact_path(image, state_root)
    if final.is_file():
        return final
    if image.format not in imagebuild.OUTPUT_SUFFIX:
        raise ConfigError(f"image {image.name}: the Debian builder cannot make format {image.format!r}")
    services = dict(image.pins.get("services") or {})
    now = pins(services, image.metadata)
    if now != dict(image.pins):
        raise BuildError(f"image {image.name}: apt's package lists changed since the plan (other versions now)",
                         hint="plan again: the new packages are a new image")
    log(f"building image {image.name} from Debian packages ({len(now['packages'])} packages)")
    built = build(image.document, services, builds_dir(), metadata=image.metadata)
    raw = disk(built)
    final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(prefix=f".build-{image.digest[:12]}-", dir=final.parent) as tmp:
        out = Path(tmp) / final.name
        if image.format in ("aws", "raw-bios"):
            shutil.copyfile(raw, out)
        else:
            _gce_tarball(raw, out)
        out.replace(final)
    return final


def _gce_tarball(raw: Path, out: Path) -> None:
    """``out``: a gzip'd GNU tar holding ``disk.raw`` = ``raw`` padded to a whole GiB, sparse,
    reproducible (one mtime, owner 0, no gzip name or time)."""
    with tempfile.TemporaryDirectory(prefix="infra-gce-") as tmp:
        padded = Path(tmp) / "disk.raw"
        shutil.copyfile(raw, padded)
        size = padded.stat().st_size
        os.truncate(padded, -(-size // GCE_DISK_MULTIPLE) * GCE_DISK_MULTIPLE)
        os.utime(padded, (FAT_EPOCH, FAT_EPOCH))
        tar = subprocess.run(["tar", "--sparse", "--format=gnu", "--numeric-owner", "--owner=0", "--group=0",
                              "--mode=0644", f"--mtime=@{FAT_EPOCH}", "-C", tmp, "-cf", "-", "disk.raw"],
                             capture_output=True, check=False)
        if tar.returncode != 0:
            raise BuildError(f"tar failed: {tar.stderr.decode(errors='replace')[:300]}")
        with open(out, "wb") as dst, gzip.GzipFile(filename="", mode="wb", fileobj=dst, mtime=0) as gz:
            gz.write(tar.stdout)


def missing_tools(fmt: str) -> list[str]:
    """The tools the Debian builder needs for format ``fmt`` that this machine lacks."""
    tools = ["apt-get", "apt-cache", "dpkg-deb", "cpio", "syslinux", "mcopy", "mkfs.fat", "sfdisk"]
    if fmt == "gcp":
        tools.append("tar")
    return [t for t in tools if shutil.which(t) is None] + ([] if MBR.exists() else [str(MBR)])


def main(argv: list[str] | None = None) -> int:
    """``python -m reconciler.engine.debianbuild fetch [PACKAGE...]``: fill the cache (while online)
    with the packages images need (the base, the kernel, and ``etcd-server``, ``prometheus``)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "fetch":
        print(main.__doc__)
        return 2
    wanted = packages_for({}) + (args[1:] or ["etcd-server"])
    for name in wanted:
        package = fetch(name)
        print(f"{package.name} {package.version} {package.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
