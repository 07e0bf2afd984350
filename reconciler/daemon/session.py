"""One lease per process in the coordinating etcd: what all of a daemon's claims hang on.

Built once per process by :class:`reconciler.daemon.process.Daemon` (``--lock etcd://``) and by
``infra apply``/``destroy`` with ``INFRA_COORDINATION``; used by
:class:`reconciler.daemon.leader.EtcdLeader` (the stacks' leader keys) and
:class:`reconciler.daemon.spread.Spread` (the daemon's registration).

etcd's own ``concurrency.Session`` model: a process grants **one** lease of ``ttl`` seconds,
one thread refreshes it every ``ttl/3``, and every key the process claims (its registration
under ``/infra/daemons/``, the leader key of each stack it leads) is bound to that lease. So a
daemon leading 300 stacks costs the coordinating etcd one keepalive every ``ttl/3``, not 300;
and when it dies, etcd drops its registration and all of its leader keys **at the same
moment**, one TTL after its last keepalive, so the survivors see one change and split its
stacks at once.

A lease is only trusted until ``deadline``: the time the last successful keepalive was *sent*
plus the TTL etcd granted (never later than etcd's own expiry). When that passes without a new
keepalive, or etcd says the lease is gone, the session is **lost**: every listener (each leader
bound to it) hears why at once and stops writing, and the next claim grants a new lease
(re-putting the bound keys, such as the registration).

Reads of the claim keys go through :meth:`Session.snapshot`: one prefix read shared by all of a
process's stacks, at most every ``max_age`` seconds, instead of one read per stack per pass.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from reconciler.kit.coordination import EtcdTarget, etcd_client

#: A listener hears ``(lease, why)`` when the session's lease is lost.
Listener = Callable[[int, str], None]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode(errors="replace")


def prefix_end(prefix: str) -> str:
    """The base64 ``range_end`` that covers every key under ``prefix``."""
    raw = prefix.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


def short(exc: BaseException) -> str:
    """One line about an etcd or HTTP failure (no body dumps)."""
    detail = getattr(exc, "detail_text", None)
    text = str(detail or exc) or type(exc).__name__
    return text.splitlines()[0][:200] if text else type(exc).__name__


def revision_of(result: dict[str, Any]) -> int:
    """The etcd revision an answer of the JSON gateway reflects (its ``header.revision``)."""
    return int(result.get("header", {}).get("revision", 0) or 0)


def errors() -> tuple[type[BaseException], ...]:
    """What a call to the coordinating etcd may raise when it is away or answers oddly, or refuses
    infra's login (a ConfigError: a password changed under a running daemon makes it stand by,
    saying why; commands and the daemon's start check the login first and stop on it)."""
    import requests
    from etcd3gw.exceptions import Etcd3Exception

    from reconciler.core.errors import ConfigError

    return (Etcd3Exception, requests.RequestException, ConfigError, ValueError, KeyError, TypeError)


