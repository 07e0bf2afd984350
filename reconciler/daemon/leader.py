"""Who may write a stack: the daemon's lock backends (one leader per stack).

Called by :mod:`reconciler.daemon`, and by ``infra apply``/``destroy`` for the leader key when they
coordinate (their local lock is :class:`~reconciler.engine.lock.StackLock` directly). Two
backends, chosen with ``infra daemon --lock``:

``file`` (default) — :class:`FileLeader`
    The stack's :class:`~reconciler.engine.lock.StackLock` (a non-blocking ``flock`` under the stack's
    state directory), held **for the daemon's whole life**, not per pass: while a daemon runs,
    it is the stack's one writer, and ``infra apply``/``destroy`` fail at once with
    :class:`~reconciler.core.errors.LockHeldError` naming the daemon (pid, host, command, since).
    A second daemon on the same machine waits as a standby and takes over when the first one
    exits or dies (the kernel drops a dead process's ``flock``).

``etcd://HOST:PORT`` — :class:`EtcdLeader`
    Leadership across machines through a *separate, coordinating* etcd (never the cluster being
    managed), over etcd's v3 JSON gateway with ``etcd3gw`` (pure Python over ``requests``, no
    gRPC/protobuf pin; TLS with ``--lock-cacert/--lock-cert/--lock-key`` as for ``etcdctl``).
    To lead, a daemon creates, in one transaction, the key ``/infra/leader/<stack>`` only if it
    does not exist (``create_revision == 0``), bound to the process's one session lease
    (:class:`~reconciler.daemon.session.Session`: one lease of ``ttl`` seconds and one keepalive
    thread for all of the process's stacks); the key's value names the holder and its daemon id.
    When the leader dies its lease expires after ``ttl`` and etcd deletes all of its keys at once;
    a standby retries at least every interval, so leadership moves within ``ttl`` + one interval.
    A stack handed over deletes its own key (only while it still holds this holder's value); a
    daemon that exits cleanly revokes its lease, handing over every stack at once.

    InfraKit's rule: a daemon that cannot tell whether it still leads stops writing. When no
    keepalive has succeeded for ``ttl`` seconds (counted from when the last successful one was
    *sent*, so never later than etcd's own expiry), or etcd says the lease is gone, the session
    tells every leader on it, and each calls ``on_lost`` (the daemon sets the executor's stop
    event: no new change starts) and reports itself a follower until it wins the key again. The
    leader also takes the local :class:`FileLeader`, so ``infra apply`` on its machine fails fast
    too.

:class:`Leader` is the small protocol both implement; every method is called from the stack's
own worker thread, except ``on_lost``, which the session's keepalive thread calls.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Protocol

from reconciler.core.errors import LockHeldError
from reconciler.daemon.session import Session, b64, errors, revision_of, short, unb64
from reconciler.engine.lock import describe, holder_note
from reconciler.engine.state import StateDir
from reconciler.kit.coordination import EtcdTarget, etcd_client, parse_lock

__all__ = ["EtcdLeader", "EtcdTarget", "FileLeader", "Leader", "Session", "etcd_client", "parse_lock"]

#: Where the leader keys live in the coordinating etcd.
KEY_PREFIX = "/infra/leader/"

LostCallback = Callable[[str], None]


class Leader(Protocol):
    """The right to write one stack. See the module docstring."""

    stack: str
    kind: str
    on_lost: LostCallback | None

    def acquire(self) -> bool:
        """Try once, never blocking: True when this daemon leads now (already leading included)."""
        ...

    def leading(self) -> bool:
        """True only while this daemon is certain it leads."""
        ...

    def holder(self) -> str:
        """Who leads, as last seen (for a standby's log line)."""
        ...

    def release(self) -> None:
        """Give up leadership (idempotent); a standby may take over at once."""
        ...

    def held(self) -> bool | None:
        """Whether anyone leads the stack now (None: cannot tell); one read, no change."""
        ...


class FileLeader:
    """The local file lock, held while leading (for the daemon's life). Never lost by itself."""

    kind = "file"

    def __init__(self, state: StateDir, stack: str) -> None:
        self.stack = stack
        self.lock = state.lock(timeout=0)
        self.on_lost: LostCallback | None = None
        self._holder = ""

    def acquire(self) -> bool:
        if self.lock.held:
            return True
        try:
            self.lock.acquire()
        except LockHeldError:
            self._holder = self.lock.holder()
            return False
        return True

    def leading(self) -> bool:
        return self.lock.held

    def holder(self) -> str:
        return "this daemon" if self.lock.held else (self._holder or self.lock.holder())

    def release(self) -> None:
        self.lock.release()

    def held(self) -> bool | None:
        return True if self.lock.held else None


class EtcdLeader:
    """Leadership of one stack in a coordinating etcd, on the process's session lease. See the module."""

    kind = "etcd"

    def __init__(self, session: Session, stack: str, *, local: FileLeader,
                 log: Callable[[str, str], None] = lambda level, message: None) -> None:
        self.stack = stack
        self.session = session
        self.target = session.target
        self.ttl = session.ttl
        self.local = local
        self.log = log
        self.on_lost: LostCallback | None = None
        self.key = KEY_PREFIX + stack
        self._mutex = threading.Lock()
        self._lease: int | None = None
        self._value = ""
        self._lost: str | None = None
        self._holder = ""
        session.listen(self._session_lost)

    # -- etcd calls ----------------------------------------------------------------------------

    def _create_if_absent(self, lease: int, value: str) -> tuple[bool, str]:
        key = b64(self.key)
        txn = {
            "compare": [{"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": 0}],
            "success": [{"request_put": {"key": key, "value": b64(value), "lease": lease}}],
            "failure": [{"request_range": {"key": key}}],
        }
        result = self.session.txn(txn)
        if result.get("succeeded"):
            self.session.note(self.key, value, lease, revision_of(result))
            return True, value
        for resp in result.get("responses", []):
            for kv in resp.get("response_range", {}).get("kvs", []):
                current = unb64(kv.get("value", ""))
                self.session.note(self.key, current, int(kv.get("lease", 0) or 0),
                                  int(kv.get("mod_revision", 0) or 0))
                return False, current
        return False, ""

    def _delete_if_mine(self, value: str) -> None:
        """Delete the key only while it still holds ``value`` (never another holder's key)."""
        key = b64(self.key)
        try:
            result = self.session.txn({
                "compare": [{"key": key, "result": "EQUAL", "target": "VALUE", "value": b64(value)}],
                "success": [{"request_delete_range": {"key": key}}],
                "failure": [],
            })
        except errors():
            return  # the key goes with the session's lease at the latest
        if result.get("succeeded"):
            self.session.note(self.key, None, 0, revision_of(result))

    def _current_value(self, max_age: float = 0.5) -> str | None:
        entry = self.session.snapshot(KEY_PREFIX, max_age=max_age).get(self.stack)
        return entry[0] if entry is not None else None

    # -- the Leader protocol ---------------------------------------------------------------------

    def leading(self) -> bool:
        with self._mutex:
            lease, lost = self._lease, self._lost
        return lease is not None and lost is None and self.session.alive(lease) and self.local.leading()

    def holder(self) -> str:
        if self.leading():
            return "this daemon"
        return self._holder or "nobody (the key is free)"

    def acquire(self) -> bool:
        if self.leading():
            try:
                current = self._current_value()
            except errors():
                return self.leading()  # cannot check now; the session's deadline decides
            if current != self._value:
                self._declare_lost(f"the key {self.key} now names another holder: {self._show(current)}")
                return False
            return True
        with self._mutex:
            uncertain = self._lease is not None and self._lost is None
        if uncertain:  # the lease's deadline passed before the keepalive thread noticed
            self._declare_lost(f"no lease keepalive succeeded for {self.ttl}s (the lease TTL)")
        self._abandon()
        try:
            lease = self.session.lease()
        except errors() as exc:
            self._holder = f"unknown: etcd at {self.target} is unreachable ({short(exc)})"
            return False
        value = json.dumps({**holder_note(), "id": self.session.id, "lease_ttl": self.ttl})
        try:
            won, current = self._create_if_absent(lease, value)
        except errors() as exc:
            self._holder = f"unknown: etcd at {self.target} failed ({short(exc)})"
            return False
        if not won:
            self._holder = self._show(current)
            return False
        with self._mutex:
            self._lease, self._value, self._lost = lease, value, None
        if not self.local.acquire():
            self._holder = f"{self.local.holder()} (the local file lock)"
            self.release()
            return False
        return True

    def release(self) -> None:
        with self._mutex:
            lease, self._lease = self._lease, None
            value, self._value = self._value, ""
        if lease is not None and not self.session.closing:
            self._delete_if_mine(value)  # a standby takes over at once
        self.local.release()

    def held(self) -> bool | None:
        if self.leading():
            return True
        try:
            current = self._current_value()
        except errors():
            return None
        self._holder = self._show(current)
        return current is not None

    # -- internals -------------------------------------------------------------------------------

    @staticmethod
    def _show(value: str | None) -> str:
        if not value:
            return "nobody (the key is free)"
        try:
            note = json.loads(value)
            who = describe(note)
            return f"{who}, daemon {note['id']}" if note.get("id") else who
        except (ValueError, TypeError, AttributeError, KeyError):
            return value[:200]

    def _abandon(self) -> None:
        """Forget a claim we are no longer sure of (its key goes if it is still ours)."""
        with self._mutex:
            lease, self._lease = self._lease, None
            value, self._value = self._value, ""
        if lease is not None:
            self._delete_if_mine(value)
            self.local.release()

    def _session_lost(self, lease: int, why: str) -> None:
        with self._mutex:
            mine = self._lease == lease
        if mine:
            self._declare_lost(why)

    def _declare_lost(self, why: str) -> None:
        with self._mutex:
            if self._lost is not None or self._lease is None:
                return
            self._lost = why
        # The local file lock stays held until the worker thread abandons the claim after its pass:
        # a change still in flight must not race an 'infra apply' started meanwhile on this machine.
        self.log("error", f"stack {self.stack}: leadership lost, stopping writes: {why}")
        callback = self.on_lost
        if callback is not None:
            callback(why)
