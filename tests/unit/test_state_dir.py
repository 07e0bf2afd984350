"""The state directory and the stack lock: one owner of what a command leaves behind, one writer.

Real processes contend for real ``flock``s here: the invariant is that at no moment two
processes hold a stack's lock, even while holders remove the stack's state (and the lock file
with it) the way ``infra destroy`` does, and that a failed command removes only what it made.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from reconciler.core.errors import LockHeldError
from reconciler.engine.state import StateDir

ROOT = Path(__file__).resolve().parents[2]

#: One contender: ``rounds`` times, take the lock (waiting up to 60 s), note the moment, check
#: that nobody else writes or removes the stack's directory meanwhile, note the moment, and on
#: every other round remove the stack's state and its lock file as destroy does (its last act
#: under the lock), then let go. One line per round on stdout.
CONTENDER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from reconciler.engine.state import StateDir

    root, rounds, me = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    while not (root.parent / "go").exists():
        time.sleep(0.001)
    for i in range(rounds):
        state = StateDir("race", root)
        with state.writing(timeout=60):
            start = time.monotonic_ns()
            marker = state.path / "holder"
            marker.write_text(str(os.getpid()))
            time.sleep(0.001)
            alone = marker.read_text() == str(os.getpid())  # raises if another holder removed it
            end = time.monotonic_ns()
            if (i + me) % 2 == 0:
                state.remove()  # destroy: the last act under the lock
        print(start, end, int(alone), flush=True)
""")


def test_no_two_holders_while_holders_remove_the_lock_file(tmp_path: Path) -> None:
    """Four processes take the lock 40 times each; half the rounds unlink the lock file while held.

    A lock that is not re-checked against its path lets a waiter that opened the old file lock it
    after the remover let go, while the next writer locks the new file: two holders; a lock file
    inside the removed directory lets the next writer in while the state is still being removed.
    Here the holding intervals (CLOCK_MONOTONIC, one clock for every process) never overlap and
    no holder's files vanish under it.
    """
    root = tmp_path / "state"
    procs = [subprocess.Popen([sys.executable, "-c", CONTENDER, str(root), "40", str(i)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for i in range(4)]
    time.sleep(0.3)  # every contender is polling for the start line
    (tmp_path / "go").write_text("")
    rounds = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        rounds.extend(tuple(int(x) for x in line.split()) for line in out.splitlines())
    assert len(rounds) == 160
    assert all(alone for _, _, alone in rounds), "another process wrote the stack's directory while held"
    rounds.sort()
    for (_, end, _), (start, _, _) in itertools.pairwise(rounds):
        assert end <= start, "two processes held the stack's lock at the same moment"


def test_a_failure_before_any_change_removes_what_it_made(tmp_path: Path) -> None:
    state = StateDir("s", tmp_path / "root")
    with pytest.raises(RuntimeError), state.writing():
        assert (tmp_path / "root" / "stacks" / "s.lock").exists()
        raise RuntimeError("bad input found under the lock")
    assert not (tmp_path / "root").exists()  # not even a lock file


def test_a_failure_after_a_change_keeps_the_state(tmp_path: Path) -> None:
    state = StateDir("s", tmp_path / "root")
    with pytest.raises(RuntimeError), state.writing() as writing:
        writing.changing()
        raise RuntimeError("a create failed")
    assert (tmp_path / "root" / "stacks" / "s").is_dir()


def test_a_failure_never_removes_what_another_process_made(tmp_path: Path) -> None:
    root = tmp_path / "root"
    other = StateDir("s", root)
    other.ensure()  # another process's first run made the directories (and holds nothing now)
    (root / "stacks" / "s" / "pki").mkdir()
    state = StateDir("s", root)
    with pytest.raises(RuntimeError), state.writing():
        raise RuntimeError("bad input")
    assert (root / "stacks" / "s" / "pki").is_dir()
    assert state.made == ()


def test_a_process_without_the_lock_removes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    holder = StateDir("s", root)
    with holder.writing():
        loser = StateDir("s", root)
        with pytest.raises(LockHeldError, match=f"locked by pid {os.getpid()}"), loser.writing():
            pass
        assert (root / "stacks" / "s.lock").exists()
    assert (root / "stacks" / "s").is_dir()


def test_opening_creates_nothing_and_remove_needs_the_lock(tmp_path: Path) -> None:
    state = StateDir("s", tmp_path / "root")
    assert not (tmp_path / "root").exists()
    with pytest.raises(RuntimeError, match="needs its lock"):
        state.remove()


def test_a_symlink_planted_at_the_lock_path_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    StateDir("s", root).ensure()
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (root / "stacks" / "s.lock").symlink_to(target)
    with pytest.raises(OSError), StateDir("s", root).writing():
        pass
    assert target.read_text() == "keep"


def test_a_waiter_that_opened_the_old_lock_file_starts_over_on_the_new_one(tmp_path: Path) -> None:
    """The waiter opens the lock file, then the holder removes the state (and the file) and lets go
    before the waiter locks: the waiter must not hold the unlinked file while a newcomer holds the
    new one."""
    root = tmp_path / "root"
    holder_state = StateDir("s", root)
    holder = holder_state.lock()
    holder.acquire()
    waiter = StateDir("s", root).lock(timeout=5)
    opened = waiter._open
    first: list[int | None] = []

    def open_then_holder_leaves() -> int | None:
        fd = opened()
        if not first:
            first.append(fd)
            holder_state.remove()
            holder.release()
        return fd

    waiter._open = open_then_holder_leaves  # type: ignore[method-assign]
    waiter.acquire()
    assert waiter._fd is not None
    assert os.stat(waiter.path).st_ino == os.fstat(waiter._fd).st_ino  # it holds the file at the path
    newcomer = StateDir("s", root).lock(timeout=0)
    with pytest.raises(LockHeldError):
        newcomer.acquire()
    waiter.release()


def test_a_contender_that_loses_by_a_hair_still_names_the_holder(tmp_path: Path) -> None:
    """The holder writes its note just after it locks; a contender refused in between waits for the
    note instead of saying "no holder note" (a race CI once lost)."""
    import fcntl
    import json
    import threading

    root = tmp_path / "root"
    state = StateDir("s", root)
    state.ensure()
    lock = state.lock(timeout=0)
    fd = os.open(lock.path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # locked, no note yet

    def write_note_late() -> None:
        time.sleep(0.3)
        os.pwrite(fd, json.dumps({"pid": 4242, "host": "h", "command": "infra apply", "since": 0}).encode(), 0)

    writer = threading.Thread(target=write_note_late)
    writer.start()
    try:
        with pytest.raises(LockHeldError, match="locked by pid 4242 on h"):
            lock.acquire()
    finally:
        writer.join()
        os.close(fd)