class Session:
    """This process's lease in ``target`` and the keys bound to it. Thread-safe. See the module."""

    def __init__(self, target: EtcdTarget, *, ttl: int,
                 log: Callable[[str, str], None] = lambda level, message: None,
                 id: str | None = None) -> None:
        self.target = target
        self.ttl = max(2, int(ttl))
        self.log = log
        self.id = id or uuid.uuid4().hex[:12]
        self.client = etcd_client(target, timeout=max(0.5, min(2.0, self.ttl / 3)))
        self._mutex = threading.Lock()
        self._lease: int | None = None
        self._deadline = 0.0
        self._listeners: list[Listener] = []
        self._bound: dict[str, str] = {}  # key → value, put again with every new lease
        #: prefix → (when read, the etcd revision it reflects, key → (value, lease)); a read replaces
        #: it, the watch's events are applied to it (a new dict each time: readers keep theirs)
        self._snapshots: dict[str, tuple[float, int, dict[str, tuple[str, int]]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing: str | None = None
        self._stream: Any = None  # the watch's streaming response, closed to stop it
        #: set when the process is exiting: the lease is revoked as a whole, not key by key
        self.closing = False

    # -- raw calls -----------------------------------------------------------------------------------

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.client.post(self.client.get_url(path), json=body))

    def txn(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.client.transaction(body))

    # -- the lease -----------------------------------------------------------------------------------

    def start(self) -> Session:
        """Start the keepalive thread (it also grants the lease when keys are bound)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._keep, name="infra-session", daemon=True)
            self._thread.start()
        return self

    def listen(self, listener: Listener) -> None:
        with self._mutex:
            self._listeners.append(listener)

    def bind(self, key: str, value: str) -> None:
        """Keep ``key`` = ``value`` in etcd while this session lives (put with every new lease)."""
        with self._mutex:
            self._bound[key] = value
            lease = self._lease
        if lease is not None:
            self.post("/kv/put", {"key": b64(key), "value": b64(value), "lease": lease})

    def lease(self) -> int:
        """The live lease, granted (and the bound keys put) if there is none. Raises errors()."""
        with self._mutex:
            if self._lease is not None and time.monotonic() < self._deadline:
                return self._lease
        self._expire("no keepalive succeeded within the lease TTL")
        sent = time.monotonic()
        result = self.post("/lease/grant", {"TTL": self.ttl, "ID": 0})
        lease, granted = int(result["ID"]), int(result.get("TTL", self.ttl))
        with self._mutex:
            bound = dict(self._bound)
        try:
            for key, value in bound.items():
                self.post("/kv/put", {"key": b64(key), "value": b64(value), "lease": lease})
        except errors():
            self._try_revoke(lease)
            raise
        with self._mutex:
            if self._lease is not None:  # another thread granted one meanwhile: use it, drop ours
                mine = self._lease
            else:
                self._lease, self._deadline, mine = lease, sent + granted, lease
        if mine != lease:
            self._try_revoke(lease)
        self.start()
        return mine

    def alive(self, lease: int) -> bool:
        """Whether ``lease`` is this session's lease and certainly still alive."""
        with self._mutex:
            return self._lease == lease and time.monotonic() < self._deadline

    def close(self) -> None:
        """Stop refreshing and revoke the lease: every key bound to it goes at once."""
        self.closing = True
        self._stop.set()
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self._mutex:
            lease, self._lease, self._deadline = self._lease, None, 0.0
        if lease is not None:
            self._try_revoke(lease)

    def _try_revoke(self, lease: int) -> None:
        try:
            self.post("/lease/revoke", {"ID": lease})
        except errors():
            pass  # it expires by itself after the TTL

    def _expire(self, why: str, lease: int | None = None) -> None:
        """Forget the lease (``lease``, or whichever is current once its deadline passed) and tell
        every listener; the next claim grants a new one."""
        with self._mutex:
            current = self._lease
            if current is None or (lease is not None and current != lease):
                return
            if lease is None and time.monotonic() < self._deadline:
                return
            self._lease, self._deadline = None, 0.0
            listeners = list(self._listeners)
        self.log("error", f"the lease {current:x} in {self.target} is lost: {why}")
        for listener in listeners:
            listener(current, why)
        self._try_revoke(current)

    def _keep(self) -> None:
        every = max(0.3, self.ttl / 3)
        next_refresh = time.monotonic() + every
        while not self._stop.wait(min(0.25, every)):
            now = time.monotonic()
            with self._mutex:
                lease, deadline, bound = self._lease, self._deadline, bool(self._bound)
            if lease is None:
                if bound and now >= next_refresh:  # registered keys must be back: grant a new lease
                    try:
                        self.lease()
                    except errors() as exc:
                        self._note_failure(exc, None)
                    next_refresh = time.monotonic() + min(every, 1.0)
                continue
            if now >= deadline:
                self._expire(f"no keepalive succeeded for {self.ttl}s (the lease TTL): "
                             f"{self._failing or 'etcd did not answer'}", lease)
                continue
            if now < next_refresh:
                continue
            sent = time.monotonic()
            try:
                left = int(self.post("/lease/keepalive", {"ID": lease}).get("result", {}).get("TTL", -1))
            except errors() as exc:
                self._note_failure(exc, deadline - now)
                next_refresh = time.monotonic() + min(every, 0.5)
                continue
            if left <= 0:
                self._expire(f"etcd says lease {lease:x} expired", lease)
                continue
            if self._failing is not None:
                self.log("info", f"lease keepalive to {self.target} works again")
                self._failing = None
            with self._mutex:
                if self._lease == lease:
                    self._deadline = sent + min(left, self.ttl)
            next_refresh = sent + every

    def _note_failure(self, exc: BaseException, left: float | None) -> None:
        if self._failing is None:
            tail = f"; the claims stand for {left:.1f}s more" if left is not None else ""
            self.log("warning", f"lease keepalive to {self.target} failed: {short(exc)}{tail}")
        self._failing = short(exc)

    # -- shared reads --------------------------------------------------------------------------------

    def snapshot(self, prefix: str, *, max_age: float = 0.5) -> dict[str, tuple[str, int]]:
        """Every key under ``prefix`` → (value, lease), read at most every ``max_age`` seconds
        (``max_age=0``: read now) and kept current between reads by the watch, if one runs.
        Raises errors() when the etcd cannot be asked. Do not change the dict returned."""
        now = time.monotonic()
        with self._mutex:
            cached = self._snapshots.get(prefix)
            if cached is not None and now - cached[0] < max_age:
                return cached[2]
        result = self.post("/kv/range", {"key": b64(prefix), "range_end": prefix_end(prefix)})
        revision = revision_of(result)
        keys = {unb64(kv["key"])[len(prefix):]: (unb64(kv.get("value", "")), int(kv.get("lease", 0) or 0))
                for kv in result.get("kvs", [])}
        with self._mutex:
            cached = self._snapshots.get(prefix)
            if cached is not None and cached[1] > revision:  # the watch got further meanwhile
                self._snapshots[prefix] = (now, cached[1], cached[2])
                return cached[2]
            self._snapshots[prefix] = (now, revision, keys)
        return keys

    def _apply(self, events: list[dict[str, Any]]) -> None:
        """Apply watch events to the cached snapshots (those newer than each snapshot's revision)."""
        with self._mutex:
            for prefix, (read_at, revision, keys) in list(self._snapshots.items()):
                new, latest = None, revision
                for event in events:
                    kv = event.get("kv", {})
                    key, rev = unb64(kv.get("key", "")), int(kv.get("mod_revision", 0) or 0)
                    if not key.startswith(prefix) or rev <= revision:
                        continue
                    new = dict(keys) if new is None else new
                    if event.get("type") == "DELETE":
                        new.pop(key[len(prefix):], None)
                    else:
                        new[key[len(prefix):]] = (unb64(kv.get("value", "")), int(kv.get("lease", 0) or 0))
                    latest = max(latest, rev)
                if new is not None:
                    self._snapshots[prefix] = (read_at, latest, new)

    def watch(self, prefix: str, on_change: Callable[[list[tuple[str, str]]], None]) -> None:
        """Call ``on_change`` with ``[(kind, key), ...]`` (kind ``PUT`` or ``DELETE``; a lease that
        expires deletes its keys) whenever keys under ``prefix`` change, from a thread that streams
        etcd's watch and reconnects on failure. Only a hint to act sooner: everything it speeds up
        also happens by polling."""
        thread = threading.Thread(target=self._watch, args=(prefix, on_change), name="infra-watch", daemon=True)
        thread.start()

    def _watch(self, prefix: str, on_change: Callable[[list[tuple[str, str]]], None]) -> None:
        import json

        url = self.client.get_url("/watch")
        body = {"create_request": {"key": b64(prefix), "range_end": prefix_end(prefix)}}
        while not self._stop.is_set():
            try:
                with self.client.session.post(url, json=body, stream=True, timeout=(2.0, None)) as resp:
                    self._stream = resp
                    pending = b""
                    # chunk_size=None: each chunk as it arrives (iter_lines reads 512 bytes at a time
                    # and would hold the end of a message until more bytes come)
                    for chunk in resp.iter_content(chunk_size=None):
                        if self._stop.is_set():
                            return
                        pending += chunk
                        *lines, pending = pending.split(b"\n")
                        for line in lines:
                            if line.strip():
                                self._deliver(json.loads(line), on_change)
                        if pending.strip().endswith(b"}"):  # a whole message without its newline
                            try:
                                doc = json.loads(pending)
                            except ValueError:
                                continue
                            pending = b""
                            self._deliver(doc, on_change)
            except Exception:
                pass
            self._stop.wait(1.0)

    def _deliver(self, doc: dict[str, Any], on_change: Callable[[list[tuple[str, str]]], None]) -> None:
        """One watch response: its events applied to the snapshots, then handed to ``on_change``."""
        events = doc.get("result", {}).get("events") or []
        if events:
            self._apply(events)
            on_change([(str(e.get("type", "PUT")), unb64(e.get("kv", {}).get("key", ""))) for e in events])

    def note(self, key: str, value: str | None, lease: int, revision: int) -> None:
        """What this process just saw of ``key`` at ``revision`` (from a transaction's answer; None:
        deleted), applied to the cached snapshots at once, so its next decision sees it."""
        kv = {"key": b64(key), "value": b64(value or ""), "lease": lease, "mod_revision": revision}
        self._apply([{"type": "DELETE" if value is None else "PUT", "kv": kv}])
