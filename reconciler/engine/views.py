"""Status views: what ``infra status``, ``infra graph`` and the daemon's page show of a pass.

Called by :meth:`reconciler.engine.Engine.status_of`, which gives each group's observed
instances, the health verdicts and the desired spec hashes of one pass; nothing here does I/O
except the roles' own ``status`` hooks, passed in as ``facts``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.core.errors import InfraError
from reconciler.core.model import Health, Instance
from reconciler.core.plan import Plan, Undeclared, held_reasons
from reconciler.engine.binding import GroupBinding


@dataclass
class MemberStatus:
    member: str
    name: str
    id: str
    address: str | None
    status: str
    healthy: str
    spec_current: bool


@dataclass
class GroupStatus:
    name: str
    role: str
    size: int
    members: list[MemberStatus] = field(default_factory=list)
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: why changes of this group are held (remediation limits, a stopped member, a pause), distinct
    held: list[str] = field(default_factory=list)
    #: the pause of this group, described, when it is paused
    paused: str | None = None


@dataclass
class StackStatus:
    """``infra status``: the groups, and what concerns the stack as a whole."""

    groups: list[GroupStatus]
    #: the pause of the whole stack, described, when it is paused
    paused: str | None = None
    #: groups found at the provider that the stack file no longer declares (kept)
    undeclared: list[Undeclared] = field(default_factory=list)


def annotate(groups: list[GroupStatus], plan: Plan, pauses: Mapping[str, Any]) -> list[GroupStatus]:
    """Each group's held reasons (from ``plan``) and pause (``pauses``: group → Pause, ``""`` the stack)."""
    reasons = held_reasons(plan.held, skip=frozenset({"paused", "not_targeted"}))
    for gs in groups:
        gs.held = reasons.get(gs.name, [])
        pause = pauses.get(gs.name)
        gs.paused = pause.describe() if pause is not None else None
    return groups


def status_of(
    bindings: Iterable[GroupBinding],
    observed: Mapping[str, list[Instance]],
    health: Mapping[str, Health],
    desired: Mapping[str, Mapping[str, str]],
    facts: Callable[[GroupBinding], Mapping[str, Any]],
) -> list[GroupStatus]:
    """Each group's members with their health and whether their spec is current, and its role's
    facts (``facts``; a role that cannot say shows ``{"error": ...}``)."""
    out = []
    for binding in bindings:
        group = binding.group
        gs = GroupStatus(group.name, group.role, group.size)
        for inst in observed.get(group.name, []):
            want = desired.get(group.name, {}).get(inst.member or "")
            verdict = health.get(inst.id, Health.UNHEALTHY if not inst.alive else Health.UNKNOWN)
            gs.members.append(MemberStatus(
                member=inst.member or "", name=inst.name, id=inst.id, address=inst.address,
                status=inst.status.value, healthy=verdict.value,
                spec_current=want is not None and want == inst.spec_hash,
            ))
        try:
            gs.extra = facts(binding)
        except InfraError as exc:
            gs.extra = {"error": str(exc)}
        out.append(gs)
    return out
