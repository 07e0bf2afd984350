"""The Pulumi bridge's one error table: gRPC status codes and Terraform-bridged messages.

Used by every call :mod:`providers.pulumi.provider` makes to a plugin. Terraform-bridged
providers (hcloud, digitalocean, ...) answer nearly every failure as gRPC ``UNKNOWN`` with the
cloud's text, so the text decides: throttling and 5xx are transient, quota is a quota error,
"not found" is NotFoundError, authentication is permanent. A plugin that died or cannot be
reached is transient (the plugin is restarted). Messages never carry configuration values.
"""

from __future__ import annotations

import re

import grpc

from reconciler.core.errors import InfraError, NotFoundError, PermanentError, QuotaError, TransientError
from reconciler.kit.errormap import ErrorTable

_TRANSIENT = re.compile(r"rate.?limit|too many requests|\b429\b|throttl|\b5\d\d\b|timeout|timed out|"
                        r"temporar|unavailable|try again|connection (reset|refused)|deadline", re.I)
_QUOTA = re.compile(r"quota|limit (of|for) \w+ (exceeded|reached)|resource_limit_exceeded|droplet limit", re.I)
_NOT_FOUND = re.compile(r"not.?found|\b404\b|does not exist", re.I)
_AUTH = re.compile(r"unauthori[sz]ed|\b401\b|\b403\b|forbidden|invalid token|unable to authenticate", re.I)

_CODES_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}


def _detail(exc: grpc.RpcError) -> str:
    details = exc.details() if hasattr(exc, "details") else None
    return (details or str(exc)).strip()[:500]


def map_rpc_error(exc: BaseException, action: str) -> InfraError | None:
    """The infra error for a failed plugin call doing ``action``, or None when it is no RPC error."""
    if not isinstance(exc, grpc.RpcError):
        return None
    code = exc.code() if hasattr(exc, "code") else None
    text = _detail(exc)
    where = f"pulumi: {action}"
    if code == grpc.StatusCode.NOT_FOUND or (code in (grpc.StatusCode.UNKNOWN, None) and _NOT_FOUND.search(text)
                                            and not _TRANSIENT.search(text)):
        return NotFoundError(f"{where}: {text}")
    if code == grpc.StatusCode.UNAUTHENTICATED or code == grpc.StatusCode.PERMISSION_DENIED or _AUTH.search(text):
        return PermanentError(f"{where}: not authorised: {text}",
                              hint="check the plugin's credentials (provider_config.config, from the environment)")
    if _QUOTA.search(text):
        return QuotaError(f"{where}: out of quota: {text}", hint="raise the account's limit or shrink the stack")
    if code in _CODES_TRANSIENT or _TRANSIENT.search(text):
        return TransientError(f"{where}: {text}")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return PermanentError(f"{where}: the plugin does not implement this: {text}")
    return PermanentError(f"{where}: {text}")


TABLE = ErrorTable("pulumi", map_rpc_error)
translate = TABLE.translate
