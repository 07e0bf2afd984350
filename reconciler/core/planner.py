"""The planner: a pure function from desired members and observed instances to a :class:`Plan`.

No I/O, no clock, no randomness: the same inputs give the same plan, which is what lets
``apply --plan FILE`` refuse a stale plan by re-planning and comparing. Called by
:mod:`reconciler.engine.engine` once per pass (``plan``, ``apply``, each daemon tick).

Rules, per declared group (instances without the stack's ownership labels are never touched):

* a desired member with no instance → **create** (missing);
* an instance whose member is no longer desired → **delete** (not wanted), highest ids first;
* several instances of one member → keep the best (current spec, alive, healthy), **delete**
  the rest (duplicate: e.g. a create whose response was lost and was retried elsewhere);
* an instance that is not alive, or that its role calls unhealthy → **replace** (unhealthy);
  health ``unknown`` is left alone — never destroy what cannot be judged;
* an instance built from another spec → **replace** (spec changed).

A group the stack no longer declares is deleted whole. Order inside a group: unhealthy (dead first)
replaces, duplicate and unwanted deletes, creates, then spec rolls — so a quorum group first
removes what is dead, then shrinks, grows, and rolls one member at a time. Replace runs
delete-first for quorum groups (remove before add) and whenever the new instance would reuse
the old one's name; create-first otherwise (cattle surge).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from reconciler.core.model import LABEL_MEMBER, LABEL_SPEC, Health, Instance, InstanceStatus, MemberSpec, UpdatePolicy
from reconciler.core.plan import Action, Change, GroupPlan, Order, Plan, Reason

_NUM = re.compile(r"(\d+)")


@lru_cache(maxsize=1 << 18)
def member_sort_key(member: str) -> tuple[object, ...]:
    """Natural order: ``etcd-2`` before ``etcd-10``. Cached: every pass sorts the same ids (room
    for a quarter of a million members: a cache smaller than the stack is emptied every pass)."""
    return tuple(int(p) if p.isdigit() else p for p in _NUM.split(member))


@dataclass(frozen=True)
class GroupDesire:
    """A declared group's desired members and how it may be changed."""

    name: str
    policy: UpdatePolicy
    members: Sequence[MemberSpec]


def _keeper_rank(inst: Instance, spec: str, health: Mapping[str, Health]) -> tuple[int, int, int, str]:
    return (
        0 if inst.spec_hash == spec else 1,
        0 if inst.alive else 1,
        0 if health.get(inst.id) != Health.UNHEALTHY else 1,
        inst.id,
    )


def _unhealthy(inst: Instance, health: Mapping[str, Health]) -> str | None:
    """Why ``inst`` counts as unhealthy, or None when it is healthy or cannot be judged."""
    if inst.status in (InstanceStatus.DEAD, InstanceStatus.STOPPED, InstanceStatus.STOPPING):
        return inst.detail or f"instance is {inst.status.value}"
    if inst.alive and health.get(inst.id) == Health.UNHEALTHY:
        return inst.detail or "failing its health check"
    return None


