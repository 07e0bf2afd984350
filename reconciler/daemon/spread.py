"""How N daemons share M stacks: each leads about M/N, chosen by rendezvous hashing.

Used by :mod:`reconciler.daemon.worker` when the daemons coordinate through an etcd (``--lock
etcd://``); with the file lock a daemon leads every stack it is given. Built once per daemon by
:class:`reconciler.daemon.process.Daemon`.

* **Who is alive.** Each daemon registers ``/infra/daemons/<id>`` in the coordinating etcd, bound
  to a lease of ``ttl`` seconds that a keepalive thread refreshes; a daemon that dies disappears
  from the list within ``ttl``.
* **Who should lead a stack.** Rendezvous hashing with bounded loads (:func:`assign`): stacks are
  taken in the order of their own hash, and each goes to the live daemon whose hash of ``(stack,
  daemon)`` is the highest among those still under ``ceil(M/N)`` stacks. Every daemon computes the
  same answer from the same list (daemons given the same stack files); each leads ``ceil(M/N)``
  or ``floor(M/N)``; when a daemon joins or leaves, mostly the stacks it wins or held move.
* **Without thrash.** Leadership is sticky: a leader keeps a stack while it leads no more than
  its fair share (``ceil(M/N)``, N counting the daemons alive for at least ``ttl``, so a daemon
  that flaps moves nothing); over it, it hands over (between passes) the stacks chosen for
  others. A standby under its share tries to lead the stacks chosen for it, and any stack whose
  leader key has been free for longer than ``ttl`` + a grace (its choice is full: nothing is left
  unled). When the etcd cannot be asked, the last list stands (the lease rules of
  :mod:`reconciler.daemon.leader` decide who may write).

A dead daemon's stacks are led again within its lease's ``ttl`` (its leader keys expire and its
registration too) plus one standby retry; a new daemon takes its share after ``ttl``, as each
leader hands over between passes.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from reconciler.kit.coordination import EtcdTarget, etcd_client

#: Where the daemons register in the coordinating etcd.
PREFIX = "/infra/daemons/"


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def _prefix_end(prefix: str) -> str:
    raw = prefix.encode()
    return _b64((raw[:-1] + bytes([raw[-1] + 1])).decode())


def rank(stack: str, daemon: str) -> bytes:
    """The rendezvous weight of ``daemon`` for ``stack`` (highest leads)."""
    return hashlib.sha256(f"{stack}\0{daemon}".encode()).digest()


def assign(stacks: list[str], daemons: list[str]) -> dict[str, str]:
    """Stack → the daemon that should lead it (see the module docstring); empty without daemons."""
    if not daemons:
        return {}
    cap = -(-len(stacks) // len(daemons))
    load = dict.fromkeys(daemons, 0)
    out: dict[str, str] = {}
    for stack in sorted(set(stacks), key=lambda s: (hashlib.sha256(s.encode()).digest(), s)):
        for daemon in sorted(daemons, key=lambda d: rank(stack, d), reverse=True):
            if load[daemon] < cap:
                out[stack] = daemon
                load[daemon] += 1
                break
    return out


class Spread:
    """This daemon's registration and its view of the live daemons. Thread-safe."""

    def __init__(self, target: EtcdTarget, *, ttl: int, stacks: list[str],
                 log: Callable[[str, str], None] = lambda lv, m: None, grace: float = 2.0) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.ttl = max(2, int(ttl))
        self.grace = grace
        self.log = log
        self.target = target
        self._client = etcd_client(target, timeout=max(0.5, min(2.0, self.ttl / 3)))
        self._mutex = threading.Lock()
        self._live: list[str] = [self.id]
        self._read_at = 0.0
        self._first_seen: dict[str, float] = {self.id: time.monotonic()}
        self._lease: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._known = False  # the list was read at least once
        self.stacks = sorted(stacks)
        #: held by a stack loop while it decides to hand its stack over (one decision at a time)
        self.turn = threading.Lock()
        self._assignment: tuple[tuple[str, ...], dict[str, str]] = ((), {})

    # -- registration ------------------------------------------------------------------------------

    def start(self) -> Spread:
        self._thread = threading.Thread(target=self._keep, name="infra-spread", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        lease, self._lease = self._lease, None
        if lease is not None:
            try:
                self._client.post(self._client.get_url("/lease/revoke"), json={"ID": lease})
            except Exception:  # it expires by itself
                pass

    def _register(self) -> None:
        result = self._client.post(self._client.get_url("/lease/grant"), json={"TTL": self.ttl, "ID": 0})
        lease = int(result["ID"])
        value = json.dumps({"id": self.id, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})
        self._client.post(self._client.get_url("/kv/put"),
                          json={"key": _b64(PREFIX + self.id), "value": _b64(value), "lease": lease})
        self._lease = lease

    def _keep(self) -> None:
        every = max(0.3, self.ttl / 3)
        while not self._stop.is_set():
            try:
                if self._lease is None:
                    self._register()
                else:
                    result = self._client.post(self._client.get_url("/lease/keepalive"), json={"ID": self._lease})
                    if int(result.get("result", {}).get("TTL", -1)) <= 0:
                        self._lease = None  # expired meanwhile: register again
                        continue
            except Exception as exc:  # the etcd is away: try again; the leases decide meanwhile
                self.log("warning", f"daemon registration in {self.target} failed: {type(exc).__name__}")
                self._lease = None
            self._stop.wait(every)

    # -- the live daemons --------------------------------------------------------------------------

    def live(self) -> list[str]:
        """The live daemons' ids (read at most once a second; the last list when etcd cannot be asked)."""
        now = time.monotonic()
        with self._mutex:
            if now - self._read_at < 1.0:
                return list(self._live)
        try:
            result: dict[str, Any] = dict(self._client.post(self._client.get_url("/kv/range"), json={
                "key": _b64(PREFIX), "range_end": _prefix_end(PREFIX), "keys_only": True}))
            import base64

            ids = sorted(base64.b64decode(kv["key"]).decode()[len(PREFIX):] for kv in result.get("kvs", []))
        except Exception:
            with self._mutex:
                return list(self._live)
        with self._mutex:
            if self.id not in ids:
                ids = sorted([*ids, self.id])  # not registered yet (or just expired): still alive here
            for d in ids:
                self._first_seen.setdefault(d, now)
            for gone in set(self._first_seen) - set(ids):
                del self._first_seen[gone]
            self._live, self._read_at, self._known = ids, now, True
            return list(ids)

    def choice(self, stack: str) -> str:
        """The daemon that should lead ``stack`` now."""
        live = tuple(self.live())
        with self._mutex:
            if self._assignment[0] != live:
                self._assignment = (live, assign(self.stacks, list(live)))
            return self._assignment[1].get(stack, self.id)

    def _cap(self, daemons: int) -> int:
        return -(-len(self.stacks) // max(1, daemons))

    def may_lead(self, stack: str, *, led: int, free_since: float | None) -> bool:
        """Whether this daemon, leading ``led`` stacks, should try to lead ``stack`` now."""
        if led >= self._cap(len(self.live())):
            return False
        if self.choice(stack) == self.id:
            return True
        return free_since is not None and time.monotonic() - free_since > self.ttl + self.grace

    def hand_over(self, stack: str, *, led: int) -> str | None:
        """The daemon this leader of ``led`` stacks should hand ``stack`` to now, or None (keep it)."""
        live = self.live()
        if not self._known:
            return None
        now = time.monotonic()
        with self._mutex:
            stable = [d for d in live if d == self.id or now - self._first_seen.get(d, now) >= self.ttl]
        if led <= self._cap(len(stable)):
            return None
        choice = self.choice(stack)
        return None if choice == self.id else choice
