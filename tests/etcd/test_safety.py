"""The etcd role's safety rules (plugins.etcd.safety), property-tested on generated clusters.

Each example is one survey of a cluster of 1-7 members: every member started or not, with an
alive, dead or no instance, answering or not, healthy or not, and a leader or none. The rules are
pure functions of that survey, so the properties below are checked on hundreds of shapes,
including the ones a real cluster rarely shows (a majority of unstarted members, no leader).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.etcd import safety
from plugins.etcd.client import EtcdUnreachable, Member, MemberList, Status
from plugins.etcd.survey import Probe, Survey, quorum
from reconciler.core.errors import QuorumLostError, RoleError, RoleTransientError
from reconciler.core.model import Instance, InstanceStatus


@dataclass(frozen=True)
class Shape:
    started: bool
    instance: str  # "alive", "dead" or "none"
    answers: bool
    healthy: bool


def address(i: int) -> str:
    return f"10.0.0.{10 + i}"


def build(shapes: list[Shape], leader: int | None) -> tuple[Survey, MemberList]:
    """The survey of a cluster of ``shapes``; ``leader`` indexes the leading member (healthy only)."""
    members = tuple(
        Member(id=i + 1, name=f"etcd-{i}" if s.started else "", peer_urls=(f"https://{address(i)}:2380",),
               client_urls=(f"https://{address(i)}:2379",) if s.started else ())
        for i, s in enumerate(shapes)
    )
    member_list = MemberList(cluster_id=1, answered_by=0, members=members)
    instances, probes = [], {}
    lead = leader + 1 if leader is not None and shapes[leader].healthy and shapes[leader].answers else 0
    for i, s in enumerate(shapes):
        if s.instance == "none":
            continue
        inst = Instance(id=f"i-{i}", name=f"s-etcd-etcd-{i}-abc", address=address(i),
                        labels={"infra-member": f"etcd-{i}"},
                        status=InstanceStatus.RUNNING if s.instance == "alive" else InstanceStatus.DEAD)
        instances.append(inst)
        if s.instance != "alive":
            continue
        if s.answers and s.started:
            status = Status(cluster_id=1, member_id=i + 1, leader=lead, raft_term=2, raft_index=10, version="3.4.23")
            probes[inst.id] = Probe(inst, status=status, members=member_list, healthy=s.healthy and bool(lead))
        else:
            probes[inst.id] = Probe(inst, error=EtcdUnreachable(f"https://{address(i)}:2379", "connection refused"))
    return Survey(instances, probes), member_list


shapes = st.lists(st.builds(Shape, st.booleans(), st.sampled_from(["alive", "dead", "none"]), st.booleans(),
                            st.booleans()), min_size=1, max_size=7)


@st.composite
def clusters(draw: st.DrawFn) -> tuple[Survey, MemberList, list[Shape]]:
    cluster = draw(shapes)
    leader = draw(st.one_of(st.none(), st.integers(0, len(cluster) - 1)))
    survey, members = build(cluster, leader)
    return survey, members, cluster


@settings(max_examples=400, deadline=None)
@given(clusters())
def test_preflight_lets_a_change_start_only_with_a_healthy_majority_and_a_leader(
    cluster: tuple[Survey, MemberList, list[Shape]],
) -> None:
    survey, members, _ = cluster
    try:
        safety.preflight("etcd", survey)
    except (QuorumLostError, RoleError, RoleTransientError):
        return
    healthy = survey.healthy_ids() & members.ids
    assert len(healthy) >= quorum(len(members.members))
    assert survey.leader() != 0 and survey.disagreement() is None


@settings(max_examples=400, deadline=None)
@given(clusters())
def test_fewer_than_a_majority_answering_is_a_lost_quorum_never_a_wait(
    cluster: tuple[Survey, MemberList, list[Shape]],
) -> None:
    survey, members, _ = cluster
    answering = survey.answering_ids() & members.ids
    if not survey.reachable or len(answering) >= quorum(len(members.members)):
        return
    with pytest.raises(QuorumLostError):
        safety.preflight("etcd", survey)


@settings(max_examples=600, deadline=None)
@given(clusters(), st.integers(0, 6), st.integers(0, 7))
def test_a_removal_never_leaves_less_than_a_healthy_majority(
    cluster: tuple[Survey, MemberList, list[Shape]], pick: int, size: int,
) -> None:
    survey, members, _ = cluster
    alive = [i for i in survey.instances if i.alive]
    if not alive:
        return
    instance = alive[pick % len(alive)]
    decision = safety.removal(survey, members, instance, group="etcd", size=size)
    target = members.by_host(instance.address or "")
    assert target is not None  # every generated instance is a member
    healthy = survey.healthy_ids() & members.ids
    if len(members.members) == 1:
        assert decision.verdict == ("refuse" if size > 0 else "skip")  # the last member is never replaced
        return
    if decision.verdict != "remove":
        assert decision.verdict == "wait" and decision.reason
        return
    remaining = len(members.members) - len(decision.stale) - 1
    assert len(healthy - {target.id}) >= quorum(remaining)
    if target.id in healthy:
        # a voluntary removal: every other member is healthy or a leftover that never started
        alive_hosts = survey.alive_hosts()
        for m in members.members:
            if m.id != target.id and m.id not in healthy:
                assert m in decision.stale and not m.started and not (m.peer_hosts & alive_hosts)
    assert not any(m.id == target.id for m in decision.stale)
    assert decision.move_leader == (survey.leader() == target.id)


@settings(max_examples=300, deadline=None)
@given(clusters())
def test_stale_members_before_an_add_never_include_one_with_an_alive_instance(
    cluster: tuple[Survey, MemberList, list[Shape]],
) -> None:
    survey, members, _ = cluster
    new = "10.0.0.99"
    stale = safety.stale_before_add(members, new, survey)
    alive_hosts = survey.alive_hosts()
    for m in stale:
        assert not (m.peer_hosts & alive_hosts) and new not in m.peer_hosts
    assert {m.id for m in members.members if not (m.peer_hosts & alive_hosts)} == {m.id for m in stale}


def test_a_sick_member_is_removed_while_the_others_form_a_healthy_majority() -> None:
    ok = Shape(True, "alive", True, True)
    survey, members = build([ok, ok, Shape(True, "alive", False, False)], leader=0)
    sick = survey.instances[2]
    assert safety.removal(survey, members, sick, group="etcd", size=3).verdict == "remove"
    healthy_one = survey.instances[1]  # a roll of a healthy member waits for the sick one
    waiting = safety.removal(survey, members, healthy_one, group="etcd", size=3)
    assert waiting.verdict == "wait" and [m.id for m in waiting.waiting_on] == [3]


def test_removing_the_leader_moves_leadership_first() -> None:
    ok = Shape(True, "alive", True, True)
    survey, members = build([ok, ok, ok], leader=1)
    decision = safety.removal(survey, members, survey.instances[1], group="etcd", size=3)
    assert decision.verdict == "remove" and decision.move_leader


def test_an_election_under_way_is_a_wait_not_a_lost_quorum() -> None:
    answering_unhealthy = Shape(True, "alive", True, False)
    survey, _ = build([answering_unhealthy] * 3, leader=None)
    with pytest.raises(RoleTransientError, match="election"):
        safety.preflight("etcd", survey)
