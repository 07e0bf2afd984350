"""Fixtures of the emulator tests: ``infra emulator gcp|aws`` as a child process, and the CLI against it.

:class:`Emulator` starts the real ``infra emulator CLOUD`` (port 0, a private ``--state``), reads the
exports it prints up to ``# ready``, and runs ``infra`` with them, in a private
``INFRA_STATE_DIR``, with no ``linuxkit`` (the emulator boots the images' LinuxKit YAML). At
teardown it destroys the stack, sends SIGTERM, checks the emulator exits 0 and that no process
of its machines is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest

from tests.exports import READY, parse_export

REPO = Path(__file__).resolve().parents[2]


def infra_command() -> list[str]:
    exe = shutil.which("infra")
    return [exe] if exe else [sys.executable, "-m", "reconciler.cli"]


@dataclass
class Emulator:
    """A running ``infra emulator gcp`` and the client side of it."""

    root: Path
    proc: subprocess.Popen[str]
    exports: dict[str, str]
    cloud: str = "gcp"
    lines: list[str] = field(default_factory=list)

    @property
    def state(self) -> Path:
        return self.root / "client-state"

    @property
    def url(self) -> str:
        return self.exports.get("INFRA_GCP_ENDPOINT") or self.exports["AWS_ENDPOINT_URL"]

    def call(self, path: str, body: Any = None, method: str | None = None) -> Any:
        """A JSON call to the GCE emulator with its token (every request needs it)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method or ("POST" if data else "GET"),
                                         headers={"Content-Type": "application/json",
                                                  "Authorization": f"Bearer {self.exports['INFRA_GCP_ACCESS_TOKEN']}"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("INFRA_GCP", "INFRA_GCS", "INFRA_LINUXKIT", "INFRA_AWS", "AWS_"))}
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if "linuxkit" not in p)
        env.update(self.exports)
        env.update({"INFRA_STATE_DIR": str(self.state), "NO_COLOR": "1", "COLUMNS": "200"})
        env.update(extra)
        return env

    def infra(self, *args: str, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*infra_command(), *args], capture_output=True, text=True, env=self.env(**extra),
                              cwd=REPO, timeout=timeout, check=False, stdin=subprocess.DEVNULL)

    def ok(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        proc = self.infra(*args, **extra)
        assert proc.returncode == 0, f"infra {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        return proc

    def shell_env(self, stack: str) -> dict[str, str]:
        """``infra env STACK`` parsed."""
        out: dict[str, str] = {}
        for line in self.ok("env", stack).stdout.splitlines():
            words = shlex.split(line)
            key, _, value = words[1].partition("=")
            out[key] = value
        return out

    def etcdctl(self, stack: str, *args: str) -> subprocess.CompletedProcess[str]:
        """etcdctl with ``infra env``'s settings (``--endpoints=`` in ``args`` replaces its endpoints)."""
        binary = shutil.which("etcdctl")
        assert binary, "etcdctl is missing: install Debian's etcd-client"
        env = self.shell_env(stack)
        if any(a.startswith("--endpoints") for a in args):
            env.pop("ETCDCTL_ENDPOINTS", None)
        return subprocess.run([binary, *args], env={"PATH": os.environ["PATH"], **env},
                              capture_output=True, text=True, timeout=60, check=False)

    def healthy(self, stack: str, members: int = 3) -> bool:
        """``etcdctl endpoint health --cluster`` (through ``infra env``) reports ``members`` healthy."""
        out = self.etcdctl(stack, "endpoint", "health", "--cluster")
        return out.returncode == 0 and (out.stdout + out.stderr).count("is healthy") == members  # 3.4: stderr

    def machines(self) -> list[dict[str, Any]]:
        """The records of the machines the emulator runs (its local process groups)."""
        out = []
        for path in sorted((self.root / "emulator-state" / "machines" / "instances").glob("*/instance.json")):
            with contextlib.suppress(OSError, ValueError):
                out.append(json.loads(path.read_text()))
        return out

    def machine_at(self, address: str) -> dict[str, Any]:
        (found,) = [m for m in self.machines() if m.get("address") == address]
        return found

    def processes(self) -> list[psutil.Process]:
        """The machines' processes (anything running out of the emulator's state, but the emulator)."""
        marker = str(self.root / "emulator-state")
        out = []
        for p in psutil.process_iter(["cmdline", "cwd"]):
            if p.pid == self.proc.pid:
                continue
            with contextlib.suppress(psutil.Error):
                if any(marker in part for part in (p.info["cmdline"] or [])) or marker in (p.info["cwd"] or ""):
                    out.append(p)
        return out


def wait_for(what: str, check: Any, timeout: float = 90.0, every: float = 0.5) -> Any:
    """Poll ``check()`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # the condition may raise while it is not met yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")


def launch(cloud: str, tmp_path: Path, *extra: str) -> Emulator:
    """``infra emulator CLOUD`` (with ``extra`` arguments) as a child process, once it printed ``# ready``."""
    for binary in ("etcd", "etcdctl", "prometheus"):
        if shutil.which(binary) is None:
            pytest.fail(f"{binary} is missing: install Debian's etcd-server, etcd-client and prometheus", pytrace=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFRA_GCP", "AWS_"))}
    env["INFRA_STATE_DIR"] = str(tmp_path / "emulator-root")
    proc = subprocess.Popen([*infra_command(), "emulator", cloud, "--port", "0", "--state",
                             str(tmp_path / "emulator-state"), *extra], stdout=subprocess.PIPE, stderr=open(tmp_path / "emulator.log", "w"),  # noqa: SIM115
                            text=True, env=env, cwd=REPO)
    exports: dict[str, str] = {}
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(READY):
                ready.set()
            elif (pair := parse_export(line)) is not None:
                exports[pair[0]] = pair[1]

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(60):
        proc.kill()
        raise AssertionError("the emulator did not print '# ready' within 60 s:\n" + (tmp_path / "emulator.log").read_text())
    return Emulator(tmp_path, proc, exports, cloud)


def start(cloud: str, tmp_path: Path, stack: str, *extra: str) -> Iterator[Emulator]:
    """:func:`launch`, then at the end: destroy ``stack``, SIGTERM, exit 0 and no machine left."""
    emulator = launch(cloud, tmp_path, *extra)
    proc = emulator.proc
    try:
        yield emulator
    finally:
        emulator.infra("destroy", stack, "--yes", timeout=240)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        left = wait_for("no machine process left", lambda: not emulator.processes() or None, timeout=15) \
            if emulator.processes() else True
        assert code == 0, (tmp_path / "emulator.log").read_text()
        assert left


@pytest.fixture
def gce(tmp_path: Path) -> Iterator[Emulator]:
    yield from start("gcp", tmp_path, "stacks/etcd-gcp.py")


@pytest.fixture
def ec2(tmp_path: Path) -> Iterator[Emulator]:
    yield from start("aws", tmp_path, "stacks/etcd-aws.py")
