"""The ``greeter`` role: every member runs one service that says its greeting.

A complete role: a settings model, a typed group class for stack files (``Greeter(name=...,
size=..., greeting=...)``), and the hooks it needs — ``check`` (the declaration alone, before any
provider is opened), ``validate`` and ``expand``. Every other hook keeps the default of
``reconciler.role.Role``: cattle policy, healthy while alive.
"""

from __future__ import annotations

from pydantic import Field

from reconciler import Group
from reconciler.model import ConfigFile, MemberSpec, Problem, Service
from reconciler.role import Role, RoleConfig, RoleContext


class GreeterConfig(RoleConfig):
    """Settings of a ``greeter`` group."""

    greeting: str = Field("hello", description="what each member says")


class Greeter(Group, GreeterConfig):
    """A greeter group with typed settings: ``Greeter(name="hi", size=2, greeting="hej")``."""

    settings_model = GreeterConfig
    role_name = "greeter"
    role: str = "greeter"


class GreeterRole(Role[GreeterConfig]):
    name = "greeter"
    config_model = GreeterConfig

    def check(self, group: Group, config: GreeterConfig) -> list[Problem]:
        if group.size > 10:
            return [Problem(field="size", message=f"{group.size} greeters are too many: at most 10")]
        return []

    def validate(self, ctx: RoleContext[GreeterConfig]) -> list[Problem]:
        if not ctx.config.greeting.strip():
            return [Problem(field="config.greeting", message="a greeting must say something")]
        return []

    def expand(self, ctx: RoleContext[GreeterConfig]) -> list[MemberSpec]:
        greeting = ConfigFile(path="greeter/greeting", content=ctx.config.greeting + "\n")
        service = Service(name="greeter", image="alpine:3.20",
                          command=("sh", "-c", "cat {config}/greeter/greeting; exec sleep 3600"))
        return [self.member_base(ctx, i, services=(service,), files=(greeting,)) for i in range(ctx.group.size)]
