"""The one retry policy (reconciler.kit.retry): what is retried, how often, and how long it waits."""

from __future__ import annotations

import itertools
import time

import pytest

from reconciler.core.errors import PermanentError, RoleTransientError, TransientError
from reconciler.kit.retry import RetryPolicy, call

FAST = RetryPolicy(attempts=4, base=0.001, cap=0.002)


def flaky(errors: list[Exception]) -> tuple[list[float], object]:
    """A call that raises ``errors`` one by one, then returns "ok"; the times of its attempts."""
    times: list[float] = []

    def attempt() -> str:
        times.append(time.monotonic())
        if errors:
            raise errors.pop(0)
        return "ok"

    return times, attempt


def test_retryable_errors_are_retried_until_success() -> None:
    times, attempt = flaky([TransientError("503"), RoleTransientError("unhealthy cluster")])
    assert call(attempt, FAST) == "ok"  # type: ignore[arg-type]
    assert len(times) == 3


def test_a_permanent_error_is_raised_at_once() -> None:
    times, attempt = flaky([PermanentError("no such image")])
    with pytest.raises(PermanentError):
        call(attempt, FAST)  # type: ignore[arg-type]
    assert len(times) == 1


def test_attempts_are_bounded_and_the_last_error_is_raised() -> None:
    times, attempt = flaky([TransientError(f"503 #{i}") for i in range(10)])
    with pytest.raises(TransientError, match="#3"):
        call(attempt, FAST)  # type: ignore[arg-type]
    assert len(times) == 4


def test_the_wait_is_at_least_the_servers_retry_after() -> None:
    times, attempt = flaky([TransientError("429", retry_after=0.3), TransientError("429", retry_after=0.2)])
    assert call(attempt, FAST) == "ok"  # type: ignore[arg-type]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.2  # the backoff alone would wait about a millisecond


def test_the_deadline_stops_retrying_even_with_attempts_left() -> None:
    times, attempt = flaky([TransientError("429", retry_after=0.2) for _ in range(10)])
    with pytest.raises(TransientError):
        call(attempt, RetryPolicy(attempts=100, base=0.001), deadline=time.monotonic() + 0.3)  # type: ignore[arg-type]
    assert 2 <= len(times) <= 3


def test_every_failed_attempt_is_reported() -> None:
    seen: list[str] = []
    _times, attempt = flaky([TransientError("a"), TransientError("b")])
    call(attempt, FAST, on_error=lambda exc: seen.append(str(exc)))  # type: ignore[arg-type]
    assert seen == ["a", "b"]
