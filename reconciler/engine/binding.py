"""A declared group bound to its role: made once per engine, looked up by nothing.

:meth:`reconciler.engine.Engine.open` finds each group's role, parses its settings and checks it,
and keeps the result as one :class:`GroupBinding` per group, in the stack file's order. Every step
of a pass (expand, health, validate, the executor's hooks, the status views) walks these instead
of looking the role and the settings up again by the group's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.core.fieldpath import FieldPath
from reconciler.core.model import LABEL_POLICY, LABEL_PROTECT, LABEL_ROLE, UpdatePolicy
from reconciler.core.stack import Group, Stack
from reconciler.kit.role import AnyRole


def group_labels(stack: Stack, group: Group, role: AnyRole) -> dict[str, str]:
    """What every instance of ``group`` records besides ownership: the user's labels, its role,
    its update policy, and its protection (so an undeclared group is still known for what it is)."""
    out = {**stack.labels_of(group), LABEL_ROLE: group.role, LABEL_POLICY: role.policy.value}
    if group.protect:
        out[LABEL_PROTECT] = "true"
    return out


@dataclass(frozen=True)
class GroupBinding:
    """One group: its declaration, its role, the role's parsed settings, its index in the file.

    ``labels``: what its instances should record (:func:`group_labels`). ``removed``: a group the
    stack file removes (``Stack.removed[index]``), bound at plan time to the role its instances
    record, to be deleted through it.
    """

    index: int
    group: Group
    role: AnyRole
    config: Any
    labels: Mapping[str, str] = field(default_factory=dict)
    removed: bool = False

    @property
    def name(self) -> str:
        return self.group.name

    @property
    def policy(self) -> UpdatePolicy:
        return self.role.policy

    @property
    def path(self) -> FieldPath:
        """``groups[index]`` (``removed[index]``): where this group's fields are, for errors."""
        return FieldPath(("removed", self.index)) if self.removed else FieldPath.group(self.index)
