"""Fixtures for the prometheus role's tests: role contexts, real metrics servers, real Prometheus.

* ``make_ctx`` builds a :class:`RoleContext` for a ``prometheus`` group of a small stack, with a
  :class:`FakeDiscoveryProvider` that returns the kind of discovery fragment under test.
* ``metrics_server`` starts tiny HTTP(S) servers on loopback that serve Prometheus text format
  (optionally requiring a client certificate), stopped at teardown.
* ``run_prometheus`` starts the real ``/usr/bin/prometheus`` on a rendered configuration and
  kills it at teardown; the tests fail (never skip) when the binary is missing.
"""

from __future__ import annotations

import builtins
import contextlib
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import psutil  # type: ignore[import-untyped]
import pytest

from plugins.prometheus import PrometheusConfig, PrometheusRole
from reconciler.core.model import Instance, InstanceStatus, MemberSpec, Problem
from reconciler.core.stack import Group, Stack
from reconciler.kit.provider import SdConfig
from reconciler.kit.role import MetricsTarget, RoleContext

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


def require_binary(path: str) -> str:
    """The binary's path; fails the test (never skips) when it is missing."""
    found = shutil.which(path)
    if found is None:
        pytest.fail(f"{path} is missing: install Debian's 'prometheus' package (2.42)", pytrace=False)
    return found


@dataclass
class FakeDiscoveryProvider:
    """A provider that only answers ``discovery`` (the render tests need nothing else).

    ``kind`` picks the fragment: ``file`` (like the local provider: a file_sd file per group and
    port under ``sd_dir``), ``ec2``, ``gce`` or ``none`` (a provider without discovery).
    """

    kind: str = "file"
    sd_dir: Path = Path("/nonexistent")
    name: ClassVar[str] = "fake"
    calls: list[tuple[dict[str, str], int]] = field(default_factory=list)

    def sd_file(self, selector: Mapping[str, str], port: int) -> Path:
        return self.sd_dir / f"{selector['infra-stack']}-{selector['infra-group']}-{port}.json"

    def discovery(self, selector: Mapping[str, str], port: int) -> SdConfig | None:
        self.calls.append((dict(selector), port))
        if self.kind == "file":
            return {"file_sd_configs": [{"files": [str(self.sd_file(selector, port))], "refresh_interval": "5s"}]}
        if self.kind == "ec2":
            return {
                "ec2_sd_configs": [
                    {
                        "region": "eu-west-1",
                        "port": port,
                        "filters": [{"name": f"tag:{k}", "values": [v]} for k, v in selector.items()],
                    }
                ]
            }
        if self.kind == "gce":
            flt = " AND ".join(f"labels.{k} = {v}" for k, v in selector.items())
            return {"gce_sd_configs": [{"project": "p", "zone": "europe-west1-b", "port": port, "filter": flt}]}
        return None

    def list(self, selector: Mapping[str, str]) -> list[Instance]:
        return []

    def create(self, spec: MemberSpec) -> Instance:
        raise AssertionError("render tests create nothing")

    def delete(self, instance: Instance) -> None:
        raise AssertionError("render tests delete nothing")

    def validate(self, members: Sequence[MemberSpec]) -> builtins.list[Problem]:
        return []

    def close(self) -> None:
        return None


#: How the roles of the test stack serve metrics (what the engine's ``metrics_of`` would say).
METRICS: dict[str, list[MetricsTarget]] = {
    "etcd": [MetricsTarget(port=2379, scheme="https", mtls=True)],
    "web": [MetricsTarget(port=8080, path="/metrics")],
    "batch": [],
}


def observed_instances(stack: str, group: str, n: int, base: int = 2) -> list[Instance]:
    return [
        Instance(
            id=f"i-{group}-{i}",
            name=f"{stack}-{group}-{group}-{i}-abcdef12",
            labels={"infra-stack": stack, "infra-group": group, "infra-member": f"{group}-{i}", "infra-spec": "x"},
            address=f"10.9.{base}.{i + 1}",
            status=InstanceStatus.RUNNING,
        )
        for i in range(n)
    ]


@pytest.fixture
def make_ctx(tmp_path: Path) -> Callable[..., RoleContext]:
    """``make_ctx(config={...}, kind="file", sizes={"etcd": 3})`` → a prometheus group's context."""

    def make(
        config: Mapping[str, Any] | None = None,
        *,
        kind: str = "file",
        sizes: Mapping[str, int] | None = None,
        metrics: Mapping[str, list[MetricsTarget]] | None = None,
        size: int = 1,
        state_dir: Path | None = None,
    ) -> RoleContext:
        sizes = dict(sizes or {"etcd": 3, "web": 2, "batch": 1})
        roles = {"etcd": "etcd", "web": "command", "batch": "command"}
        groups = [Group(name=g, size=n, role=roles.get(g, "command")) for g, n in sizes.items()]
        cfg = dict(config if config is not None else {"watch": ["etcd"]})
        groups.append(Group(name="prom", size=size, role="prometheus", config=cfg))
        stack = Stack(name="demo", groups=tuple(groups))
        observed = {g: observed_instances("demo", g, n, base=k) for k, (g, n) in enumerate(sizes.items())}
        table = dict(METRICS if metrics is None else metrics)
        log: list[str] = []
        ctx = RoleContext(
            stack=stack,
            group=stack.group("prom"),
            config=PrometheusConfig.model_validate(cfg),
            provider=FakeDiscoveryProvider(kind=kind, sd_dir=tmp_path / "sd"),
            state_dir=state_dir or (tmp_path / "state"),
            observed=observed,
            log=log.append,
            metrics_of=lambda g: list(table.get(g, [])),
        )
        return ctx

    return make


