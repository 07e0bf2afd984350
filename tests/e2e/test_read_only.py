"""Commands that only read make none of the stack's state; only a writer makes it.

``infra validate``, ``plan``, ``status`` and ``graph`` of the etcd stack (whose role needs the
stack's CA) create no stack directory, no CA and no lock, on a fresh state root and once the
stack exists alike; ``apply`` (under the lock) makes the CA, and a later ``plan`` does not change
a byte of it. ``destroy`` removes the stack's state and its lock.

(The local provider's own root, ``<state root>/local``, is not the stack's state: its plan
reserves each member's loopback address under its own lock, so that the address a plan shows is
the one the member gets.)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.e2e.conftest import Infra

pytestmark = [pytest.mark.e2e, pytest.mark.etcd]

STACK = "stacks/etcd-local.py"
READS = (["validate", STACK], ["plan", STACK], ["plan", STACK, "--json"], ["status", STACK],
         ["graph", STACK, "--format", "dot"])


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a hash of its bytes (directories as entries too)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def test_reads_write_nothing_and_only_a_writer_makes_the_ca(infra: Infra) -> None:
    for args in READS:
        infra.run(*args, check=True)
    assert snapshot(infra.state / "stacks") == {}, "a read-only command made the stack's state"

    infra.run("apply", STACK, "--yes", check=True)
    ca = infra.state / "stacks" / "etcd-local" / "pki" / "ca.key"
    assert ca.exists() and (ca.stat().st_mode & 0o777) == 0o600
    infra.run("env", STACK, check=True)  # issues infra's client certificate (a writer by request)
    before = snapshot(infra.state / "stacks")
    for args in READS:
        infra.run(*args, check=True)
    assert snapshot(infra.state / "stacks") == before, "a read-only command changed the stack's state"

    infra.run("destroy", STACK, "--yes", check=True)
    assert sorted(p.name for p in (infra.state / "stacks").iterdir()) == []  # its CA and its lock are gone
