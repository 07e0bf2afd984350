"""A declared group bound to its role: made once per engine, looked up by nothing.

:meth:`reconciler.engine.Engine.open` finds each group's role, parses its settings and checks it,
and keeps the result as one :class:`GroupBinding` per group, in the stack file's order. Every step
of a pass (expand, health, validate, the executor's hooks, the status views) walks these instead
of looking the role and the settings up again by the group's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reconciler.core.fieldpath import FieldPath
from reconciler.core.model import UpdatePolicy
from reconciler.core.stack import Group
from reconciler.kit.role import AnyRole


@dataclass(frozen=True)
class GroupBinding:
    """One group: its declaration, its role, the role's parsed settings, its index in the file."""

    index: int
    group: Group
    role: AnyRole
    config: Any

    @property
    def name(self) -> str:
        return self.group.name

    @property
    def policy(self) -> UpdatePolicy:
        return self.role.policy

    @property
    def path(self) -> FieldPath:
        """``groups[index]``: where this group's fields are, for errors."""
        return FieldPath.group(self.index)
