"""The one place where Google API failures become :mod:`reconciler.core.errors` types.

Called around every Compute call (``with translate(...)``: by :mod:`providers.gcp.api` for the
JSON reads, by :mod:`providers.gcp.provider` and :mod:`providers.gcp.images` for the writes, which
raise the same ``google.api_core`` exceptions) and on every finished zone or global operation
(:func:`operation_error`). The mapping::

    google.api_core exception                     infra error
    ─────────────────────────────────────────     ──────────────────────────────────────────
    429 TooManyRequests                           TransientError (retry_after from the answer)
    5xx (InternalServerError, BadGateway,         TransientError
      ServiceUnavailable, GatewayTimeout),
      DeadlineExceeded, RetryError, connection
      errors and timeouts
    403 reason rateLimitExceeded /                TransientError (API rate quota: wait)
      userRateLimitExceeded
    403 reason quotaExceeded / QUOTA_EXCEEDED     QuotaError
    403 other, 401                                PermanentError (credentials or IAM)
    400 / 404 naming a machine type               PermanentError "machine type ... does not exist"
    400 / 404 naming an image                     PermanentError "image ... does not exist"
    404 other (the instance)                      NotFoundError
    409 alreadyExists                             :class:`AlreadyExists` (create treats it as success)
    409 other (resourceNotReady, in use)          TransientError
    412 conditionNotMet (a stale fingerprint)     TransientError (read again and retry)
    400 other                                     PermanentError

    operation.error.errors[].code                 infra error
    ─────────────────────────────────────────     ──────────────────────────────────────────
    QUOTA_EXCEEDED                                QuotaError
    ZONE_RESOURCE_POOL_EXHAUSTED(_WITH_DETAILS),  TransientError (the zone is out of capacity
      RESOURCE_OPERATION_RATE_EXCEEDED,             or busy: try again later)
      RATE_LIMIT_EXCEEDED, INTERNAL_ERROR,
      SERVICE_UNAVAILABLE, TIMEOUT,
      IP_IN_USE_BY_ANOTHER_RESOURCE (the instance
      being replaced still holds the address)
    RESOURCE_NOT_FOUND                            NotFoundError
    RESOURCE_ALREADY_EXISTS                       :class:`AlreadyExists`
    anything else                                 PermanentError

Messages name the action and the resource (``gcp: insert instance x in us-central1-a: ...``) and
the API's own explanation; they never carry credentials or request bodies (user-data holds keys).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from reconciler.core.errors import (
    InfraError,
    NotFoundError,
    PermanentError,
    QuotaError,
    TransientError,
)
from reconciler.kit.errormap import ErrorTable

if TYPE_CHECKING:
    from google.api_core import exceptions as gexc

_MAX_DETAIL = 300


class AlreadyExists(PermanentError):
    """The resource already exists (409 ``alreadyExists``). ``create`` reads it back instead."""


_TRANSIENT_OP_CODES = {
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    "RESOURCE_OPERATION_RATE_EXCEEDED",
    "RATE_LIMIT_EXCEEDED",
    "INTERNAL_ERROR",
    "SERVICE_UNAVAILABLE",
    "TIMEOUT",
    "RESOURCE_NOT_READY",
    "IP_IN_USE_BY_ANOTHER_RESOURCE",
}
_RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED"}
_QUOTA_REASONS = {"quotaExceeded", "QUOTA_EXCEEDED", "dailyLimitExceeded"}

_SCRUB = re.compile(r"(access_token|token|key|signature)=[^&\s]+", re.IGNORECASE)


def _detail(text: str) -> str:
    """The API's explanation, trimmed and with anything token-like removed."""
    text = _SCRUB.sub(r"\1=<redacted>", " ".join(text.split()))
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def _reasons(exc: gexc.GoogleAPICallError) -> set[str]:
    out: set[str] = set()
    if exc.reason:
        out.add(str(exc.reason))
    for err in exc.errors or ():
        if isinstance(err, dict) and err.get("reason"):
            out.add(str(err["reason"]))
    return out


def _message(exc: gexc.GoogleAPICallError) -> str:
    # ``exc.message`` is "VERB URL: explanation"; keep only the explanation.
    text = str(exc.message or "")
    head, sep, tail = text.partition(": ")
    if sep and head.split(" ", 1)[0] in {"GET", "POST", "DELETE", "PUT", "PATCH"}:
        text = tail
    return _detail(text)


def _resource_kind(text: str) -> str | None:
    """Which referenced resource an error names: Compute puts the field or the path in the text."""
    if "machineType" in text:
        return "machine type"
    if "/images/" in text or "sourceImage" in text:
        return "image"
    return None


