"""How N daemons share M stacks: each leads about M/N, chosen by rendezvous hashing.

Used by :mod:`reconciler.daemon.worker` when the daemons coordinate through an etcd (``--lock
etcd://``); with the file lock a daemon leads every stack it is given. Built once per daemon by
:class:`reconciler.daemon.process.Daemon`.

* **Who is alive.** Each daemon registers ``/infra/daemons/<id>`` in the coordinating etcd, bound
  to its session lease (:mod:`reconciler.daemon.session`), the one its leader keys hang on too; a
  daemon that dies disappears from the list, and its leader keys with it, within ``ttl``.
* **Who should lead a stack.** Rendezvous hashing with bounded loads (:func:`assign`): stacks are
  taken in the order of their own hash, and each goes to the live daemon whose hash of ``(stack,
  daemon)`` is the highest among those still under their share (``floor(M/N)``, or one more for the
  first ``M mod N`` to reach it). Every daemon computes the same answer from the same list
  (daemons given the same stack files); each leads ``ceil(M/N)`` or ``floor(M/N)``; when a daemon
  joins or leaves, mostly the stacks it wins or held move.
* **Without thrash.** Leadership is sticky: a leader keeps a stack while it leads no more than
  its fair share (``ceil(M/N)``, N counting the daemons alive for at least ``ttl``, so a daemon
  that flaps moves nothing); over it, it hands over (between passes) the stacks chosen for
  others; over ``floor(M/N)``, it hands over a stack chosen for a daemon that has room (the
  counts come from the leader keys). A stack is only handed to its chosen daemon, which never
  gives it away, so hand-overs cannot cycle. A standby
  under its share takes the stacks chosen for it, and a free stack whose choice already leads its
  share or has left it free for longer than ``ttl`` + a grace (nothing is left unled); takes are
  decided one at a time per daemon, so none overshoots its share. When the etcd cannot be asked,
  the last list stands (the lease rules of :mod:`reconciler.daemon.leader` decide who may write).

A dead daemon's stacks are led again within its lease's ``ttl`` (its leader keys expire and its
registration too, in one revision) plus one scheduler turn: the survivors' watch of ``/infra/``
wakes their standby stacks at the deletion. A new daemon takes its share after ``ttl``, as each
leader hands over between passes.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time

from reconciler.daemon.leader import KEY_PREFIX
from reconciler.daemon.session import Session, errors

#: Where the daemons register in the coordinating etcd.
PREFIX = "/infra/daemons/"


def rank(stack: str, daemon: str) -> bytes:
    """The rendezvous weight of ``daemon`` for ``stack`` (highest leads)."""
    return hashlib.sha256(f"{stack}\0{daemon}".encode()).digest()


def assign(stacks: list[str], daemons: list[str]) -> dict[str, str]:
    """Stack → the daemon that should lead it (see the module docstring); empty without daemons.

    Bounded loads, exactly: each daemon gets ``floor(M/N)`` stacks, and the first ``M mod N``
    daemons to reach it may take one more, so the shares differ by one at most."""
    if not daemons:
        return {}
    unique = sorted(set(stacks), key=lambda s: (hashlib.sha256(s.encode()).digest(), s))
    floor, extra = divmod(len(unique), len(daemons))
    load = dict.fromkeys(daemons, 0)
    out: dict[str, str] = {}
    for stack in unique:
        for daemon in sorted(daemons, key=lambda d: rank(stack, d), reverse=True):
            if load[daemon] < floor or (load[daemon] == floor and extra > 0):
                if load[daemon] == floor:
                    extra -= 1
                out[stack] = daemon
                load[daemon] += 1
                break
    return out


def gives(*, me: str, choice: str, led: int, cap: int, floor: int, choice_load: int) -> bool:
    """Whether the leader ``me`` of ``led`` stacks hands over a stack chosen for ``choice`` (which
    leads ``choice_load``): over the ceiling ``cap``, always; over the ``floor``, when the chosen
    daemon has room (under ``cap``). A stack is only handed to the daemon chosen for it, and the
    chosen daemon never gives it away: no cycle. The rule :meth:`Spread.hand_over` applies; pure,
    for the property test (which also bounds the hand-overs from any start)."""
    if choice == me:
        return False
    return led > cap or (led > floor and choice_load < cap)


def takes(*, me: str, choice: str, led: int, cap: int, free: bool, choice_load: int, long_free: bool) -> bool:
    """Whether the standby ``me`` of ``led`` stacks tries a stack chosen for ``choice``: under its
    ``cap``, a stack chosen for it, or a ``free`` one whose choice is at its cap or has left it free
    too long. The rule :meth:`Spread.may_lead` applies; pure, for the property test."""
    if led >= cap:
        return False
    if choice == me:
        return True
    return free and (long_free or choice_load >= cap)


class Spread:
    """This daemon's registration and its view of the live daemons. Thread-safe."""

    def __init__(self, session: Session, *, stacks: list[str], grace: float = 2.0) -> None:
        self.session = session
        self.id = session.id
        self.ttl = session.ttl
        self.grace = grace
        self._mutex = threading.Lock()
        self._live: list[str] = [self.id]
        self._first_seen: dict[str, float] = {self.id: time.monotonic()}
        self._known = False  # the list was read at least once
        self.stacks = sorted(stacks)
        #: held by a stack loop while it decides to hand its stack over (one decision at a time)
        self.turn = threading.Lock()
        self._assignment: tuple[tuple[str, ...], dict[str, str]] = ((), {})
        #: the leader keys and registrations the counts were made from, and the counts
        self._loads: tuple[object, object, dict[str, int]] = (None, None, {})

    # -- registration ------------------------------------------------------------------------------

    def start(self) -> Spread:
        """Register under the session's lease (put again whenever the session needs a new lease)."""
        value = json.dumps({"id": self.id, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})
        self.session.start()
        try:
            self.session.bind(PREFIX + self.id, value)
            self.session.lease()
        except errors():
            pass  # the session's thread registers as soon as the etcd answers
        return self

    # -- the live daemons --------------------------------------------------------------------------

    def live(self) -> list[str]:
        """The live daemons' ids (read at most every half second; the last list when etcd cannot be asked)."""
        now = time.monotonic()
        try:
            ids = sorted(self.session.snapshot(PREFIX, max_age=0.5))
        except errors():
            with self._mutex:
                return list(self._live)
        with self._mutex:
            if self.id not in ids:
                ids = sorted([*ids, self.id])  # not registered yet (or just expired): still alive here
            for d in ids:
                self._first_seen.setdefault(d, now)
            for gone in set(self._first_seen) - set(ids):
                del self._first_seen[gone]
            self._live, self._known = ids, True
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
        """Whether this daemon, leading ``led`` stacks, should try to lead ``stack`` now: it is under
        its share, and the stack is chosen for it, or the stack is free and its choice cannot take
        it (already at its share, or has not for ``ttl`` + a grace)."""
        cap = self._cap(len(self.live()))
        choice = self.choice(stack)
        free = free_since is not None
        return takes(me=self.id, choice=choice, led=led, cap=cap, free=free,
                     choice_load=self.loads().get(choice, 0) if free and choice != self.id else 0,
                     long_free=free and time.monotonic() - (free_since or 0.0) > self.ttl + self.grace)

    def loads(self) -> dict[str, int]:
        """How many stacks each daemon leads: the leader keys counted by lease, each daemon's lease
        known from its registration (one shared read of each; {} when unknown)."""
        try:
            keys = self.session.snapshot(KEY_PREFIX, max_age=0.5)
            daemons = self.session.snapshot(PREFIX, max_age=0.5)
        except errors():
            return {}
        with self._mutex:
            if self._loads[0] is keys and self._loads[1] is daemons:
                return self._loads[2]
        owner = {lease: daemon for daemon, (_value, lease) in daemons.items()}
        counts: dict[str, int] = {}
        for _value, lease in keys.values():
            daemon = owner.get(lease)
            if daemon is not None:
                counts[daemon] = counts.get(daemon, 0) + 1
        with self._mutex:
            self._loads = (keys, daemons, counts)
        return counts

    def hand_over(self, stack: str, *, led: int) -> str | None:
        """The daemon this leader of ``led`` stacks should hand ``stack`` to now, or None (keep it).

        Over the share's ceiling: to the daemon chosen for the stack. Over its floor: to a chosen
        daemon with room (so 334/334/332 of 1000 still settles, and 8/9/9/7 of 33)."""
        live = self.live()
        if not self._known:
            return None
        now = time.monotonic()
        with self._mutex:
            stable = [d for d in live if d == self.id or now - self._first_seen.get(d, now) >= self.ttl]
        choice = self.choice(stack)
        if choice == self.id:
            return None
        cap, floor = self._cap(len(stable)), len(self.stacks) // max(1, len(stable))
        # A daemon that is not yet stable counts as full: nothing moves to it before it is.
        load = self.loads().get(choice, 0) if choice in stable else cap
        return choice if gives(me=self.id, choice=choice, led=led, cap=cap, floor=floor, choice_load=load) else None
