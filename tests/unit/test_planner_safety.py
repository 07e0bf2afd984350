"""The planner's first rule: nothing is deleted that the user did not clearly ask to delete.

Undeclared groups are kept, protected groups are never deleted whole, remediation has limits,
pauses and targets hold changes, and labels change in place. One test per rule, then hypothesis
properties over random worlds with the new inputs (undeclared groups, protection, limits, first
sightings): no plan ever deletes an undeclared or protected group, and no plan replaces more
unhealthy members than the limit allows.
"""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.model import (
    LABEL_POLICY,
    LABEL_PROTECT,
    LABEL_ROLE,
    Health,
    Instance,
    InstanceStatus,
    MemberSpec,
    Service,
)
from reconciler.core.plan import Action, Plan, Reason
from reconciler.core.planner import Conditions, GroupDesire, plan
from reconciler.core.stack import Remediation
from reconciler.kit.role import UpdatePolicy

STACK = "demo"
NOW = 1_000_000.0


def labels_for(group: str, policy: UpdatePolicy = UpdatePolicy.CATTLE, protect: bool = False,
               **user: str) -> dict[str, str]:
    out = {LABEL_ROLE: "etcd" if policy is UpdatePolicy.QUORUM else "command", LABEL_POLICY: policy.value, **user}
    if protect:
        out[LABEL_PROTECT] = "true"
    return out


def member(name: str, group: str = "web", *, policy: UpdatePolicy = UpdatePolicy.CATTLE, protect: bool = False,
           version: str = "v1", **user: str) -> MemberSpec:
    spec = MemberSpec(stack=STACK, group=group, member=name, role="command",
                      services=(Service(name="svc", image=f"img:{version}", command=("run",)),))
    return spec.with_labels(labels_for(group, policy, protect, **user))


def inst(spec: MemberSpec, iid: str | None = None, status: InstanceStatus = InstanceStatus.RUNNING,
         created_at: float | None = None) -> Instance:
    return Instance(id=iid or f"i-{spec.member}", name=spec.name, labels=spec.labels, status=status,
                    created_at=created_at)


def desire(*members: MemberSpec, group: str = "web", policy: UpdatePolicy = UpdatePolicy.CATTLE,
           protect: bool = False, remediation: Remediation | None = None, removed: bool = False,
           **user: str) -> GroupDesire:
    return GroupDesire(group, policy, list(members), labels=labels_for(group, policy, protect, **user),
                       remediation=remediation or Remediation(), removed=removed)


def acted(p: Plan) -> list[tuple[str, str, str]]:
    return [(c.action.value, c.member, c.reason.value) for c in p.actionable]


# -- undeclared groups ------------------------------------------------------------------------------


def test_a_group_the_file_no_longer_declares_is_kept_and_reported() -> None:
    etcd = [member(f"etcd-{i}", "etcd", policy=UpdatePolicy.QUORUM) for i in range(3)]
    typo = [member(f"etdc-{i}", "etdc", policy=UpdatePolicy.QUORUM) for i in range(3)]
    p = plan(STACK, [desire(*typo, group="etdc", policy=UpdatePolicy.QUORUM)], [inst(m) for m in etcd])
    assert not [c for c in p.changes if c.group == "etcd"], "an undeclared group lost a member"
    (kept,) = p.undeclared
    assert (kept.group, kept.members, kept.role, kept.policy) == ("etcd", 3, "etcd", "quorum")
    assert "group etcd (etcd) is no longer declared: 3 members kept" in kept.message
    assert p.to_json()["undeclared"][0]["members"] == 3


def test_instances_made_before_roles_were_recorded_are_kept_too() -> None:
    old = Instance(id="i-old", name="demo-db-db-0-1234abcd",
                   labels={"infra-stack": STACK, "infra-group": "db", "infra-member": "db-0", "infra-spec": "1234abcd"})
    p = plan(STACK, [], [old])
    assert p.empty and [(u.group, u.role) for u in p.undeclared] == [("db", None)]


