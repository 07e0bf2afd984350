"""The state directory: the one owner of what a command leaves on this machine.

The provider is the source of truth for instances; locally infra keeps only a stack's secrets
(the stack's CA) under ``<state root>/stacks/<stack>/`` (mode 0700), its lock beside them in
``<state root>/stacks/<stack>.lock``, the image cache under ``<state root>/images``, and the local
provider's own files. A :class:`StateDir` is made by :meth:`reconciler.engine.Engine.open` and
creates nothing: directories are made on first write (:meth:`StateDir.ensure`, which the lock
calls before it takes the lock), and the object remembers which ones *its own* ``mkdir`` made,
and whether its own ``open`` made the lock file.

Its rules, which the CLI and the daemon follow through it:

* a command that fails before it changed anything removes what it made itself, and only while
  it holds the stack's lock (:meth:`StateDir.discard`); a directory another process made, or
  one made by a process that did not get the lock, is never removed;
* ``destroy`` removes the stack's state while it still holds the lock (:meth:`StateDir.remove`);
* the lock file lives outside the directory that is removed, so removing the stack's state
  never lets a second writer in. It is unlinked only by its holder, as the very last act under
  the lock (after the state is gone, nothing more is done before the release): a contender that
  opened it before re-checks that the file it locked is still the one at the path and starts
  over on the new one (:mod:`reconciler.engine.lock`), so there is never a moment with two
  holders doing anything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from reconciler.engine.lock import StackLock
from reconciler.kit.paths import state_root

#: How many times :meth:`StateDir.ensure` starts over when a directory on its way vanishes
#: (another process's failed first run removing the empty state root it made).
ENSURE_TRIES = 20


class StateDir:
    """One stack's private directory under the state root, made on first write."""

    def __init__(self, stack: str, root: Path | None = None, *, path: Path | None = None) -> None:
        """``root``: the state root (default :func:`~reconciler.kit.paths.state_root`); ``path``: the
        stack's directory, when it is not ``<root>/stacks/<stack>`` (tests, embedders)."""
        self.stack = stack
        self.root = root if root is not None else state_root(create=False)
        self.path = path if path is not None else self.root / "stacks" / stack
        #: the directories this object's own mkdir made, outermost first
        self._made: list[Path] = []
        self._lock: StackLock | None = None

    def ensure(self) -> Path:
        """Make the state root, ``stacks/`` and the stack's directory (0700) where missing."""
        chain = [self.root, self.root / "stacks", self.path] if self.path.parent == self.root / "stacks" \
            else [self.path]
        chain[0].parent.mkdir(parents=True, exist_ok=True)  # not infra's own: never removed
        for _ in range(ENSURE_TRIES):
            try:
                for path in chain:
                    self._mkdir(path)
                return self.path
            except FileNotFoundError:  # a parent was removed under us: start over
                continue
        raise OSError(f"cannot create {self.path}: its parent keeps disappearing")

    def _mkdir(self, path: Path) -> None:
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            if not path.is_dir() or path.is_symlink():
                raise NotADirectoryError(f"{path} is not a directory infra can use") from None
            return
        self._made.append(path)
        os.chmod(path, 0o700)

    @property
    def lock_path(self) -> Path:
        """``<state root>/stacks/<stack>.lock``: beside the stack's directory, not in it."""
        return self.path.with_name(f"{self.path.name}.lock")

    def lock(self, *, timeout: float = 0.0) -> StackLock:
        """The stack's one-writer lock (not yet taken); taking it makes the directories."""
        if self._lock is None:
            self._lock = StackLock(self.lock_path, self.stack, timeout=timeout, prepare=self.ensure)
        return self._lock

    @property
    def made(self) -> tuple[Path, ...]:
        """The directories this object made (the state root, ``stacks/``, the stack's own)."""
        return tuple(self._made)

    def discard(self) -> None:
        """After a failure before any change: remove what this object made, if it holds the lock.

        The stack's directory goes with everything in it, then the lock file if this process's
        open made it (the last act under the lock), then the shared parents it made, only when
        empty. Nothing is removed by a process that does not hold the lock.
        """
        lock = self._lock
        if lock is None or not lock.held:
            return
        if self.path in self._made:
            shutil.rmtree(self.path, ignore_errors=True)
        if lock.created:
            lock.path.unlink(missing_ok=True)
        for path in reversed(self._made):
            if path != self.path:
                with contextlib.suppress(OSError):
                    path.rmdir()  # fails, harmlessly, when another stack's state is in it
        self._made.clear()

    def remove(self) -> None:
        """``destroy``: remove the stack's state (its CA included), then its lock file.

        Only while holding the lock, and as the last thing done under it: the caller releases
        the lock next and changes nothing more.
        """
        lock = self._lock
        if lock is None or not lock.held:
            raise RuntimeError(f"removing the state of stack {self.stack!r} needs its lock")
        shutil.rmtree(self.path, ignore_errors=True)
        lock.path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def writing(self, *, timeout: float = 0.0) -> Iterator[Writing]:
        """Hold the stack's lock for one writing command; on a failure before it changed anything
        (``Writing.changing`` not called), remove what this object made, before letting go."""
        lock = self.lock(timeout=timeout)
        lock.acquire()
        writing = Writing()
        try:
            yield writing
        except BaseException:
            if not writing.changed:
                self.discard()
            raise
        finally:
            lock.release()


class Writing:
    """One writing command under the lock: whether it changed anything yet."""

    def __init__(self) -> None:
        self.changed = False

    def changing(self) -> None:
        """Called just before the first change: from here on, a failure keeps the state."""
        self.changed = True
