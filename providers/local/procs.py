"""Process facts read from ``/proc``, for the local provider's liveness checks and delete.

A pid alone is not an identity: pids are reused, and a killed child of a long-lived parent
stays in the process table as a zombie until reaped. So a process is named by
:class:`ProcRef` (pid + start time in clock ticks since boot, field 22 of ``/proc/<pid>/stat``)
and counts as alive only when its start time still matches and its state is not ``Z``/``X``.
Linux only. Called by :mod:`providers.local.provider` and the supervisor.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

_DEAD_STATES = frozenset({"Z", "X", "x"})


class ProcRef(BaseModel):
    """One process, named so that a reused pid does not match."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    pid: int
    start: int


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    state: str
    pgrp: int
    start: int

    @property
    def running(self) -> bool:
        return self.state not in _DEAD_STATES


def proc_info(pid: int) -> ProcInfo | None:
    """What ``/proc/<pid>/stat`` says, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            data = fh.read()
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces and ')'.
    rest = data[data.rindex(")") + 2 :].split()
    return ProcInfo(pid=pid, state=rest[0], pgrp=int(rest[2]), start=int(rest[19]))


def ref_of(pid: int) -> ProcRef | None:
    """A :class:`ProcRef` for a pid that exists now (None if it is already gone)."""
    info = proc_info(pid)
    return None if info is None else ProcRef(pid=pid, start=info.start)


def alive(ref: ProcRef) -> bool:
    """True when the process ``ref`` names still runs (same start time, not a zombie)."""
    info = proc_info(ref.pid)
    return info is not None and info.start == ref.start and info.running


def group_members(pgid: int, not_before: int = 0) -> list[int]:
    """Pids of running (non-zombie) processes in group ``pgid`` started at or after ``not_before``."""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        info = proc_info(int(entry))
        if info is not None and info.pgrp == pgid and info.running and info.start >= not_before:
            found.append(info.pid)
    return found


# -- our own children -------------------------------------------------------------------------
# Supervisors are started as children of the process that creates the instance. While that
# process lives it must reap them, or a dead supervisor lingers as a zombie.

_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_CHILDREN_LOCK = threading.Lock()


def adopt(proc: subprocess.Popen[bytes]) -> None:
    """Remember a child so :func:`reap_children` can reap it when it exits."""
    with _CHILDREN_LOCK:
        _CHILDREN[proc.pid] = proc


def reap_children() -> None:
    """Reap every remembered child that has exited (never blocks)."""
    with _CHILDREN_LOCK:
        for pid, proc in list(_CHILDREN.items()):
            if proc.poll() is not None:
                del _CHILDREN[pid]


def terminate(leader: ProcRef, extra: list[ProcRef], grace: float) -> bool:
    """TERM the group led by ``leader``, KILL it after ``grace`` s; True when none of it runs.

    The group is ``leader.pid``'s process group; only members started no earlier than the
    leader count. If another process now holds the leader's pid (pid reuse), the group is not
    ours any more and only the processes in ``extra`` are signalled.
    """
    info = proc_info(leader.pid)
    if info is not None and info.start != leader.start:
        pgid, not_before = -1, 0  # a stranger's group: never signal it
    else:
        pgid, not_before = leader.pid, leader.start

    def remaining() -> bool:
        return bool(pgid > 0 and group_members(pgid, not_before)) or any(alive(r) for r in extra)

    def send(sig: int) -> None:
        if pgid > 0:
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        for ref in extra:
            if alive(ref):
                try:
                    os.kill(ref.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass

    def wait(deadline: float) -> bool:
        while True:
            reap_children()
            if not remaining():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    reap_children()
    if not remaining():
        return True
    send(signal.SIGTERM)
    if wait(time.monotonic() + grace):
        return True
    send(signal.SIGKILL)
    return wait(time.monotonic() + 5.0)
