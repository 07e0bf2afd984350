"""Helpers shared by the local provider's tests (no tests here).

``local_provider`` opens a provider on a private root under ``tmp_path``; its finalizer deletes
every instance left there, kills any process still running out of the root (a leak), and
fails the test if it had to.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from providers.local import LocalProvider
from reconciler.core.model import ConfigFile, Instance, InstanceStatus, MemberSpec, Service

PORT = 8080


def http_service(name: str = "web", port: int = PORT) -> Service:
    """A real tiny HTTP server on the instance's own address."""
    return Service(
        name=name,
        image="python:3.11-alpine",
        command=("python3", "-m", "http.server", str(port), "--bind", "{address}"),
        ports=(port,),
    )


def member(
    stack: str,
    name: str = "web-0",
    *,
    group: str = "web",
    services: tuple[Service, ...] | None = None,
    files: tuple[ConfigFile, ...] = (),
    index: int = 0,
    **extra: Any,
) -> MemberSpec:
    return MemberSpec(
        stack=stack,
        group=group,
        member=name,
        role="command",
        services=(http_service(),) if services is None else services,
        files=files,
        placement=index,
        **extra,
    )


def processes_under(root: Path) -> list[psutil.Process]:
    """Running (non-zombie) processes started out of ``root``: by command line or working dir."""
    found = []
    needle = str(root)
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
                continue
            cmdline = " ".join(proc.info["cmdline"] or [])
            cwd = proc.cwd()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if needle in cmdline or cwd.startswith(needle):
            found.append(proc)
    return found


def group_alive(pgid: int) -> list[int]:
    """Running (non-zombie) pids whose process group is ``pgid``."""
    pids = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                pids.append(proc.pid)
        except (psutil.NoSuchProcess, ProcessLookupError):
            continue
    return pids


def record(provider: LocalProvider, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((provider.root / "instances" / name / "instance.json").read_text())
    return doc


def http_get(address: str, port: int = PORT, timeout: float = 10.0) -> int:
    """GET / until the server answers (it needs a moment to start); its status code."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://{address}:{port}/", timeout=2) as resp:
                return int(resp.status)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def wait_for(
    provider: LocalProvider, name: str, predicate: Callable[[Instance], bool], timeout: float = 10.0
) -> Instance:
    """Poll ``list`` until the instance named ``name`` satisfies ``predicate``."""
    deadline = time.monotonic() + timeout
    while True:
        seen = {i.name: i for i in provider.list({})}
        inst = seen.get(name)
        if inst is not None and predicate(inst):
            return inst
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} never matched; last seen: {inst}")
        time.sleep(0.05)


def is_dead(inst: Instance) -> bool:
    return inst.status is InstanceStatus.DEAD


def sweep(root: Path) -> list[int]:
    """Kill whatever still runs out of ``root``; the pids that had to be killed."""
    leaked = processes_under(root)
    for proc in leaked:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(leaked, timeout=5)
    return [p.pid for p in leaked]


def teardown_root(root: Path) -> None:
    """Delete every infra instance under ``root`` through a fresh provider of its stack, then check for leaks."""
    if (root / "instances").is_dir():
        lister = LocalProvider.open({"root": str(root), "grace": 1.0}, stack="sweeper", state_dir=root)
        for inst in lister.list({}):
            if inst.stack and inst.owned_by(inst.stack):
                LocalProvider.open({"root": str(root), "grace": 1.0}, stack=inst.stack, state_dir=root).delete(inst)
    leaked = sweep(root)
    assert not leaked, f"processes leaked out of {root}: {leaked}"


@pytest.fixture
def local_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("INFRA_STATE_DIR", str(tmp_path / "state"))
    root = tmp_path / "local"
    yield root
    teardown_root(root)


@pytest.fixture
def local_provider(local_root: Path) -> Iterator[LocalProvider]:
    provider = LocalProvider.open({"root": str(local_root), "grace": 2.0}, stack="lt", state_dir=local_root)
    yield provider
    provider.close()