def test_a_removed_group_is_deleted_through_its_policy() -> None:
    etcd = [member(f"etcd-{i}", "etcd", policy=UpdatePolicy.QUORUM) for i in range(3)]
    p = plan(STACK, [desire(group="etcd", policy=UpdatePolicy.QUORUM, removed=True)], [inst(m) for m in etcd])
    (gp,) = p.groups
    assert gp.policy == "quorum" and not gp.bootstrap
    assert acted(p) == [("delete", f"etcd-{i}", "not wanted") for i in (2, 1, 0)]


# -- protection ----------------------------------------------------------------------------------


def test_a_protected_group_is_never_destroyed_or_removed() -> None:
    ms = [member(f"web-{i}", protect=True) for i in range(2)]
    world = [inst(m) for m in ms]
    destroy = plan(STACK, [desire(*ms, protect=True)], world, destroy=True)
    assert destroy.empty and "group web is protected" in destroy.blocked[0]
    removed = plan(STACK, [desire(group="web", removed=True)], world)
    assert removed.empty and removed.blocked


def test_a_protected_group_still_heals_rolls_and_scales_in() -> None:
    ms = [member(f"web-{i}", protect=True) for i in range(3)]
    world = [inst(ms[0]), inst(ms[1], status=InstanceStatus.DEAD), inst(ms[2])]
    p = plan(STACK, [desire(ms[0], ms[1], protect=True)], world)
    assert acted(p) == [("replace", "web-1", "unhealthy"), ("delete", "web-2", "not wanted")]
    assert not p.blocked


def test_protection_and_labels_change_in_place() -> None:
    ms = [member(f"web-{i}") for i in range(2)]
    world = [inst(m) for m in ms]
    p = plan(STACK, [desire(*ms, protect=True, team="blue")], world)
    assert acted(p) == [("update", "web-0", "labels changed"), ("update", "web-1", "labels changed")]
    assert p.changes[0].detail == f"labels: {LABEL_PROTECT}, team"
    lifted = plan(STACK, [desire(*ms)], [inst(m.with_labels(labels_for("web", protect=True))) for m in ms])
    assert [c.detail for c in lifted.changes] == [f"labels: {LABEL_PROTECT}"] * 2
    assert plan(STACK, [desire(*ms, protect=True)], world, conditions=Conditions(in_place=False)).empty


# -- remediation limits ----------------------------------------------------------------------------


def test_when_every_member_fails_together_nothing_is_replaced() -> None:
    ms = [member(f"api-{i}") for i in range(5)]
    world = [inst(m) for m in ms]
    sick = {i.id: Health.UNHEALTHY for i in world[:4]}
    p = plan(STACK, [desire(*ms)], world, sick)
    assert acted(p) == [] and len(p.held) == 4
    assert p.held[0].held is not None and p.held[0].held.startswith("remediation held: 4 of 5 unhealthy, limit 40%")
    two = plan(STACK, [desire(*ms)], world, {i.id: Health.UNHEALTHY for i in world[:2]})
    assert len(acted(two)) == 2  # 40% of 5


def test_one_failed_probe_replaces_nothing_until_unhealthy_after() -> None:
    (m,) = ms = [member("api-0")]
    world = [inst(m, created_at=NOW - 3600)]
    sick = {world[0].id: Health.UNHEALTHY}
    early = plan(STACK, [desire(*ms)], world, sick, conditions=Conditions(now=NOW, first_unhealthy={}))
    assert acted(early) == [] and "unhealthy for 0s" in str(early.held[0].held)
    later = plan(STACK, [desire(*ms)], world, sick,
                 conditions=Conditions(now=NOW, first_unhealthy={world[0].id: NOW - 11}))
    assert acted(later) == [("replace", "api-0", "unhealthy")]
    by_hand = plan(STACK, [desire(*ms)], world, sick)  # no time: a person's apply
    assert acted(by_hand) == [("replace", "api-0", "unhealthy")]


