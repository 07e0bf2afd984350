"""The ``prometheus`` role's settings: what a stack file may put in ``Group.config``.

Validated by the engine against :attr:`PrometheusRole.config_model` before anything is planned;
checks that need the whole stack (does every watched group exist?) are in
:meth:`PrometheusRole.validate`, which reports them with the field path of the bad entry.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from reconciler.core.stack import GroupRef
from reconciler.kit.role import RoleConfig

#: A Prometheus duration (``5s``, ``1m30s``, ``15d``): units from years down to milliseconds,
#: largest first, each at most once, the same grammar Prometheus's ``model.ParseDuration`` takes.
_DURATION_RE = re.compile(r"^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")
_UNIT_MS = {
    "y": 365 * 86_400_000,
    "w": 7 * 86_400_000,
    "d": 86_400_000,
    "h": 3_600_000,
    "m": 60_000,
    "s": 1000,
    "ms": 1,
}


def duration_ms(value: str) -> int:
    """Milliseconds in a Prometheus duration; ValueError when it is not one or is zero."""
    if not value or not _DURATION_RE.match(value):
        raise ValueError(
            f"{value!r} is not a Prometheus duration: use a number and a unit, largest unit first, "
            "e.g. '5s', '1m30s', '15d' (units: y w d h m s ms)"
        )
    total = sum(int(n) * _UNIT_MS[unit] for n, unit in re.findall(r"(\d+)(ms|[ywdhms])", value))
    if total <= 0:
        raise ValueError(f"{value!r} is zero; a positive duration is required")
    return total


def _check_duration(value: str) -> str:
    duration_ms(value)
    return value


#: A positive Prometheus duration string.
Duration = Annotated[str, AfterValidator(_check_duration)]


class PrometheusConfig(RoleConfig):
    """``Group.config`` of a ``prometheus`` group.

    ``watch`` names the groups of the same stack to scrape; each one's role says where its
    members serve metrics (port, path, mutual TLS), and the provider's service discovery finds
    the members, so no address is ever written here or in the rendered configuration.
    """

    watch: tuple[GroupRef, ...] = Field(
        default=(), description="the stack's groups whose members Prometheus scrapes (groups or their names)"
    )
    scrape_interval: Duration = "5s"
    scrape_timeout: Duration | None = Field(
        None, description="per-scrape deadline; defaults to the scrape interval (at most 10s)"
    )
    retention: Duration = Field("15d", description="how long samples are kept (--storage.tsdb.retention.time)")
    renamed = {"image": "container_image"}  # the setting's name before typed groups
    container_image: str = Field("prom/prometheus:v2.42.0", description="the container image LinuxKit runs")
    port: Annotated[int, Field(ge=1, le=65_535)] = 9090
    binary: str = Field("prometheus", description="the host command the local provider runs")

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> PrometheusConfig:
        if self.scrape_timeout is not None and duration_ms(self.scrape_timeout) > duration_ms(self.scrape_interval):
            raise ValueError(
                f"scrape_timeout {self.scrape_timeout!r} is longer than scrape_interval "
                f"{self.scrape_interval!r}; Prometheus refuses such a configuration"
            )
        return self

    def effective_scrape_timeout(self) -> str:
        """The scrape timeout: as set, else the interval capped at Prometheus's 10s default."""
        if self.scrape_timeout is not None:
            return self.scrape_timeout
        return self.scrape_interval if duration_ms(self.scrape_interval) <= 10_000 else "10s"
