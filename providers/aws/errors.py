"""The one place where botocore failures become :mod:`reconciler.core.errors` types.

Called by :mod:`providers.aws.provider` around every EC2 call (``with translate(action)``). The
mapping::

    botocore exception / EC2 error code             infra error
    ───────────────────────────────────────────     ──────────────────────────────────────────
    Throttling, RequestLimitExceeded, ...           TransientError (backoff and retry)
    HTTP 5xx, InternalError, ServiceUnavailable,    TransientError
      Unavailable
    InsufficientInstanceCapacity,                   TransientError (the zone is out of that
      InsufficientCapacity                            type right now; hint: other subnet/type)
    InvalidIPAddress.InUse                          TransientError (the replaced instance still
                                                      holds the member's fixed address)
    IncorrectInstanceState, IncorrectState          TransientError (the instance is mid-change)
    OperationNotPermitted                           PermanentError (termination protection)
    EndpointConnectionError, connection closed,     TransientError
      connect/read timeouts
    InstanceLimitExceeded, VcpuLimitExceeded,       QuotaError
      MaxSpotInstanceCountExceeded,
      InsufficientFreeAddressesInSubnet,
      ResourceLimitExceeded
    InvalidAMIID.*                                  ResourceMissing (a PermanentError) with a
                                                      hint on the image setting
    InvalidInstanceType, InvalidParameterValue      ResourceMissing, hint on machine_type
      naming the instance type
    InvalidSubnet*, InvalidGroup.*,                 ResourceMissing naming the setting
      InvalidKeyPair.*
    Unsupported                                     PermanentError (e.g. type not offered in
                                                      the subnet's zone)
    AuthFailure, UnauthorizedOperation,             PermanentError with a credentials hint
      InvalidClientTokenId, ExpiredToken, ...
    IdempotentParameterMismatch                     PermanentError
    InvalidInstanceID.NotFound / .Malformed         NotFoundError
    NoCredentialsError, PartialCredentialsError     PermanentError with a credentials hint
    NoRegionError                                   ConfigError naming provider_config.region
    ParamValidationError                            PermanentError (a bug: infra built a bad call)
    other 4xx ClientError                           PermanentError
    other BotoCoreError                             TransientError

Messages name the action (``aws: launch web-0: ...``) and EC2's own explanation, scrubbed of
anything that looks like an access key id and cut short; they never carry request bodies
(user-data holds private keys) or credentials.
"""

from __future__ import annotations

import re

from botocore import exceptions as bexc

from reconciler.core.errors import (
    ConfigError,
    InfraError,
    NotFoundError,
    PermanentError,
    QuotaError,
    TransientError,
)
from reconciler.kit.errormap import ErrorTable

_MAX_DETAIL = 300


class ResourceMissing(PermanentError):
    """A resource a launch needs does not exist: AMI, instance type, subnet, security group, key.

    ``validate`` turns it into a Problem; anywhere else it is an ordinary PermanentError.
    """

    def __init__(self, message: str, *, code: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code

    @property
    def explanation(self) -> str:
        """The message without the ``aws: <action>:`` prefix (EC2's code and words, or infra's)."""
        if self.code and self.code in self.message:
            return self.message[self.message.index(self.code) :]
        return self.message.removeprefix("aws: ")

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
        "EC2ThrottledException",
        "PriorRequestNotComplete",
        "BandwidthLimitExceeded",
    }
)
SERVER_CODES = frozenset(
    {"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable", "RequestTimeout", "InternalServerError"}
)
CAPACITY_CODES = frozenset({"InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity"})
BUSY_CODES = frozenset({"IncorrectInstanceState", "IncorrectState"})
QUOTA_CODES = frozenset(
    {
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "MaxSpotInstanceCountExceeded",
        "InsufficientFreeAddressesInSubnet",
        "ResourceLimitExceeded",
        "VolumeLimitExceeded",
    }
)
AUTH_CODES = frozenset(
    {
        "AuthFailure",
        "UnauthorizedOperation",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "RequestExpired",
        "OptInRequired",
        "Blocked",
        "AccessDenied",
        "AccessDeniedException",
    }
)
NOT_FOUND_CODES = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})

_KEY_ID_RE = re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{12,}\b")
_ENCODED_RE = re.compile(r"Encoded authorization failure message:\s*\S+", re.IGNORECASE)