def test_a_new_member_is_not_judged_within_its_startup_grace() -> None:
    m = member("api-0")
    young = inst(m, created_at=NOW - 5)
    p = plan(STACK, [desire(m)], [young], {young.id: Health.UNHEALTHY},
             conditions=Conditions(now=NOW, first_unhealthy={young.id: NOW - 100}))
    assert acted(p) == [] and "starting up" in str(p.held[0].held)
    dead = inst(m, created_at=NOW - 5, status=InstanceStatus.DEAD)
    assert acted(plan(STACK, [desire(m)], [dead], conditions=Conditions(now=NOW))) == [("replace", "api-0", "unhealthy")]


def test_a_crash_looping_member_is_held() -> None:
    m = member("api-0")
    dead = inst(m, status=InstanceStatus.DEAD)
    looping = Conditions(now=NOW, replaced={("web", "api-0"): [NOW - 300, NOW - 200, NOW - 100]})
    p = plan(STACK, [desire(m)], [dead], conditions=looping)
    assert acted(p) == [] and "crash loop: replaced 3 times" in str(p.held[0].held)
    old = Conditions(now=NOW, replaced={("web", "api-0"): [NOW - 3000, NOW - 2000, NOW - 100]})
    assert acted(plan(STACK, [desire(m)], [dead], conditions=old)) == [("replace", "api-0", "unhealthy")]


def test_a_stopped_member_is_left_alone() -> None:
    m = member("api-0")
    p = plan(STACK, [desire(m)], [inst(m, status=InstanceStatus.STOPPED)])
    assert acted(p) == [] and str(p.held[0].held).startswith("stopped: left alone")


# -- pause, targets, replace ---------------------------------------------------------------------------


def test_a_pause_holds_every_change_of_the_stack_or_group() -> None:
    a, b = member("web-0"), member("db-0", "db")
    world = [inst(a, status=InstanceStatus.DEAD)]
    stack_paused = plan(STACK, [desire(a), desire(b, group="db")], world,
                        conditions=Conditions(paused={"": "maintenance window"}))
    assert acted(stack_paused) == [] and {c.held for c in stack_paused.changes} == {"paused: maintenance window"}
    group_paused = plan(STACK, [desire(a), desire(b, group="db")], world,
                        conditions=Conditions(paused={"web": "debugging"}))
    assert acted(group_paused) == [("create", "db-0", "missing")]


def test_targets_and_requested_replacements() -> None:
    web = [member(f"web-{i}") for i in range(2)]
    db = member("db-0", "db")
    world = [inst(web[0]), inst(web[1])]
    targeted = plan(STACK, [desire(*web), desire(db, group="db")], world,
                    conditions=Conditions(targets=frozenset({("web", "web-1")}), replace=frozenset({("web", "web-1")})))
    assert acted(targeted) == [("replace", "web-1", "replace requested")]
    assert [(c.member, c.held) for c in targeted.held] == [("db-0", "not targeted")]


# -- properties ------------------------------------------------------------------------------------

