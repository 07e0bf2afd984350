"""The executor through the engine, on the in-process memory provider.

Real provider plugin, real planner; the roles here are small test roles that record what the
executor asked of them, so ordering and gating are observable.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

import pytest

from plugins.command import CommandConfig, CommandRole
from providers.memory import MemoryProvider, world
from reconciler.core.errors import PermanentError, QuorumLostError, RoleTransientError, TransientError
from reconciler.core.model import Instance, InstanceStatus, MemberSpec, stack_selector
from reconciler.core.stack import Group, Stack
from reconciler.engine.engine import Engine
from reconciler.kit.retry import RetryPolicy
from reconciler.kit.role import Role, RoleConfig, RoleContext, UpdatePolicy

FAST = RetryPolicy(attempts=30, base=0.001, cap=0.01, change_timeout=10)


def memory(**config: Any) -> MemoryProvider:
    return MemoryProvider.open({"world": uuid.uuid4().hex, **config}, stack="t", state_dir=Path("/tmp"))


def cattle_engine(provider: Any, size: int, tmp_path: Path, *, concurrency: int = 50,
                  retry: RetryPolicy = FAST) -> Engine:
    stack = Stack(name="t", provider="memory", groups=(Group(name="web", size=size, config={"command": ["x"]}),))
    return Engine(stack, provider, {"web": CommandRole()}, {"web": CommandConfig(command=["x"])},
                  state_dir=tmp_path, concurrency=concurrency, retry=retry)


class Recorder(Role):
    """A quorum role that records hook calls and checks one-at-a-time."""

    name: ClassVar[str] = "recorder"
    policy: ClassVar[UpdatePolicy] = UpdatePolicy.QUORUM
    config_model: ClassVar[type[RoleConfig]] = RoleConfig

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.quorum_lost = False
        self.flaky_preflight = 0

    def expand(self, ctx: RoleContext) -> list[MemberSpec]:
        return [self.member_base(ctx, i) for i in range(ctx.group.size)]

    def preflight(self, ctx: RoleContext) -> None:
        if self.quorum_lost:
            raise QuorumLostError("2 of 3 members are dead")
        if self.flaky_preflight:
            self.flaky_preflight -= 1
            raise RoleTransientError("etcdserver: unhealthy cluster")
        self.calls.append(f"preflight({len(ctx.instances)})")

    def before_create(self, ctx: RoleContext, member: MemberSpec) -> MemberSpec:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.calls.append(f"add {member.member} bootstrap={ctx.bootstrapping}")
        time.sleep(0.01)
        with self.lock:
            self.in_flight -= 1
        return member

    def after_create(self, ctx: RoleContext, member: MemberSpec, instance: Instance) -> None:
        self.calls.append(f"healthy {member.member} ({len(ctx.instances)} exist)")

    def before_delete(self, ctx: RoleContext, instance: Instance) -> None:
        self.calls.append(f"remove {instance.member}")


def quorum_engine(provider: Any, role: Recorder, size: int, tmp_path: Path) -> Engine:
    stack = Stack(name="t", provider="memory", groups=(Group(name="etcd", size=size, role="recorder"),))
    return Engine(stack, provider, {"etcd": role}, {"etcd": RoleConfig()}, state_dir=tmp_path, retry=FAST)


def test_transient_errors_are_retried_until_converged_without_duplicates(tmp_path: Path) -> None:
    provider = memory(error_rate=0.3, seed=7)
    engine = cattle_engine(provider, 200, tmp_path)
    for _ in range(5):  # listing itself may fail transiently: a pass is retried by its caller
        try:
            plan = engine.plan()
            break
        except TransientError:
            continue
    result = engine.apply(plan)
    assert result.ok, result.failed[:3]
    names = [i.name for i in world(provider.config.world).instances.values()]
    assert len(names) == 200 and len(set(names)) == 200
    assert provider.world.calls["create"] > 200  # some creates really failed and were retried


def test_concurrency_is_bounded_and_used(tmp_path: Path) -> None:
    provider = memory(latency=0.02)
    peak = 0
    now = 0
    lock = threading.Lock()
    create = provider.create

    def tracking(spec: MemberSpec) -> Instance:
        nonlocal peak, now
        with lock:
            now += 1
            peak = max(peak, now)
        try:
            return create(spec)
        finally:
            with lock:
                now -= 1

    provider.create = tracking  # type: ignore[method-assign]
    engine = cattle_engine(provider, 60, tmp_path, concurrency=7)
    assert engine.apply(engine.plan()).ok
    assert peak == 7


def test_a_permanent_error_fails_its_change_and_the_others_still_happen(tmp_path: Path) -> None:
    provider = memory()
    create = provider.create

    def picky(spec: MemberSpec) -> Instance:
        if spec.member == "web-3":
            raise PermanentError("InvalidAMIID.NotFound: the image does not exist")
        return create(spec)

    provider.create = picky  # type: ignore[method-assign]
    engine = cattle_engine(provider, 6, tmp_path)
    result = engine.apply(engine.plan())
    assert [(c.member, "InvalidAMIID" in str(e)) for c, e in result.failed] == [("web-3", True)]
    assert len(result.applied) == 5


def test_a_change_that_keeps_failing_transiently_stops_at_its_timeout(tmp_path: Path) -> None:
    provider = memory()

    def throttled(spec: MemberSpec) -> Instance:
        raise TransientError("Throttling: Rate exceeded")

    provider.create = throttled  # type: ignore[method-assign]
    retry = RetryPolicy(attempts=1000, base=0.01, cap=0.05, change_timeout=0.5)
    engine = cattle_engine(provider, 1, tmp_path, retry=retry)
    start = time.monotonic()
    result = engine.apply(engine.plan())
    assert 0.4 < time.monotonic() - start < 3
    assert isinstance(result.failed[0][1], TransientError)


def test_a_provider_that_returns_something_else_is_reported_as_a_bug(tmp_path: Path) -> None:
    provider = memory()
    create = provider.create

    def liar(spec: MemberSpec) -> Instance:
        return create(spec).model_copy(update={"name": "something-else"})

    provider.create = liar  # type: ignore[method-assign]
    engine = cattle_engine(provider, 1, tmp_path)
    result = engine.apply(engine.plan())
    assert "bug" in str(result.failed[0][1])


def test_quorum_bootstrap_creates_together_then_gates_each(tmp_path: Path) -> None:
    provider, role = memory(), Recorder()
    engine = quorum_engine(provider, role, 3, tmp_path)
    plan = engine.plan()
    assert plan.plan.groups[0].bootstrap
    assert engine.apply(plan).ok
    adds = [c for c in role.calls if c.startswith("add")]
    assert all(c.endswith("bootstrap=True") for c in adds) and len(adds) == 3
    # health gates run only once all three exist (a static cluster needs its majority up)
    assert [c for c in role.calls if c.startswith("healthy")] == [
        "healthy etcd-0 (3 exist)", "healthy etcd-1 (3 exist)", "healthy etcd-2 (3 exist)"]


def test_quorum_changes_run_one_at_a_time_with_preflight_before_each(tmp_path: Path) -> None:
    provider, role = memory(), Recorder()
    quorum_engine(provider, role, 3, tmp_path).apply(quorum_engine(provider, role, 3, tmp_path).plan())
    role.calls.clear()
    role.max_in_flight = 0
    dead = next(i for i in provider.list(stack_selector("t")) if i.member == "etcd-1")
    provider.world.set_status(dead.id, InstanceStatus.DEAD)
    role.flaky_preflight = 2  # "unhealthy cluster" twice: retried, not fatal
    engine = quorum_engine(provider, role, 5, tmp_path)
    result = engine.apply(engine.plan())
    assert result.ok, result.failed
    assert role.max_in_flight == 1
    assert role.calls == [
        "preflight(3)", "remove etcd-1", "add etcd-1 bootstrap=False", "healthy etcd-1 (3 exist)",
        "preflight(3)", "add etcd-3 bootstrap=False", "healthy etcd-3 (4 exist)",
        "preflight(4)", "add etcd-4 bootstrap=False", "healthy etcd-4 (5 exist)",
    ]


def test_quorum_lost_changes_nothing(tmp_path: Path) -> None:
    provider, role = memory(), Recorder()
    engine = quorum_engine(provider, role, 3, tmp_path)
    engine.apply(engine.plan())
    for inst in provider.list(stack_selector("t"))[:2]:
        provider.world.set_status(inst.id, InstanceStatus.DEAD)
    role.quorum_lost = True
    before = {i.id for i in provider.list(stack_selector("t"))}
    result = engine.apply(engine.plan())
    assert result.quorum_lost is not None and "2 of 3" in str(result.quorum_lost)
    assert not result.applied
    assert {i.id for i in provider.list(stack_selector("t"))} == before


def test_stop_event_starts_no_new_change(tmp_path: Path) -> None:
    provider = memory(latency=0.05)
    stop = threading.Event()
    engine = cattle_engine(provider, 100, tmp_path, concurrency=5)
    timer = threading.Timer(0.12, stop.set)
    timer.start()
    result = engine.apply(engine.plan(), stop=stop)
    timer.join()
    assert result.skipped, "everything ran despite the stop request"
    assert len(result.applied) + len(result.skipped) == 100 and not result.failed
    assert len(provider.list(stack_selector("t"))) == len(result.applied)


def test_reconcile_returns_a_result_that_says_when_to_come_back(tmp_path: Path) -> None:
    provider = memory()
    engine = cattle_engine(provider, 3, tmp_path)
    first = engine.reconcile()
    assert first.ok and first.applied is not None and len(first.applied.applied) == 3
    # it changed something: come back at once to confirm the world is as planned
    assert first.requeue_after == 0.0 and first.outcome == "applied"
    assert first.observed == {"web": 0}  # what the pass saw before it changed anything
    again = engine.reconcile()
    assert again.ok and again.plan.empty and again.applied is None
    # nothing to do: the caller's usual interval, and the counts a daemon reports
    assert again.requeue_after is None and again.outcome == "ok" and again.observed == {"web": 3}


def test_a_failed_pass_says_so_and_leaves_the_backoff_to_the_caller(tmp_path: Path) -> None:
    provider = memory(error_rate=1.0)  # every call fails: the listing too, so nothing is known
    engine = cattle_engine(provider, 3, tmp_path)
    failed = engine.reconcile()
    assert not failed.ok and isinstance(failed.error, TransientError) and failed.outcome == "error"
    assert failed.requeue_after is None and failed.applied is None and failed.observed == {}
    assert world(provider.config.world).instances == {}  # and nothing was created


def test_the_planned_pass_is_a_value_apply_needs_nothing_else(tmp_path: Path) -> None:
    provider = memory()
    planner = cattle_engine(provider, 3, tmp_path)
    planned = planner.plan()
    assert [c.member for c in planned.plan.changes] == ["web-0", "web-1", "web-2"]
    assert planned.counts() == {} and planned.refusal is None
    planner.plan()  # planning again changes nothing in the first value
    # another engine of the same stack applies it: no state is carried from plan() to apply()
    result = cattle_engine(provider, 3, tmp_path).apply(planned)
    assert result.ok and len(result.applied) == 3
    assert planned.observed == {}  # apply worked on its own copy of the observation
    assert not hasattr(planner, "_observed")


def test_a_quorum_group_that_lost_its_quorum_is_refused_at_plan_time(tmp_path: Path) -> None:
    provider, role = memory(), Recorder()
    engine = quorum_engine(provider, role, 3, tmp_path)
    assert engine.apply(engine.plan()).ok
    provider.world.set_status(provider.list(stack_selector("t"))[0].id, InstanceStatus.DEAD)
    role.quorum_lost = True
    planned = engine.plan()
    assert isinstance(planned.refusal, QuorumLostError) and len(planned.plan.changes) == 1
    outcome = engine.reconcile()
    assert outcome.outcome == "quorum_lost" and outcome.applied is None
    assert len(provider.list(stack_selector("t"))) == 3  # nothing deleted


@pytest.fixture(autouse=True)
def _no_thread_leaks() -> Any:
    before = {t.ident for t in threading.enumerate()}
    yield
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        extra = [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("infra-")
                 and not t.name.startswith("infra-health")]  # the engine's shared, bounded health threads
        if not extra:
            return
        time.sleep(0.05)
    pytest.fail(f"threads leaked: {extra}")