@pytest.fixture
def role() -> PrometheusRole:
    return PrometheusRole()


def write_member_files(member: MemberSpec, config_dir: Path) -> Path:
    """Lay the member's files out as the provider would (below its config dir); returns the yml."""
    for f in member.files:
        path = config_dir / f.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f.content)
        path.chmod(f.mode)
    return config_dir / "prometheus" / "prometheus.yml"


# -- real servers ------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _MetricsHandler(http.server.BaseHTTPRequestHandler):
    body = b"# HELP demo_up A demo gauge.\n# TYPE demo_up gauge\ndemo_up 1\n"

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@dataclass
class MetricsServer:
    host: str
    port: int
    server: http.server.ThreadingHTTPServer
    thread: threading.Thread

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


@pytest.fixture
def metrics_server() -> Iterator[Callable[..., MetricsServer]]:
    """``metrics_server(tls=ssl_context_or_None)`` → a running /metrics server on loopback."""
    servers: list[MetricsServer] = []

    def start(tls: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> MetricsServer:
        httpd = http.server.ThreadingHTTPServer((host, 0), _MetricsHandler)
        httpd.daemon_threads = True
        if tls is not None:
            httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        srv = MetricsServer(host, int(httpd.server_address[1]), httpd, thread)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.server.shutdown()
        srv.server.server_close()
        srv.thread.join(timeout=5)


@dataclass
class RunningPrometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def targets(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url + "/api/v1/targets?state=active", timeout=2) as resp:
            doc = json.load(resp)
        return list(doc["data"]["activeTargets"])

    def wait_for(self, check: Callable[[list[dict[str, Any]]], bool], timeout: float = 60) -> list[dict[str, Any]]:
        """Poll the targets until ``check`` holds; fails with the last answer after ``timeout``."""
        deadline = time.monotonic() + timeout
        last: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"prometheus exited: {self.log.read_text()[-2000:]}"
            try:
                last = self.targets()
            except OSError:
                last = []
            if check(last):
                return last
            time.sleep(0.3)
        pytest.fail(f"targets never satisfied the check within {timeout}s; last: {json.dumps(last, indent=1)}")


@pytest.fixture
def run_prometheus(tmp_path: Path) -> Iterator[Callable[[MemberSpec, Path], RunningPrometheus]]:
    """``run_prometheus(member, config_dir)`` runs the member's service command, as the local
    provider would (placeholders expanded, address 127.0.0.1), and waits until it is ready."""
    procs: list[RunningPrometheus] = []

    def start(member: MemberSpec, config_dir: Path) -> RunningPrometheus:
        require_binary(PROMETHEUS)
        (service,) = member.services
        data = tmp_path / f"data-{member.member}"
        log = tmp_path / f"prometheus-{member.member}.log"
        places = {"{config}": str(config_dir), "{data}": str(data), "{address}": "127.0.0.1", "{name}": member.name}
        argv = []
        for arg in service.command:
            for key, value in places.items():
                arg = arg.replace(key, value)
            argv.append(arg)
        (port,) = service.ports
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        running = RunningPrometheus(f"http://127.0.0.1:{port}", proc, log)
        procs.append(running)
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"prometheus exited: {log.read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(running.url + "/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return running
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus not ready in 30s: {log.read_text()[-2000:]}")
            time.sleep(0.1)

    yield start
    for running in procs:
        running.proc.terminate()
        try:
            running.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            running.proc.kill()
            running.proc.wait(timeout=10)


# -- the infra CLI -------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def _infra_argv() -> list[str]:
    exe = shutil.which("infra")
    return [exe] if exe else [sys.executable, "-m", "reconciler.cli"]


@dataclass
class InfraCli:
    """Runs the real ``infra`` CLI with a private ``INFRA_STATE_DIR``; remembers what to destroy."""

    state: Path
    applied: set[str] = field(default_factory=set)

    def run(self, *args: str, check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        if args and args[0] == "apply":
            self.applied.add(args[1])
        env = {**os.environ, "INFRA_STATE_DIR": str(self.state), "NO_COLOR": "1", "COLUMNS": "250"}
        proc = subprocess.run(
            [*_infra_argv(), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
        )
        if check:
            assert proc.returncode == 0, (
                f"infra {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json", check=True).stdout)

    def leftovers(self) -> list[psutil.Process]:
        """Processes still running from this state directory (instances not destroyed)."""
        mine = str(self.state)
        found = []
        for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
            try:
                cmdline = " ".join(proc.info["cmdline"] or [])
                if mine in cmdline or (proc.info["cwd"] or "").startswith(mine):
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found


@pytest.fixture
def infra_cli(tmp_path: Path) -> Iterator[InfraCli]:
    """The CLI with a private state dir; the finalizer runs ``infra destroy --yes`` on every stack
    applied and fails the test if any of its processes survive (they are killed, by pid)."""
    state = tmp_path / "state"
    state.mkdir()
    cli = InfraCli(state)
    yield cli
    problems = []
    for stack in sorted(cli.applied):
        result = cli.run("destroy", stack, "--yes", timeout=180)
        if result.returncode != 0:
            problems.append(f"destroy {stack} exited {result.returncode}: {result.stderr[-1000:]}")
    deadline = time.monotonic() + 10
    while cli.leftovers() and time.monotonic() < deadline:
        time.sleep(0.2)
    left = cli.leftovers()
    for proc in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    if left:
        problems.append(f"processes survived destroy: {[p.pid for p in left]}")
    if problems:
        pytest.fail("; ".join(problems))
