"""The etcd role's settings (``Group.config`` of a group with ``role="etcd"``).

Parsed by the engine with :attr:`plugins.etcd.role.EtcdRole.config_model`; unknown fields are
errors. Everything here except the timeouts of ``infra`` itself (``health_timeout``,
``request_timeout``, ``reconfig_wait``) shapes the members' configuration, so changing it rolls
the cluster one member at a time.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from reconciler.kit.role import RoleConfig

DEFAULT_VERSION = "3.4.23"
IMAGE_REPOSITORY = "quay.io/coreos/etcd"

#: A value of an extra etcd setting, as it appears in etcd's YAML configuration file.
FlagValue = str | int | float | bool | list[str]

#: Settings the role manages itself: a flag may not override them (identity, addresses,
#: bootstrap, TLS, and the safety check on reconfiguration).
RESERVED = frozenset(
    {
        "name",
        "data-dir",
        "wal-dir",
        "listen-peer-urls",
        "listen-client-urls",
        "initial-advertise-peer-urls",
        "advertise-client-urls",
        "initial-cluster",
        "initial-cluster-state",
        "initial-cluster-token",
        "discovery",
        "discovery-fallback",
        "discovery-proxy",
        "discovery-srv",
        "discovery-srv-name",
        "client-transport-security",
        "peer-transport-security",
        "force-new-cluster",
        "strict-reconfig-check",
        "heartbeat-interval",
        "election-timeout",
        "enable-grpc-gateway",
        "config-file",
        "client-crl-file",
        "peer-crl-file",
        "peer-cert-allowed-cn",
        "auth-token",
    }
)

#: Settings of etcd 3.4's configuration file a user may set through ``flags``
#: (``experimental-*`` settings are passed through as well).
KNOWN = frozenset(
    {
        "snapshot-count",
        "max-snapshots",
        "max-wals",
        "quota-backend-bytes",
        "backend-batch-limit",
        "backend-batch-interval",
        "backend-bbolt-freelist-type",
        "max-txn-ops",
        "max-request-bytes",
        "grpc-keepalive-min-time",
        "grpc-keepalive-interval",
        "grpc-keepalive-timeout",
        "auto-compaction-mode",
        "auto-compaction-retention",
        "initial-election-tick-advance",
        "pre-vote",
        "enable-v2",
        "enable-pprof",
        "cors",
        "host-whitelist",
        "cipher-suites",
        "listen-metrics-urls",
        "metrics",
        "bcrypt-cost",
        "logger",
        "log-level",
        "log-outputs",
        "debug",
        "self-signed-cert-validity",
    }
)

_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")


class EtcdConfig(RoleConfig):
    """Settings of an etcd group. See the module docstring."""

    version: str = Field(DEFAULT_VERSION, description="etcd version the members run (3.4.x)")
    renamed = {"image": "container_image"}  # the setting's name before typed groups
    container_image: str | None = Field(None, description=f"container image; default {IMAGE_REPOSITORY}:v<version>")
    flags: dict[str, FlagValue] = Field(
        default_factory=dict,
        description="extra etcd settings by their flag name without dashes "
        "(e.g. {'snapshot-count': 10000}); changing them rolls the cluster",
    )
    client_port: int = Field(2379, ge=1, le=65535)
    peer_port: int = Field(2380, ge=1, le=65535)
    heartbeat_interval_ms: int = Field(100, ge=10, le=10_000, description="etcd --heartbeat-interval")
    election_timeout_ms: int = Field(1000, ge=50, le=50_000, description="etcd --election-timeout")
    cluster_token: str | None = Field(None, description="initial-cluster-token; default <stack>-<group>")
    health_timeout: float = Field(60.0, gt=0, description="seconds a new member has to become healthy")
    request_timeout: float = Field(5.0, gt=0, description="seconds per etcd API call")
    reconfig_wait: float = Field(
        15.0,
        ge=0,
        description="seconds member add/remove keeps retrying while etcd answers 'unhealthy "
        "cluster' before handing the executor a transient error",
    )

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        value = value.removeprefix("v")
        if not _VERSION_RE.match(value):
            raise ValueError(f"{value!r} is not an etcd version like {DEFAULT_VERSION}")
        if not value.startswith("3."):
            raise ValueError(f"etcd {value} is not supported: this role speaks etcd 3's v3 API")
        return value

    @field_validator("flags")
    @classmethod
    def _flags(cls, flags: dict[str, FlagValue]) -> dict[str, FlagValue]:
        for key in flags:
            name = key.removeprefix("--")
            if name != key:
                raise ValueError(f"flag {key!r}: write it without dashes, as {name!r}")
            if name in RESERVED:
                raise ValueError(f"flag {key!r} is managed by the etcd role and cannot be set")
            if name not in KNOWN and not name.startswith("experimental-"):
                raise ValueError(f"flag {key!r} is not an etcd 3.4 configuration setting this role knows")
            values = flags[key] if isinstance(flags[key], list) else [flags[key]]
            if any(isinstance(v, str) and any(c in v for c in "\n\r\0") for v in values):  # type: ignore[union-attr]
                raise ValueError(f"flag {key!r}: a value cannot hold a line break")
        return flags

    @model_validator(mode="after")
    def _consistent(self) -> EtcdConfig:
        if self.client_port == self.peer_port:
            raise ValueError("client_port and peer_port must differ")
        if self.election_timeout_ms < 5 * self.heartbeat_interval_ms:
            # etcd itself refuses to start otherwise.
            raise ValueError(
                f"election_timeout_ms ({self.election_timeout_ms}) must be at least 5 times "
                f"heartbeat_interval_ms ({self.heartbeat_interval_ms})"
            )
        return self

    @property
    def effective_image(self) -> str:
        return self.container_image or f"{IMAGE_REPOSITORY}:v{self.version}"
