"""The provider protocol: where instances run (InfraKit's instance SPI, typed).

A provider plugin is a class registered under the ``infra.providers`` entry-point group. The CLI
builds one per stack with :meth:`ProviderClass.open` and calls the five methods below; nothing in
``reconciler`` imports a cloud SDK. Every method may raise only :mod:`reconciler.errors` types:
each provider maps its SDK's exceptions to them in one module.

Contract, method by method:

``list(selector)``
    Every instance whose labels include all of ``selector``, in any state except fully gone
    (terminated EC2 instances, deleted GCE instances are not returned). One paginated list call
    per selector, never one read per instance. Raises TransientError when the listing could not
    be completed; a partial listing is never returned (the planner would delete what it missed
    seeing as "missing" and create duplicates).

``create(spec)``
    Creates the instance named ``spec.name`` with ``spec.labels`` set atomically at creation and
    ``spec.userdata()`` delivered as LinuxKit metadata. Idempotent on the name: if an instance of
    that name already exists with the stack's labels, returns it instead of creating a second
    one. When create raises, the instance may or may not exist: the next ``list`` decides (the
    deterministic name makes the retry safe). Returns the instance as the provider sees it right
    after creation (status ``pending`` or ``running``).

``delete(instance)``
    Deletes the instance. Deleting an instance that is already gone succeeds. After a failed
    delete the instance is assumed to still exist. Providers refuse (PermanentError) to delete an
    instance that lacks the ownership labels: a second safety net under the planner's own check.

``validate(members)``
    Problems with the desired members found *before* anything changes: unknown machine type,
    missing image or subnet, address or port collisions. Must not change anything.

``address_for(spec)`` (optional)
    The address (IP or DNS name) the instance created from ``spec`` will be reachable at, known
    *before* it is created, so a role can write it into configuration (etcd's static
    ``initial-cluster`` and certificate SANs). Stable for ``spec.name`` until that instance is
    deleted; providers that honour ``MemberSpec.address`` create the instance at it. Returns
    ``None`` when the provider cannot know it in advance. The engine calls it through
    :func:`address_for`, so providers without it still conform.

``discovery(selector, port)``
    A Prometheus scrape-config fragment (``{"file_sd_configs": ...}``, ``{"ec2_sd_configs": ...}``,
    ``{"gce_sd_configs": ...}``) that discovers the instances matching ``selector`` on ``port``
    with Prometheus's own service discovery, or ``None`` when the provider has none. Lets the
    prometheus role watch a group without any address written into its configuration.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from reconciler.model import Instance, MemberSpec, Problem

#: A Prometheus service-discovery fragment, merged into a scrape config.
SdConfig = dict[str, Any]


@runtime_checkable
class Provider(Protocol):
    """An open connection to one place where instances run. See the module docstring."""

    name: ClassVar[str]

    def list(self, selector: Mapping[str, str]) -> list[Instance]: ...

    def create(self, spec: MemberSpec) -> Instance: ...

    def delete(self, instance: Instance) -> None: ...

    def validate(self, members: Sequence[MemberSpec]) -> builtins.list[Problem]: ...

    def discovery(self, selector: Mapping[str, str], port: int) -> SdConfig | None: ...

    def close(self) -> None: ...


class ProviderClass(Protocol):
    """What the ``infra.providers`` entry point must load: a class with ``open``."""

    name: ClassVar[str]

    @classmethod
    def open(cls, config: Mapping[str, Any], *, stack: str, state_dir: Path) -> Provider:
        """Validate ``config`` (the stack's ``provider_config``) and connect.

        Raises ConfigError naming the bad field (``provider_config.zones``) when the settings
        are invalid, and PermanentError when credentials are missing. ``state_dir`` is the
        stack's private directory; ``stack`` its name.
        """
        ...


def address_for(provider: Provider, spec: MemberSpec) -> str | None:
    """The provider's advance address for ``spec``, or None when it offers none."""
    method = getattr(provider, "address_for", None)
    if method is None:
        return None
    result = method(spec)
    return result if isinstance(result, str) else None
