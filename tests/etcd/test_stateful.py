"""A hypothesis-driven sequence of kills, scales and spec changes against a real local etcd cluster.

Each step changes the world or the stack file the way an operator (or bad luck) would, then runs
``infra apply`` through the CLI. After every step: the cluster has exactly the declared members,
all started and healthy, and every write etcd acknowledged so far is still there.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from plugins.etcd.client import EtcdClient, EtcdError
from tests.etcd.conftest import EtcdStack, destroy_and_check

pytestmark = [pytest.mark.e2e, pytest.mark.etcd]


def test_kills_scales_and_rolls_never_lose_an_acknowledged_write(
    tmp_path_factory: pytest.TempPathFactory, etcd_binaries: None
) -> None:
    stacks: list[EtcdStack] = []

    class EtcdOperations(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.stack = EtcdStack(tmp_path_factory.mktemp("etcd-sm"))
            stacks.append(self.stack)
            self.acked: dict[str, str] = {}
            self.writes = 0
            self.snapshot_count = 10000
            self._client: EtcdClient | None = None

        @property
        def client(self) -> EtcdClient:
            if self._client is None:
                self._client = self.stack.client(timeout=3)
            return self._client

        def write_some(self, count: int) -> None:
            for _ in range(count):
                key, value = f"sm/{self.writes:05d}", f"v{self.writes}"
                self.writes += 1
                for ep in self.stack.endpoints():
                    try:
                        self.client.put(ep, key, value, timeout=3)
                    except EtcdError:
                        continue
                    self.acked[key] = value
                    break

        @initialize()
        def bootstrap(self) -> None:
            self.stack.write(size=3, flags={"snapshot-count": self.snapshot_count})
            self.stack.apply()
            self.write_some(5)

        @rule(count=st.integers(1, 10))
        def write(self, count: int) -> None:
            self.write_some(count)

        @precondition(lambda self: self.stack.size >= 3)
        @rule(which=st.integers(0, 6))
        def kill_one_member_then_apply(self, which: int) -> None:
            self.stack.kill(f"etcd-{which % self.stack.size}")
            self.stack.apply()

        @rule(size=st.sampled_from([1, 3, 5]))
        def scale(self, size: int) -> None:
            self.stack.write(size=size)
            self.stack.apply()

        @precondition(lambda self: self.stack.size >= 3)
        @rule(snapshot_count=st.sampled_from([5000, 10000, 20000]))
        def change_a_flag(self, snapshot_count: int) -> None:
            self.snapshot_count = snapshot_count
            self.stack.write(flags={"snapshot-count": snapshot_count})
            self.stack.apply()

        @invariant()
        def declared_members_all_started_and_healthy(self) -> None:
            members = self.stack.member_list(self.client)
            assert len(members.members) == self.stack.size
            assert all(m.started for m in members.members)
            endpoints = self.stack.endpoints()
            assert len(endpoints) == self.stack.size
            assert all(self.client.health(ep) for ep in endpoints)

        @invariant()
        def no_acknowledged_write_lost(self) -> None:
            stored = self.client.get_prefix(self.stack.endpoints()[0], "sm/")
            lost = sorted(k for k, v in self.acked.items() if stored.get(k) != v)
            assert not lost, f"acknowledged writes lost: {lost[:5]}"

        def teardown(self) -> None:
            proc = self.stack.infra("destroy", "--yes")
            assert proc.returncode == 0, proc.stderr

    try:
        run_state_machine_as_test(
            EtcdOperations,
            settings=settings(
                max_examples=2,
                stateful_step_count=4,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            ),
        )
    finally:
        for stack in stacks:
            destroy_and_check(stack)