versions = st.sampled_from(["v1", "v2"])
statuses = st.sampled_from([InstanceStatus.RUNNING, InstanceStatus.RUNNING, InstanceStatus.DEAD,
                            InstanceStatus.PENDING, InstanceStatus.STOPPED])


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[GroupDesire], list[Instance], dict[str, Health], Conditions]:
    names = ["web", "db", "etcd", "old", "older"]
    declared = draw(st.lists(st.sampled_from(names[:3]), unique=True, max_size=3))
    removed = draw(st.lists(st.sampled_from(["old", "older"]), unique=True, max_size=2))
    desires = []
    for g in declared:
        policy = UpdatePolicy.QUORUM if g == "etcd" else UpdatePolicy.CATTLE
        protect = draw(st.booleans())
        rem = Remediation(max_unhealthy=draw(st.sampled_from([0, 1, 2, "40%", "100%"])),
                          unhealthy_after=draw(st.sampled_from([0.0, 10.0])))
        desires.append(desire(*[member(f"{g}-{i}", g, policy=policy, protect=protect, version=draw(versions))
                                for i in range(draw(st.integers(0, 5)))],
                              group=g, policy=policy, protect=protect, remediation=rem))
    for g in removed:
        desires.append(desire(group=g, removed=True))
    obs: list[Instance] = []
    health: dict[str, Health] = {}
    first: dict[str, float] = {}
    for k in range(draw(st.integers(0, 14))):
        g = draw(st.sampled_from(names))
        spec = member(f"{g}-{draw(st.integers(0, 6))}", g, version=draw(versions), protect=draw(st.booleans()))
        i = inst(spec, iid=f"i{k}", status=draw(statuses), created_at=draw(st.sampled_from([None, NOW - 5, NOW - 999])))
        obs.append(i)
        health[i.id] = draw(st.sampled_from(list(Health)))
        if draw(st.booleans()):
            first[i.id] = NOW - draw(st.sampled_from([1.0, 100.0]))
    cond = Conditions(now=draw(st.sampled_from([None, NOW])), first_unhealthy=first)
    return desires, obs, health, cond


def deleted_groups(p: Plan, world: list[Instance]) -> set[str]:
    """Groups every one of whose instances the plan deletes or replaces away."""
    gone: dict[str, int] = {}
    for c in p.actionable:
        if c.before is not None and c.action is Action.DELETE:
            gone[c.group] = gone.get(c.group, 0) + 1
    sizes: dict[str, int] = {}
    for i in world:
        sizes[i.group or ""] = sizes.get(i.group or "", 0) + 1
    return {g for g, n in gone.items() if n == sizes[g]}


@settings(max_examples=400, deadline=None)
@given(worlds())
def test_no_plan_deletes_an_undeclared_or_protected_group(world: tuple[list[GroupDesire], list[Instance],
                                                                      dict[str, Health], Conditions]) -> None:
    desires, obs, health, cond = world
    declared = {d.name for d in desires if not d.removed}
    removed = {d.name for d in desires if d.removed}
    for destroy in (False, True):
        p = plan(STACK, desires, obs, health, destroy=destroy, conditions=cond)
        for c in p.actionable:
            if c.action is Action.DELETE and c.reason is Reason.NOT_WANTED and c.group not in declared:
                assert destroy or c.group in removed, f"undeclared group {c.group} lost {c.member}"
        protected = {i.group for i in obs if i.protected}
        for g in deleted_groups(p, obs):
            if destroy or g not in declared:
                assert g not in protected, f"protected group {g} deleted whole"


@settings(max_examples=400, deadline=None)
@given(worlds())
def test_no_plan_replaces_more_unhealthy_members_than_allowed(world: tuple[list[GroupDesire], list[Instance],
                                                                          dict[str, Health], Conditions]) -> None:
    desires, obs, health, cond = world
    p = plan(STACK, desires, obs, health, conditions=cond)
    by_group: Mapping[str, GroupDesire] = {d.name: d for d in desires}
    for gp in p.groups:
        d = by_group[gp.group]
        replaced = [c for c in gp.actionable if c.reason is Reason.UNHEALTHY]
        size = len(d.members) or len({i.member for i in obs if i.group == gp.group})
        assert len(replaced) <= d.remediation.allowed(size)
        for c in replaced:
            assert c.before is not None and c.before.status not in (InstanceStatus.STOPPED, InstanceStatus.STOPPING)
            if cond.now is not None and c.before.alive:  # a failing probe waited unhealthy_after
                seen = cond.first_unhealthy.get(c.before.id, cond.now)
                assert cond.now - seen >= d.remediation.unhealthy_after
