"""A plan is data: the ordered changes one pass will make, each with its reason.

Modelled on Terraform's ``plans`` package: an :class:`Action` (create, delete, replace — and for
replace, which half goes first — or update in place), a :class:`Change` with ``before`` (the
observed instance) and ``after`` (the desired member) and a :class:`Reason`, and a :class:`Plan`
that renders as a diff, serialises to JSON, and can be saved and applied exactly (``apply --plan
FILE``).

A change may be **held**: planned and shown, never carried out, with the reason (the stack or
group is paused, it is outside ``--target``, remediation is held by the group's limits, a member
is stopped or crash-looping). A plan also lists what infra keeps and why: groups found at the
provider that the stack file no longer declares (:class:`Undeclared`), and deletions refused
because a group is protected (``blocked``).

Produced by :func:`reconciler.core.planner.plan`, executed by :mod:`reconciler.engine.executor`, rendered by
the CLI. A plan never contains a secret: ``after`` is shown through ``MemberSpec.public_view``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from reconciler.core.errors import ConfigError, StalePlanError
from reconciler.core.image import ImageSpec
from reconciler.core.model import Instance, MemberSpec, Problem

PLAN_FORMAT = 1


#: (action, group, member, reason, id of the instance before, spec hash after, held or not)
ChangeKey = tuple[str, str, str, str, str | None, str | None, bool]


def change_key(doc: dict[str, Any]) -> ChangeKey:
    """The key of a change from its JSON form (:meth:`Change.to_json`, or a saved plan's)."""
    before = doc.get("before") or {}
    after = doc.get("after") or {}
    return (doc["action"], doc["group"], doc["member"], doc["reason"], before.get("id"), after.get("spec"),
            doc.get("held") is not None)


class Action(str, enum.Enum):
    CREATE = "create"
    DELETE = "delete"
    REPLACE = "replace"
    UPDATE = "update"  # in place: labels (and protection) only, the instance is kept

    @property
    def symbol(self) -> str:
        return {"create": "+", "delete": "-", "replace": "-/+", "update": "~"}[self.value]


class Reason(str, enum.Enum):
    MISSING = "missing"  # desired member has no instance
    NOT_WANTED = "not wanted"  # instance of a member no longer declared (scale-in), or of a removed group
    SPEC_CHANGED = "spec changed"  # instance built from an older spec
    UNHEALTHY = "unhealthy"  # instance dead or failing its role's health check
    DUPLICATE = "duplicate"  # a second instance of the same member (e.g. after a lost response)
    REQUESTED = "replace requested"  # apply --replace GROUP/MEMBER: healthy and current, replaced on request
    LABELS = "labels changed"  # labels or protection differ: updated in place


class Order(str, enum.Enum):
    """For a replace: which half runs first (Terraform's CreateThenDelete / DeleteThenCreate)."""

    DELETE_FIRST = "delete-first"
    CREATE_FIRST = "create-first"


@dataclass(frozen=True)
class Change:
    """One change to one member. ``before``/``after`` are None for create/delete."""

    action: Action
    group: str
    member: str
    reason: Reason
    before: Instance | None = None
    after: MemberSpec | None = None
    order: Order | None = None
    detail: str | None = None  # e.g. "process exited with code 1", "spec 1a2b → 3c4d"
    #: why this change is shown but not carried out (paused, not targeted, remediation held, ...)
    held: str | None = None

    def key(self) -> ChangeKey:
        """What must match between a saved plan and a fresh one."""
        return change_key(self.to_json())

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "action": self.action.value,
            "group": self.group,
            "member": self.member,
            "reason": self.reason.value,
        }
        if self.detail:
            doc["detail"] = self.detail
        if self.order:
            doc["order"] = self.order.value
        if self.held:
            doc["held"] = self.held
        if self.before is not None:
            doc["before"] = {
                "id": self.before.id,
                "name": self.before.name,
                "spec": self.before.spec_hash,
                "status": self.before.status.value,
                "address": self.before.address,
            }
        if self.after is not None:
            doc["after"] = self.after.public_view()
        return doc


#: What a held change's reason starts with, and its kind (metrics and reports count by kind).
_HELD_KINDS = (("remediation held", "remediation"), ("stopped", "stopped"), ("crash loop", "crash_loop"),
               ("paused", "paused"), ("not targeted", "not_targeted"))


def held_kind(held: str) -> str:
    """``remediation``, ``stopped``, ``crash_loop``, ``paused``, ``not_targeted`` or ``other``."""
    return next((kind for prefix, kind in _HELD_KINDS if held.startswith(prefix)), "other")