def scrub(text: str) -> str:
    """``text`` without access key ids or encoded authorization blobs, at most 300 characters."""
    text = _KEY_ID_RE.sub("<access-key-id>", text)
    text = _ENCODED_RE.sub(
        "Encoded authorization failure message: <omitted; decode it with 'aws sts "
        "decode-authorization-message'>",
        text,
    )
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def error_code(exc: BaseException) -> str:
    """The EC2 error code of a ``ClientError`` (``""`` for anything else)."""
    if isinstance(exc, bexc.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def _status(exc: bexc.ClientError) -> int:
    meta = exc.response.get("ResponseMetadata", {})
    try:
        return int(meta.get("HTTPStatusCode", 0))
    except (TypeError, ValueError):
        return 0


def from_client_error(exc: bexc.ClientError, action: str) -> InfraError:
    """The infra error for an error answer from EC2 while doing ``action``."""
    code = error_code(exc)
    detail = scrub(str(exc.response.get("Error", {}).get("Message", "")) or code or "no message")
    status = _status(exc)
    head = f"aws: {action}: {code}: {detail}" if code else f"aws: {action}: {detail}"
    if code in THROTTLING_CODES or status == 429:
        return TransientError(head, hint="EC2 is throttling this account's API calls; infra backs off and retries")
    if code in SERVER_CODES or status >= 500:
        return TransientError(head, hint="EC2 answered with a server error; infra retries")
    if code in CAPACITY_CODES:
        return TransientError(
            head,
            hint="the subnet's availability zone has no capacity for this instance type right now; "
            "infra retries, or list subnets in other zones or pick another instance type",
        )
    if code in BUSY_CODES:
        return TransientError(head, hint="the instance is still changing state; infra retries")
    if code == "InvalidIPAddress.InUse":
        return TransientError(
            head,
            hint="the member's fixed address is still held, usually by the instance it replaces while "
            "it shuts down (infra retries); if another instance holds it, reserve the address_offset "
            "range with a subnet CIDR reservation",
        )
    if code == "OperationNotPermitted":
        return PermanentError(
            head, hint="the instance has termination protection (DisableApiTermination); turn it off first"
        )
    if code in QUOTA_CODES:
        return QuotaError(
            head,
            hint="raise the limit in the Service Quotas console (EC2 'Running On-Demand instances' "
            "vCPUs) or shrink the stack",
        )
    if code.startswith("InvalidAMIID"):
        return ResourceMissing(
            head,
            code=code,
            hint="the group's image must be an AMI id (ami-...) or name that exists in the stack's "
            "region and that this account may launch",
        )
    if code == "InvalidInstanceType" or (code == "InvalidParameterValue" and "instance type" in detail.lower()):
        return ResourceMissing(
            head, code=code, hint="pick an instance type offered in the stack's region (machine_type)"
        )
    if code == "Unsupported":
        return PermanentError(
            head,
            hint="the request is not supported as configured (often: the instance type is not offered "
            "in the subnet's availability zone)",
        )
    if code.startswith("InvalidSubnet"):
        return ResourceMissing(
            head, code=code, hint="check provider_config.subnets: the subnets must exist in the stack's region"
        )
    if code.startswith("InvalidGroup") or code.startswith("InvalidSecurityGroup"):
        return ResourceMissing(head, code=code, hint="check provider_config.security_group_ids")
    if code.startswith("InvalidKeyPair"):
        return ResourceMissing(head, code=code, hint="check provider_config.key_name")
    if code in AUTH_CODES:
        return PermanentError(
            head,
            hint="check the AWS credentials infra runs with (AWS_PROFILE, AWS_ACCESS_KEY_ID, an "
            "instance role) and that they allow ec2:DescribeInstances, ec2:RunInstances, "
            "ec2:CreateTags, ec2:TerminateInstances, ec2:DescribeImages, ec2:DescribeInstanceTypes, "
            "ec2:DescribeSubnets",
        )
    if code in NOT_FOUND_CODES:
        return NotFoundError(head)
    if code == "IdempotentParameterMismatch":
        return PermanentError(
            head,
            hint="EC2 remembers this launch's client token with other parameters; the stack's "
            "provider settings changed under an instance name",
        )
    return PermanentError(head)


def from_exception(exc: BaseException, action: str) -> InfraError | None:
    """The infra error for a botocore exception raised while doing ``action`` (None: not ours)."""
    if isinstance(exc, InfraError):
        return exc
    if isinstance(exc, bexc.ClientError):
        return from_client_error(exc, action)
    if isinstance(exc, bexc.NoRegionError):
        return ConfigError(
            "provider_config.region: no AWS region is set",
            hint="set provider_config.region in the stack, or AWS_REGION in the environment",
        )
    if isinstance(exc, bexc.NoCredentialsError | bexc.PartialCredentialsError):
        return PermanentError(
            f"aws: {action}: no usable AWS credentials were found",
            hint="configure boto3's default chain: AWS_PROFILE (with ~/.aws/config), "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, SSO, or an instance role",
        )
    if isinstance(exc, bexc.ParamValidationError):
        return PermanentError(f"aws: {action}: infra built an invalid request (a bug): {scrub(str(exc))}")
    if isinstance(
        exc,
        bexc.EndpointConnectionError
        | bexc.ConnectionClosedError
        | bexc.ConnectTimeoutError
        | bexc.ReadTimeoutError
        | bexc.ProxyConnectionError
        | bexc.HTTPClientError,
    ):
        return TransientError(f"aws: {action}: could not reach EC2: {scrub(str(exc))}")
    if isinstance(exc, bexc.BotoCoreError):
        return TransientError(f"aws: {action}: {type(exc).__name__}: {scrub(str(exc))}")
    return None


#: The aws provider's one error table (:mod:`reconciler.kit.errormap`): botocore's exceptions become
#: infra's (``raise ... from exc``); anything else is left alone.
TABLE = ErrorTable("aws", from_exception)
translate = TABLE.translate
