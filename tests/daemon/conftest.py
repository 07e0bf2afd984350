"""Fixtures for the daemon's tests: ``infra daemon`` as a real subprocess, a coordinating etcd.

Every process a test starts is cleaned up by a finalizer, whatever the test did: daemons get
SIGTERM then SIGKILL; every stack file a test wrote is destroyed with ``infra destroy``; then a
sweep kills any process still mentioning the test's state directory (local instances'
supervisors and services) and the test fails if the sweep had anything to do.
Figures (heal and hand-over times) are printed in the terminal summary.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest

INFRA = Path(sys.executable).parent / "infra"

#: Figures measured by the tests, printed at the end of the run.
FIGURES: list[str] = []

Event = dict[str, Any]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("daemon figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


def report(figure: str) -> None:
    FIGURES.append(figure)
    print(figure)


def hello_stack(path: Path, *, name: str = "hello", size: int = 2, provider: str = "local",
                provider_config: dict[str, Any] | None = None, slow_start: float = 0.0,
                port: int = 8080) -> Path:
    """Write a stack file like stacks/hello-local.py: ``size`` tiny web servers (command role)."""
    serve = [sys.executable, "-m", "http.server", str(port), "--bind", "{address}", "--directory", "{config}/web"]
    wrapped = ["/bin/sh", "-c", f"sleep {slow_start}; exec \"$@\"", "sh", *serve]
    command = wrapped if slow_start else serve
    config = {
        "command": command, "port": port, "health": "http", "ready_timeout": 30,
        "files": {"index.html": "<h1>hello from infra</h1>\n"},
    }
    if provider == "memory":
        config = {"command": ["true"]}
    text = f'''"""A test stack written by tests/daemon."""
from reconciler import Group, Stack

stack = Stack(
    name={name!r},
    provider={provider!r},
    provider_config={provider_config or {}!r},
    groups=[Group(name="web", size={size}, role="command", config={config!r})],
)
'''
    path.write_text(text)
    return path


def replace_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` in one step (a rename), as an editor saving the file does.

    A plain ``write_text`` truncates first: the daemon's watcher may read the empty or half-written
    file and count a reload that no user edit made.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def set_size(path: Path, size: int) -> None:
    text = path.read_text()
    import re

    new = re.sub(r"size=\d+", f"size={size}", text, count=1)
    assert new != text
    replace_text(path, new)


@dataclass
class DaemonProc:
    """One ``infra daemon`` subprocess logging JSON lines to a file."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    args: list[str]
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self) -> list[Event]:
        out = []
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        for line in text.splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                out.append(doc)
        return out

    def wait_for(self, pred: Callable[[Event], bool], *, timeout: float = 30.0, after: int = 0,
                 what: str = "an event") -> tuple[int, Event]:
        """The first event at index ≥ ``after`` matching ``pred``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            for i in range(after, len(events)):
                if pred(events[i]):
                    return i, events[i]
            if self.proc.poll() is not None:
                pytest.fail(f"the daemon exited ({self.proc.returncode}) before {what}:\n{self.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {timeout:.0f}s:\n{self.tail()}")
            time.sleep(0.05)

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"

    @property
    def metrics_url(self) -> str:
        _, start = self.wait_for(lambda e: e.get("event") == "start", what="the start event")
        return f"http://{start['metrics']}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.metrics_url + path, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The value of one series on /metrics (0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        _, text = self.get("/metrics")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)


@dataclass
class Harness:
    """A test's state directory, environment, daemons and stack files."""

    root: Path
    state: Path
    env: dict[str, str]
    daemons: list[DaemonProc] = field(default_factory=list)
    stacks: list[Path] = field(default_factory=list)

    def stack_file(self, name: str = "hello", **kw: Any) -> Path:
        path = hello_stack(self.root / f"{name}-{len(self.stacks)}.py", name=name, **kw)
        self.stacks.append(path)
        return path

    def track(self, path: Path) -> Path:
        self.stacks.append(path)
        return path

    def daemon(self, *stack_files: Path, interval: float = 1.0, extra: tuple[str, ...] = (),
               env: dict[str, str] | None = None, host: str | None = None) -> DaemonProc:
        """A daemon of ``stack_files``; ``env`` laid over the harness's (another machine's state dir);
        ``host``: the daemon runs in a UTS namespace of its own with that host name (``unshare -u``,
        then ``exec``: the pid is the daemon's)."""
        log = self.root / f"daemon-{len(self.daemons)}.log"
        prefix = ["unshare", "--uts", "/bin/sh", "-c", 'hostname "$0" && exec "$@"', host] if host else []
        args = [*prefix, str(INFRA), "daemon", *map(str, stack_files), "--interval", str(interval),
                "--log-format", "json", "--metrics-addr", "127.0.0.1:0", "--grace", "30", *extra]
        with open(log, "wb") as fh:
            proc = subprocess.Popen(args, env={**self.env, **(env or {})}, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=self.root)
        d = DaemonProc(proc, log, args)
        self.daemons.append(d)
        return d

    def infra(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(INFRA), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def status(self, stack_file: Path) -> dict[str, Any]:
        out = self.infra("status", str(stack_file), "--json")
        assert out.returncode == 0, out.stderr
        doc: dict[str, Any] = json.loads(out.stdout)
        return doc

    def instance(self, name: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.state / "local" / "instances" / name / "instance.json").read_text())
        return doc

    def service_pid(self, instance: str, service: str) -> int:
        return int(self.instance(instance)["processes"]["services"][service]["pid"])


