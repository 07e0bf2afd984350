"""providers/gcp/errors.py: every Google failure becomes the engine type that says whether to retry."""

from __future__ import annotations

import pytest
import requests
from google.api_core import exceptions as gexc
from google.cloud import compute_v1

from providers.gcp.errors import AlreadyExists, map_api_error, operation_error, translate
from reconciler.core.errors import NotFoundError, PermanentError, QuotaError, TransientError


def api_error(cls: type[gexc.GoogleAPICallError], message: str, reason: str | None = None) -> gexc.GoogleAPICallError:
    errors = [{"reason": reason, "message": message}] if reason else []
    return cls(f"POST https://compute.googleapis.com/compute/v1/projects/p/zones/z/instances: {message}", errors=errors)


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (api_error(gexc.TooManyRequests, "Rate Limit Exceeded", "rateLimitExceeded"), TransientError, "429"),
        (api_error(gexc.ServiceUnavailable, "backend", "backendError"), TransientError, "503"),
        (api_error(gexc.InternalServerError, "oops"), TransientError, "500"),
        (api_error(gexc.BadGateway, "bad gateway"), TransientError, "502"),
        (api_error(gexc.Forbidden, "Rate Limit Exceeded", "userRateLimitExceeded"), TransientError, "rate"),
        (api_error(gexc.Forbidden, "Quota 'CPUS' exceeded", "quotaExceeded"), QuotaError, "CPUS"),
        (api_error(gexc.Forbidden, "Required 'compute.instances.create'", "forbidden"), PermanentError, "permission"),
        (
            api_error(gexc.BadRequest, "Invalid value for field 'resource.machineType': 'zones/z/machineTypes/x'"),
            PermanentError,
            "machine type does not exist",
        ),
        (
            api_error(gexc.NotFound, "The resource 'projects/p/global/images/family/f' was not found", "notFound"),
            PermanentError,
            "image does not exist",
        ),
        (
            api_error(gexc.NotFound, "The resource 'projects/p/zones/z/instances/i' was not found", "notFound"),
            NotFoundError,
            "not found",
        ),
        (api_error(gexc.Conflict, "The resource 'x' already exists", "alreadyExists"), AlreadyExists, "exists"),
        (api_error(gexc.Conflict, "The resource 'x' is not ready", "resourceNotReady"), TransientError, "409"),
        (api_error(gexc.Unauthorized, "Request had invalid authentication credentials"), PermanentError, "401"),
        (requests.exceptions.ConnectionError("refused"), TransientError, "cannot reach"),
    ],
)
def test_api_errors_map_to_engine_types(exc: Exception, kind: type[Exception], text: str) -> None:
    mapped = map_api_error(exc, action="insert instance i in z")
    assert type(mapped) is kind
    assert text.lower() in str(mapped).lower()
    assert str(mapped).startswith("gcp: insert instance i in z")
    assert "https://compute.googleapis.com" not in mapped.message  # the explanation, not the URL


def test_quota_error_is_not_retried_but_throttling_is() -> None:
    assert not map_api_error(api_error(gexc.Forbidden, "q", "quotaExceeded"), action="a").retryable
    assert map_api_error(api_error(gexc.TooManyRequests, "slow down"), action="a").retryable


def test_translate_chains_the_original_exception() -> None:
    original = api_error(gexc.ServiceUnavailable, "down")
    with pytest.raises(TransientError) as err, translate("list instances"):
        raise original
    assert err.value.__cause__ is original


def test_token_like_strings_are_redacted() -> None:
    exc = api_error(gexc.BadRequest, "bad request to /x?access_token=ya29.SECRET&key=AIzaSECRET")
    text = str(map_api_error(exc, action="a"))
    assert "SECRET" not in text and "<redacted>" in text


def op(*errors: tuple[str, str]) -> compute_v1.Operation:
    return compute_v1.Operation(
        name="operation-1",
        status=compute_v1.Operation.Status.DONE,
        error=compute_v1.Error(errors=[compute_v1.Errors(code=c, message=m) for c, m in errors]),
    )


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("QUOTA_EXCEEDED", QuotaError),
        ("ZONE_RESOURCE_POOL_EXHAUSTED", TransientError),
        ("ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", TransientError),
        ("RESOURCE_OPERATION_RATE_EXCEEDED", TransientError),
        ("IP_IN_USE_BY_ANOTHER_RESOURCE", TransientError),
        ("RESOURCE_NOT_FOUND", NotFoundError),
        ("RESOURCE_ALREADY_EXISTS", AlreadyExists),
        ("INVALID_FIELD_VALUE", PermanentError),
    ],
)
def test_operation_errors_map_to_engine_types(code: str, kind: type[Exception]) -> None:
    mapped = operation_error(op((code, "explained")), action="insert instance i")
    assert type(mapped) is kind
    assert code in str(mapped) and "explained" in str(mapped)


def test_a_successful_operation_is_no_error() -> None:
    assert operation_error(compute_v1.Operation(name="op", status=compute_v1.Operation.Status.DONE), action="a") is None
