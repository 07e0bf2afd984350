"""``provider_config`` of a ``pulumi`` stack, key by key, and the presets that fill it.

Validated by :func:`parse_config` in :meth:`providers.pulumi.provider.PulumiProvider.open`; a
group's ``provider_config`` is laid over the stack's. Every key is documented in
``docs/providers/pulumi.md``. A ``preset`` (``hcloud``, ``digitalocean``) fills ``resource``,
``inputs``, ``list`` and ``status`` for that cloud; any key set explicitly wins, so the generic
keys alone are enough for a provider that has no preset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from providers.pulumi import values
from reconciler.core.errors import ConfigError
from reconciler.kit.settings import parse_settings


class EnvValue(BaseModel):
    """A configuration value read from an environment variable (secrets: tokens, keys)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    env: str


class ListFields(BaseModel):
    """Where each field of infra's :class:`~reconciler.core.model.Instance` is in one listed item."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = "id"
    name: str = "name"
    labels: str = "labels"
    address: str = "ipv4Address"
    status: str = "status"
    labels_as: Literal["map", "tags"] = Field("map", description="a labels map, or 'key:value' tags")


class ListSpec(BaseModel):
    """The provider function that lists instances (``Invoke``), and how to read its answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    function: str = Field(description="the function token, e.g. hcloud:index/getServers:getServers")
    args: dict[str, Any] = Field(default_factory=dict, description="templates: {selector} is the label selector "
                                 "as k=v,k2=v2; {selector_map} the same as a map; {stack_tag} the stack as a "
                                 "key:value tag")
    items: str = Field("servers", description="the key of the list in the function's answer")
    fields: ListFields = Field(default_factory=ListFields)


PRESETS: dict[str, dict[str, Any]] = {
    # Hetzner Cloud (pulumi-hcloud, Terraform-bridged): servers carry a labels map; getServers
    # takes a label selector ("k=v,k2=v2"); user data is cloud-init/metadata text.
    "hcloud": {
        "plugin": "hcloud",
        "resource": "hcloud:index/server:Server",
        "inputs": {"name": "{name}", "serverType": "{machine_type}", "image": "{image}",
                   "labels": "{labels}", "userData": "{userdata}"},
        "list": {"function": "hcloud:index/getServers:getServers", "args": {"withSelector": "{selector}"},
                 "items": "servers",
                 "fields": {"id": "id", "name": "name", "labels": "labels", "address": "ipv4Address",
                            "status": "status"}},
        "status": {"running": "running", "initializing": "pending", "starting": "pending",
                   "stopping": "stopping", "off": "stopped", "deleting": "stopping", "migrating": "pending",
                   "rebuilding": "pending", "unknown": "unknown"},
        "discovery": "hetzner",
    },
    # DigitalOcean (pulumi-digitalocean, Terraform-bridged): droplets have tags, not labels, so
    # labels travel as "key:value" tags; getDroplets filters on a tag.
    "digitalocean": {
        "plugin": "digitalocean",
        "resource": "digitalocean:index/droplet:Droplet",
        "inputs": {"name": "{name}", "size": "{machine_type}", "image": "{image}", "tags": "{label_tags}",
                   "userData": "{userdata}"},
        "list": {"function": "digitalocean:index/getDroplets:getDroplets",
                 "args": {"filters": [{"key": "tags", "values": ["{stack_tag}"]}]},
                 "items": "droplets",
                 "fields": {"id": "id", "name": "name", "labels": "tags", "address": "ipv4AddressPrivate",
                            "status": "status", "labels_as": "tags"}},
        "status": {"active": "running", "new": "pending", "off": "stopped", "archive": "stopped"},
        "discovery": "digitalocean",
    },
}


class PulumiConfig(BaseModel):
    """Settings of the Pulumi bridge. See the module docstring and docs/providers/pulumi.md."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    preset: Literal["hcloud", "digitalocean"] | None = None
    plugin: str = Field(description="the plugin's name: pulumi-resource-<plugin>")
    version: str | None = Field(None, description="the plugin version, to find it under $PULUMI_HOME/plugins")
    plugin_path: str | None = Field(None, description="the plugin binary itself (else PATH, else PULUMI_HOME)")
    config: dict[str, Any] = Field(default_factory=dict,
                                   description="the plugin's configuration; secrets as {'env': 'NAME'}")
    resource: str = Field(description="the resource type token, e.g. hcloud:index/server:Server")
    inputs: dict[str, Any] = Field(default_factory=lambda: {"name": "{name}", "labels": "{labels}"})
    list: ListSpec
    status: dict[str, str] = Field(default_factory=lambda: {"running": "running"})
    discovery: Literal["hetzner", "digitalocean"] | None = None
    call_timeout: float = Field(120.0, gt=0, description="seconds allowed for one gRPC call")
    start_timeout: float = Field(30.0, gt=0, description="seconds the plugin has to print its port")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset"):
            preset = PRESETS.get(str(data["preset"]))
            if preset is not None:
                return {**preset, **data}
        return data

    @model_validator(mode="after")
    def _templates(self) -> PulumiConfig:
        """Every template uses only the variables of its place (checked at validate, not at plan)."""
        problems = values.template_problems(self.inputs, values.INPUT_VARIABLES, "inputs")
        problems += values.template_problems(self.list.args, values.LIST_VARIABLES, "list.args")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def config_values(self) -> dict[str, Any]:
        """The plugin configuration with ``{"env": NAME}`` values read. ConfigError when unset."""
        out: dict[str, Any] = {}
        for key, value in self.config.items():
            if isinstance(value, dict) and set(value) == {"env"}:
                name = str(value["env"])
                if name not in os.environ:
                    raise ConfigError(f"provider_config.config.{key}: environment variable {name} is not set",
                                      field=f"provider_config.config.{key}",
                                      hint=f"export {name}=... (it is read from the environment, never stored)")
                out[key] = os.environ[name]
            else:
                out[key] = value
        return out

    def secret_keys(self) -> set[str]:
        return {k for k, v in self.config.items() if isinstance(v, dict) and set(v) == {"env"}}


def parse_config(raw: Mapping[str, Any] | None, where: str = "provider_config") -> PulumiConfig:
    return parse_settings(PulumiConfig, raw, where=where)
