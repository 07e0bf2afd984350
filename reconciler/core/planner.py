"""The planner: a pure function from desired members and observed instances to a :class:`Plan`.

No I/O, no clock, no randomness: the same inputs give the same plan, which is what lets
``apply --plan FILE`` refuse a stale plan by re-planning and comparing. Time and memory enter
only as inputs (:class:`Conditions`: the time of the pass, when each member was first seen
unhealthy, its recent replacements, pauses, targets). Called by :mod:`reconciler.engine.engine`
once per pass (``plan``, ``apply``, each daemon tick).

The first rule: **nothing is deleted that the user did not clearly ask to delete.**

* A group found at the provider that the stack file does not declare is **kept** and reported
  (:class:`~reconciler.core.plan.Undeclared`), whatever its instances' labels say; it is deleted
  only when the stack declares it ``removed``, and then as its role deletes it (a quorum group
  one member at a time), like a declared group scaled to zero.
* A group whose members carry ``infra-protect=true`` is never deleted as a whole (destroy,
  removed): the plan lists it in ``blocked`` and holds nothing else back (the CLI refuses to apply
  such a plan). Scale-in, healing and rolling a protected group stay allowed.

Per group (instances without the stack's ownership labels are never touched):

* a desired member with no instance → **create** (missing);
* an instance whose member is no longer desired → **delete** (not wanted), highest ids first;
* several instances of one member → keep the best (current spec, alive, healthy), **delete**
  the rest (duplicate: e.g. a create whose response was lost and was retried elsewhere);
* an instance that is dead, or that its role calls unhealthy → **replace** (unhealthy), within
  the group's :class:`~reconciler.core.stack.Remediation` limits; health ``unknown`` is left
  alone — never destroy what cannot be judged — and so is a *stopped* member (stopped by someone
  for maintenance: held, with the reason);
* an instance built from another spec → **replace** (spec changed);
* a member the user asked to replace (``--replace``) → **replace** (replace requested);
* an instance whose labels (the user's, its role, policy, protection) differ → **update** in
  place, when the provider can.

Remediation limits, held changes shown with their reason: a member failing its health check is
replaced only once it has failed for ``unhealthy_after`` (from its first sighting, which the
daemon remembers between passes) and not within ``startup_grace`` of its creation; a member
replaced ``crash_loop`` times within ``crash_window`` is held; and when more of a group's
members are unhealthy than ``max_unhealthy`` allows, none of them is replaced (a shared
dependency is down; replacing them all at once would only lose what they hold). Without a time
(``Conditions.now`` is None: ``infra apply`` by hand, a person's explicit intent) the two
durations do not apply; the limit and the crash-loop hold do.

Order inside a group: unhealthy (dead first) replaces, requested replaces, duplicate and unwanted
deletes, creates, spec rolls, then in-place updates — so a quorum group first removes what is
dead, then shrinks, grows, and rolls one member at a time. Replace runs delete-first for quorum
groups (remove before add) and whenever the new instance would reuse the old one's name;
create-first otherwise (cattle surge). Finally changes of a paused stack or group, and changes
outside ``--target``, are held.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache

from reconciler.core.model import (
    LABEL_MEMBER,
    LABEL_POLICY,
    LABEL_PROTECT,
    LABEL_ROLE,
    LABEL_SPEC,
    Health,
    Instance,
    InstanceStatus,
    MemberSpec,
    UpdatePolicy,
)
from reconciler.core.plan import Action, Change, GroupPlan, Order, Plan, Reason, Undeclared
from reconciler.core.stack import Remediation

_NUM = re.compile(r"(\d+)")
_DEFAULT_REMEDIATION = Remediation()


@lru_cache(maxsize=1 << 18)
def member_sort_key(member: str) -> tuple[object, ...]:
    """Natural order: ``etcd-2`` before ``etcd-10``. Cached: every pass sorts the same ids (room
    for a quarter of a million members: a cache smaller than the stack is emptied every pass)."""
    return tuple(int(p) if p.isdigit() else p for p in _NUM.split(member))


@dataclass(frozen=True)
class GroupDesire:
    """A group's desired members and how it may be changed.

    ``labels`` are the labels every member should carry besides ownership (role, policy,
    protection, the user's); ``removed``: the stack file removes this group (its members are
    deleted through its role unless it is protected).
    """

    name: str
    policy: UpdatePolicy
    members: Sequence[MemberSpec]
    labels: Mapping[str, str] = field(default_factory=dict)
    remediation: Remediation = _DEFAULT_REMEDIATION
    removed: bool = False


@dataclass(frozen=True)
class Conditions:
    """What the planner knows besides the declaration and the observation: time, memory, intent.

    ``now`` (Unix time) is None for a pass with no memory (``infra apply`` by hand): then
    ``unhealthy_after`` and ``startup_grace`` do not apply. ``first_unhealthy``: instance id → when
    it was first seen unhealthy; ``replaced``: (group, member) → when it was replaced because it
    was unhealthy, recently. ``paused``: group → why (``""`` for the whole stack). ``targets``:
    when set, only changes of these (group, member or None for the whole group) are carried out.
    ``replace``: (group, member) to replace even though healthy and current. ``in_place``: the
    provider can update labels without replacing.
    """

    now: float | None = None
    first_unhealthy: Mapping[str, float] = field(default_factory=dict)
    replaced: Mapping[tuple[str, str], Sequence[float]] = field(default_factory=dict)
    paused: Mapping[str, str] = field(default_factory=dict)
    targets: frozenset[tuple[str, str | None]] | None = None
    replace: frozenset[tuple[str, str]] = frozenset()
    in_place: bool = True


_NO_CONDITIONS = Conditions()


def _keeper_rank(inst: Instance, spec: str, health: Mapping[str, Health]) -> tuple[int, int, int, str]:
    return (
        0 if inst.spec_hash == spec else 1,
        0 if inst.alive else 1,
        0 if health.get(inst.id) != Health.UNHEALTHY else 1,
        inst.id,
    )


def _stopped(inst: Instance) -> bool:
    return inst.status in (InstanceStatus.STOPPED, InstanceStatus.STOPPING)


def _unhealthy(inst: Instance, health: Mapping[str, Health]) -> str | None:
    """Why ``inst`` counts as unhealthy, or None when it is healthy or cannot be judged."""
    if inst.status is InstanceStatus.DEAD or _stopped(inst):
        return inst.detail or f"instance is {inst.status.value}"
    if inst.alive and health.get(inst.id) == Health.UNHEALTHY:
        return inst.detail or "failing its health check"
    return None


#: The labels beyond ownership that infra sets, and so removes when they are no longer wanted.
_MANAGED = (LABEL_ROLE, LABEL_POLICY, LABEL_PROTECT)


def labels_differ(inst: Instance, wanted: Mapping[str, str]) -> list[str]:
    """The label keys to set or remove on ``inst`` so that it carries ``wanted``: every wanted
    label, and none of infra's role, policy or protection labels that is not wanted (protection
    lifted). Other labels (someone else's) are not infra's to remove."""
    have = inst.labels
    for k, v in wanted.items():  # the usual case, once per member of a no-op plan: all current
        if have.get(k) != v:
            break
    else:
        if not any(k in have and k not in wanted for k in _MANAGED):
            return []
    keys = [k for k, v in wanted.items() if have.get(k) != v]
    keys += [k for k in _MANAGED if k in have and k not in wanted]
    return sorted(keys)


def _hold_for_time(inst: Instance, why: str, rem: Remediation, cond: Conditions) -> str | None:
    """Why a member failing its health check is not replaced yet (grace, too recent), or None."""
    if cond.now is None or not inst.alive:
        return None  # by hand, or dead: no waiting
    if inst.created_at is not None and cond.now - inst.created_at < rem.startup_grace:
        return f"starting up: not judged within {rem.startup_grace:g}s of its creation"
    first = cond.first_unhealthy.get(inst.id, cond.now)
    if cond.now - first < rem.unhealthy_after:
        return (f"unhealthy for {cond.now - first:.0f}s; replaced once unhealthy for "
                f"{rem.unhealthy_after:g}s ({why})")
    return None


def _crash_loop(group: str, member: str, rem: Remediation, cond: Conditions) -> str | None:
    times = cond.replaced.get((group, member), ())
    if cond.now is not None:
        times = [t for t in times if cond.now - t <= rem.crash_window]
    if len(times) >= rem.crash_loop:
        return (f"crash loop: replaced {len(times)} times within {rem.crash_window:g}s; held — fix the cause, "
                f"then replace it with 'infra apply --replace {group}/{member}'")
    return None


def _plan_group(desire: GroupDesire, instances: Sequence[Instance], health: Mapping[str, Health],
                cond: Conditions) -> GroupPlan:
    quorum = desire.policy == UpdatePolicy.QUORUM
    rem = desire.remediation
    wanted = {m.member: m for m in desire.members}
    by_member: dict[str, list[Instance]] = defaultdict(list)
    for inst in instances:
        by_member[inst.labels.get(LABEL_MEMBER, "")].append(inst)

    unhealthy: list[Change] = []
    requested: list[Change] = []
    deletes: list[Change] = []
    creates: list[Change] = []
    rolls: list[Change] = []
    updates: list[Change] = []

    for member in sorted((m for m in by_member if m not in wanted), key=member_sort_key, reverse=True):
        for inst in sorted(by_member[member], key=lambda i: i.id):
            deletes.append(Change(Action.DELETE, desire.name, member, Reason.NOT_WANTED, before=inst))

    # Members are visited in the role's order and the changes sorted at the end: a no-op pass over
    # 10,000 members then sorts nothing. (Enum members and methods in locals: this loop is the
    # whole cost of a no-op plan.)
    running, sick, verdict = InstanceStatus.RUNNING, Health.UNHEALTHY, health.get
    labels, forced = desire.labels, cond.replace
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
        order = Order.DELETE_FIRST if quorum or keeper.name == spec.name else Order.CREATE_FIRST
        if forced and (desire.name, member) in forced:
            requested.append(Change(Action.REPLACE, desire.name, member, Reason.REQUESTED, before=keeper,
                                    after=spec, order=order, detail="asked with --replace"))
            continue
        # a running member its role does not call unhealthy needs no closer look (the usual case)
        why = None if keeper.status is running and verdict(keeper.id) is not sick else _unhealthy(keeper, health)
        if why is None and current:  # the usual case of a no-op pass ends here
            keys = labels_differ(keeper, labels) if labels and cond.in_place else []
            if keys:
                updates.append(Change(Action.UPDATE, desire.name, member, Reason.LABELS, before=keeper,
                                      after=spec, detail="labels: " + ", ".join(keys)))
            continue
        if why is not None:
            held: str | None
            if _stopped(keeper):
                held = (f"stopped: left alone (started again, it is judged again; 'infra apply --replace "
                        f"{desire.name}/{member}' replaces it)")
            else:
                held = _crash_loop(desire.name, member, rem, cond) or _hold_for_time(keeper, why, rem, cond)
            unhealthy.append(
                Change(
                    Action.REPLACE, desire.name, member, Reason.UNHEALTHY,
                    before=keeper, after=spec, order=order, detail=why, held=held,
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
    unhealthy = _limit(desire, unhealthy, len(wanted) or len(by_member))
    by_key = lambda c: member_sort_key(c.member)  # noqa: E731
    for found_changes in (unhealthy, requested, creates, rolls, updates):
        found_changes.sort(key=by_key)
    # deletes of duplicates join the not-wanted ones, in member order (not-wanted first, as before)
    dupes = sorted((c for c in deletes if c.reason is Reason.DUPLICATE), key=by_key)
    deletes = [c for c in deletes if c.reason is not Reason.DUPLICATE] + dupes

    # Dead instances first: a member that merely fails a health check (e.g. during the leader
    # election a death causes) must not be replaced before the member that really died.
    unhealthy.sort(key=lambda c: 0 if c.before is not None and c.before.status is InstanceStatus.DEAD else 1)
    changes = tuple(unhealthy + requested + deletes + creates + rolls + updates)
    bootstrap = quorum and not instances and bool(creates)
    return GroupPlan(desire.name, desire.policy.value, changes, bootstrap=bootstrap)


def _limit(desire: GroupDesire, unhealthy: list[Change], size: int) -> list[Change]:
    """Hold every unhealthy replacement of the group when more members are unhealthy than its
    ``max_unhealthy`` allows (stopped members are not counted: someone stopped them)."""
    counted = [c for c in unhealthy if c.before is not None and not _stopped(c.before)]
    allowed = desire.remediation.allowed(size)
    if len(counted) <= allowed:
        return unhealthy
    why = (f"remediation held: {len(counted)} of {size} unhealthy, limit {desire.remediation.limit} — "
           "a shared cause is likely; nothing is replaced until enough recover (or 'infra apply --replace')")
    return [c if c.held is not None else replace(c, held=why) for c in unhealthy]


def _hold(changes: tuple[Change, ...], why: str) -> tuple[Change, ...]:
    return tuple(c if c.held is not None else replace(c, held=why) for c in changes)


def _conditioned(gp: GroupPlan, cond: Conditions) -> GroupPlan:
    """Hold what a pause or ``--target`` excludes."""
    paused = cond.paused.get("", cond.paused.get(gp.group))
    changes = gp.changes
    if paused is not None:
        changes = _hold(changes, f"paused: {paused}" if paused else "paused")
    if cond.targets is not None:
        targets = cond.targets
        changes = tuple(c if c.held is not None or (gp.group, None) in targets or (gp.group, c.member) in targets
                        else replace(c, held="not targeted") for c in changes)
    return gp if changes is gp.changes else replace(gp, changes=changes)


def plan(
    stack: str,
    groups: Sequence[GroupDesire],
    observed: Sequence[Instance],
    health: Mapping[str, Health] | None = None,
    *,
    destroy: bool = False,
    conditions: Conditions | None = None,
) -> Plan:
    """Diff ``groups`` (desired, removed ones included) against ``observed`` for ``stack``. Pure;
    see the module docstring.

    ``health`` maps instance ids to their role's verdict (missing means unknown). With
    ``destroy`` every owned instance is deleted, in reverse group order, as cattle, except the
    groups that are protected (listed in ``blocked``).
    """
    health = health or {}
    cond = conditions or _NO_CONDITIONS
    owned = [i for i in observed if i.owned_by(stack)]
    by_group: dict[str, list[Instance]] = defaultdict(list)
    for inst in owned:
        by_group[inst.group or ""].append(inst)

    def protected(name: str) -> str | None:
        marked = sum(1 for i in by_group.get(name, ()) if i.protected)
        if not marked:
            return None
        return (f"group {name} is protected ({LABEL_PROTECT} on {marked} of {len(by_group[name])} members): "
                f"nothing of it is deleted; to delete it, set protect=False on the group and apply that first")

    if destroy:
        order = [g.name for g in reversed(groups)] + sorted(set(by_group) - {g.name for g in groups})
        plans, blocked = [], []
        for name in order:
            refusal = protected(name)
            if refusal is not None:
                blocked.append(refusal)
                continue
            insts = sorted(by_group.get(name, []), key=lambda i: (member_sort_key(i.member or ""), i.id))
            changes = tuple(
                Change(Action.DELETE, name, i.member or "", Reason.NOT_WANTED, before=i) for i in insts
            )
            if changes:
                plans.append(_conditioned(GroupPlan(name, UpdatePolicy.CATTLE.value, changes), cond))
        return Plan(stack=stack, groups=tuple(plans), observed=len(owned), destroy=True, blocked=tuple(blocked))

    plans, blocked = [], []
    for g in groups:
        if g.removed:
            refusal = protected(g.name)
            if refusal is not None:
                blocked.append(refusal)
                continue
        plans.append(_conditioned(_plan_group(g, by_group.get(g.name, []), health, cond), cond))
    known = {g.name for g in groups}
    undeclared = []
    for name in sorted(set(by_group) - known):
        insts = by_group[name]
        first = insts[0].labels
        undeclared.append(Undeclared(name, len(insts), first.get(LABEL_ROLE), first.get(LABEL_POLICY),
                                     any(i.protected for i in insts)))
    return Plan(stack=stack, groups=tuple(p for p in plans if p.changes), observed=len(owned),
                undeclared=tuple(undeclared), blocked=tuple(blocked))
