"""The one error hierarchy of ``infra``.

Every failure the engine, a provider or a role can report is one of these types, and the
type alone says whether retrying helps (kopf's ``TemporaryError``/``PermanentError`` idea)::

    InfraError                      base; ``retryable`` says whether to try again
    ├── ConfigError                 the stack file or a flag is wrong; fix the input (exit 1)
    ├── LockHeldError               another writer holds the stack; wait for it
    ├── StalePlanError              a saved plan no longer matches the world; re-plan
    ├── ProviderError               a provider call failed
    │   ├── TransientError          retry with backoff (throttling, 5xx, timeouts)  retryable
    │   ├── PermanentError          retrying cannot help (bad image, bad machine type)
    │   │   └── QuotaError          the account is out of quota; raise it or shrink
    │   └── NotFoundError           the instance or resource does not exist
    └── RoleError                   a role hook refused or failed
        ├── RoleTransientError      e.g. etcd answered "unhealthy cluster"; retry   retryable
        ├── QuorumLostError         a majority is gone; nothing is changed
        └── HealthTimeoutError      a member did not become healthy in time

Providers translate their SDK's exceptions into these in exactly one place each
(``providers/aws/errors.py``, ``providers/gcp/errors.py``) with ``raise ... from exc``; the
executor retries exactly the ``retryable`` ones. Messages never contain secrets.
"""

from __future__ import annotations


class InfraError(Exception):
    """Base of every error ``infra`` reports. ``retryable`` tells the executor what to do."""

    retryable: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(InfraError):
    """The stack file, a flag or a saved plan is invalid. Nothing was changed.

    ``field`` names the declaration's field it is about (``provider_config.zones``), when it is
    about one, so the engine can point at the stack-file line (:mod:`reconciler.core.fieldpath`); the
    message then does not repeat it.
    """

    def __init__(self, message: str, *, hint: str | None = None, field: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.field = field


class LockHeldError(InfraError):
    """Another writer holds the stack's lock. Nothing was changed."""


class StalePlanError(InfraError):
    """A saved plan no longer matches what is observed. Nothing was changed; plan again."""


class ProviderError(InfraError):
    """A provider call failed. Subclasses say whether retrying helps."""


class TransientError(ProviderError):
    """Retrying later may succeed (throttling, 5xx, timeouts, eventual consistency)."""

    retryable = True

    def __init__(self, message: str, *, hint: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class PermanentError(ProviderError):
    """Retrying cannot help: the request itself is wrong (unknown image, machine type, subnet)."""


class QuotaError(PermanentError):
    """The account or project is out of quota. Raise the quota or shrink the stack."""


class NotFoundError(ProviderError):
    """The named instance or resource does not exist."""


class RoleError(InfraError):
    """A role hook (membership change, health gate) refused or failed."""


class RoleTransientError(RoleError):
    """The role's system is not ready yet (e.g. etcd "unhealthy cluster"); retry with backoff."""

    retryable = True


class QuorumLostError(RoleError):
    """A quorum-based group has lost its majority. ``infra`` changes nothing and explains."""


class HealthTimeoutError(RoleError):
    """A member did not become healthy within its deadline after a change."""


def is_retryable(exc: BaseException) -> bool:
    """True when retrying the call that raised ``exc`` may succeed."""
    return isinstance(exc, InfraError) and exc.retryable
