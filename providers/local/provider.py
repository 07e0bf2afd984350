"""The ``local`` provider: each instance is a detached, supervised group of processes here.

The embedded default provider (DESIGN.md, "Providers"). An instance is:

* a loopback address of its own in ``127.77.0.0/16`` (:mod:`providers.local.network`);
* a directory ``<root>/instances/<name>/`` (:mod:`providers.local.store`) holding
  ``instance.json`` (id, name, labels, address, process ids with start times, created time),
  ``linuxkit.yml`` (the LinuxKit YAML its cloud image would be built from,
  :mod:`reconciler.core.linuxkit`), ``config/`` (its user-data, delivered as LinuxKit's metadata
  package does, :mod:`providers.local.metadata`), ``logs/<service>.log`` and ``data/``;
* a supervisor process (:mod:`providers.local.supervisor`) leading its own session and process
  group, running the member's services as host commands. Instances outlive the ``infra``
  process that created them.

Liveness is read from ``/proc`` on every ``list``: a service that exited (recorded by the
supervisor in ``logs/exits.json``) or processes that are gone make the instance DEAD, with
``detail`` saying what died; the planner then replaces it.

Every public method maps OS failures to :mod:`reconciler.core.errors` types in one place
(:func:`_os_errors`). Linux only (it reads ``/proc``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ValidationError

import providers
from providers.local import metadata, network
from providers.local.config import LocalConfig, parse_config
from providers.local.discovery import Discovery
from providers.local.procs import ProcRef, adopt, alive, reap_children, ref_of, terminate
from providers.local.store import Claims, InstanceRecord, Processes, ServiceRecord, Store, new_id, read_json
from reconciler.core import linuxkit
from reconciler.core.errors import ConfigError, InfraError, NotFoundError, PermanentError, TransientError
from reconciler.core.model import (
    Instance,
    InstanceStatus,
    MemberSpec,
    Problem,
    secret_env_file,
)
from reconciler.kit.errormap import ErrorTable
from reconciler.kit.ownership import merged_labels, require_label_update, require_owned
from reconciler.kit.provider import SdConfig
from reconciler.kit.settings import first_problem

#: The LinuxKit metadata source a local VM would read its user-data from.
METADATA_SOURCE = "cdrom"

#: Debian packages for commands a role is likely to need (validate's hint).
DEBIAN_PACKAGES = {
    "etcd": "etcd-server",
    "etcdctl": "etcd-client",
    "prometheus": "prometheus",
    "python3": "python3",
    "python": "python-is-python3",
    "sh": "dash",
    "bash": "bash",
    "busybox": "busybox",
    "nginx": "nginx",
    "curl": "curl",
}

#: Environment passed through to services from the creating process (nothing else leaks in).
_PASSED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")

_TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EINTR, errno.EBUSY})


def _map_os_error(exc: BaseException, action: str) -> InfraError | None:
    """OS failures as provider errors (resource shortage → transient); anything else is a bug."""
    if not isinstance(exc, OSError):
        return None
    where = f" ({exc.filename})" if exc.filename else ""
    message = f"local: {action} failed: {exc.strerror or exc}{where}"
    if exc.errno in _TRANSIENT_ERRNOS:
        return TransientError(message)
    return PermanentError(message)


#: The local provider's one error table (:mod:`reconciler.kit.errormap`).
TABLE = ErrorTable("local", _map_os_error)
_os_errors = TABLE.translate


def _describe_exit(entry: Mapping[str, Any]) -> str:
    service = entry.get("service", "?")
    if "error" in entry:
        return f"service {service} {entry['error']}"
    if "signal" in entry:
        return f"service {service} was killed by signal {entry['signal']}"
    return f"service {service} exited with code {entry.get('code', '?')}"


#: Aliases for annotations inside the class, where ``list`` names the method.
Instances = list[Instance]
Problems = list[Problem]
ServiceRecords = list[ServiceRecord]


def _ports(spec: MemberSpec) -> list[int]:
    return [p for svc in spec.services for p in svc.ports]


def _check_usable(root: Path) -> None:
    """Raise OSError unless ``root`` is, or could be made as, a directory of this user's."""
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(20, "Not a directory", str(probe))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(13, "Permission denied", str(probe))


