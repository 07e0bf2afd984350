"""Public path of the role protocol (``Role``, ``RoleConfig``, ``RoleContext``, ...) for third-party
roles. It lives in :mod:`reconciler.kit.role`; kept so that ``from reconciler.role import Role`` goes on
working.
"""

from reconciler.kit.role import (
    AnyContext as AnyContext,
)
from reconciler.kit.role import (
    AnyRole as AnyRole,
)
from reconciler.kit.role import (
    MetricsTarget as MetricsTarget,
)
from reconciler.kit.role import (
    Role as Role,
)
from reconciler.kit.role import (
    RoleConfig as RoleConfig,
)
from reconciler.kit.role import (
    RoleContext as RoleContext,
)
from reconciler.kit.role import (
    UpdatePolicy as UpdatePolicy,
)

__all__ = [
    "AnyContext",
    "AnyRole",
    "MetricsTarget",
    "Role",
    "RoleConfig",
    "RoleContext",
    "UpdatePolicy",
]