def _sweep(marker: str) -> list[str]:
    """Kill every process whose command line mentions ``marker``; say what was killed."""
    killed = []
    me = os.getpid()
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except (psutil.Error, TypeError):
            continue
        if marker in cmd and p.pid != me:
            try:
                p.kill()
                killed.append(f"{p.pid}: {cmd[:160]}")
            except psutil.Error:
                pass
    return killed


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    state = tmp_path / "state"
    key = tmp_path / "secrets.key"  # daemons leading through an etcd share the stacks' secrets there
    key.write_text(base64.b64encode(os.urandom(32)).decode())
    key.chmod(0o600)
    env = {**os.environ, "INFRA_STATE_DIR": str(state), "INFRA_NETWORK_ALLOW": "127.0.0.0/8,::1/128",
           "INFRA_SECRETS_KEY": str(key)}
    env.pop("INFRA_DEBUG", None)
    h = Harness(tmp_path, state, env)
    yield h
    for d in h.daemons:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(timeout=10)
    problems = []
    for stack_file in h.stacks:
        out = h.infra("destroy", str(stack_file), "--yes", timeout=120)
        if out.returncode != 0:
            problems.append(f"destroy {stack_file.name}: {out.stderr.strip()[:300]}")
    leaked = _sweep(str(state))
    if leaked:
        time.sleep(0.2)
        problems.append("processes left behind after destroy: " + "; ".join(leaked))
    if problems:
        pytest.fail("cleanup: " + " | ".join(problems))


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class CoordEtcd:
    """A plain single-member etcd used only to coordinate daemons (never a managed cluster)."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    data: Path
    tls: dict[str, str] = field(default_factory=dict)  # cacert, cert, key of a client (TLS only)

    @property
    def url(self) -> str:
        return f"etcd://{self.host}:{self.port}"

    def _open(self, path: str, body: bytes | None = None) -> Any:
        scheme = "https" if self.tls else "http"
        req = urllib.request.Request(f"{scheme}://{self.host}:{self.port}{path}", data=body,
                                     method="POST" if body is not None else "GET")
        context = None
        if self.tls:
            import ssl

            context = ssl.create_default_context(cafile=self.tls["cacert"])
            context.load_cert_chain(self.tls["cert"], self.tls["key"])
        return urllib.request.urlopen(req, timeout=5, context=context)

    def healthy(self) -> bool:
        try:
            with self._open("/health") as resp:
                return bool(json.loads(resp.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def get(self, key: str) -> str | None:
        import base64

        body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
        with self._open("/v3/kv/range", body) as resp:
            doc = json.loads(resp.read())
        kvs = doc.get("kvs") or []
        return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def start_coord_etcd(tmp_path: Path, *, tls: bool = False) -> CoordEtcd:
    etcd = shutil.which("etcd")
    assert etcd, "etcd is not installed (the daemon's etcd-lock tests need /usr/bin/etcd)"
    host = f"127.0.0.{random.randint(2, 250)}"
    client, peer = _free_port(host), _free_port(host)
    data = tmp_path / "coord-etcd"
    scheme = "https" if tls else "http"
    args = [etcd, "--name", "coord", "--data-dir", str(data),
            "--listen-client-urls", f"{scheme}://{host}:{client}",
            "--advertise-client-urls", f"{scheme}://{host}:{client}",
            "--listen-peer-urls", f"http://{host}:{peer}", "--initial-advertise-peer-urls", f"http://{host}:{peer}",
            "--initial-cluster", f"coord=http://{host}:{peer}",
            "--heartbeat-interval", "50", "--election-timeout", "500"]
    files: dict[str, str] = {}
    if tls:
        from reconciler.kit.pki import StackCA

        ca = StackCA(tmp_path / "coord-pki", common_name="coordinating etcd test CA")
        # client usage too: with --client-cert-auth, etcd's JSON gateway dials etcd with this cert.
        server = ca.issue("server", sans=[host], server=True, client=True)
        user = ca.issue("daemon", client=True)
        files = {"cacert": str(ca.ensure()), "cert": str(user.cert_path), "key": str(user.key_path)}
        args += ["--cert-file", str(server.cert_path), "--key-file", str(server.key_path),
                 "--trusted-ca-file", files["cacert"], "--client-cert-auth"]
    log = tmp_path / "coord-etcd.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    coord = CoordEtcd(proc, host, client, data, files)
    deadline = time.monotonic() + 20
    while not coord.healthy():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_coord_etcd(coord)
            pytest.fail("the coordinating etcd did not start:\n" + log.read_text()[-2000:])
        time.sleep(0.1)
    return coord


def stop_coord_etcd(coord: CoordEtcd) -> None:
    if coord.proc.poll() is None:
        coord.proc.send_signal(signal.SIGCONT)
        coord.proc.kill()
    coord.proc.wait(timeout=10)


@pytest.fixture
def coord_etcd(tmp_path: Path) -> Iterator[CoordEtcd]:
    coord = start_coord_etcd(tmp_path)
    try:
        yield coord
    finally:
        stop_coord_etcd(coord)


@pytest.fixture
def coord_etcd_tls(tmp_path: Path) -> Iterator[CoordEtcd]:
    coord = start_coord_etcd(tmp_path, tls=True)
    try:
        yield coord
    finally:
        stop_coord_etcd(coord)


def first(events: list[Event], pred: Callable[[Event], bool]) -> Event | None:
    return next((e for e in events if pred(e)), None)


def is_pass(result: str | None = None, **fields: Any) -> Callable[[Event], bool]:
    def pred(e: Event) -> bool:
        if e.get("event") != "pass":
            return False
        if result is not None and e.get("result") != result:
            return False
        return all(e.get(k) == v for k, v in fields.items())

    return pred


def is_event(name: str, **fields: Any) -> Callable[[Event], bool]:
    return lambda e: e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
