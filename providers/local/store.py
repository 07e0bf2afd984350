"""The local provider's files: instance records, the allocation lock, address reservations.

Layout under the provider's root (default ``<state root>/local``)::

    alloc.lock                    flock taken by every create/delete/address_for (threads and processes)
    reservations.json             addresses handed out by address_for before their instance exists
    instances/<name>/             one directory per instance (see providers.local.provider)
        instance.json             the record: id, name, labels, address, processes, created time
    instances/.tmp-*/ .trash-*/   an instance being built / being removed (ignored by scans)
    discovery/                    Prometheus file_sd files and their registrations

An instance directory appears atomically (built under ``.tmp-*``, then renamed), so a scan sees
either a complete ``instance.json`` or nothing; a crash mid-create leaves at most a ``.tmp-*``
directory, swept by the next create. Every JSON file is written to a temporary file and
renamed over the old one. Called by :mod:`providers.local.provider`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import json
import os
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from providers.local.procs import ProcRef, alive
from reconciler.core.errors import TransientError

#: Addresses are taken from this network, lowest free first.
NETWORK = ipaddress.IPv4Network("127.77.0.0/16")
RECORD = "instance.json"
#: Reservations not used by a create or renewed by address_for within this time are dropped.
RESERVATION_TTL = 24 * 3600.0
#: How long a machine-wide claim protects an address handed out under *another* root, until
#: its processes listen and the port probe sees them.
CLAIM_TTL = 300.0


class ServiceRecord(BaseModel):
    """A service as the supervisor starts it: placeholders already expanded."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    command: list[str]
    env: dict[str, str] = Field(default_factory=dict)
    ports: list[int] = Field(default_factory=list)
    #: secret variables: name → the file (0600, in the instance's config) the supervisor reads it from
    secret_env: dict[str, str] = Field(default_factory=dict)


class Processes(BaseModel):
    """The processes of a started instance: its supervisor (group leader) and services."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    pgid: int
    supervisor: ProcRef
    services: dict[str, ProcRef] = Field(default_factory=dict)


class InstanceRecord(BaseModel):
    """``instance.json``. Lenient on read (a foreign file may hold only some fields)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    address: str | None = None
    created: float = 0.0
    creator: ProcRef | None = None
    #: The process this instance lives and dies with (an emulator's machines); None: it outlives infra.
    owner: ProcRef | None = None
    grace: float = 5.0
    services: list[ServiceRecord] = Field(default_factory=list)
    processes: Processes | None = None


def new_id() -> str:
    return f"local-{uuid.uuid4().hex[:12]}"


def write_json(path: Path, doc: Any, mode: int = 0o644) -> None:
    """Write ``doc`` as JSON atomically: a temporary file in the same directory, then rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` atomically (temporary file + rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None


#: How long a lock of the local provider is waited for before a clear error (never for ever).
LOCK_WAIT = 120.0


@contextlib.contextmanager
def flock(path: Path, *, wait: float | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``: excludes other threads and other processes.

    The file is opened without following a symlink (a link planted at the path is refused), and
    the lock is waited for at most ``wait`` seconds (:data:`LOCK_WAIT`): then TransientError says
    which file is held, instead of blocking for ever.
    """
    limit = LOCK_WAIT if wait is None else wait
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + limit
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TransientError(
                        f"local: {path} has been locked by another process for {limit:g}s",
                        hint="another infra run (or a stuck one) holds it; it is released when that process exits",
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def private_dir(path: Path) -> Path:
    """``path`` as a directory only this user can use: made 0700, or found and checked.

    A shared location (``/tmp``) is where another user can plant a path first: it must be a real
    directory (not a symlink), owned by this user, with no access for anyone else. Otherwise
    PermissionError says what is wrong and nothing is used.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise PermissionError(errno.EPERM, "is not a directory of this user's (a symlink or a file was put there)",
                              str(path))
    if info.st_uid != os.getuid():
        raise PermissionError(errno.EPERM, f"belongs to uid {info.st_uid}, not to this user (uid {os.getuid()})",
                              str(path))
    if info.st_mode & 0o077:
        raise PermissionError(errno.EPERM, f"is open to other users (mode {stat.S_IMODE(info.st_mode):04o})",
                              str(path))
    return path


def claims_dir() -> Path:
    """Where this user's machine-wide address claims live: ``$XDG_RUNTIME_DIR/infra-local`` (a
    directory only this user has), else ``<tmp>/infra-local-<uid>``, checked by :func:`private_dir`."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "infra-local"
    return Path(tempfile.gettempdir()) / f"infra-local-{os.getuid()}"


