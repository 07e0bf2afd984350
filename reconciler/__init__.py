"""infra's engine: stack model, planner, executor and CLI. Imports no cloud SDK.

Stack files import the user-facing models from here: ``from reconciler import Stack, Group``.
Attributes load lazily so that ``infra --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Group", "Remediation", "Removed", "Stack"]

if TYPE_CHECKING:
    from reconciler.core.stack import Group, Remediation, Removed, Stack


def __getattr__(name: str) -> Any:
    if name in __all__:
        from reconciler.core import stack

        return getattr(stack, name)
    raise AttributeError(name)
