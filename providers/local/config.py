"""Settings of the ``local`` provider (the stack's ``provider_config``).

Validated by :meth:`providers.local.LocalProvider.open`; a bad value is a ConfigError naming
``provider_config.<field>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from reconciler.kit.paths import state_root
from reconciler.kit.settings import parse_settings


class LocalConfig(BaseModel):
    """``provider_config`` of the local provider."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    root: str | None = Field(
        None, description="where instance directories live; default <state root>/local"
    )
    grace: float = Field(5.0, ge=0, le=600, description="seconds between TERM and KILL on delete")
    start_timeout: float = Field(
        15.0, gt=0, le=600, description="seconds to wait for an instance's processes to start"
    )
    owner_pid: int | None = Field(
        None, gt=0, description="a process the instances die with, however it ends (infra's emulators set "
        "their own pid: a kill -9 of the emulator stops its machines); default: instances outlive infra"
    )

    def root_path(self) -> Path:
        """The provider's root directory (not created here)."""
        return Path(self.root).expanduser() if self.root else state_root(create=False) / "local"


def parse_config(config: dict[str, Any]) -> LocalConfig:
    """``config`` as a :class:`LocalConfig`; ConfigError naming the first bad field."""
    return parse_settings(LocalConfig, config)
