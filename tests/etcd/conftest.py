"""Fixtures for the etcd role's tests: a real etcd cluster driven through the real ``infra`` CLI.

``etcd_stack`` gives a :class:`EtcdStack`: a private ``INFRA_STATE_DIR``, a stack file it
rewrites (size, flags), and helpers to run ``infra`` as a subprocess, read ``infra env``, run
``etcdctl``, find and ``kill -9`` a member's etcd process, and talk to the cluster with the
stack's own client certificate. At teardown it runs ``infra destroy`` and then kills whatever
process group of the test's instances is still alive, failing the test if any was (a leak).

The tests need the etcd 3.4 binaries and fail (never skip) when they are missing.
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
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest

from plugins.etcd.client import EtcdClient, EtcdError, MemberList
from plugins.etcd.role import stack_client

#: Loopback-tuned timeouts (role config) so elections and bootstrap take well under a second.
FAST = {"heartbeat_interval_ms": 50, "election_timeout_ms": 500, "health_timeout": 60, "reconfig_wait": 20}


def require_binary(name: str) -> str:
    """The binary's path; fails the test (never skips) when it is missing."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is missing: install Debian's etcd-server and etcd-client packages (etcd 3.4)", pytrace=False
        )
    return found


def infra_command() -> list[str]:
    return [sys.executable, "-m", "reconciler.cli"]


@dataclass
class EtcdStack:
    """One test's stack of a single etcd group, on the local provider, in a private state dir."""

    root: Path
    name: str = "etcdt"
    group: str = "etcd"
    size: int = 3
    flags: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    seen_pgids: set[int] = field(default_factory=set)
    _env: dict[str, str] | None = None

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def stack_file(self) -> Path:
        return self.root / "stack.py"

    # -- the stack file -----------------------------------------------------------------------

    def write(self, *, size: int | None = None, flags: Mapping[str, Any] | None = None,
              group_kw: Mapping[str, Any] | None = None, removed: tuple[str, ...] = ()) -> Path:
        """The stack file: one etcd group (``group_kw``: its other keywords, e.g. labels or protect),
        and ``removed``: groups the file removes on purpose."""
        if size is not None:
            self.size = size
        if flags is not None:
            self.flags = dict(flags)
        config = {**FAST, **self.extra, "flags": self.flags}
        more = "".join(f", {k}={v!r}" for k, v in (group_kw or {}).items())
        gone = f", removed=[{', '.join(f'Removed({g!r})' for g in removed)}]" if removed else ""
        self.stack_file.write_text(
            "from reconciler import Group, Removed, Stack\n\n"
            f"stack = Stack(name={self.name!r}, provider='local', groups=(\n"
            f"    Group(name={self.group!r}, size={self.size}, role='etcd', config={config!r}{more}),\n"
            f"){gone})\n"
        )
        return self.stack_file

    # -- the CLI ------------------------------------------------------------------------------

    def infra(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "INFRA_STATE_DIR": str(self.state)}
        if not self.stack_file.exists():
            self.write()
        proc = subprocess.run(
            [*infra_command(), *args, str(self.stack_file)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self._remember_pgids()
        return proc

    def apply(self) -> subprocess.CompletedProcess[str]:
        proc = self.infra("apply", "--yes")
        assert proc.returncode == 0, f"infra apply failed:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def env(self, *, fresh: bool = False) -> dict[str, str]:
        """``infra env`` parsed. Cached after the first call (the certificate paths do not change);
        the endpoints are then re-read from the instances, as ``infra env`` would print them."""
        if fresh or self._env is None:
            proc = self.infra("env")
            assert proc.returncode == 0, proc.stderr
            out: dict[str, str] = {}
            for line in proc.stdout.splitlines():
                words = shlex.split(line)
                assert words[0] == "export", line
                key, _, value = words[1].partition("=")
                out[key] = value
            self._env = out
            return dict(out)
        return {**self._env, "ETCDCTL_ENDPOINTS": ",".join(self.endpoints())}

    def etcdctl(
        self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        binary = require_binary("etcdctl")
        variables = dict(env) if env is not None else self.env()
        return subprocess.run(
            [binary, *args],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **variables},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # -- instances as the local provider keeps them ------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted((self.state / "local" / "instances").glob("*/instance.json")):
            with contextlib.suppress(OSError, ValueError):
                out.append(json.loads(path.read_text()))
        return out

    def record(self, member: str) -> dict[str, Any]:
        found = [r for r in self.records() if r.get("labels", {}).get("infra-member") == member]
        assert len(found) == 1, f"expected one instance of {member}, found {len(found)}"
        return found[0]

    def _remember_pgids(self) -> None:
        for rec in self.records():
            procs = rec.get("processes") or {}
            if procs.get("pgid"):
                self.seen_pgids.add(int(procs["pgid"]))

    def etcd_pid(self, member: str) -> int:
        return int(self.record(member)["processes"]["services"]["etcd"]["pid"])

    def kill(self, member: str) -> int:
        """``kill -9`` the etcd process of ``member`` and wait until it is gone."""
        pid = self.etcd_pid(member)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)
        return pid

    # -- talking to the cluster --------------------------------------------------------------

    def client(self, timeout: float = 5.0) -> EtcdClient:
        # infra's own identity (RBAC is on: the operator's named certificate cannot use the gateway)
        return stack_client(Path(self.env()["ETCDCTL_CACERT"]).parent.parent, "etcd", timeout=timeout)

    def endpoints(self) -> list[str]:
        return [
            f"https://{r['address']}:2379"
            for r in sorted(self.records(), key=lambda r: r.get("labels", {}).get("infra-member", ""))
            if r.get("address")
        ]

    def member_list(self, client: EtcdClient | None = None) -> MemberList:
        client = client or self.client()
        last: Exception | None = None
        for ep in self.endpoints():
            try:
                return client.member_list(ep)
            except EtcdError as exc:
                last = exc
        raise AssertionError(f"no member answers member list: {last}")

    # -- cleanup -------------------------------------------------------------------------------

    def leftovers(self) -> list[int]:
        """Process groups of this test's instances that still have a live process."""
        self._remember_pgids()
        alive = []
        for pgid in sorted(self.seen_pgids):
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                continue
            except PermissionError:
                continue
            alive.append(pgid)
        return alive


@pytest.fixture
def etcd_binaries() -> None:
    require_binary("etcd")
    require_binary("etcdctl")


@pytest.fixture
def etcd_stack(tmp_path: Path, etcd_binaries: None) -> Iterator[EtcdStack]:
    stack = EtcdStack(tmp_path)
    stack.write()
    try:
        yield stack
    finally:
        destroy_and_check(stack)


def destroy_and_check(stack: EtcdStack) -> None:
    """``infra destroy``, then kill and report any process group of the stack still alive."""
    stack.infra("destroy", "--yes")
    leaked: list[int] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        leaked = stack.leftovers()
        if not leaked:
            break
        time.sleep(0.1)
    for pgid in leaked:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    assert not leaked, f"infra destroy left process groups running: {leaked}"
