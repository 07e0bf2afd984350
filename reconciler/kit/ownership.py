"""The ownership check every provider makes before it deletes an instance.

Called by each provider's ``delete`` (memory, local, aws, gcp, and third-party providers) on the
instance *as the provider itself just read it*, never on the caller's copy: a second safety net
under the planner's own check, so that no bug upstream (a wrong selector, a stale plan, a caller
passing another stack's instance) can delete what this stack does not own.
"""

from __future__ import annotations

from reconciler.core.errors import PermanentError
from reconciler.core.model import Instance


def require_owned(provider: str, live: Instance, stack: str) -> None:
    """Raise PermanentError unless ``live`` carries every ownership label of ``stack``."""
    if not live.owned_by(stack):
        owner = live.labels.get("infra-stack")
        whose = f"it belongs to stack {owner!r}" if owner and owner != stack else "it lacks infra's ownership labels"
        raise PermanentError(
            f"{provider}: refusing to delete {live.name} ({live.id}): {whose}, not stack {stack!r}",
            hint="infra only ever deletes instances it created for this stack",
        )