def map_api_error(exc: BaseException, *, action: str) -> InfraError:
    """The infra error for an exception raised by a Compute call doing ``action``."""
    where = f"gcp: {action}"
    if isinstance(exc, InfraError):
        return exc
    # Imported on the first failure, not with the provider: google.api_core's exceptions pull in
    # grpc and protobuf, which a CLI call whose every answer is a success never needs.
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    if isinstance(exc, gexc.RetryError):
        cause = exc.cause
        if cause is not None and cause is not exc:
            mapped = map_api_error(cause, action=action)
            if isinstance(mapped, TransientError):
                return TransientError(f"{mapped.message} (gave up retrying)", hint=mapped.hint)
            return mapped
        return TransientError(f"{where}: gave up retrying: {_detail(str(exc))}")
    if isinstance(exc, gexc.TooManyRequests):
        retry_after = None
        response = getattr(exc, "response", None)
        header = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
        if header:
            try:
                retry_after = float(header)
            except ValueError:
                retry_after = None
        return TransientError(f"{where}: throttled (429): {_message(exc)}", retry_after=retry_after)
    if isinstance(exc, gexc.ServerError | gexc.DeadlineExceeded):
        code = exc.code if isinstance(exc.code, int) else "5xx"
        return TransientError(f"{where}: server error ({code}): {_message(exc)}")
    if isinstance(exc, gexc.Forbidden | gexc.PermissionDenied):
        reasons = _reasons(exc)
        if reasons & _RATE_REASONS:
            return TransientError(f"{where}: API rate limit (403): {_message(exc)}")
        if reasons & _QUOTA_REASONS or "quota" in str(exc.message).lower():
            return QuotaError(
                f"{where}: quota exceeded: {_message(exc)}",
                hint="raise the quota in the Cloud console (IAM & Admin > Quotas) or shrink the stack",
            )
        return PermanentError(
            f"{where}: permission denied (403): {_message(exc)}",
            hint="the credentials need roles/compute.instanceAdmin.v1 on the project",
        )
    if isinstance(exc, gexc.Unauthorized | gexc.Unauthenticated):
        return PermanentError(
            f"{where}: the credentials were rejected (401)",
            hint="run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS",
        )
    if isinstance(exc, gexc.PreconditionFailed):  # 412: a stale labelFingerprint; read again and retry
        return TransientError(f"{where}: changed meanwhile (412): {_message(exc)}")
    if isinstance(exc, gexc.Conflict):
        if "alreadyExists" in _reasons(exc) or "already exists" in str(exc.message):
            return AlreadyExists(f"{where}: already exists: {_message(exc)}")
        return TransientError(f"{where}: conflict (409): {_message(exc)}")
    if isinstance(exc, gexc.NotFound | gexc.BadRequest):
        text = _message(exc)
        kind = _resource_kind(str(exc.message))
        code = exc.code
        if kind == "machine type":
            return PermanentError(
                f"{where}: machine type does not exist ({code}): {text}",
                hint="pick one from `gcloud compute machine-types list --zones=ZONE`",
            )
        if kind == "image":
            return PermanentError(
                f"{where}: image does not exist ({code}): {text}",
                hint="build and upload it (the LinuxKit image pipeline) or fix the stack's image",
            )
        if isinstance(exc, gexc.NotFound):
            return NotFoundError(f"{where}: not found: {text}")
        return PermanentError(f"{where}: the request was rejected (400): {text}")
    if isinstance(exc, gexc.GoogleAPICallError):
        return PermanentError(f"{where}: {exc.code}: {_message(exc)}")
    if isinstance(exc, auth_exc.DefaultCredentialsError):
        return PermanentError(
            f"{where}: no Google credentials found",
            hint="run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS",
        )
    if isinstance(exc, auth_exc.RefreshError):
        return PermanentError(
            f"{where}: the Google credentials could not be refreshed",
            hint="run `gcloud auth application-default login` again",
        )
    if isinstance(exc, auth_exc.TransportError | requests.exceptions.RequestException | TimeoutError):
        return TransientError(f"{where}: cannot reach the Compute API: {type(exc).__name__}")
    return PermanentError(f"{where}: unexpected {type(exc).__name__}: {_detail(str(exc))}")


#: The gcp provider's one error table (:mod:`reconciler.kit.errormap`): every Compute and Storage
#: exception becomes an infra error.
TABLE = ErrorTable("gcp", lambda exc, action: map_api_error(exc, action=action))
translate = TABLE.translate


def operation_error(op: Any, *, action: str) -> InfraError | None:
    """The infra error for a DONE operation that failed, or None when it succeeded.

    ``op`` is a ``compute_v1.Operation``. The first error code decides the type; every message
    is kept (a quota failure names the exhausted quota and region).
    """
    errors = list(op.error.errors) if op.error and op.error.errors else []
    if not errors:
        return None
    codes = [str(e.code) for e in errors]
    text = _detail("; ".join(f"{e.code}: {e.message}" for e in errors))
    where = f"gcp: {action}"
    first = codes[0]
    if first == "QUOTA_EXCEEDED":
        return QuotaError(
            f"{where}: quota exceeded: {text}",
            hint="raise the quota in the Cloud console (IAM & Admin > Quotas) or shrink the stack",
        )
    if first in _TRANSIENT_OP_CODES:
        hint = (
            "the zone is out of capacity for this machine type; it usually recovers, or list more zones"
            if first.startswith("ZONE_RESOURCE_POOL_EXHAUSTED")
            else None
        )
        return TransientError(f"{where}: {text}", hint=hint)
    if first == "RESOURCE_NOT_FOUND":
        return NotFoundError(f"{where}: {text}")
    if first == "RESOURCE_ALREADY_EXISTS":
        return AlreadyExists(f"{where}: {text}")
    kind = _resource_kind(text)
    if kind:
        return PermanentError(f"{where}: {kind} problem: {text}")
    return PermanentError(f"{where}: {text}")
