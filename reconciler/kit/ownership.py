"""The ownership check every provider makes before it deletes an instance.

Called by each provider's ``delete`` (memory, local, aws, gcp, and third-party providers) on the
instance *as the provider itself just read it*, never on the caller's copy: a second safety net
under the planner's own check, so that no bug upstream (a wrong selector, a stale plan, a caller
passing another stack's instance) can delete what this stack does not own.
"""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.core.errors import PermanentError
from reconciler.core.model import OWNERSHIP_LABELS, Instance
from reconciler.core.stack import RESERVED_LABEL_PREFIX


def require_owned(provider: str, live: Instance, stack: str) -> None:
    """Raise PermanentError unless ``live`` carries every ownership label of ``stack``."""
    if not live.owned_by(stack):
        owner = live.labels.get("infra-stack")
        whose = f"it belongs to stack {owner!r}" if owner and owner != stack else "it lacks infra's ownership labels"
        raise PermanentError(
            f"{provider}: refusing to delete {live.name} ({live.id}): {whose}, not stack {stack!r}",
            hint="infra only ever deletes instances it created for this stack",
        )


def require_label_update(provider: str, live: Instance, labels: Mapping[str, str], stack: str) -> None:
    """Raise PermanentError unless ``live`` is this stack's and ``labels`` keep its ownership labels.

    Called by each provider's ``update_labels`` on the instance as it just read it: an in-place
    update may change what a group records (role, policy, protection, the user's labels), never
    which stack, group, member and spec an instance belongs to.
    """
    require_owned(provider, live, stack)
    changed = [k for k in OWNERSHIP_LABELS if labels.get(k) != live.labels.get(k)]
    if changed:
        raise PermanentError(
            f"{provider}: refusing to change the ownership labels ({', '.join(changed)}) of {live.name}",
            hint="ownership labels are set at creation and never changed in place",
        )


def merged_labels(current: Mapping[str, str], labels: Mapping[str, str]) -> dict[str, str]:
    """What ``update_labels`` leaves on an instance: ``labels`` set, the ``infra-`` labels not in
    ``labels`` removed (a lifted protection), and every other label as it was (someone else's)."""
    kept = {k: v for k, v in current.items() if not k.startswith(RESERVED_LABEL_PREFIX) or k in labels}
    return {**kept, **labels}
