"""The etcd role's safety rules: pure functions of a :class:`~plugins.etcd.survey.Survey`.

Called by :mod:`plugins.etcd.role`'s gates; nothing here does I/O, so every rule is tested like
the planner, on generated clusters (``tests/etcd/test_safety.py``, hypothesis). The rules:

* :func:`preflight` — a change may start only while a majority of the member list answers
  (else :class:`~reconciler.core.errors.QuorumLostError`: nothing is changed), a majority is healthy,
  every reachable member agrees on the list and a leader is elected (else wait: an election is
  not a lost quorum). No member reachable while instances are alive: refuse, never act blind.
* :func:`removal` — removing a member must leave a healthy majority of the smaller cluster; a
  *healthy* member (a roll or a shrink, not a heal) is removed only when every other member is
  healthy, as Cluster API's preflight requires (members added by a crashed run but never
  started, with no instance, are leftovers to remove first, not members to wait for); the only
  member of a one-member cluster is never replaced (that would lose every key).
* :func:`stale_before_add` — members that match no alive instance of the stack, removed before
  a new member is added so the majority is counted over members that can vote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from plugins.etcd.client import EtcdUnreachable, Member, MemberList
from plugins.etcd.survey import Survey, label, quorum
from reconciler.core.errors import QuorumLostError, RoleError, RoleTransientError
from reconciler.core.model import Instance

RECOVERY_HINT = (
    "If the dead members can come back with their data directories intact, bring them back "
    "and run apply again. Otherwise recover by hand, then run 'infra apply' to grow the cluster "
    "again: (1) on a surviving member, restart etcd once with '--force-new-cluster' (it keeps its "
    "data and becomes a one-member cluster); or (2) restore a snapshot: 'etcdctl snapshot save "
    "backup.db' while a member still serves, then 'etcdctl snapshot restore backup.db "
    "--data-dir <new dir> --name <member> --initial-cluster <member>=<peer url>' and start etcd "
    "on that directory. Run 'infra status' to see which members answer."
)


def quorum_lost(group: str, survey: Survey, members: MemberList | None) -> QuorumLostError:
    """The refusal when a majority is gone, naming every member that is down and why."""
    if members is None:
        dead = [i for i in survey.instances if not i.alive]
        lines = [f"{i.member or i.name} ({i.address}): {i.detail or i.status.value}" for i in dead]
        lines += [
            f"{p.instance.member} ({p.instance.address}): {p.error.message if p.error else 'no answer'}"
            for p in survey.probes.values()
        ]
        return QuorumLostError(
            f"etcd group {group!r} has lost its quorum: none of its {len(survey.instances)} "
            f"members answers ({'; '.join(lines)}). infra changed nothing: replacing members "
            "without a quorum would throw away the cluster's data.",
            hint=RECOVERY_HINT,
        )
    healthy_ids = survey.healthy_ids()
    down = []
    for m in members.members:
        if m.id in healthy_ids:
            continue
        probe = survey.probe_for(m)
        inst = survey.instance_for(m)
        if probe is not None and probe.error is not None:
            why = probe.error.message
        elif probe is not None:
            why = "answers but is not healthy (no leader)"
        elif inst is not None:
            why = inst.detail or f"instance is {inst.status.value}"
        else:
            why = "no instance" if m.started else "added but never started"
        down.append(f"{label(inst, m)}: {why}")
    return QuorumLostError(
        f"etcd group {group!r} has lost its quorum: {len(healthy_ids)} of its "
        f"{len(members.members)} members are healthy and {quorum(len(members.members))} are "
        f"needed. Down: {'; '.join(down)}. infra changed nothing: etcd cannot add or remove "
        "members without a majority, and replacing them would lose the cluster's data.",
        hint=RECOVERY_HINT,
    )


def no_member_reachable(group: str, survey: Survey) -> RoleError:
    """The refusal to change membership when no member can be asked."""
    reasons = "; ".join(
        f"{p.instance.member} ({p.instance.address}): {p.error.message if p.error else 'no answer'}"
        for p in survey.probes.values()
    )
    tls = any(isinstance(p.error, EtcdUnreachable) and p.error.tls for p in survey.probes.values())
    hint = (
        "the members do not accept this stack's certificates: was the stack's state directory (its CA) replaced?"
        if tls
        else "infra changes an existing etcd cluster only through one of its members; run it "
        "where the members' client port is reachable (e.g. inside their network)"
    )
    return RoleError(
        f"no member of etcd group {group!r} can be reached from here "
        f"({reasons or 'none has an address'}); infra will not change its membership blind",
        hint=hint,
    )


def unreachable(group: str, survey: Survey) -> RoleError:
    """Why nothing answers: a lost quorum (instances dead or refusing) or members we may not ask."""
    if any(p.blocked for p in survey.probes.values()):
        return no_member_reachable(group, survey)
    if not survey.probes:  # every instance dead (or none has an address)
        if any(i.address for i in survey.instances):
            return quorum_lost(group, survey, None)
        return no_member_reachable(group, survey)
    refused = all(isinstance(p.error, EtcdUnreachable) and not p.error.tls for p in survey.probes.values())
    if refused and any(not i.alive for i in survey.instances):
        return quorum_lost(group, survey, None)
    return no_member_reachable(group, survey)


def preflight(group: str, survey: Survey) -> None:
    """Raise unless a change of the group may start now (see the module docstring).

    QuorumLostError when fewer than a majority of the member list answer; RoleError when no
    member can be reached although instances are alive; RoleTransientError while a majority
    answers but is not yet healthy (an election), the members disagree, or no leader is elected.
    """
    if not survey.reachable:
        raise unreachable(group, survey)
    members = survey.member_list()
    assert members is not None
    healthy = survey.healthy_ids() & members.ids
    answering = survey.answering_ids() & members.ids
    need = quorum(len(members.members))
    if len(answering) < need:
        raise quorum_lost(group, survey, members)
    if len(healthy) < need:
        # A majority of the processes answer but not a majority is healthy: a leader election
        # is under way (e.g. the leader was just killed). Wait; do not alarm.
        raise RoleTransientError(
            f"only {len(healthy)} of {len(members.members)} etcd members are healthy ({need} needed) "
            f"while {len(answering)} answer: a leader election is probably under way; waiting"
        )
    disagreement = survey.disagreement()
    if disagreement is not None:
        raise RoleTransientError(f"etcd members disagree on the member list ({disagreement}); waiting")
    if not survey.leader():
        raise RoleTransientError(f"etcd group {group!r} has no leader yet; waiting")


@dataclass(frozen=True)
class Removal:
    """What :func:`removal` decided about removing one member.

    ``remove``: remove ``stale`` first, then the member (after moving leadership away when
    ``move_leader``); ``skip``: nothing to remove (``reason`` says why); ``wait``: not now
    (``waiting_on`` lists the members that must be healthy first, if that is the reason);
    ``refuse``: never (``hint`` says what to do instead).
    """

    verdict: Literal["remove", "skip", "wait", "refuse"]
    reason: str = ""
    hint: str | None = None
    stale: tuple[Member, ...] = ()
    waiting_on: tuple[Member, ...] = ()
    move_leader: bool = False


def removal(survey: Survey, members: MemberList, instance: Instance, *, group: str, size: int) -> Removal:
    """May ``instance``'s member be removed from ``members`` now? ``size``: the group's declared size."""
    assert instance.address is not None
    target = members.by_host(instance.address)
    if target is None:
        return Removal("skip", f"{instance.member} is not a member any more; nothing to remove")
    if len(members.members) == 1:
        if size > 0:
            return Removal(
                "refuse",
                f"{instance.member} is the only member of etcd group {group!r}: replacing it "
                "would start an empty cluster and lose every key",
                hint="grow the group to 3 members first (the change then rolls one member at a time), "
                "or take a snapshot ('etcdctl snapshot save') and restore it into the new member",
            )
        return Removal("skip", f"{instance.member} is the last member; the cluster ends with it")
    healthy = survey.healthy_ids() & members.ids
    stale: tuple[Member, ...] = ()
    if target.id in healthy:
        alive_hosts = survey.alive_hosts()
        sick = [m for m in members.members if m.id != target.id and m.id not in healthy]
        stale = tuple(m for m in sick if not m.started and not (m.peer_hosts & alive_hosts))
        waiting = tuple(m for m in sick if m not in stale)
        if waiting:
            names = ", ".join(label(survey.instance_for(m), m) for m in waiting)
            return Removal(
                "wait",
                f"not removing the healthy member {instance.member} while {names} "
                f"{'is' if len(waiting) == 1 else 'are'} not healthy; waiting",
                waiting_on=waiting,
            )
    remaining = len(members.members) - len(stale) - 1
    left = len(healthy - {target.id})
    if left < quorum(remaining):
        return Removal(
            "wait",
            f"removing {instance.member} now would leave {left} healthy of {remaining} etcd members "
            f"(a majority is {quorum(remaining)}); waiting for the others to be healthy",
        )
    return Removal("remove", stale=stale, move_leader=survey.leader() == target.id)


def stale_before_add(members: MemberList, address: str, survey: Survey) -> list[Member]:
    """Members matching no alive instance (a crashed run's leftovers, or deleted behind infra's back)."""
    alive_hosts = survey.alive_hosts()
    return [m for m in members.members if address not in m.peer_hosts and not (m.peer_hosts & alive_hosts)]
