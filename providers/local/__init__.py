"""The ``local`` provider: instances as detached, supervised process groups on this machine.

Registered under the ``infra.providers`` entry point as ``local``. See
:mod:`providers.local.provider` for how an instance is laid out and observed, and
:mod:`providers.local.supervisor` for the process that runs its services.

The exports are imported lazily: the supervisor (``python -m providers.local.supervisor``)
imports this package on every instance start and needs none of pydantic or the reconciler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from providers.local.config import LocalConfig
    from providers.local.provider import LocalProvider

__all__ = ["LocalConfig", "LocalProvider"]


def __getattr__(name: str) -> object:
    if name == "LocalProvider":
        from providers.local.provider import LocalProvider

        return LocalProvider
    if name == "LocalConfig":
        from providers.local.config import LocalConfig

        return LocalConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
