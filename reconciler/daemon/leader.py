"""Who may write a stack: the daemon's lock backends (one leader per stack).

Called by :mod:`reconciler.daemon` only; ``infra apply`` takes :class:`~reconciler.engine.lock.StackLock`
directly. Two backends, chosen with ``infra daemon --lock``:

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
    To lead, a daemon grants a lease of ``ttl`` seconds and, in one transaction, creates the key
    ``/infra/leader/<stack>`` bound to it only if the key does not exist (``create_revision ==
    0``); the key's value names the holder. A keepalive thread refreshes the lease every
    ``ttl/3``. When the leader dies its lease expires after ``ttl`` and etcd deletes the key; a
    standby retries at least every interval, so leadership moves within ``ttl`` + one interval.
    A leader that exits cleanly revokes its lease, handing over at once.

    InfraKit's rule: a daemon that cannot tell whether it still leads stops writing. When no
    keepalive has succeeded for ``ttl`` seconds (counted from when the last successful one was
    *sent*, so never later than etcd's own expiry), or etcd says the lease is gone, the leader
    calls ``on_lost`` (the daemon sets the executor's stop event: no new change starts) and
    reports itself a follower until it wins the key again. The leader also takes the local
    :class:`FileLeader`, so ``infra apply`` on its machine fails fast too.

:class:`Leader` is the small protocol both implement; every method is called from the stack's
own worker thread, except ``on_lost``, which the keepalive thread calls.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from reconciler.core.errors import LockHeldError
from reconciler.engine.lock import describe, holder_note
from reconciler.engine.state import StateDir
from reconciler.kit.coordination import EtcdTarget, etcd_client, parse_lock

if TYPE_CHECKING:
    pass

__all__ = ["EtcdLeader", "EtcdTarget", "FileLeader", "Leader", "etcd_client", "parse_lock"]

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


def _b64(data: str) -> str:
    import base64

    return base64.b64encode(data.encode()).decode()


def _unb64(data: str) -> str:
    import base64

    return base64.b64decode(data).decode(errors="replace")


class EtcdLeader:
    """Lease-based leadership of one stack in a coordinating etcd. See the module docstring."""

    kind = "etcd"

    def __init__(self, target: EtcdTarget, stack: str, *, ttl: int, local: FileLeader,
                 log: Callable[[str, str], None] = lambda level, message: None) -> None:
        self.stack = stack
        self.target = target
        self.ttl = max(2, int(ttl))
        self.local = local
        self.log = log
        self.on_lost: LostCallback | None = None
        self.key = KEY_PREFIX + stack
        self.id = uuid.uuid4().hex
        self._client = etcd_client(target, timeout=max(0.5, min(2.0, self.ttl / 3)))
        self._mutex = threading.Lock()
        self._lease: int | None = None
        self._value = ""
        self._deadline = 0.0  # monotonic time after which leadership is uncertain
        self._lost: str | None = None
        self._stop = threading.Event()
        self._keepalive: threading.Thread | None = None
        self._holder = ""

    # -- etcd calls ----------------------------------------------------------------------------

    @staticmethod
    def _errors() -> tuple[type[BaseException], ...]:
        import requests
        from etcd3gw.exceptions import Etcd3Exception

        return (Etcd3Exception, requests.RequestException, ValueError, KeyError, TypeError)

    def _grant(self) -> tuple[int, int]:
        result = self._client.post(self._client.get_url("/lease/grant"), json={"TTL": self.ttl, "ID": 0})
        return int(result["ID"]), int(result.get("TTL", self.ttl))

    def _revoke(self, lease: int) -> None:
        self._client.post(self._client.get_url("/lease/revoke"), json={"ID": lease})

    def _refresh(self, lease: int) -> int:
        result = self._client.post(self._client.get_url("/lease/keepalive"), json={"ID": lease})
        return int(result.get("result", {}).get("TTL", -1))

    def _create_if_absent(self, lease: int, value: str) -> tuple[bool, str]:
        key = _b64(self.key)
        txn = {
            "compare": [{"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": 0}],
            "success": [{"request_put": {"key": key, "value": _b64(value), "lease": lease}}],
            "failure": [{"request_range": {"key": key}}],
        }
        result: dict[str, Any] = dict(self._client.transaction(txn))
        if result.get("succeeded"):
            return True, value
        for resp in result.get("responses", []):
            for kv in resp.get("response_range", {}).get("kvs", []):
                return False, _unb64(kv.get("value", ""))
        return False, ""

    def _current_value(self) -> str | None:
        result = self._client.post(self._client.get_url("/kv/range"), json={"key": _b64(self.key)})
        for kv in result.get("kvs", []):
            return _unb64(kv.get("value", ""))
        return None

    # -- the Leader protocol ---------------------------------------------------------------------

    def leading(self) -> bool:
        with self._mutex:
            certain = self._lease is not None and self._lost is None and time.monotonic() < self._deadline
        return certain and self.local.leading()

    def holder(self) -> str:
        if self.leading():
            return "this daemon"
        return self._holder or "nobody (the key is free)"

    def acquire(self) -> bool:
        errors = self._errors()
        if self.leading():
            try:
                current = self._current_value()
            except errors:
                return self.leading()  # cannot check now; the keepalive deadline decides
            if current != self._value:
                self._declare_lost(f"the key {self.key} now names another holder: {self._show(current)}")
                return False
            return True
        with self._mutex:
            uncertain = self._lease is not None and self._lost is None
        if uncertain:  # the deadline passed before the keepalive thread noticed
            self._declare_lost(f"no lease keepalive succeeded for {self.ttl}s (the lease TTL)")
        self._abandon()
        sent = time.monotonic()  # the lease's TTL runs from its grant, at the latest
        try:
            lease, granted = self._grant()
        except errors as exc:
            self._holder = f"unknown: etcd at {self.target} is unreachable ({_short(exc)})"
            return False
        value = json.dumps({**holder_note(), "id": self.id, "lease_ttl": granted})
        try:
            won, current = self._create_if_absent(lease, value)
        except errors as exc:
            self._holder = f"unknown: etcd at {self.target} failed ({_short(exc)})"
            self._try_revoke(lease)
            return False
        if not won:
            self._holder = self._show(current)
            self._try_revoke(lease)
            return False
        with self._mutex:
            self._lease, self._value, self._lost = lease, value, None
            self._deadline = sent + granted
        if not self.local.acquire():
            self._holder = f"{self.local.holder()} (the local file lock)"
            self.release()
            return False
        self._stop.clear()
        self._keepalive = threading.Thread(target=self._keep, args=(lease, granted),
                                           name=f"infra-lease-{self.stack}", daemon=True)
        self._keepalive.start()
        return True

    def release(self) -> None:
        with self._mutex:
            lease, self._lease = self._lease, None
            self._deadline = 0.0
        self._stop_keepalive()
        if lease is not None:
            self._try_revoke(lease)  # deletes the key with it: a standby takes over at once
        self.local.release()

    def held(self) -> bool | None:
        if self.leading():
            return True
        try:
            current = self._current_value()
        except self._errors():
            return None
        self._holder = self._show(current)
        return current is not None

    # -- internals -------------------------------------------------------------------------------

    @staticmethod
    def _show(value: str | None) -> str:
        if not value:
            return "nobody (the key is free)"
        try:
            return describe(json.loads(value))
        except (ValueError, TypeError, AttributeError):
            return value[:200]

    def _try_revoke(self, lease: int) -> None:
        try:
            self._revoke(lease)
        except self._errors():
            pass  # it expires by itself after the TTL

    def _stop_keepalive(self) -> None:
        self._stop.set()
        thread = self._keepalive
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._keepalive = None

    def _abandon(self) -> None:
        """Forget a lease we are no longer sure of (revoking it is harmless if it is gone)."""
        with self._mutex:
            lease, self._lease = self._lease, None
        if lease is not None:
            self._stop_keepalive()
            self._try_revoke(lease)
            self.local.release()

    def _declare_lost(self, why: str) -> None:
        with self._mutex:
            if self._lost is not None or self._lease is None:
                return
            self._lost = why
        # The local file lock stays held until the worker thread abandons the lease after its pass:
        # a change still in flight must not race an 'infra apply' started meanwhile on this machine.
        self.log("error", f"stack {self.stack}: leadership lost, stopping writes: {why}")
        callback = self.on_lost
        if callback is not None:
            callback(why)

    def _keep(self, lease: int, ttl: int) -> None:
        errors = self._errors()
        every = max(0.3, ttl / 3)
        next_refresh = time.monotonic() + every
        failing: str | None = None
        while not self._stop.wait(min(0.25, every)):
            now = time.monotonic()
            with self._mutex:
                deadline, lost = self._deadline, self._lost
            if lost is not None:
                return
            if now >= deadline:
                self._declare_lost(f"no lease keepalive succeeded for {ttl}s (the lease TTL): "
                                   f"{failing or 'etcd did not answer'}")
                return
            if now < next_refresh:
                continue
            sent = time.monotonic()
            try:
                left = self._refresh(lease)
            except errors as exc:
                if failing is None:
                    self.log("warning", f"stack {self.stack}: lease keepalive to {self.target} failed: "
                                        f"{_short(exc)}; still leading for {deadline - now:.1f}s")
                failing = _short(exc)
                next_refresh = time.monotonic() + min(every, 0.5)
                continue
            if left <= 0:
                self._declare_lost(f"etcd says lease {lease:x} expired")
                return
            if failing is not None:
                self.log("info", f"stack {self.stack}: lease keepalive to {self.target} works again")
                failing = None
            with self._mutex:
                if self._lease == lease:
                    self._deadline = sent + min(left, ttl)
            next_refresh = sent + every


def _short(exc: BaseException) -> str:
    detail = getattr(exc, "detail_text", None)
    text = str(detail or exc) or type(exc).__name__
    return text.splitlines()[0][:200] if text else type(exc).__name__
