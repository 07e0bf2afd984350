"""One look at an etcd group: every alive instance probed in parallel (status, member list, health).

Called by :mod:`plugins.etcd.role` before every membership decision; the decisions themselves
are pure functions of a :class:`Survey` (:mod:`plugins.etcd.safety`), so this module is the only
place the role's gates talk to etcd. A member outside ``INFRA_NETWORK_ALLOW`` is never probed:
its probe is marked ``blocked``.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from plugins.etcd.client import EtcdClient, EtcdError, EtcdUnreachable, Member, MemberList, Status
from reconciler.core.model import Instance


def quorum(members: int) -> int:
    """How many members a cluster of ``members`` needs healthy to agree on anything."""
    return members // 2 + 1


@dataclass
class Probe:
    """What one alive instance answered (or why it did not)."""

    instance: Instance
    status: Status | None = None
    members: MemberList | None = None
    healthy: bool = False
    error: EtcdError | None = None
    blocked: bool = False  # outside the networks infra may probe (RoleContext.reachable)

    @property
    def reachable(self) -> bool:
        return self.status is not None


@dataclass
class Survey:
    """One look at the whole group: every observed instance and, for the alive ones, its probe."""

    instances: list[Instance]
    probes: dict[str, Probe] = field(default_factory=dict)  # by instance id, alive instances only

    @property
    def reachable(self) -> list[Probe]:
        return [p for p in self.probes.values() if p.reachable]

    @property
    def healthy(self) -> list[Probe]:
        return [p for p in self.probes.values() if p.healthy]

    def healthy_ids(self) -> set[int]:
        """Member ids of the healthy probes."""
        return {p.status.member_id for p in self.healthy if p.status is not None}

    def answering_ids(self) -> set[int]:
        """Member ids of every probe that answered at all."""
        return {p.status.member_id for p in self.reachable if p.status is not None}

    def alive_hosts(self) -> set[str]:
        return {i.address for i in self.instances if i.alive and i.address}

    def member_list(self) -> MemberList | None:
        """The member list as a healthy member (else any reachable one) reports it."""
        for probes in (self.healthy, self.reachable):
            for p in probes:
                if p.members is not None:
                    return p.members
        return None

    def disagreement(self) -> str | None:
        views = {p.instance.member or p.instance.name: p.members.ids for p in self.reachable if p.members}
        if len(set(views.values())) <= 1:
            return None
        return "; ".join(f"{m} sees {len(ids)} members" for m, ids in sorted(views.items()))

    def probe_for(self, member: Member) -> Probe | None:
        for p in self.probes.values():
            if p.instance.address and p.instance.address in member.peer_hosts:
                return p
        return None

    def instance_for(self, member: Member) -> Instance | None:
        for inst in self.instances:
            if inst.address and inst.address in member.peer_hosts:
                return inst
        return None

    def leader(self) -> int:
        for p in self.healthy:
            if p.status is not None and p.status.leader:
                return p.status.leader
        return 0


def label(inst: Instance | None, member: Member) -> str:
    """How a message names a member: its instance when it has one, else etcd's view of it."""
    if inst is not None:
        return f"{inst.member or inst.name} ({inst.address})"
    return f"{member.name or 'unstarted member'} {member.hex_id} ({', '.join(member.peer_urls)})"


def take(
    instances: list[Instance],
    client: EtcdClient,
    endpoint: Callable[[str], str],
    reachable: Callable[[str], bool],
    *,
    health_timeout: float | None = None,
) -> Survey:
    """Probe every alive instance with an address (in parallel): status, member list, /health."""
    survey = Survey(list(instances))
    alive = [i for i in survey.instances if i.alive and i.address]

    def probe(inst: Instance) -> Probe:
        assert inst.address is not None
        ep = endpoint(inst.address)
        p = Probe(inst)
        if not reachable(inst.address):
            p.blocked = True
            p.error = EtcdUnreachable(ep, "not reachable from here (outside INFRA_NETWORK_ALLOW)")
            return p
        try:
            p.status = client.status(ep, timeout=health_timeout)
            p.members = client.member_list(ep)
            p.healthy = client.health(ep, timeout=health_timeout) and bool(p.status.leader)
        except EtcdError as exc:
            p.error = exc
        return p

    if alive:
        with ThreadPoolExecutor(max_workers=len(alive)) as pool:
            for p in pool.map(probe, alive):
                survey.probes[p.instance.id] = p
    return survey
