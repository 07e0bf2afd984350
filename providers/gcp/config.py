"""``provider_config`` of the ``gcp`` provider, and how it reaches the Compute API.

Parsed by :meth:`providers.gcp.GcpProvider.open` from the stack's ``provider_config`` and, per
member, from the group's settings laid over the stack's (``MemberSpec.provider_config``). Bad
settings become a ConfigError (or a validate Problem) naming ``provider_config.<field>``.

The endpoint override ``INFRA_GCP_ENDPOINT`` (``http://127.0.0.1:8089``) points every Compute
client at another server (infra's GCE emulator), with the access token ``INFRA_GCP_ACCESS_TOKEN``
as its credential (``infra emulator gcp`` prints both; anonymous when there is no token); without
the override, credentials come from Application Default Credentials (``google.auth.default()``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from reconciler.kit.settings import parse_settings

#: Environment variable: send every Compute call to this URL (with ACCESS_TOKEN_ENV's token).
ENDPOINT_ENV = "INFRA_GCP_ENDPOINT"
#: Environment variable: the OAuth access token sent to the endpoint override (never logged).
ACCESS_TOKEN_ENV = "INFRA_GCP_ACCESS_TOKEN"
#: Environment variable: the read-only token Prometheus presents to the override's discovery.
SD_TOKEN_ENV = "INFRA_GCP_SD_TOKEN"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

_PROJECT_RE = re.compile(r"^(?:[a-z][-a-z0-9.]*[a-z0-9]:)?[a-z][-a-z0-9]{4,28}[a-z0-9]$")
_ZONE_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
_TAG_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def _project(value: str) -> str:
    if not _PROJECT_RE.match(value):
        raise ValueError(f"{value!r} is not a GCP project id (6-30 lowercase letters, digits and '-')")
    return value


def _zone(value: str) -> str:
    if not _ZONE_RE.match(value):
        raise ValueError(f"{value!r} is not a zone name like 'us-central1-a'")
    return value


def _zones(value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        raise ValueError("zones are listed more than once")
    return value


def _tag(value: str) -> str:
    if not _TAG_RE.match(value):
        raise ValueError(f"{value!r} is not a valid network tag")
    return value


Zone = Annotated[str, AfterValidator(_zone)]


class GcpConfig(BaseModel):
    """Where and how the stack's instances run on Compute Engine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    project: Annotated[str, AfterValidator(_project)] = Field(description="the GCP project id")
    zones: Annotated[list[Zone], Field(min_length=1), AfterValidator(_zones)] = Field(
        description="zones the members are spread over, round-robin by member index"
    )
    machine_type: str | None = Field(None, description="default when a group sets none")
    image: str | None = Field(None, description="default when a group sets none (pins it: no image is built)")
    image_bucket: str | None = Field(
        None,
        description="Cloud Storage bucket (in the project) the LinuxKit images infra builds are uploaded "
        "to before images.insert; needed by groups that do not pin an image",
    )
    network: str | None = Field(None, description="VPC network (default: the project's 'default')")
    subnetwork: str | None = Field(None, description="subnetwork name or path (default: auto-mode)")
    service_account: str | None = Field(None, description="email the instances run as, or 'default'")
    scopes: list[str] = Field(default_factory=lambda: [CLOUD_PLATFORM_SCOPE])
    tags: list[Annotated[str, AfterValidator(_tag)]] = Field(
        default_factory=list, description="network tags, for firewall rules (etcd 2379/2380, 9090)"
    )
    external_ip: bool = Field(False, description="give each instance an ephemeral external address")
    address_range: str | None = Field(
        None,
        description="a CIDR inside the subnetwork's primary range set aside for this group: member "
        "<i> gets its (i+2)th address as a fixed internal IP, known before the instance exists "
        "(what etcd's static bootstrap needs). Unset: GCE picks ephemeral addresses.",
    )
    disk_size_gb: int = Field(10, ge=10, le=65536)
    disk_type: str = "pd-balanced"
    operation_deadline: float = Field(300.0, gt=0, description="seconds to wait for a zone operation")
    retry_deadline: float = Field(60.0, ge=0, description="seconds a listing retries a throttled or failed page")
    request_timeout: float = Field(60.0, gt=0, description="seconds per HTTP request")

    @field_validator("address_range")
    @classmethod
    def _range(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            net = ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a CIDR range like 10.128.15.0/28: {exc}") from None
        if net.version != 4 or net.num_addresses < 4:
            raise ValueError(f"{value!r}: use an IPv4 range of at least 4 addresses (/30 or larger)")
        return value

    @model_validator(mode="after")
    def _one_region(self) -> GcpConfig:
        if self.address_range and len({z.rsplit("-", 1)[0] for z in self.zones}) > 1:
            raise ValueError("address_range needs every zone of the group in one region (one subnetwork)")
        return self

    def address_of(self, placement: int) -> str | None:
        """The fixed internal address of member ``placement``, or None without ``address_range``."""
        if not self.address_range:
            return None
        net = ipaddress.ip_network(self.address_range)
        if placement + 2 >= net.num_addresses - 1:
            raise ValueError(
                f"address_range {self.address_range} holds {net.num_addresses - 3} members; "
                f"member index {placement} does not fit"
            )
        return str(net.network_address + 2 + placement)

    def zone_for(self, placement: int) -> str:
        """The zone of the member with index ``placement`` (round-robin)."""
        return self.zones[placement % len(self.zones)]

    @property
    def region_of(self) -> dict[str, str]:
        return {z: z.rsplit("-", 1)[0] for z in self.zones}


def parse_config(raw: Mapping[str, Any], *, where: str = "provider_config") -> GcpConfig:
    """Validate ``raw``; raise ConfigError naming ``<where>.<field>`` when it is wrong."""
    return parse_settings(GcpConfig, raw, where=where)
