"""The one helper that turns an SDK's exceptions into infra's error types, through a provider's table.

Every provider (built-in or third-party) declares one :class:`ErrorTable`: a function from an
exception its SDK (or the OS) raises to the :mod:`reconciler.core.errors` type whose class says whether
retrying helps. Its calls then run inside ``with TABLE.translate("insert instance x"):``, which
re-raises what the table maps with ``raise ... from exc`` (the SDK's exception stays the cause,
for ``--debug``), lets infra's own errors through untouched, and leaves alone what the table does
not know (a bug should surface as one). That is the only place a provider translates errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from reconciler.core.errors import InfraError

#: ``mapper(exc, action)`` → the infra error for ``exc`` raised while doing ``action``, or None.
Mapper = Callable[[BaseException, str], InfraError | None]


class ErrorTable:
    """A provider's table from its SDK's exceptions to infra's errors."""

    def __init__(self, provider: str, mapper: Mapper) -> None:
        self.provider = provider
        self._mapper = mapper

    def map(self, exc: BaseException, action: str) -> InfraError | None:
        """``exc`` as an infra error (itself when it is one already), or None when unknown."""
        if isinstance(exc, InfraError):
            return exc
        return self._mapper(exc, action)

    @contextmanager
    def translate(self, action: str) -> Iterator[None]:
        """Run one SDK call; re-raise what it raises as the mapped infra error, chained."""
        try:
            yield
        except InfraError:
            raise
        except Exception as exc:
            mapped = self._mapper(exc, action)
            if mapped is None or mapped is exc:
                raise
            raise mapped from exc
