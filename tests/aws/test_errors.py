"""providers/aws/errors.py: every botocore failure becomes the right infra error, clearly worded."""

from __future__ import annotations

from typing import Any

import pytest
from botocore import exceptions as bexc

from providers.aws import errors
from reconciler.core.errors import (
    ConfigError,
    InfraError,
    NotFoundError,
    PermanentError,
    QuotaError,
    TransientError,
)


def client_error(code: str, message: str = "explained", status: int = 400, op: str = "RunInstances") -> bexc.ClientError:
    response: Any = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return bexc.ClientError(response, op)


def mapped(exc: Exception, action: str = "launch web-0") -> InfraError:
    with pytest.raises(InfraError) as info, errors.translate(action):
        raise exc
    assert info.value.__cause__ is exc  # raise ... from exc
    return info.value


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("RequestLimitExceeded", 503),
        ("Throttling", 400),
        ("ThrottlingException", 400),
        ("RequestThrottled", 400),
        ("SlowDown", 503),
        ("InternalError", 500),
        ("Unavailable", 503),
        ("ServiceUnavailable", 503),
        ("SomethingNew", 502),
        ("InsufficientInstanceCapacity", 500),
        ("InvalidIPAddress.InUse", 400),
        ("IncorrectInstanceState", 400),
    ],
)
def test_throttling_5xx_and_capacity_are_transient(code: str, status: int) -> None:
    err = mapped(client_error(code, status=status))
    assert isinstance(err, TransientError) and err.retryable
    assert "launch web-0" in str(err) and code in str(err)


@pytest.mark.parametrize("code", ["InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded",
                                  "InsufficientFreeAddressesInSubnet"])
def test_quota_codes_are_quota_errors(code: str) -> None:
    err = mapped(client_error(code, "You have requested more vCPU capacity than your current vCPU limit"))
    assert isinstance(err, QuotaError) and not err.retryable
    assert err.hint and "quota" in err.hint.lower()


@pytest.mark.parametrize("code", ["InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "InvalidAMIID.Unavailable"])
def test_missing_ami_is_permanent_with_an_image_hint(code: str) -> None:
    err = mapped(client_error(code, "The image id '[ami-0123456789abcdef0]' does not exist"))
    assert isinstance(err, errors.ResourceMissing) and isinstance(err, PermanentError)
    assert not err.retryable
    assert "ami-0123456789abcdef0" in str(err) and err.hint and "image" in err.hint


def test_bad_instance_type_is_permanent() -> None:
    for code, msg in [
        ("InvalidParameterValue", "Invalid value 'q9.huge' for InstanceType. The instance type is unknown"),
        ("InvalidInstanceType", "The following supplied instance types do not exist: [q9.huge]"),
    ]:
        err = mapped(client_error(code, msg))
        assert isinstance(err, errors.ResourceMissing), code
        assert "q9.huge" in str(err) and err.hint and "machine_type" in err.hint


def test_other_invalid_parameter_is_permanent_but_not_a_missing_resource() -> None:
    err = mapped(client_error("InvalidParameterValue", "Value (x) for parameter iamInstanceProfile.name is invalid"))
    assert type(err) is PermanentError


def test_unsupported_is_permanent_with_a_zone_hint() -> None:
    err = mapped(client_error("Unsupported", "Your requested instance type (t3.micro) is not supported in us-east-1e"))
    assert type(err) is PermanentError and err.hint and "availability zone" in err.hint


@pytest.mark.parametrize(("code", "setting"), [("InvalidSubnetID.NotFound", "subnets"),
                                               ("InvalidGroup.NotFound", "security_group_ids"),
                                               ("InvalidKeyPair.NotFound", "key_name")])
def test_missing_network_settings_name_the_setting(code: str, setting: str) -> None:
    err = mapped(client_error(code))
    assert isinstance(err, errors.ResourceMissing) and err.hint and setting in err.hint


@pytest.mark.parametrize("code", ["InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"])
def test_unknown_instance_is_not_found(code: str) -> None:
    err = mapped(client_error(code, "The instance ID 'i-0123' does not exist", op="TerminateInstances"))
    assert isinstance(err, NotFoundError)


@pytest.mark.parametrize("code", ["AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "ExpiredToken"])
def test_credential_failures_are_permanent_with_a_credentials_hint(code: str) -> None:
    err = mapped(client_error(code, "You are not authorized to perform this operation.", status=403))
    assert type(err) is PermanentError and err.hint and "credentials" in err.hint


def test_address_in_use_is_transient_and_termination_protection_permanent() -> None:
    err = mapped(client_error("InvalidIPAddress.InUse", "Address 10.0.0.10 is in use."))
    assert isinstance(err, TransientError) and err.hint and "address_offset" in err.hint
    err = mapped(client_error("OperationNotPermitted", "The instance may not be terminated.", op="TerminateInstances"))
    assert type(err) is PermanentError and err.hint and "termination protection" in err.hint


def test_idempotency_mismatch_is_permanent() -> None:
    assert type(mapped(client_error("IdempotentParameterMismatch"))) is PermanentError


def test_other_client_errors_are_permanent() -> None:
    assert type(mapped(client_error("SomethingElse", status=400))) is PermanentError


@pytest.mark.parametrize(
    "exc",
    [
        bexc.EndpointConnectionError(endpoint_url="https://ec2.us-east-1.amazonaws.com"),
        bexc.ConnectionClosedError(endpoint_url="https://ec2.us-east-1.amazonaws.com"),
        bexc.ConnectTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com"),
        bexc.ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com"),
    ],
)
def test_network_failures_are_transient(exc: Exception) -> None:
    err = mapped(exc)
    assert isinstance(err, TransientError) and "could not reach EC2" in str(err)


def test_missing_credentials_and_region() -> None:
    err = mapped(bexc.NoCredentialsError())
    assert type(err) is PermanentError and err.hint and "AWS_PROFILE" in err.hint
    err = mapped(bexc.NoRegionError())
    assert isinstance(err, ConfigError) and "provider_config.region" in str(err)


def test_bad_request_built_by_infra_is_reported_as_a_bug() -> None:
    err = mapped(bexc.ParamValidationError(report="Missing required parameter in input: \"MinCount\""))
    assert type(err) is PermanentError and "bug" in str(err)


def test_infra_errors_and_foreign_exceptions_pass_through() -> None:
    original = TransientError("already mapped")
    with pytest.raises(TransientError) as info, errors.translate("x"):
        raise original
    assert info.value is original
    with pytest.raises(KeyError), errors.translate("x"):
        raise KeyError("not botocore's")


def test_messages_carry_no_access_key_ids_and_stay_short() -> None:
    message = (
        "Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/ec2/aws4_request is not valid. "
        "Encoded authorization failure message: " + "x" * 2000
    )
    err = mapped(client_error("UnauthorizedOperation", message, status=403))
    text = str(err)
    assert "AKIAIOSFODNN7EXAMPLE" not in text and "<access-key-id>" in text
    assert "x" * 50 not in text
    assert len(err.message) < 400


def test_a_missing_resource_explains_itself_without_the_action() -> None:
    err = mapped(client_error("InvalidSubnetID.NotFound", "The subnet ID 'subnet-1' does not exist"), "describe x")
    assert isinstance(err, errors.ResourceMissing)
    assert err.explanation == "InvalidSubnetID.NotFound: The subnet ID 'subnet-1' does not exist"
    own = errors.ResourceMissing("aws: no AMI named 'x' owned by self", code="InvalidAMIID.NotFound")
    assert own.explanation == "no AMI named 'x' owned by self"
