"""The local provider's machine-wide state lives where only this user can write, and no lock blocks for ever.

Address claims are shared by every root of a user (so two test sessions never hand out the same
loopback address); they used to live in ``/tmp/infra-local-<uid>``, made without checking owner or
mode and locked with a call that followed symlinks and waited for ever, so another user who
planted that path first could redirect or block every local apply. Now a planted symlink, a
directory of another user or one open to others is refused with a clear error that changes
nothing, and a lock held too long is a clear, retryable error.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from providers.local import store
from providers.local.store import Claims, flock, private_dir
from reconciler.core.errors import TransientError


def test_a_fresh_claims_directory_is_made_private(tmp_path: Path) -> None:
    claims = Claims(tmp_path / "claims")
    with claims.lock():
        pass
    assert (os.stat(tmp_path / "claims").st_mode & 0o777) == 0o700


def test_a_symlink_planted_at_the_path_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "claims").symlink_to(target)
    with pytest.raises(PermissionError, match="a symlink or a file"):
        Claims(tmp_path / "claims").lock()
    assert list(target.iterdir()) == []


def test_a_directory_open_to_others_or_of_another_user_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    with pytest.raises(PermissionError, match="open to other users"):
        private_dir(shared)
    if os.getuid() == 0:  # as root, give it away to check the owner
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 65534, 65534)
        with pytest.raises(PermissionError, match="belongs to uid 65534"):
            private_dir(theirs)


def test_a_lock_file_planted_as_a_symlink_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "claims.lock").symlink_to(victim)
    with pytest.raises(OSError), flock(tmp_path / "claims.lock"):
        pass
    assert victim.read_text() == "keep"


def _hold(path: str, ready: object, seconds: float) -> None:
    with flock(Path(path)):
        ready.set()  # type: ignore[attr-defined]
        time.sleep(seconds)


def test_a_lock_held_elsewhere_is_waited_for_a_bounded_time(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path / "x.lock"), ready, 30))
    holder.start()
    try:
        assert ready.wait(30)
        start = time.monotonic()
        with pytest.raises(TransientError, match=r"locked by another process for 0\.5s"), \
                flock(tmp_path / "x.lock", wait=0.5):
            pass
        assert time.monotonic() - start < 5
    finally:
        holder.kill()
        holder.join()
    with flock(tmp_path / "x.lock", wait=5):  # released by the holder's death
        pass


def test_the_default_location_prefers_the_users_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert store.claims_dir() == tmp_path / "infra-local"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert store.claims_dir().name == f"infra-local-{os.getuid()}"
