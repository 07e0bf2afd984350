"""The bridge's one error table: gRPC codes and Terraform-bridged providers' texts to infra's types."""

from __future__ import annotations

import grpc
import pytest

from providers.pulumi.errors import map_rpc_error
from reconciler.core.errors import InfraError, NotFoundError, PermanentError, QuotaError, TransientError


class Rpc(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


U = grpc.StatusCode.UNKNOWN


@pytest.mark.parametrize(("code", "text", "kind"), [
    (U, "error: limit of 3600 requests per hour reached (rate_limit_exceeded)", TransientError),
    (U, "POST https://api.digitalocean.com/v2/droplets: 429 API Rate limit exceeded", TransientError),
    (U, "error: 503 Service Unavailable", TransientError),
    (U, "error: context deadline exceeded (timeout)", TransientError),
    (grpc.StatusCode.UNAVAILABLE, "connection refused", TransientError),
    (U, "error: server limit exceeded (resource_limit_exceeded)", QuotaError),
    (U, "POST .../droplets: 422 creating this/these droplet(s) will exceed your droplet limit", QuotaError),
    (U, "error: server not found (not_found)", NotFoundError),
    (grpc.StatusCode.NOT_FOUND, "no such resource", NotFoundError),
    (U, "error: unable to authenticate (unauthorized, 401)", PermanentError),
    (grpc.StatusCode.UNAUTHENTICATED, "bad token", PermanentError),
    (U, "error: server name is already used (uniqueness_error)", PermanentError),
    (grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!", PermanentError),
])
def test_each_failure_gets_the_type_that_says_whether_retrying_helps(
    code: grpc.StatusCode, text: str, kind: type[InfraError],
) -> None:
    mapped = map_rpc_error(Rpc(code, text), "create web-0")
    assert type(mapped) is kind, mapped
    assert mapped is not None and mapped.message.startswith("pulumi: create web-0: ")


def test_other_exceptions_are_not_the_tables() -> None:
    assert map_rpc_error(ValueError("a bug"), "x") is None
