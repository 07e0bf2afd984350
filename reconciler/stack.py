"""The desired state a user declares: a :class:`Stack` of :class:`Group` s.

Users build these in a stack file (``stacks/*.py``); :mod:`reconciler.loader` finds the one
``Stack`` in it. The models are frozen pydantic v2 models that reject unknown fields, so a typo
is an error naming the field instead of a silently ignored setting. Provider- and
role-specific settings (``provider_config``, ``Group.config``) are validated later, against the
models the provider and role publish (see :mod:`reconciler.registry`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator

_LABEL_RE = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")

#: Longest stack or group name. Instance names are ``<stack>-<group>-<member>-<spec8>`` and must
#: fit the 63 characters GCE allows; members are ``<group>-<n>``.
MAX_NAME = 20


def _check_name(value: str) -> str:
    if not _LABEL_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use lowercase letters, digits and '-', "
            "starting with a letter and not ending with '-'"
        )
    if len(value) > MAX_NAME:
        raise ValueError(f"{value!r} is {len(value)} characters long; at most {MAX_NAME} are allowed")
    return value


#: A stack, group or member name: valid as a GCE label value, an EC2 tag and a DNS label.
Name = Annotated[str, AfterValidator(_check_name)]

#: Settings passed through to a provider or role, validated by that plugin's own model.
Settings = dict[str, JsonValue]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Group(_Frozen):
    """A node group: ``size`` identical members running one role.

    ``role`` names an installed role plugin (``command``, ``etcd``, ``prometheus``, ...);
    ``config`` holds that role's settings. ``image`` and ``machine_type`` are passed to the
    provider (a LinuxKit image reference and a cloud machine type); the local provider runs the
    role's services as host processes and ignores ``machine_type``.
    """

    name: Name
    size: Annotated[int, Field(ge=0, le=10_000)]
    role: str = "command"
    config: Settings = Field(default_factory=dict)
    image: str | None = None
    machine_type: str | None = None
    provider_config: Settings = Field(
        default_factory=dict,
        description="per-group provider settings (zones, subnets) merged over the stack's",
    )


class Stack(_Frozen):
    """Everything one ``infra apply`` converges: a named set of groups at one provider."""

    name: Name
    provider: str = "local"
    provider_config: Settings = Field(default_factory=dict)
    groups: tuple[Group, ...] = ()

    @model_validator(mode="after")
    def _unique_groups(self) -> Stack:
        seen: set[str] = set()
        for group in self.groups:
            if group.name in seen:
                raise ValueError(f"group {group.name!r} is declared twice; group names must be unique")
            seen.add(group.name)
        return self

    def group(self, name: str) -> Group:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)

    def group_provider_config(self, group: Group) -> dict[str, Any]:
        """The stack's provider settings with the group's own settings laid over them."""
        return {**self.provider_config, **group.provider_config}
