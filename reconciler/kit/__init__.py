"""The kit: what every provider and role, built-in or third-party, builds on.

Layer: imports only :mod:`reconciler.core` (the pure model) and libraries; imported by the
engine, the daemon, the CLI, and by ``providers/*`` and ``plugins/*``, which import nothing of
infra's but this package and the core. Its modules, each with its own docstring:

* :mod:`~reconciler.kit.role` and :mod:`~reconciler.kit.provider`: the two plugin protocols;
* :mod:`~reconciler.kit.registry`: finding providers, roles and emulators by entry point;
* :mod:`~reconciler.kit.ownership`: :func:`require_owned`, the check a ``delete`` makes on the
  instance *as the provider just read it*, against the labels of the stack it was opened for;
* :mod:`~reconciler.kit.errormap`: :class:`ErrorTable`, the one place an SDK's exceptions become
  infra's error types (whose class says whether retrying helps);
* :mod:`~reconciler.kit.retry`: :class:`RetryPolicy` and :func:`retry_call`, the one retry policy,
  honouring a server's ``retry_after``. A provider does not retry inside ``create`` or ``delete``
  (the executor retries them under this policy); it raises ``TransientError(retry_after=...)``;
* :mod:`~reconciler.kit.settings`: :func:`parse_settings`, ``provider_config`` validated by the
  provider's pydantic model, errors naming the field;
* :mod:`~reconciler.kit.pki` (the stack's CA), :mod:`~reconciler.kit.netguard` (the outbound
  allow-list), :mod:`~reconciler.kit.paths` (where local state lives), and
  :mod:`~reconciler.kit.machines` (an emulator's booted machines).

The names below are the one import a third-party package needs (``from reconciler.kit import
...``), the error types included; the conformance suite is :mod:`reconciler.testing`.
"""

from reconciler.core.errors import (
    ConfigError,
    HealthTimeoutError,
    InfraError,
    NotFoundError,
    PermanentError,
    QuorumLostError,
    QuotaError,
    RoleError,
    RoleTransientError,
    TransientError,
)
from reconciler.kit.errormap import ErrorTable
from reconciler.kit.ownership import merged_labels, require_label_update, require_owned
from reconciler.kit.retry import RetryPolicy
from reconciler.kit.retry import call as retry_call
from reconciler.kit.settings import parse_settings

__all__ = [
    "ConfigError",
    "ErrorTable",
    "HealthTimeoutError",
    "InfraError",
    "NotFoundError",
    "PermanentError",
    "QuorumLostError",
    "QuotaError",
    "RetryPolicy",
    "RoleError",
    "RoleTransientError",
    "TransientError",
    "merged_labels",
    "parse_settings",
    "require_label_update",
    "require_owned",
    "retry_call",
]