class LocalProvider:
    """Instances as supervised process groups on this machine. See the module docstring."""

    name: ClassVar[str] = "local"

    def __init__(self, config: LocalConfig, *, stack: str = "", state_dir: Path | None = None) -> None:
        self.config = config
        self.stack = stack
        self.state_dir = state_dir
        self.root = config.root_path()
        _check_usable(self.root)  # made on the first write (Store.lock), not by opening
        self.store = Store(self.root)
        self.claims = Claims()
        self.sd = Discovery(self.root / "discovery")

    @classmethod
    def open(cls, config: Mapping[str, Any], *, stack: str, state_dir: Path) -> LocalProvider:
        """Validate ``config`` (see :class:`LocalConfig`); the root directory is made on first write.

        Raises ConfigError naming ``provider_config.<field>`` for a bad setting, or
        ``provider_config.root`` when the root directory could not be created.
        """
        cfg = parse_config(dict(config))
        try:
            return cls(cfg, stack=stack, state_dir=state_dir)
        except OSError as exc:
            raise ConfigError(
                f"provider_config.root: cannot use {cfg.root_path()}: {exc.strerror or exc}"
            ) from None

    # -- observing ---------------------------------------------------------------------------

    def _processes(self, directory: Path, record: InstanceRecord) -> Processes | None:
        """The instance's processes: from its record, else from the supervisor's state file."""
        if record.processes is not None:
            return record.processes
        state = read_json(directory / "run" / "state.json")
        if not isinstance(state, dict):
            return None
        try:
            sup = ProcRef.model_validate(state["supervisor"])
            services = {str(k): ProcRef.model_validate(v) for k, v in dict(state.get("services", {})).items()}
        except (KeyError, TypeError, ValueError, ValidationError):
            return None
        return Processes(pgid=sup.pid, supervisor=sup, services=services)

    @staticmethod
    def _exit_reason(directory: Path) -> str | None:
        """What the supervisor recorded as the first service to end, if anything."""
        exits = read_json(directory / "logs" / "exits.json")
        if isinstance(exits, dict) and isinstance(exits.get("exits"), list) and exits["exits"]:
            first = exits["exits"][0]
            return _describe_exit(first if isinstance(first, dict) else {})
        return None

    def _liveness(self, directory: Path, record: InstanceRecord) -> tuple[InstanceStatus, str | None]:
        reason = self._exit_reason(directory)
        if reason is not None:
            return InstanceStatus.DEAD, reason
        procs = self._processes(directory, record)
        if procs is None:
            young = time.time() - record.created < 2 * self.config.start_timeout
            if record.creator is not None and young and alive(record.creator):
                return InstanceStatus.PENDING, "starting"
            return InstanceStatus.DEAD, "no processes were started (create did not finish)"
        gone = sorted(name for name, ref in procs.services.items() if not alive(ref))
        if gone and alive(procs.supervisor):
            # The supervisor is about to reap it and record why (or is being killed along with
            # it): give it a moment to say so before judging.
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and alive(procs.supervisor):
                reason = self._exit_reason(directory)
                if reason is not None:
                    return InstanceStatus.DEAD, reason
                time.sleep(0.01)
            reason = self._exit_reason(directory)
            if reason is not None:
                return InstanceStatus.DEAD, reason
            gone = sorted(name for name, ref in procs.services.items() if not alive(ref))
        if not alive(procs.supervisor):
            if len(gone) == len(procs.services):
                return InstanceStatus.DEAD, "processes gone (killed?)"
            return InstanceStatus.DEAD, "supervisor gone (killed?)" + (
                f"; service {', '.join(gone)} gone too" if gone else ""
            )
        if gone:
            return InstanceStatus.DEAD, f"service {', '.join(gone)} gone (killed?)"
        return InstanceStatus.RUNNING, None

    def _observe(self, directory: Path, record: InstanceRecord) -> Instance:
        status, detail = self._liveness(directory, record)
        return Instance(
            id=record.id,
            name=record.name,
            labels=record.labels,
            address=record.address,
            status=status,
            detail=detail,
            created_at=record.created or None,
        )

    def _observe_all(self) -> Instances:
        return [self._observe(d, r) for d, r in self.store.scan()]

    def _refresh_discovery(self) -> None:
        self.sd.refresh(self._observe_all)

    def list(self, selector: Mapping[str, str]) -> Instances:
        """Every instance whose labels include ``selector``, alive or DEAD (with ``detail``).

        Scans the instance directories (half-built ones are invisible) and checks each one's
        processes in ``/proc``. Also rewrites the registered discovery files. Raises
        TransientError/PermanentError when the root cannot be read; never a partial listing.
        """
        reap_children()
        wanted = dict(selector).items()
        with _os_errors("listing instances"):
            found = [i for i in self._observe_all() if wanted <= dict(i.labels).items()]
            self._refresh_discovery()
        return found

    # -- addresses ---------------------------------------------------------------------------

    def _owner(self, name: str) -> str:
        return f"{self.root.resolve()}:{name}"

    def _pick_address(self, spec: MemberSpec, reservations: dict[str, dict[str, Any]],
                      bound_to: ProcRef | None = None) -> str:
        """Under both locks: the address ``spec`` gets, its ports checked free, claimed."""
        ports = _ports(spec)
        used = self.store.used_addresses(reservations)
        elsewhere = self.claims.others(self._owner(spec.name))
        own = reservations.get(spec.name)
        if spec.address is not None or own is not None:
            address = spec.address if spec.address is not None else str(own["address"]) if own else ""
            if not network.is_loopback(address):
                raise PermanentError(
                    f"local: address {address!r} of {spec.name} is not an IPv4 loopback address "
                    "(the local provider uses 127.77.0.0/16)"
                )
            holder = used.get(address)
            if holder is not None and holder != spec.name:
                raise PermanentError(f"local: address {address} is already used by instance {holder}")
            if address in elsewhere:
                raise PermanentError(f"local: address {address} was just given to an instance under another root")
            network.check_ports(address, ports)
        else:
            address = network.allocate(set(used) | elsewhere, ports)
        self.claims.claim(address, self._owner(spec.name), self.store.dir_of(spec.name).resolve(), bound_to)
        return address

    def address_for(self, spec: MemberSpec) -> str | None:
        """The address the instance of ``spec`` will have, reserved before it is created.

        Stable for ``spec.name`` until that instance is deleted. Raises PermanentError when
        127.77.0.0/16 is exhausted or a port of the member is busy on every address.
        """
        with _os_errors("reserving an address"), self.store.lock():
            record = self.store.read(self.store.dir_of(spec.name))
            if record is not None and record.address:
                return record.address
            reservations = self.store.reservations()
            entry = reservations.get(spec.name)
            with self.claims.lock():
                if entry is None:
                    used = set(self.store.used_addresses(reservations))
                    used |= self.claims.others(self._owner(spec.name))
                    entry = {"address": network.allocate(used, _ports(spec))}
                self.claims.claim(str(entry["address"]), self._owner(spec.name), self.store.dir_of(spec.name).resolve())
            entry["time"] = time.time()
            reservations[spec.name] = entry
            self.store.save_reservations(reservations)
            return str(entry["address"])

    # -- creating ----------------------------------------------------------------------------

    def _service_records(self, spec: MemberSpec, directory: Path, address: str) -> ServiceRecords:
        values = {
            "address": address,
            "config": str(directory / "config"),
            "data": str(directory / "data"),
            "name": spec.name,
        }
        base = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        base.update(
            INFRA_ADDRESS=address,
            INFRA_CONFIG_DIR=values["config"],
            INFRA_DATA_DIR=values["data"],
            INFRA_INSTANCE=spec.name,
        )
        return [
            ServiceRecord(
                name=svc.name,
                command=[linuxkit.expand(a, values) for a in svc.command],
                env={**base, **{k: linuxkit.expand(v, values) for k, v in svc.env.items()}},
                ports=list(svc.ports),
                secret_env={k: str(directory / "config" / secret_env_file(svc.name, k)) for k in svc.secret_env},
            )
            for svc in spec.services
        ]

    def _build(self, staging: Path, spec: MemberSpec, record: InstanceRecord) -> None:
        """Fill a staging directory: config, LinuxKit YAML, logs, data, and the record last."""
        staging.chmod(0o700)
        placed = spec if spec.address == record.address else spec.model_copy(update={"address": record.address})
        metadata.deliver(staging / "config", placed.userdata(), [f.path.strip("/") for f in spec.files if f.secret])
        for sub in ("logs", "data", "run"):
            (staging / sub).mkdir(mode=0o700)
        text = linuxkit.render(spec.services, metadata=METADATA_SOURCE,
                               title=f"LinuxKit image of group {spec.group} of stack {spec.stack}")
        (staging / "linuxkit.yml").write_text(text, encoding="utf-8")
        self.store.write(staging, record)

    def _start(self, directory: Path, record: InstanceRecord, timeout: float) -> InstanceRecord:
        """Start the supervisor, wait for its services to be started, record their pids."""
        # The supervisor gets no more of infra's environment (credentials!) than its services do.
        env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        package_root = str(Path(providers.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        with open(directory / "logs" / "supervisor.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "providers.local.supervisor", str(directory)],
                cwd=directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # own session and process group; outlives infra
                close_fds=True,
            )
        adopt(proc)
        leader = ref_of(proc.pid) or ProcRef(pid=proc.pid, start=0)
        try:
            procs = self._await_services(directory, record, proc, timeout)
        except BaseException:
            terminate(leader, [], 0.0)  # nothing of a failed start is left running
            raise
        record = record.model_copy(update={"processes": procs})
        self.store.write(directory, record)
        return record

    def _await_services(
        self, directory: Path, record: InstanceRecord, proc: subprocess.Popen[bytes], timeout: float
    ) -> Processes:
        """Wait until the supervisor reports its services started; their processes."""
        deadline = time.monotonic() + timeout
        while True:
            procs = self._processes(directory, record)
            if procs is not None:
                break
            exits = read_json(directory / "logs" / "exits.json")
            if isinstance(exits, dict) and exits.get("exits"):
                raise PermanentError(f"local: {record.name}: {_describe_exit(exits['exits'][0])}")
            code = proc.poll()
            if code is not None:
                raise PermanentError(
                    f"local: the supervisor of {record.name} exited with code {code} before starting "
                    f"its services; see {directory / 'logs' / 'supervisor.log'}"
                )
            if time.monotonic() > deadline:
                raise TransientError(f"local: the services of {record.name} did not start within {timeout}s")
            time.sleep(0.01)
        return procs

    def _stop(self, directory: Path, record: InstanceRecord, grace: float) -> None:
        procs = self._processes(directory, record)
        if procs is None:
            return
        if not terminate(procs.supervisor, list(procs.services.values()), grace):
            raise TransientError(f"local: processes of {record.name} still run after SIGKILL; retry")

    def _existing(self, directory: Path) -> InstanceRecord | None:
        """Under the lock: the record of an instance that already exists at ``directory``."""
        if not directory.exists():
            return None
        existing = self.store.read(directory)
        if existing is None:
            raise PermanentError(
                f"local: {directory} exists but holds no readable instance.json",
                hint="it was not made by infra, or is damaged: move it away",
            )
        return existing

    def _prepare(self, spec: MemberSpec, directory: Path, settings: LocalConfig) -> InstanceRecord:
        """Under the lock: pick the address and build the instance's directory atomically."""
        owner = None
        if settings.owner_pid is not None:
            owner = ref_of(settings.owner_pid)
            if owner is None:
                raise PermanentError(f"local: provider_config.owner_pid {settings.owner_pid} is not a running process",
                                     hint="an instance bound to a process that is gone would stop at once")
        reservations = self.store.reservations()
        with self.claims.lock():
            address = self._pick_address(spec, reservations, owner)
        record = InstanceRecord(
            id=new_id(),
            name=spec.name,
            labels=spec.labels,
            address=address,
            created=time.time(),
            creator=ref_of(os.getpid()),
            owner=owner,
            grace=settings.grace,
            services=self._service_records(spec, directory, address),
        )
        staging = self.store.staging_dir()
        try:
            self._build(staging, spec, record)
            os.rename(staging, directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if reservations.pop(spec.name, None) is not None:
            self.store.save_reservations(reservations)
        return record

    def create(self, spec: MemberSpec) -> Instance:
        """Start the instance ``spec.name`` and return it (RUNNING, with its address).

        Idempotent on the name: when its directory already exists, that instance is returned
        and nothing is started. Raises PermanentError when the address (``spec.address`` or a
        new one) is taken or one of the member's ports is in use there (naming
        ``address:port``), or when a service cannot be started; TransientError when the
        services did not start in time. After a failed create nothing of it is left running
        or on disk.
        """
        reap_children()
        problems = [p for p in self._check_member(spec) if p.is_error]
        if problems:
            raise PermanentError(f"local: {spec.name}: {problems[0].message}")
        settings = self._settings(spec)
        with _os_errors(f"creating {spec.name}"):
            with self.store.lock():
                self.store.sweep()
                directory = self.store.dir_of(spec.name)
                existing = self._existing(directory)
                if existing is None:
                    record = self._prepare(spec, directory, settings)
            if existing is not None:  # idempotent: that instance, nothing started
                return self._observe(directory, existing)
            try:
                record = self._start(directory, record, settings.start_timeout)
            except BaseException:
                with contextlib.suppress(Exception):
                    self._stop(directory, record, 0.0)
                self.store.discard(directory)
                raise
            instance = self._observe(directory, record)
            self._refresh_discovery()
        return instance

    # -- labels in place ---------------------------------------------------------------------

    def update_labels(self, instance: Instance, labels: Mapping[str, str]) -> Instance:
        """Make ``labels`` the instance's labels, in its record; its processes are not touched.

        Reads the record first (never the labels passed in) and refuses an instance that is not
        this stack's, or a change of an ownership label.
        """
        with _os_errors(f"updating the labels of {instance.name}"), self.store.lock():
            found = self.store.find(instance.name, instance.id)
            if found is None:
                raise NotFoundError(f"local: {instance.name} ({instance.id}) is gone")
            directory, record = found
            live = Instance(id=record.id, name=record.name, labels=record.labels)
            require_label_update("local", live, labels, self.stack)
            updated = record.model_copy(update={"labels": merged_labels(record.labels, labels)})
            self.store.write(directory, updated)
        self._refresh_discovery()
        return self._observe(directory, updated)

    # -- deleting ----------------------------------------------------------------------------

    def delete(self, instance: Instance) -> None:
        """Stop the instance's whole process group (TERM, KILL after ``grace``), remove its directory.

        Reads the instance's own record (never the labels passed in) and refuses with
        PermanentError when the record lacks this stack's ownership labels. An instance that is
        already gone is success. After a failed delete (TransientError: processes survived
        SIGKILL) the instance still exists.
        """
        reap_children()
        with _os_errors(f"deleting {instance.name}"):
            found = self.store.find(instance.name, instance.id)
            if found is None:
                self._refresh_discovery()
                return
            directory, record = found
            require_owned("local", Instance(id=record.id, name=record.name, labels=record.labels), self.stack)
            self._stop(directory, record, record.grace)
            with self.store.lock():
                self.store.discard(directory)
                reservations = self.store.reservations()
                if reservations.pop(record.name, None) is not None:
                    self.store.save_reservations(reservations)
                with self.claims.lock():
                    self.claims.release(self._owner(record.name))
            self._refresh_discovery()

    # -- validating --------------------------------------------------------------------------

    def _settings(self, spec: MemberSpec) -> LocalConfig:
        """The provider settings for one member: the group's ``provider_config`` if it has one."""
        if not spec.provider_config:
            return self.config
        try:
            return LocalConfig.model_validate(dict(spec.provider_config))
        except ValidationError as exc:
            loc, msg = first_problem(exc)
            raise PermanentError(f"local: {spec.name}: provider_config.{loc}: {msg}") from None

    def _check_member(self, spec: MemberSpec) -> Problems:
        where = f"groups.{spec.group}"
        problems: Problems = []

        def problem(field: str, message: str, severity: str = "error") -> None:
            problems.append(Problem(field=f"{where}.{field}", message=f"{spec.member}: {message}", severity=severity))

        names: set[str] = set()
        ports: dict[int, str] = {}
        for svc in spec.services:
            field = f"services.{svc.name}"
            if not svc.name or svc.name.startswith(".") or "/" in svc.name or svc.name in ("supervisor", "exits"):
                problem(field, f"service name {svc.name!r} cannot name a log file (logs/<service>.log)")
            if svc.name in names:
                problem(field, f"service {svc.name!r} is declared twice")
            names.add(svc.name)
            if not svc.command:
                problem(f"{field}.command", f"service {svc.name!r} has no command")
            for port in svc.ports:
                if not 0 < port < 65536:
                    problem(f"{field}.ports", f"port {port} is not a TCP port (1-65535)")
                elif port in ports:
                    problem(
                        f"{field}.ports",
                        f"port {port} is declared by services {ports[port]!r} and {svc.name!r}; "
                        "they would collide on the member's address",
                    )
                else:
                    ports[port] = svc.name
        for f in spec.files:
            parts = f.path.split("/")
            if f.path.startswith("/") or any(p in ("", ".", "..") for p in parts) or f.path == metadata.USERDATA:
                problem("files", f"config file path {f.path!r} must be relative, without '.', '..' or 'userdata'")
        return problems

    def _check_command(self, spec: MemberSpec) -> Problems:
        problems: Problems = []
        for svc in spec.services:
            if not svc.command or "{" in svc.command[0]:
                continue
            program = svc.command[0]
            if "/" in program:
                found = os.path.isfile(program) and os.access(program, os.X_OK)
            else:
                found = shutil.which(program) is not None
            if found:
                continue
            base = os.path.basename(program)
            package = DEBIAN_PACKAGES.get(base)
            hint = f" (install it: apt-get install {package})" if package else ""
            problems.append(
                Problem(
                    field=f"groups.{spec.group}.services.{svc.name}.command",
                    message=f"command {program!r} of service {svc.name!r} is not found on PATH{hint}",
                )
            )
        return problems

    def validate(self, members: Sequence[MemberSpec]) -> Problems:
        """Problems found before anything changes; changes nothing.

        Commands missing from PATH (with the Debian package to install), duplicate service
        names or ports within a member, unsafe config paths, bad per-member provider settings,
        addresses that are not loopback or are already used by another instance or member, and
        ports already in use at the address of a member not yet created.
        """
        problems: Problems = []
        seen_commands: set[tuple[str, ...]] = set()
        addresses: dict[str, str] = {}
        with _os_errors("validating"):
            used = self.store.used_addresses(self.store.reservations())
        for spec in members:
            problems.extend(self._check_member(spec))
            key = tuple(s.command[0] for s in spec.services if s.command)
            if key not in seen_commands:  # same role, same binaries: report once
                seen_commands.add(key)
                problems.extend(self._check_command(spec))
            if spec.provider_config:
                try:
                    settings = LocalConfig.model_validate(dict(spec.provider_config))
                except ValidationError as exc:
                    loc, msg = first_problem(exc)
                    problems.append(Problem(field=f"groups.{spec.group}.provider_config.{loc}", message=msg))
                else:
                    if settings.root_path().resolve() != self.root.resolve():
                        problems.append(
                            Problem(
                                field="provider_config.root",
                                message=f"group {spec.group} sets root {settings.root_path()}, but one "
                                f"stack's instances live under one root ({self.root})",
                            )
                        )
            if spec.address is not None:
                field, who, address = f"groups.{spec.group}.address", spec.member, spec.address
                if not network.is_loopback(address):
                    problems.append(Problem(field=field, message=f"{who}: {address!r} is not an IPv4 loopback address"))
                elif address in addresses and addresses[address] != spec.name:
                    other = addresses[address]
                    problems.append(Problem(field=field, message=f"{who}: address {address} is also given to {other}"))
                elif used.get(address, spec.name) != spec.name:
                    problems.append(Problem(field=field,
                                            message=f"{who}: address {address} is already used by {used[address]}"))
                elif not self.store.dir_of(spec.name).exists():
                    busy = network.busy_ports(address, _ports(spec))
                    if busy:
                        where = ", ".join(f"{address}:{p}" for p in busy)
                        problems.append(Problem(field=field, message=f"{who}: port already in use at {where}"))
                addresses[spec.address] = spec.name
        return problems

    # -- discovery ---------------------------------------------------------------------------

    def discovery(self, selector: Mapping[str, str], port: int) -> SdConfig | None:
        """A ``file_sd_configs`` fragment for the instances matching ``selector`` on ``port``.

        The file is written now and rewritten by every later list, create and delete (of this or
        any other ``infra`` process using the same root). Raises PermanentError when the
        discovery directory cannot be written.
        """
        with _os_errors("writing discovery files"):
            path = self.sd.register(dict(selector), port)
            self._refresh_discovery()
        return {"file_sd_configs": [{"files": [str(path)], "refresh_interval": "5s"}]}

    def close(self) -> None:
        """Reap exited children; instances keep running (they outlive the provider)."""
        reap_children()
