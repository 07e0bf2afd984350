"""``provider_config`` of the ``aws`` provider, and how it reaches EC2.

Parsed by :meth:`providers.aws.AwsProvider.open` from the stack's ``provider_config`` and, per
member, from the group's settings laid over the stack's (``MemberSpec.provider_config``). Bad
settings become a ConfigError (or a validate Problem) naming ``provider_config.<field>``.

Credentials come from boto3's default chain (environment, ``AWS_PROFILE`` and ``~/.aws``, SSO,
container or instance role). The region is ``region`` here, else ``AWS_REGION`` /
``AWS_DEFAULT_REGION``, else the profile's. ``AWS_ENDPOINT_URL_EC2`` or ``AWS_ENDPOINT_URL``
(e.g. a moto server on 127.0.0.1) is passed to the one EC2 client explicitly, so every call
made through it, paginators included, goes there.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from reconciler.core.model import OWNERSHIP_LABELS
from reconciler.kit.settings import parse_settings

_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_SUBNET_RE = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_SG_RE = re.compile(r"^sg-[0-9a-f]{8,17}$")
AMI_ID_RE = re.compile(r"^ami-[0-9a-f]{8,17}$")

#: EC2 reserves the first four addresses of every subnet (network, router, DNS, future) and the last.
SUBNET_RESERVED_LOW = 4


def _subnet(value: str) -> str:
    if not _SUBNET_RE.match(value):
        raise ValueError(f"{value!r} is not a subnet id like 'subnet-0123456789abcdef0'")
    return value


def _sg(value: str) -> str:
    if not _SG_RE.match(value):
        raise ValueError(f"{value!r} is not a security group id like 'sg-0123456789abcdef0'")
    return value


def _unique(value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        raise ValueError("an entry is listed more than once")
    return value


class AwsConfig(BaseModel):
    """Where and how the stack's instances run on EC2."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    region: str | None = Field(None, description="AWS region; default AWS_REGION / AWS_DEFAULT_REGION")
    subnets: Annotated[list[Annotated[str, AfterValidator(_subnet)]], AfterValidator(_unique)] = Field(
        default_factory=list,
        description="subnet ids the members are spread over, round-robin by member index "
        "(one per availability zone spreads a group over zones); empty: the default VPC",
    )
    security_group_ids: Annotated[list[Annotated[str, AfterValidator(_sg)]], AfterValidator(_unique)] = Field(
        default_factory=list, description="security groups of every instance (etcd 2379/2380, 9090...)"
    )
    key_name: str | None = Field(None, description="EC2 key pair for SSH, if any")
    iam_instance_profile: str | None = Field(
        None, description="instance profile name or ARN (Prometheus's needs ec2:DescribeInstances)"
    )
    instance_type: str = Field("t3.micro", description="default when a group sets no machine_type")
    image: str | None = Field(None, description="default AMI id or name when a group sets no image")
    image_owners: list[str] = Field(
        default_factory=lambda: ["self"],
        min_length=1,
        description="owners searched when an image is given by name ('self', an account id, 'amazon')",
    )
    address: Literal["private", "public"] = Field(
        "private", description="which address infra reports for an instance (and probes it at)"
    )
    address_offset: int | None = Field(
        None,
        ge=SUBNET_RESERVED_LOW,
        description="fixed addresses: member i gets the address at offset address_offset + "
        "i // len(subnets) of its subnet (subnet i % len(subnets)), known before it exists, which "
        "etcd's static bootstrap needs. Reserve that range in the subnet (an explicit subnet CIDR "
        "reservation) so EC2 never hands it to another instance. Unset: EC2 picks addresses.",
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description="extra tags on every instance and volume (cost allocation)"
    )
    metadata_tokens: Literal["required", "optional"] = Field(
        "required",
        description="IMDSv2: 'required' (the default) launches instances whose metadata service answers "
        "only session-token requests, and registers AMIs with ImdsSupport v2.0. 'optional' also answers "
        "IMDSv1 GETs: LinuxKit's metadata package reads user-data with IMDSv1 only, so LinuxKit images "
        "need it (infra validate says so)",
    )

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and not _REGION_RE.match(value):
            raise ValueError(f"{value!r} is not an AWS region like 'eu-west-1'")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if key == "Name" or key in OWNERSHIP_LABELS or key.startswith("infra-") or key.lower().startswith("aws:"):
                raise ValueError(f"tag {key!r} is reserved (Name, infra-*, aws:*)")
            if not key or len(key) > 128 or len(val) > 256:
                raise ValueError(f"tag {key!r}: keys are 1-128 characters, values at most 256")
        return value

    @model_validator(mode="after")
    def _offset_needs_subnets(self) -> AwsConfig:
        if self.address_offset is not None and not self.subnets:
            raise ValueError("address_offset needs subnets: fixed addresses are offsets inside listed subnets")
        return self

    def resolved_region(self) -> str | None:
        """``region``, else ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` (None: ask the profile)."""
        return self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None

    def subnet_for(self, placement: int) -> str | None:
        """The subnet of member ``placement`` (round-robin), or None for the default VPC."""
        if not self.subnets:
            return None
        return self.subnets[placement % len(self.subnets)]

    def address_in(self, cidr: str, placement: int) -> str | None:
        """The fixed address of member ``placement`` in its subnet ``cidr`` (None: not fixed).

        Raises ValueError when the member does not fit the subnet.
        """
        if self.address_offset is None:
            return None
        net = ipaddress.ip_network(cidr, strict=False)
        per_subnet = max(1, len(self.subnets))
        offset = self.address_offset + placement // per_subnet
        if offset >= net.num_addresses - 1:
            raise ValueError(
                f"address_offset {self.address_offset}: member index {placement} would be at offset "
                f"{offset}, outside subnet {cidr} ({net.num_addresses - 5} usable addresses)"
            )
        return str(net.network_address + offset)


#: Environment variables: the key Prometheus's EC2 discovery gets under infra's EC2 emulator
#: (its read-only identity; ``infra emulator aws`` prints them).
SD_KEY_ENV = "INFRA_AWS_SD_ACCESS_KEY_ID"
SD_SECRET_ENV = "INFRA_AWS_SD_SECRET_ACCESS_KEY"


def endpoint_url() -> str | None:
    """The EC2 endpoint override from the environment, as boto3 itself would read it."""
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    return os.environ.get("AWS_ENDPOINT_URL_EC2") or os.environ.get("AWS_ENDPOINT_URL") or None


def parse_config(raw: Mapping[str, Any], *, where: str = "provider_config") -> AwsConfig:
    """Validate ``raw``; raise ConfigError naming ``<where>.<field>`` when it is wrong."""
    return parse_settings(AwsConfig, raw, where=where)
