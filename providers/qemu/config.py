"""Settings of the ``qemu`` provider (the stack's ``provider_config``).

Validated by :meth:`providers.qemu.provider.QemuProvider.open`; a bad value is a ConfigError naming
``provider_config.<field>``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reconciler.kit.paths import state_root
from reconciler.kit.settings import parse_settings


class QemuConfig(BaseModel):
    """``provider_config`` of the qemu provider."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    root: str | None = Field(None, description="where VMs, images and the network's files live; "
                             "default <state root>/qemu")
    subnet: str = Field("10.77.0.0/24", description="the VMs' subnet on the bridge (gateway: its first address; "
                        "members from its 10th); it exists only in this private network namespace")
    bridge: str = Field("infra-qemu", max_length=15, pattern=r"^infra-[a-z0-9-]+$",
                        description="the bridge device (infra-*)")
    memory_mib: int = Field(512, ge=128, le=65536, description="memory of each VM, MiB")
    sd_port: int = Field(8775, ge=1, le=65535, description="port of the discovery endpoint on the gateway")

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, value: str) -> str:
        net = ipaddress.ip_network(value, strict=True)
        if net.version != 4 or net.num_addresses < 16 or net.is_loopback:
            raise ValueError("an IPv4 subnet of at least 16 addresses, not loopback (e.g. 10.77.0.0/24)")
        return str(net)

    def root_path(self) -> Path:
        return Path(self.root).expanduser() if self.root else state_root(create=False) / "qemu"

    def gateway(self) -> str:
        return str(next(ipaddress.ip_network(self.subnet).hosts()))


def parse_config(config: dict[str, Any]) -> QemuConfig:
    """``config`` as a :class:`QemuConfig`; ConfigError naming the first bad field."""
    return parse_settings(QemuConfig, config)
