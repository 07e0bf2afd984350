"""One writer per stack: an ``flock`` on the file ``lock`` in the stack's state directory.

``infra apply``, ``infra destroy``, ``infra image push`` and the daemon take it before changing
anything (through :meth:`reconciler.engine.state.StateDir.lock`); a second writer fails fast with
:class:`~reconciler.core.errors.LockHeldError` naming the holder (pid, host, command, since when),
or, given a ``timeout``, waits that long at most. The lock is the kernel's ``flock``, so it is
released when its holder dies, however it dies; the holder's note is written into the lock file
itself and is only informative.

The lock file may be unlinked, but only by its holder and as its last act under the lock
(``destroy`` once the stack's state is gone; a failed first run that made the file). That is
safe because taking the lock is not done until the locked file is still the one at the path: a
contender that opened the old file before it was unlinked, and locks it after the holder let it
go, sees that the path now names another file (or none) and starts over on the new one. So there
is never a moment with two holders, which a plain ``flock`` on an unlinkable path cannot promise.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from reconciler.core.errors import LockHeldError

#: How often a lock with a timeout looks again while another process holds it.
POLL = 0.05
#: How long a contender waits for a new holder's note to appear before reporting none.
NOTE_WAIT = 1.0


def holder_note() -> dict[str, object]:
    """What a holder says of itself: pid, host, the command (its first 200 characters), since when."""
    argv = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": argv, "since": time.time()}


def describe(note: dict[str, object]) -> str:
    """``pid 12 on host (infra apply x.py) since 2026-12-07 10:00:00``."""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(str(note.get("since", 0)))))
    return f"pid {note.get('pid')} on {note.get('host')} ({note.get('command')}) since {since}"


class StackLock:
    """Exclusive lock on one stack. Use as a context manager; ``timeout=0`` fails fast.

    ``prepare`` makes the lock file's directory (the state directory's ``ensure``) before each
    try, since a holder may have removed it; it is called again when that happens.
    """

    def __init__(self, path: Path, stack: str, *, timeout: float = 0.0,
                 prepare: Callable[[], object] | None = None) -> None:
        self.stack = stack
        self.path = path
        self.timeout = timeout
        self._prepare = prepare or (lambda: path.parent.mkdir(parents=True, exist_ok=True, mode=0o700))
        self._fd: int | None = None
        #: whether this object's open made the lock file (so a failed first run may remove it)
        self.created = False

    def holder(self, wait: float = 0.0) -> str:
        """Who holds the lock, from the note in the lock file.

        The holder writes its note just after it takes the lock, so a contender that lost by a hair
        may find the file still empty: it looks again for up to ``wait`` seconds before saying that
        there is no note.
        """
        deadline = time.monotonic() + wait
        while True:
            try:
                info = json.loads(self.path.read_text())
            except (OSError, ValueError):
                info = None
            if isinstance(info, dict):
                return describe(info)
            if time.monotonic() >= deadline:
                return "another process (no holder note)"
            time.sleep(POLL)

    def _open(self) -> int | None:
        """The lock file, opened (created 0600 if need be) without following a symlink; None when its
        directory was just removed (by a holder's destroy), so the caller starts over."""
        self._prepare()
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            self.created = True
            return fd
        except FileExistsError:
            pass
        except FileNotFoundError:
            return None
        try:
            return os.open(self.path, flags)
        except FileNotFoundError:  # unlinked between the two opens: start over
            return None

    def _still_at_path(self, fd: int) -> bool:
        try:
            now = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)

    def acquire(self) -> None:
        """Take the lock, or raise LockHeldError (at once, or after ``timeout`` seconds)."""
        if self._fd is not None:
            return
        deadline = time.monotonic() + self.timeout
        while True:
            fd = self._open()
            if fd is None:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise LockHeldError(
                        f"stack {self.stack!r} is locked by {self.holder(NOTE_WAIT)}",
                        hint="wait for that run to finish; a crashed holder releases the lock by itself",
                    ) from None
                time.sleep(POLL)
                continue
            if not self._still_at_path(fd):  # the holder before us removed it: lock the new one
                os.close(fd)
                continue
            self._fd = fd
            break
        note = json.dumps(holder_note()).encode()
        with contextlib.suppress(OSError):  # write, then cut: never an empty file between the two
            os.pwrite(fd, note, 0)
            os.ftruncate(fd, len(note))

    def release(self) -> None:
        """Let the lock go (its note is cleared first). Harmless when not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> StackLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