def _plan_group(
    desire: GroupDesire, instances: Sequence[Instance], health: Mapping[str, Health]
) -> GroupPlan:
    quorum = desire.policy == UpdatePolicy.QUORUM
    wanted = {m.member: m for m in desire.members}
    by_member: dict[str, list[Instance]] = defaultdict(list)
    for inst in instances:
        by_member[inst.labels.get(LABEL_MEMBER, "")].append(inst)

    unhealthy: list[Change] = []
    deletes: list[Change] = []
    creates: list[Change] = []
    rolls: list[Change] = []

    for member in sorted((m for m in by_member if m not in wanted), key=member_sort_key, reverse=True):
        for inst in sorted(by_member[member], key=lambda i: i.id):
            deletes.append(Change(Action.DELETE, desire.name, member, Reason.NOT_WANTED, before=inst))

    # Members are visited in the role's order and the changes sorted at the end: a no-op pass over
    # 10,000 members then sorts nothing. (Enum members and methods in locals: this loop is the
    # whole cost of a no-op plan.)
    running, sick, verdict = InstanceStatus.RUNNING, Health.UNHEALTHY, health.get
    for member, spec in wanted.items():
        found = by_member.get(member)
        if not found:
            creates.append(Change(Action.CREATE, desire.name, member, Reason.MISSING, after=spec))
            continue
        if len(found) == 1:  # the usual case: nothing to rank
            keeper, extras = found[0], []
        else:
            ranked = sorted(found, key=lambda i: _keeper_rank(i, spec.spec_hash, health))
            keeper, extras = ranked[0], ranked[1:]
        for inst in extras:
            deletes.append(Change(Action.DELETE, desire.name, member, Reason.DUPLICATE, before=inst))
        current = keeper.labels.get(LABEL_SPEC) == spec.spec_hash
        if current and keeper.status is running and verdict(keeper.id) is not sick:
            continue  # the usual case of a no-op pass: a running, current, not unhealthy member
        why = _unhealthy(keeper, health)
        if why is None and current:
            continue
        order = Order.DELETE_FIRST if quorum or keeper.name == spec.name else Order.CREATE_FIRST
        if why is not None:
            unhealthy.append(
                Change(
                    Action.REPLACE, desire.name, member, Reason.UNHEALTHY,
                    before=keeper, after=spec, order=order, detail=why,
                )
            )
        else:
            rolls.append(
                Change(
                    Action.REPLACE, desire.name, member, Reason.SPEC_CHANGED,
                    before=keeper, after=spec, order=order,
                    detail=f"spec {keeper.spec_hash} → {spec.spec_hash}",
                )
            )
    by_key = lambda c: member_sort_key(c.member)  # noqa: E731
    for found_changes in (unhealthy, creates, rolls):
        found_changes.sort(key=by_key)
    # deletes of duplicates join the not-wanted ones, in member order (not-wanted first, as before)
    dupes = sorted((c for c in deletes if c.reason is Reason.DUPLICATE), key=by_key)
    deletes = [c for c in deletes if c.reason is not Reason.DUPLICATE] + dupes

    # Dead instances first: a member that merely fails a health check (e.g. during the leader
    # election a death causes) must not be replaced before the member that really died.
    unhealthy.sort(key=lambda c: 0 if c.before is not None and not c.before.alive else 1)
    changes = tuple(unhealthy + deletes + creates + rolls)
    bootstrap = quorum and not instances and bool(creates)
    return GroupPlan(desire.name, desire.policy.value, changes, bootstrap=bootstrap)


def plan(
    stack: str,
    groups: Sequence[GroupDesire],
    observed: Sequence[Instance],
    health: Mapping[str, Health] | None = None,
    *,
    destroy: bool = False,
) -> Plan:
    """Diff ``groups`` (desired) against ``observed`` for ``stack``. Pure; see module docstring.

    ``health`` maps instance ids to their role's verdict (missing means unknown). With
    ``destroy`` every owned instance is deleted, in reverse group order, as cattle.
    """
    health = health or {}
    owned = [i for i in observed if i.owned_by(stack)]
    by_group: dict[str, list[Instance]] = defaultdict(list)
    for inst in owned:
        by_group[inst.group or ""].append(inst)

    if destroy:
        order = [g.name for g in reversed(groups)] + sorted(set(by_group) - {g.name for g in groups})
        plans = []
        for name in order:
            insts = sorted(by_group.get(name, []), key=lambda i: (member_sort_key(i.member or ""), i.id))
            changes = tuple(
                Change(Action.DELETE, name, i.member or "", Reason.NOT_WANTED, before=i) for i in insts
            )
            if changes:
                plans.append(GroupPlan(name, UpdatePolicy.CATTLE.value, changes))
        return Plan(stack=stack, groups=tuple(plans), observed=len(owned), destroy=True)

    plans = [_plan_group(g, by_group.get(g.name, []), health) for g in groups]
    declared = {g.name for g in groups}
    for name in sorted(set(by_group) - declared):
        orphan = GroupDesire(name, UpdatePolicy.CATTLE, ())
        plans.append(_plan_group(orphan, by_group[name], health))
    return Plan(stack=stack, groups=tuple(p for p in plans if p.changes), observed=len(owned))
