"""The ``command`` role: run a given command on every member (a stand-in LinuxKit service).

The simplest useful role and the reference for writing one: each member runs ``command`` as its
one service (on the local provider a host process; in a LinuxKit image the container ``image``),
optionally listening on ``port`` at the member's own address. Cattle policy: members are
interchangeable and change in parallel. Health is a TCP connect (or an HTTP GET with
``health="http"``) to that port: refused means unhealthy (the process is up but broken), a
timeout means unknown (nothing is replaced on a guess).

``secret_env`` holds values that must not be seen (a token, a password): they are never part of
the image document, the plan, a log or the spec hash; each travels as a 0600 user-data file
(``<group>/secret-env/<NAME>``) the service reads into its environment when it starts. Changing a
value does not roll the members (it is not in the spec): ``infra apply --replace GROUP/MEMBER``
delivers it. ``stacks/hello-local.py`` uses the role to run three tiny web servers.
"""

from __future__ import annotations

import http.client
import socket
import time
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field

from reconciler.core.errors import HealthTimeoutError
from reconciler.core.model import (
    ConfigFile,
    Health,
    Instance,
    MemberSpec,
    Problem,
    Secret,
    Service,
    check_env_names,
    secret_env_file,
)
from reconciler.core.stack import Group
from reconciler.kit.role import MetricsTarget, Role, RoleConfig, RoleContext, UpdatePolicy


class CommandConfig(RoleConfig):
    """Settings of a ``command`` group (``Group.config``)."""

    command: list[str] = Field(min_length=1, description="argv; {address} {config} {data} {name} expand")
    port: int | None = Field(None, ge=1, le=65535, description="TCP port the command listens on")
    health: Literal["tcp", "http", "none"] = "tcp"  # without a port there is nothing to check
    http_path: str = "/"
    env: Annotated[dict[str, str], AfterValidator(check_env_names)] = Field(
        default_factory=dict, description="environment of the command; names are shell identifiers")
    secret_env: Annotated[dict[str, Secret], AfterValidator(check_env_names)] = Field(
        default_factory=dict, description="secret environment (tokens, passwords): delivered as 0600 files, "
        "never in the image, the plan or a log; names are shell identifiers")
    files: dict[str, str] = Field(default_factory=dict, description="config files: relative path → content")
    renamed = {"image": "container_image"}  # the setting's name before typed groups
    container_image: str = Field("alpine:3.20", description="the container image LinuxKit runs for this service")
    metrics_path: str | None = Field(None, description="path of Prometheus metrics on port, if any")
    ready_timeout: float = Field(30.0, gt=0)


class Command(Group, CommandConfig):
    """A ``command`` group with typed settings: ``Command(name="web", size=3, command=[...], port=8080)``."""

    settings_model = CommandConfig
    role_name = "command"
    role: str = "command"


class CommandRole(Role[CommandConfig]):
    """Runs ``config.command`` on each member. See the module docstring."""

    name: ClassVar[str] = "command"
    policy: ClassVar[UpdatePolicy] = UpdatePolicy.CATTLE
    config_model = CommandConfig

    def validate(self, ctx: RoleContext[CommandConfig]) -> list[Problem]:
        cfg = ctx.config
        problems = []
        for path in cfg.files:
            if path.startswith("/") or ".." in path.split("/"):
                problems.append(Problem(field=f"config.files[{path!r}]",
                                        message="file paths must be relative, without '..'"))
        return problems

    def expand(self, ctx: RoleContext[CommandConfig]) -> list[MemberSpec]:
        cfg = ctx.config
        service = Service(
            name=ctx.group.name,
            image=cfg.container_image,
            command=tuple(cfg.command),
            env=dict(cfg.env),
            ports=(cfg.port,) if cfg.port else (),
            secret_env=tuple(sorted(cfg.secret_env)),
        )
        files = tuple(ConfigFile(path=f"{ctx.group.name}/{p}", content=c) for p, c in sorted(cfg.files.items()))
        secrets = tuple(ConfigFile(path=secret_env_file(ctx.group.name, k), content=v.get_secret_value(), mode=0o600,
                                   secret=True, in_spec=False) for k, v in sorted(cfg.secret_env.items()))
        return self.member_bases(ctx, services=(service,), files=files + secrets)

    def _probe(self, cfg: CommandConfig, address: str, timeout: float) -> Health:
        assert cfg.port is not None
        try:
            if cfg.health == "http":
                conn = http.client.HTTPConnection(address, cfg.port, timeout=timeout)
                try:
                    conn.request("GET", cfg.http_path)
                    status = conn.getresponse().status
                finally:
                    conn.close()
                return Health.HEALTHY if status < 500 else Health.UNHEALTHY
            with socket.create_connection((address, cfg.port), timeout=timeout):
                return Health.HEALTHY
        except ConnectionRefusedError:
            return Health.UNHEALTHY
        except OSError:
            return Health.UNKNOWN

    def probes(self, ctx: RoleContext[CommandConfig]) -> bool:
        return ctx.config.health != "none" and ctx.config.port is not None

    def health(self, ctx: RoleContext[CommandConfig], instance: Instance) -> Health:
        cfg = ctx.config
        if not instance.alive:
            return Health.UNHEALTHY
        if cfg.health == "none" or cfg.port is None or not instance.address:
            return Health.HEALTHY
        if not ctx.reachable(instance.address):
            return Health.UNKNOWN
        return self._probe(cfg, instance.address, timeout=1.0)

    def after_create(self, ctx: RoleContext[CommandConfig], member: MemberSpec, instance: Instance) -> None:
        cfg = ctx.config
        if cfg.health == "none" or cfg.port is None or not instance.address:
            return
        if not ctx.reachable(instance.address):
            ctx.log(f"{member.member} at {instance.address} is outside INFRA_NETWORK_ALLOW: not waiting for its port")
            return
        deadline = time.monotonic() + cfg.ready_timeout
        while time.monotonic() < deadline:
            if self._probe(cfg, instance.address, timeout=0.5) is Health.HEALTHY:
                return
            time.sleep(0.05)
        raise HealthTimeoutError(
            f"{member.member} ({instance.address}:{cfg.port}) did not answer within {cfg.ready_timeout:g}s",
            hint="look at the member's log: infra status shows where it is",
        )

    def metrics(self, ctx: RoleContext[CommandConfig]) -> list[MetricsTarget]:
        cfg = ctx.config
        if cfg.port and cfg.metrics_path:
            return [MetricsTarget(port=cfg.port, path=cfg.metrics_path)]
        return []