def held_reasons(changes: Iterable[Change], *, skip: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """Each group's distinct reasons for its held changes, kinds in ``skip`` left out: a group-wide
    remediation hold once as it is, any other with the member it holds (``web-1: stopped: ...``)."""
    out: dict[str, list[str]] = {}
    for c in changes:
        if c.held is None or held_kind(c.held) in skip:
            continue
        text = c.held if held_kind(c.held) == "remediation" else f"{c.member}: {c.held}"
        if text not in out.setdefault(c.group, []):
            out[c.group].append(text)
    return out


@dataclass(frozen=True)
class GroupPlan:
    """The changes of one group and how they may run."""

    group: str
    policy: str  # UpdatePolicy value
    changes: tuple[Change, ...]
    bootstrap: bool = False  # quorum group created from nothing: creates run together

    @property
    def actionable(self) -> tuple[Change, ...]:
        """The changes that will be carried out (not held)."""
        return tuple(c for c in self.changes if c.held is None)


@dataclass(frozen=True)
class Undeclared:
    """A group found at the provider that the stack file no longer declares: kept, never deleted
    implicitly. ``role``/``policy`` come from its instances' labels (None on instances made
    before infra recorded them)."""

    group: str
    members: int
    role: str | None = None
    policy: str | None = None
    protected: bool = False

    @property
    def message(self) -> str:
        what = f"{self.members} member{'s' * (self.members != 1)} kept"
        role = f" ({self.role}{', protected' if self.protected else ''})" if self.role else ""
        return (f"group {self.group}{role} is no longer declared: {what}. To delete it, declare "
                f"removed=[Removed({self.group!r})] in the stack file; to keep it, declare it again")

    def to_json(self) -> dict[str, Any]:
        return {"group": self.group, "members": self.members, "role": self.role, "policy": self.policy,
                "protected": self.protected, "message": self.message}


@dataclass(frozen=True)
class Plan:
    """Everything one pass will change, group by group, in execution order."""

    stack: str
    groups: tuple[GroupPlan, ...] = ()
    problems: tuple[Problem, ...] = ()
    observed: int = 0
    destroy: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    #: Pipeline images the provider lacks: built and pushed before any member change.
    images: tuple[ImageSpec, ...] = ()
    #: Groups at the provider the stack file no longer declares (kept).
    undeclared: tuple[Undeclared, ...] = ()
    #: Deletions refused because the group is protected (apply and destroy exit 1).
    blocked: tuple[str, ...] = ()

    @property
    def changes(self) -> list[Change]:
        """Every planned change, held ones included (what a person reviews)."""
        return [c for g in self.groups for c in g.changes]

    @property
    def actionable(self) -> list[Change]:
        """The changes that will be carried out."""
        return [c for c in self.changes if c.held is None]

    @property
    def held(self) -> list[Change]:
        return [c for c in self.changes if c.held is not None]

    def __iter__(self) -> Iterator[Change]:
        return iter(self.changes)

    @property
    def empty(self) -> bool:
        """Nothing will be carried out (held changes, undeclared groups and blocks may remain)."""
        return not self.images and not any(c.held is None for g in self.groups for c in g.changes)

    @property
    def drift(self) -> bool:
        """Anything differs from the declaration: a change (held or not), an image to push, a
        group no longer declared, a refused deletion (``plan --detailed-exitcode`` exits 2)."""
        return bool(self.images or self.changes or self.undeclared or self.blocked)

    def counts(self) -> dict[str, int]:
        """Actionable changes by action, and ``held``."""
        out = {a.value: 0 for a in Action}
        out["held"] = 0
        for c in self.changes:
            if c.held is not None:
                out["held"] += 1
            else:
                out[c.action.value] += 1
        return out

    def keys(self) -> list[ChangeKey]:
        return [c.key() for c in self.changes]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "stack": self.stack,
            "destroy": self.destroy,
            "images": [{"action": "push", **i.public_view()} for i in self.images],
            "changes": [c.to_json() for c in self.changes],
            "summary": self.counts(),
            "undeclared": [u.to_json() for u in self.undeclared],
            "blocked": list(self.blocked),
            "warnings": [p.model_dump() for p in self.problems if not p.is_error],
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=False)


@dataclass(frozen=True)
class SavedPlan:
    """A plan saved with ``infra plan --out``: what ``apply --plan`` holds a fresh plan to.

    Parsed from the saved text by :meth:`parse` (the CLI reads the file); :meth:`check` refuses
    a fresh plan that no longer does exactly what was saved.
    """

    stack: str
    destroy: bool
    keys: tuple[ChangeKey, ...]

    @classmethod
    def parse(cls, text: str, source: str) -> SavedPlan:
        """The saved plan in ``text`` (read from ``source``); ConfigError when it is not one."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: not a plan file saved by 'infra plan --out': {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != PLAN_FORMAT or "changes" not in doc:
            raise ConfigError(f"{source}: not a plan file saved by 'infra plan --out' (format {PLAN_FORMAT})")
        return cls(str(doc["stack"]), bool(doc.get("destroy", False)), tuple(change_key(c) for c in doc["changes"]))

    def check(self, fresh: Plan) -> None:
        """Raise StalePlanError unless ``fresh`` is for the same stack and makes the same changes."""
        if self.stack != fresh.stack:
            raise StalePlanError(f"the saved plan is for stack {self.stack!r}, not {fresh.stack!r}")
        if self.destroy != fresh.destroy:
            raise StalePlanError("the saved plan is a destroy plan" if self.destroy else
                                 "the saved plan is not a destroy plan")
        if [list(k) for k in self.keys] != [list(k) for k in fresh.keys()]:  # noqa: SIM118
            raise StalePlanError(
                "the saved plan is stale: what is observed changed since it was made "
                f"(saved: {len(self.keys)} changes, now: {len(fresh.changes)})",
                hint="run 'infra plan' again and review the new plan",
            )