class Store:
    """The files under one root. Methods that say "under the lock" expect :meth:`lock` held."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.instances = root / "instances"

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The root's allocation lock; the root and ``instances/`` are made here, on first write."""
        self.instances.mkdir(parents=True, exist_ok=True, mode=0o700)
        return flock(self.root / "alloc.lock")

    def dir_of(self, name: str) -> Path:
        return self.instances / name

    def read(self, directory: Path) -> InstanceRecord | None:
        """The record in ``directory``, or None when there is none or it is unreadable."""
        doc = read_json(directory / RECORD)
        if not isinstance(doc, dict):
            return None
        try:
            return InstanceRecord.model_validate(doc)
        except ValidationError:
            return None

    def write(self, directory: Path, record: InstanceRecord) -> None:
        write_json(directory / RECORD, record.model_dump(mode="json"), mode=0o600)

    def scan(self) -> list[tuple[Path, InstanceRecord]]:
        """Every readable instance record, by name. Half-built and unreadable ones are skipped."""
        found: list[tuple[Path, InstanceRecord]] = []
        try:
            entries = sorted(os.listdir(self.instances))
        except FileNotFoundError:
            return found
        for entry in entries:
            if entry.startswith("."):
                continue
            record = self.read(self.instances / entry)
            if record is not None:
                found.append((self.instances / entry, record))
        return found

    def find(self, name: str, instance_id: str) -> tuple[Path, InstanceRecord] | None:
        """The record named ``name`` with id ``instance_id`` (by id alone if the name misses)."""
        directory = self.dir_of(name)
        record = self.read(directory) if "/" not in name and name not in ("", ".", "..") else None
        if record is not None and record.id == instance_id:
            return directory, record
        for directory, record in self.scan():
            if record.id == instance_id:
                return directory, record
        return None

    def staging_dir(self) -> Path:
        """A new private directory to build an instance in (rename it into place when done)."""
        self.instances.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Path(tempfile.mkdtemp(dir=self.instances, prefix=".tmp-"))

    def discard(self, directory: Path) -> None:
        """Remove an instance directory: first renamed away (atomic), then deleted."""
        trash = self.instances / f".trash-{directory.name}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(directory, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def sweep(self) -> None:
        """Under the lock: remove what crashed creates and deletes left behind."""
        for entry in os.listdir(self.instances):
            if entry.startswith((".tmp-", ".trash-")):
                shutil.rmtree(self.instances / entry, ignore_errors=True)

    # -- reservations (address_for) ---------------------------------------------------------

    def reservations(self) -> dict[str, dict[str, Any]]:
        """Under the lock: name → {"address", "time"}, expired ones dropped."""
        doc = read_json(self.root / "reservations.json")
        if not isinstance(doc, dict):
            return {}
        now = time.time()
        return {
            name: entry
            for name, entry in doc.items()
            if isinstance(entry, dict)
            and isinstance(entry.get("address"), str)
            and now - float(entry.get("time", 0)) < RESERVATION_TTL
        }

    def save_reservations(self, reservations: dict[str, dict[str, Any]]) -> None:
        write_json(self.root / "reservations.json", reservations, mode=0o600)

    def used_addresses(self, reservations: dict[str, dict[str, Any]]) -> dict[str, str]:
        """Under the lock: address → the instance name holding or reserving it."""
        used = {str(entry["address"]): name for name, entry in reservations.items()}
        for _, record in self.scan():
            if record.address:
                used[record.address] = record.name
        return used


class Claims:
    """Addresses recently handed out by any root of this user on this machine.

    Each root has its own lock and records, but the loopback network is shared: two roots (two
    test sessions, a test next to a real stack) must not hand out the same address. So every
    allocation is also noted here, under a machine-wide lock, with the instance directory it
    is for. A claim holds while that directory exists, or for :data:`CLAIM_TTL` after it was
    made (the instance is being built, or was only reserved); a root removed without deleting
    its instances thus frees its addresses once their directories are gone. The claim of an
    instance bound to a process (``owner_pid``: an emulator's machines) ends with that process:
    machines that died with their emulator hold no address.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.dir = directory or claims_dir()

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The machine-wide claims lock; its directory is made (or checked) here, on first write."""
        private_dir(self.dir)
        return flock(self.dir / "claims.lock")

    def load(self) -> dict[str, dict[str, Any]]:
        """Under the lock: address → {"owner", "time", "dir"} for the claims that still hold."""
        doc = read_json(self.dir / "claims.json")
        if not isinstance(doc, dict):
            return {}
        now = time.time()
        return {
            addr: entry
            for addr, entry in doc.items()
            if isinstance(entry, dict)
            and (now - float(entry.get("time", 0)) < CLAIM_TTL or os.path.isdir(str(entry.get("dir", ""))))
            and not _bound_process_gone(entry)
        }

    def others(self, owner: str) -> set[str]:
        """Under the lock: addresses claimed by anyone but ``owner``."""
        return {addr for addr, entry in self.load().items() if entry.get("owner") != owner}

    def release(self, owner: str) -> None:
        """Under the lock: forget the claims of ``owner`` (its instance was deleted)."""
        claims = self.load()
        kept = {addr: entry for addr, entry in claims.items() if entry.get("owner") != owner}
        if len(kept) != len(claims):
            write_json(self.dir / "claims.json", kept, mode=0o600)

    def claim(self, address: str, owner: str, directory: Path, bound_to: ProcRef | None = None) -> None:
        """Under the lock: note ``address`` as handed out to ``owner`` for ``directory`` (an
        instance that dies with the process ``bound_to``)."""
        claims = self.load()
        claims[address] = {"owner": owner, "time": time.time(), "dir": str(directory),
                           **({"bound_to": bound_to.model_dump()} if bound_to is not None else {})}
        write_json(self.dir / "claims.json", claims, mode=0o600)


def _bound_process_gone(entry: dict[str, Any]) -> bool:
    bound = entry.get("bound_to")
    if not isinstance(bound, dict):
        return False
    try:
        return not alive(ProcRef.model_validate(bound))
    except ValidationError:
        return False


def candidates() -> Iterator[str]:
    """Addresses of :data:`NETWORK` in allocation order (skipping .0 and .255 last octets)."""
    for host in NETWORK.hosts():
        if host.packed[3] not in (0, 255):
            yield str(host)
