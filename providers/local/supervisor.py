"""The supervisor of one local instance: ``python -m providers.local.supervisor <instance dir>``.

Started by :meth:`providers.local.LocalProvider.create` in a new session, so it leads its own
process group and outlives the ``infra`` process. It plays LinuxKit's init for the instance:

1. reads the services from ``<dir>/instance.json`` (commands and environment already expanded);
2. starts each in its process group (stdout and stderr to ``logs/<service>.log``, working
   directory ``data/``) and writes ``run/state.json`` with every pid and start time;
3. reaps them. A LinuxKit instance whose service died is broken, so when any service exits
   (or cannot be started) it appends what happened to ``logs/exits.json``, stops the others
   (TERM, KILL after the grace period) and exits 1; the provider then reports the instance
   DEAD, with that exit as the reason, and the planner replaces it;
4. on SIGTERM (delete) it passes TERM on to the services, reaps them and exits 0;
5. when the record names an ``owner`` process (an emulator's machines), it watches it: once that
   process is gone, however it ended (``kill -9`` included), the instance stops as on SIGTERM,
   its services KILLed after the grace period. The emulator's machines die with it.

It imports only the standard library (it starts fast), and never logs the member's
configuration files; of them it reads only a service's secret variables (``secret_env``: name →
file), into that service's environment, never into a record or a log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())


def _log(msg: str) -> None:
    sys.stderr.write(f"{_now()} supervisor[{os.getpid()}]: {msg}\n")
    sys.stderr.flush()


def _write_json(path: Path, doc: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _start_time(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
        data = fh.read()
    return int(data[data.rindex(")") + 2 :].split()[19])


class Supervisor:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        record = json.loads((directory / "instance.json").read_text(encoding="utf-8"))
        self.services: list[dict[str, Any]] = list(record.get("services", []))
        self.grace = float(record.get("grace", 5.0))
        self.children: dict[int, str] = {}  # pid -> service name
        self.procs: list[subprocess.Popen[bytes]] = []  # kept so they are never garbage-collected
        self.stopping = False
        self.exits: list[dict[str, Any]] = []
        owner = record.get("owner") or None
        self.owner: tuple[int, int] | None = (int(owner["pid"]), int(owner["start"])) if owner else None

    # -- the owner -----------------------------------------------------------------------------

    def owner_alive(self) -> bool:
        assert self.owner is not None
        pid, start = self.owner
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
                rest = fh.read().rsplit(")", 1)[1].split()
            return rest[0] not in ("Z", "X") and int(rest[19]) == start  # a zombie has ended too
        except (OSError, ValueError, IndexError):
            return False

    def watch_owner(self) -> None:
        """Thread: when the owner is gone, stop as on SIGTERM; KILL what is left after the grace."""
        while self.owner_alive():
            time.sleep(0.2)
        _log(f"owner process {self.owner[0] if self.owner else '?'} is gone: stopping with it")
        self.on_term(signal.SIGTERM, None)
        deadline = time.monotonic() + self.grace
        while self.children and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # -- signals -----------------------------------------------------------------------------

    def on_term(self, signum: int, _frame: object) -> None:
        if not self.stopping:
            _log(f"signal {signum}: stopping services")
        self.stopping = True
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    # -- exits -------------------------------------------------------------------------------

    def record_exit(self, service: str, *, status: int | None = None, error: str | None = None) -> None:
        entry: dict[str, Any] = {"service": service, "time": time.time()}
        if error is not None:
            entry["error"] = error
        elif status is not None:
            code = os.waitstatus_to_exitcode(status)
            if code < 0:
                entry["signal"] = -code
            else:
                entry["code"] = code
        self.exits.append(entry)
        _write_json(self.dir / "logs" / "exits.json", {"exits": self.exits})
        _log(f"service {service} ended: {entry}")

    def stop_all(self) -> None:
        """TERM every remaining service, KILL after the grace period, reap them all."""
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.grace
        killed = False
        while self.children:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                self.children.pop(pid, None)
                continue
            if not killed and time.monotonic() >= deadline:
                for left in list(self.children):
                    try:
                        os.kill(left, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                killed = True
            time.sleep(0.02)

    # -- main --------------------------------------------------------------------------------

    def start(self) -> bool:
        logs = self.dir / "logs"
        data = self.dir / "data"
        state: dict[str, Any] = {"supervisor": {"pid": os.getpid(), "start": _start_time(os.getpid())}}
        started: dict[str, dict[str, int]] = {}
        for svc in self.services:
            if self.stopping:
                break
            name = str(svc["name"])
            command = [str(a) for a in svc["command"]]
            env = {str(k): str(v) for k, v in svc.get("env", {}).items()}
            try:
                for key, path in (svc.get("secret_env") or {}).items():
                    with open(path, encoding="utf-8") as fh:
                        env[str(key)] = fh.read()
            except OSError as exc:
                self.record_exit(name, error=f"cannot read a secret variable's file: {exc.strerror}")
                return False
            log: BinaryIO = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
            try:
                proc = subprocess.Popen(
                    command,
                    env=env,
                    cwd=data,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    close_fds=True,
                )
            except OSError as exc:
                reason = exc.strerror or str(exc)
                self.record_exit(name, error=f"could not start {command[0]!r}: {reason}")
                return False
            finally:
                log.close()
            self.procs.append(proc)
            self.children[proc.pid] = name
            started[name] = {"pid": proc.pid, "start": _start_time(proc.pid)}
            _log(f"started service {name} as pid {proc.pid}")
        state["services"] = started
        (self.dir / "run").mkdir(exist_ok=True)
        _write_json(self.dir / "run" / "state.json", state)
        return True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGINT, self.on_term)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if self.owner is not None:
            threading.Thread(target=self.watch_owner, name="owner", daemon=True).start()
        if not self.start():
            self.stop_all()
            return 1
        if self.stopping:  # TERM arrived while services were starting
            self.on_term(signal.SIGTERM, None)
        if not self.services:
            # A member without services is an idle machine: up until it is deleted.
            while not self.stopping:
                time.sleep(0.2)
            return 0
        while self.children:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            name = self.children.pop(pid, None)
            if name is None:
                continue
            if self.stopping:
                continue
            self.record_exit(name, status=status)
            self.stopping = True
            self.stop_all()
            return 1
        _log("all services stopped")
        return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m providers.local.supervisor <instance dir>\n")
        return 2
    return Supervisor(Path(argv[0])).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
