"""The one retry policy: how every retryable call of a pass is tried again (tenacity).

Used by the executor (each provider call and role hook of a change) and by the image pipeline
(each push); providers do **not** retry inside a call what this policy retries again (that would
multiply the attempts). A call is retried while it raises a *retryable* error
(:func:`reconciler.core.errors.is_retryable`), at most ``attempts`` tries within a deadline, waiting
between tries with exponential backoff and full jitter — but never less than the server asked
for: a :class:`~reconciler.core.errors.TransientError` whose ``retry_after`` the provider parsed from
the answer (HTTP ``Retry-After``, a throttling error's delay) waits at least that long.

``on_error`` sees every failed attempt (the daemon counts them as provider errors).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_base, wait_random_exponential

from reconciler.core.errors import is_retryable

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts, backoff (random in [0, base * 2**n], capped) and the deadline of one change."""

    attempts: int = 8
    base: float = 0.2
    cap: float = 10.0
    change_timeout: float = 600.0

    def wait(self) -> wait_base:
        return _WaitAtLeastRetryAfter(wait_random_exponential(multiplier=self.base, max=self.cap))


class _WaitAtLeastRetryAfter(wait_base):
    """The backoff, or the server's ``retry_after`` when that is longer."""

    def __init__(self, backoff: wait_base) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = self.backoff(retry_state)
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        asked = getattr(exc, "retry_after", None)
        if isinstance(asked, int | float) and asked > delay:
            return float(asked)
        return delay


def call(
    what: Callable[[], T],
    policy: RetryPolicy,
    *,
    deadline: float | None = None,
    on_error: Callable[[BaseException], None] | None = None,
) -> T:
    """``what()``, retried under ``policy`` until ``deadline`` (``time.monotonic()``; default: the
    policy's change timeout from now). The last error is re-raised as is.

    The first attempt runs bare: building a tenacity ``Retrying`` per call cost more than the
    memory provider's create itself. Only a retryable failure builds one, whose first "attempt"
    re-raises that failure, so attempts, waits and the deadline are those of a ``Retrying``
    wrapped around the first call.
    """
    if deadline is None:
        deadline = time.monotonic() + policy.change_timeout
    try:
        return what()
    except Exception as exc:
        if on_error is not None:
            on_error(exc)
        if not is_retryable(exc):
            raise
        first: BaseException | None = exc

    def attempt() -> T:
        nonlocal first
        if first is not None:
            failure, first = first, None
            raise failure
        try:
            return what()
        except Exception as exc:
            if on_error is not None:
                on_error(exc)
            raise

    remaining = max(0.001, deadline - time.monotonic())
    retrying = Retrying(
        retry=retry_if_exception(is_retryable),
        wait=policy.wait(),
        stop=stop_after_attempt(policy.attempts) | stop_after_delay(remaining),
        reraise=True,
    )
    return retrying(attempt)
