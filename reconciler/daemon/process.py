"""The ``infra daemon`` process: its stacks, one scheduler, a few pass threads, signals and HTTP.

Built by :mod:`reconciler.daemon.command`. :meth:`Daemon.run` loads every stack (a bad one
fails the start, exit 1, before anything runs), serves ``/metrics`` and ``/healthz``
(:mod:`reconciler.daemon.metrics`; loopback by default) and the live page at ``/``
(:mod:`reconciler.daemon.page`), and schedules the stacks' turns
(:class:`~reconciler.daemon.worker.StackLoop`): the scheduler wakes every ``WATCH_POLL``
seconds, looks at each stack file and hands each stack whose pass is due to a pool of at most
``PASS_THREADS`` threads, one turn per stack at a time. An idle daemon therefore costs one
``stat`` per stack per half second and no thread per stack, whatever their number.

SIGTERM or SIGINT sets every pass's stop event — changes in flight finish, none starts — then
each stack releases its lock and the process exits 0. If changes are still in flight after
``--grace`` seconds it exits 1 (a second signal exits 1 at once).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.daemon.log import Log
from reconciler.daemon.worker import Settings, StackLoop, open_engine

if TYPE_CHECKING:
    from reconciler.daemon.leader import EtcdTarget, Leader
    from reconciler.daemon.metrics import HealthReport, MetricsServer
    from reconciler.daemon.session import Session
    from reconciler.daemon.spread import Spread
    from reconciler.engine.engine import Engine

#: How often the scheduler looks at the stack files and the clock.
WATCH_POLL = 0.5
#: Passes that run at once, whatever the number of stacks.
PASS_THREADS = 4
#: The scheduler has not turned for this long: it is stuck (it wakes every WATCH_POLL).
IDLE_STUCK = 30.0


def parse_addr(value: str) -> tuple[str, int] | None:
    """``HOST:PORT`` of ``--metrics-addr`` (``none``: no server). ConfigError when malformed."""
    from reconciler.core.errors import ConfigError

    if value.lower() in ("none", "off", ""):
        return None
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--metrics-addr {value!r}: expected HOST:PORT (e.g. 127.0.0.1:9464) or 'none'")
    return host, int(port)


def read_token(path: str | None, addr: tuple[str, int] | None) -> str | None:
    """The bearer token in ``path`` (its first line), or None. ConfigError when the file cannot be
    read or is empty, or when ``addr`` is beyond loopback and no token is given: a page and metrics
    about the stacks are not served to the network for anyone who asks."""
    from reconciler.core.errors import ConfigError

    if path is None:
        if addr is not None and not _is_loopback(addr[0]):
            raise ConfigError(f"--metrics-addr {addr[0]}:{addr[1]}: serving beyond loopback needs a bearer token",
                              hint="put a long random token in a file only you can read and pass "
                                   "--http-token-file FILE; clients send 'Authorization: Bearer <token>'")
        return None
    try:
        token = Path(path).read_text(encoding="utf-8").strip().splitlines()
    except OSError as exc:
        raise ConfigError(f"--http-token-file {path}: cannot read it: {exc.strerror or exc}") from None
    if not token or len(token[0]) < 16:
        raise ConfigError(f"--http-token-file {path}: the token must be one line of at least 16 characters")
    return token[0]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Daemon:
    """Everything one ``infra daemon`` process runs. ``run()`` returns the exit code."""

    def __init__(self, paths: Sequence[str], *, settings: Settings, log: Log, lock: str,
                 lock_ttl: int, etcd: EtcdTarget | None, metrics_addr: tuple[str, int] | None,
                 http_token: str | None = None,
                 grace: float) -> None:
        from reconciler.daemon.metrics import DaemonMetrics

        self.paths = list(paths)
        self.settings = settings
        self.log = log
        self.lock = lock
        self.lock_ttl = lock_ttl
        self.etcd = etcd
        self.metrics_addr = metrics_addr
        self.http_token = http_token
        self.grace = grace
        self.metrics = DaemonMetrics()
        self.shutdown = threading.Event()
        self._leading: set[str] = set()
        self._count_mutex = threading.Lock()
        #: set to make the scheduler look at once (a signal, a leader key freed in the etcd)
        self.wake = threading.Event()
        self.stacks: list[StackLoop] = []
        self._signalled_at: float | None = None
        self.started = time.monotonic()
        self.beat = self.started
        self._running: dict[str, Future[None]] = {}
        #: with --lock etcd://: this process's one lease, which its registration and leader keys hang on
        self.session: Session | None = None
        #: with --lock etcd://: this daemon's registration, and how the live daemons share the stacks
        self.spread: Spread | None = None

    def _leader(self, engine: Engine) -> Leader:
        from reconciler.daemon.leader import EtcdLeader, FileLeader

        local = FileLeader(engine.state, engine.stack.name)
        if self.etcd is None:
            return local
        if self.session is None:
            from reconciler.daemon.session import Session

            self.session = Session(self.etcd, ttl=self.lock_ttl, log=lambda level, msg: self.log(level, "lock", msg))
        return EtcdLeader(self.session, engine.stack.name, local=local,
                          log=lambda level, msg: self.log(level, "lock", msg, stack=engine.stack.name))

    def build(self) -> None:
        """Load every stack and wire its engine; ConfigError (exit 1) before anything runs."""
        from reconciler.core.errors import ConfigError
        from reconciler.engine.loader import load_stack

        seen: dict[str, str] = {}
        for path in self.paths:
            stack = load_stack(path)
            if stack.name in seen:
                raise ConfigError(f"{path}: stack {stack.name!r} is already managed from {seen[stack.name]}")
            seen[stack.name] = path
            engine = open_engine(stack, path, log=self.log, concurrency=self.settings.concurrency,
                                 timeout=self.settings.timeout, secrets=self.settings.secrets,
                                 coordination=self.settings.coordination)
            self.metrics.init_stack(stack.name, [g.name for g in stack.groups])
            self.stacks.append(StackLoop(path, stack, engine, self._leader(engine), settings=self.settings,
                                         log=self.log, metrics=self.metrics, shutdown=self.shutdown))
        if self.session is not None and self.spread is None:
            from reconciler.daemon.spread import Spread

            self.spread = Spread(self.session, stacks=[s.stack_name for s in self.stacks]).start()
            self.session.watch("/infra/", self._changed)
            self.metrics.daemon_id.labels(self.spread.id).set(1)
            for loop in self.stacks:
                loop.spread = self.spread
                loop.led = self._led
                loop.on_leading = self._leading_changed

    def _changed(self, events: list[tuple[str, str]]) -> None:
        """Keys changed in the coordinating etcd. A leader key freed or a daemon gone: every standby
        stack looks again now. A stack just taken: the standby stacks waiting on a free key look
        again (their choice may now be full, and they may take it)."""
        freed = sum(1 for kind, _key in events if kind == "DELETE")
        woken = 0
        for loop in self.stacks:
            if not loop.leader.leading() and (freed or loop.waiting_on_free_key()):
                loop.next_due = 0.0
                woken += 1
        if freed:
            self.log("debug", "watch", f"{freed} key(s) freed in the coordinating etcd; {woken} standby stack(s) "
                     "look now", freed=freed, woken=woken)
        self.wake.set()

    def _leading_changed(self, stack: str, leading: bool) -> None:
        with self._count_mutex:
            if leading:
                self._leading.add(stack)
            else:
                self._leading.discard(stack)

    def _led(self) -> int:
        """How many stacks this daemon leads now, as its stack loops last said (kept as they go,
        not counted over every stack at each look: a daemon of 1000 stacks looks hundreds of
        times a second)."""
        with self._count_mutex:
            return len(self._leading)

    def health(self) -> HealthReport:
        from reconciler.daemon.metrics import HealthReport

        now = time.monotonic()
        stacks: dict[str, Any] = {}
        ok = True
        idle = now - self.beat
        for s in self.stacks:
            healthy, info = s.health(now)
            if healthy and s.busy_since is None and idle > IDLE_STUCK:
                healthy, info["problem"] = False, f"the loop has not turned for {idle:.0f}s"
            ok = ok and healthy
            stacks[s.stack_name] = info
        if self.shutdown.is_set():
            return HealthReport(False, {"stopping": True, "stacks": stacks})
        return HealthReport(ok, {"uptime": round(now - self.started, 1), "stacks": stacks})

    def page(self) -> str:
        """The live page (``/``): every stack's latest view (reconciler.daemon.page)."""
        from reconciler.daemon import page

        return page.render([s.page() for s in self.stacks])

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self._signalled_at is not None:
            self.log("error", "stop", f"second {name}: exiting now, changes in flight may be cut short",
                     signal=name)
            os._exit(1)
        self._signalled_at = time.monotonic()
        self.log("info", "stop", f"{name}: finishing changes in flight (grace {self.grace:g}s), then exiting",
                 signal=name, grace=self.grace)
        self.shutdown.set()
        self.wake.set()
        for s in self.stacks:
            s.stop_writes()

    def _schedule(self, pool: ThreadPoolExecutor) -> None:
        """One look at every stack: reload changed files, start the passes that are due."""
        self.beat = now = time.monotonic()
        for s in self.stacks:
            if s.stack_name in self._running:
                continue
            s.watch()
            if s.due(now) and not self.shutdown.is_set():
                self._running[s.stack_name] = future = pool.submit(s.turn)
                future.add_done_callback(self._done(s.stack_name))

    def _done(self, name: str) -> Callable[[Future[None]], None]:
        def forget(future: Future[None]) -> None:
            self._running.pop(name, None)
        return forget

    def run(self) -> int:
        from reconciler.core.errors import ConfigError
        from reconciler.daemon.metrics import MetricsServer

        self.build()
        server: MetricsServer | None = None
        if self.metrics_addr is not None:
            host, port = self.metrics_addr
            try:
                server = MetricsServer(host, port, self.metrics, self.health, page=self.page, token=self.http_token)
            except OSError as exc:
                raise ConfigError(f"--metrics-addr {host}:{port}: cannot listen: {exc.strerror or exc}") from None
            if not _is_loopback(host):
                self.log("warning", "metrics", f"metrics, /healthz and the page are served beyond loopback on "
                         f"{host}:{port}, to bearers of the token only")
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        if server is not None:
            for s in self.stacks:
                s.views = True  # the live page is served: passes publish what they saw
            server.start()
        self.log("info", "start", f"infra daemon started: {len(self.stacks)} stack(s), every "
                 f"{self.settings.interval:g}s, {self.lock} lock"
                 + (f", metrics on http://{server.address}/metrics" if server else ""),
                 pid=os.getpid(), stacks=[s.stack_name for s in self.stacks], interval=self.settings.interval,
                 lock=self.lock, metrics=server.address if server else None)
        pool = ThreadPoolExecutor(max_workers=min(PASS_THREADS, max(1, len(self.stacks))),
                                  thread_name_prefix="infra-pass")
        try:
            while not self.shutdown.is_set():
                self._schedule(pool)
                if all(s.crashed for s in self.stacks):
                    self.log("error", "stop", "every stack loop has stopped; exiting")
                    return 1
                self.wake.wait(WATCH_POLL)
                self.wake.clear()
            return self._stop(pool)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            if server is not None:
                server.stop()
            if self.session is not None:
                self.session.close()  # every key of this daemon goes at once

    def _stop(self, pool: ThreadPoolExecutor) -> int:
        """After a signal: let passes in flight finish within the grace time, release every lock."""
        deadline = (self._signalled_at or time.monotonic()) + self.grace
        for future in list(self._running.values()):
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:
                pass  # a crashed turn is reported by its stack
        late = [name for name, f in self._running.items() if not f.done()]
        if late:
            self.log("error", "stop", f"grace time of {self.grace:g}s is over with changes still in flight "
                     f"for {', '.join(late)}; exiting anyway", stacks=late)
            if self.session is not None:
                self.session.close()  # every leader key at once; the local locks go with the process
            else:
                for s in self.stacks:
                    try:
                        s.leader.release()
                    except Exception:
                        pass
            sys.stderr.flush()
            os._exit(1)
        if self.session is not None:
            self.session.closing = True  # the lease is revoked as a whole below, not key by key
        for s in self.stacks:
            s.finish()
        crashed = [s.stack_name for s in self.stacks if s.crashed]
        self.log("info", "stop", "infra daemon stopped cleanly", seconds=round(
            time.monotonic() - (self._signalled_at or time.monotonic()), 3))
        return 1 if crashed else 0
