"""One writer per stack: a file lock under the stack's state directory.

``infra apply``, ``infra destroy`` and the daemon take it before changing anything; a second
writer fails fast with :class:`~reconciler.errors.LockHeldError` naming the holder (pid, host,
command, since when). The lock is an OS-level ``flock`` (via ``filelock``), so it is released
when its holder dies, however it dies; the holder note beside it is only informative.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from reconciler.errors import LockHeldError


class StackLock:
    """Exclusive lock on one stack. Use as a context manager; ``timeout=0`` fails fast."""

    def __init__(self, stack_dir: Path, stack: str, *, timeout: float = 0.0) -> None:
        self.stack = stack
        self.path = stack_dir / "lock"
        self.note = stack_dir / "lock.holder.json"
        self.timeout = timeout
        self._lock = FileLock(str(self.path), thread_local=False)

    def holder(self) -> str:
        try:
            info = json.loads(self.note.read_text())
        except (OSError, ValueError):
            return "another process (no holder note)"
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
        return f"pid {info.get('pid')} on {info.get('host')} ({info.get('command')}) since {since}"

    def acquire(self) -> None:
        try:
            self._lock.acquire(timeout=self.timeout)
        except Timeout:
            raise LockHeldError(
                f"stack {self.stack!r} is locked by {self.holder()}",
                hint="wait for that run to finish; a crashed holder releases the lock by itself",
            ) from None
        note = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200],
            "since": time.time(),
        }
        tmp = self.note.with_suffix(".tmp")
        tmp.write_text(json.dumps(note))
        tmp.replace(self.note)

    def release(self) -> None:
        if self._lock.is_locked:
            self.note.unlink(missing_ok=True)
            self._lock.release()

    @property
    def held(self) -> bool:
        return bool(self._lock.is_locked)

    def __enter__(self) -> StackLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
