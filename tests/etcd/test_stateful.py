"""A hypothesis-driven sequence of kills, scales and spec changes against a real local etcd cluster.

Each example bootstraps 3 members, then runs every kind of operation once, in an order and with
parameters hypothesis draws: ``kill`` (``kill -9`` one member, then ``infra apply`` heals it),
``scale`` (to 1 or 5 members) and ``roll`` (change a flag: every member is replaced in turn).
Writes are interleaved between the steps. After every step the cluster has exactly the declared
members, all started and healthy, and every write etcd acknowledged so far is still there.

With so few examples a rule-based state machine mostly draws its simplest sequence (the same rule
again and again); drawing a permutation of the operations makes every example cover all of them,
so two examples stay well inside the suite's time budget. ``roll`` on a one-member cluster must be
refused (replacing the only member would lose every key) and change nothing.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from plugins.etcd.client import EtcdClient, EtcdError
from tests.etcd.conftest import EtcdStack, destroy_and_check

pytestmark = [pytest.mark.e2e, pytest.mark.etcd]

SNAPSHOT_COUNTS = (5000, 10000, 20000)


class Operator:
    """Drives one stack and remembers every write etcd acknowledged."""

    def __init__(self, stack: EtcdStack) -> None:
        self.stack = stack
        self.acked: dict[str, str] = {}
        self.writes = 0
        self.snapshot_count = SNAPSHOT_COUNTS[1]
        self._client: EtcdClient | None = None

    @property
    def client(self) -> EtcdClient:
        if self._client is None:
            self._client = self.stack.client(timeout=3)
        return self._client

    def write(self, count: int) -> None:
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

    def bootstrap(self) -> None:
        self.stack.write(size=3, flags={"snapshot-count": self.snapshot_count})
        self.stack.apply()

    def kill(self, which: int) -> None:
        if self.stack.size < 3:
            return  # a one-member cluster cannot survive a kill; test_cluster covers quorum loss
        self.stack.kill(f"etcd-{which % self.stack.size}")
        self.stack.apply()

    def scale(self, size: int) -> None:
        self.stack.write(size=size)
        self.stack.apply()

    def roll(self, step: int) -> None:
        old = self.snapshot_count
        new = SNAPSHOT_COUNTS[(SNAPSHOT_COUNTS.index(old) + step) % len(SNAPSHOT_COUNTS)]
        self.stack.write(flags={"snapshot-count": new})
        if self.stack.size == 1:
            before = {r["name"]: r["id"] for r in self.stack.records()}
            out = self.stack.infra("apply", "--yes")
            assert out.returncode != 0
            assert "only member" in out.stdout + out.stderr
            assert {r["name"]: r["id"] for r in self.stack.records()} == before
            self.stack.write(flags={"snapshot-count": old})
            return
        self.stack.apply()
        self.snapshot_count = new
        specs = {r["labels"]["infra-spec"] for r in self.stack.records()}
        assert len(specs) == 1, f"every member runs the new spec, found {specs}"

    def _read_all(self, endpoints: list[str]) -> dict[str, str]:
        """Every ``sm/`` key, from the first member that answers (one just healed may still be busy)."""
        last: EtcdError | None = None
        for ep in endpoints:
            try:
                return self.client.get_prefix(ep, "sm/")
            except EtcdError as exc:
                last = exc
        raise AssertionError(f"no member answered a read: {last}")

    def check(self) -> None:
        members = self.stack.member_list(self.client)
        assert len(members.members) == self.stack.size
        assert all(m.started for m in members.members)
        endpoints = self.stack.endpoints()
        assert len(endpoints) == self.stack.size
        assert all(self.client.health(ep) for ep in endpoints)
        stored = self._read_all(endpoints)
        lost = sorted(k for k, v in self.acked.items() if stored.get(k) != v)
        assert not lost, f"acknowledged writes lost: {lost[:5]}"


def test_kills_scales_and_rolls_never_lose_an_acknowledged_write(
    tmp_path_factory: pytest.TempPathFactory, etcd_binaries: None
) -> None:
    @settings(
        max_examples=1,  # one drawn sequence per run (suite time); each run draws another
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        order=st.permutations(["kill", "scale", "roll"]),
        size=st.sampled_from([5, 1]),
        victim=st.integers(0, 4),
        step=st.integers(1, len(SNAPSHOT_COUNTS) - 1),
        writes=st.lists(st.integers(1, 8), min_size=3, max_size=3),
    )
    def sequence(order: list[str], size: int, victim: int, step: int, writes: list[int]) -> None:
        op = Operator(EtcdStack(tmp_path_factory.mktemp("etcd-seq")))
        try:
            op.bootstrap()
            op.write(5)
            op.check()
            for name, count in zip(order, writes, strict=True):
                if name == "kill":
                    op.kill(victim)
                elif name == "scale":
                    op.scale(size)
                else:
                    op.roll(step)
                op.check()
                op.write(count)
                op.check()
        finally:
            destroy_and_check(op.stack)

    sequence()
