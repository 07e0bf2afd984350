"""Address allocation of the local provider under concurrent creates: threads and processes."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from providers.local import LocalProvider
from reconciler.core.model import InstanceStatus, stack_selector
from tests.polling import wait_for
from tests.providers.test_local_support import (
    http_get,
    local_provider,
    local_root,
    member,
    processes_under,
)

__all__ = ["local_provider", "local_root"]  # fixtures used below

NET = ipaddress.ip_network("127.77.0.0/16")


def test_concurrent_creates_from_threads_get_unique_addresses(local_provider: LocalProvider) -> None:
    specs = [member("thr", f"web-{n}", index=n) for n in range(12)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        created = list(pool.map(local_provider.create, specs))
    addresses = [i.address for i in created]
    assert len(set(addresses)) == 12
    assert all(a is not None and ipaddress.ip_address(a) in NET for a in addresses)
    seen = local_provider.list(stack_selector("thr"))
    assert {i.id for i in seen} == {i.id for i in created}
    assert all(i.status is InstanceStatus.RUNNING for i in seen)
    for inst in created:  # every one really serves on its own address
        assert inst.address is not None and http_get(inst.address) == 200


def test_concurrent_creates_of_one_name_start_one_instance(local_provider: LocalProvider, local_root: Path) -> None:
    spec = member("same")
    with ThreadPoolExecutor(max_workers=6) as pool:
        created = list(pool.map(lambda _: local_provider.create(spec), range(6)))
    assert len({i.id for i in created}) == 1
    supervisors = [p for p in processes_under(local_root) if "providers.local.supervisor" in " ".join(p.cmdline())]
    assert len(supervisors) == 1


_WORKER = """
import json, os, sys, time
from providers.local import LocalProvider
from reconciler.core.model import MemberSpec, Service
root, stack, go = sys.argv[1], sys.argv[2], sys.argv[3]
web = Service(name="web", image="python:3.11-alpine",
              command=("python3", "-m", "http.server", "8080", "--bind", "{address}"), ports=(8080,))
p = LocalProvider.open({"root": root}, stack=stack, state_dir=None)
open(go + "." + stack, "w").close()  # the barrier: this side is ready
while not os.path.exists(go):  # start together with the other process
    time.sleep(0.005)
specs = [MemberSpec(stack=stack, group="web", member=f"web-{n}", role="command", services=(web,))
         for n in range(24)]
# Many quick reservations (allocation only) to overlap with the other process, then real creates.
times = []
reserved = []
for spec in specs[3:]:
    times.append(time.time())
    reserved.append(p.address_for(spec))
times.append(time.time())
created = [p.create(spec).address for spec in specs[:3]]
print(json.dumps({"reserved": reserved, "created": created, "first": times[0], "last": times[-1]}))
"""


def test_concurrent_creates_from_two_processes_get_unique_addresses(local_root: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(local_root), stack, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for stack in ("proca", "procb")
    ]
    # The barrier: both processes have imported, opened the provider and wait at the start line.
    wait_for(lambda: all((tmp_path / f"go.{s}").exists() for s in ("proca", "procb")), "both workers ready",
             timeout=60)
    go.touch()
    addresses: list[str] = []
    created: list[str] = []
    spans: list[tuple[float, float]] = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        result = json.loads(out)
        addresses += result["reserved"] + result["created"]
        created += result["created"]
        spans.append((result["first"], result["last"]))
    # Both sides really reserved at the same time (else this test would prove nothing about the lock).
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, spans
    assert len(addresses) == 48
    assert len(set(addresses)) == 48, sorted(addresses)
    provider = LocalProvider.open({"root": str(local_root)}, stack="proca", state_dir=local_root)
    seen = provider.list({})
    assert len(seen) == 6 and all(i.status is InstanceStatus.RUNNING for i in seen)
    assert sorted(i.address or "" for i in seen) == sorted(created)
