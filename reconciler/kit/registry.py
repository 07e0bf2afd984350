"""Finds provider and role plugins through entry points (``infra.providers``, ``infra.plugins``).

The built-in plugins are registered in ``pyproject.toml`` exactly as a third-party package would
register its own, so installing a package is all it takes to add a cloud or a role. Called by the
CLI when it wires a stack to its provider and roles.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import cast

from reconciler.core.errors import ConfigError
from reconciler.kit.provider import ProviderClass
from reconciler.kit.role import AnyRole, Role

PROVIDER_GROUP = "infra.providers"
ROLE_GROUP = "infra.plugins"
#: ``infra emulator NAME``: a callable ``run(port, state, *, machines, vm_memory) -> int`` serving a cloud's API.
EMULATOR_GROUP = "infra.emulators"


@cache
def _entry_points(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def provider_names() -> list[str]:
    return sorted(_entry_points(PROVIDER_GROUP))


def role_names() -> list[str]:
    return sorted(_entry_points(ROLE_GROUP))


def _load(group: str, kind: str, name: str, where: str) -> object:
    eps = _entry_points(group)
    if name not in eps:
        installed = ", ".join(sorted(eps)) or "none"
        raise ConfigError(
            f"{where}: unknown {kind} {name!r}; installed {kind}s: {installed}",
            hint=f"install a package that registers {name!r} under the {group!r} entry points",
        )
    try:
        return eps[name].load()
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"{where}: {kind} {name!r} is installed but cannot be imported: {exc}",
            hint="install its optional dependencies: pip install 'infra[all]'",
        ) from exc


def provider_class(name: str, where: str = "provider") -> ProviderClass:
    return cast(ProviderClass, _load(PROVIDER_GROUP, "provider", name, where))


def emulator_names() -> list[str]:
    return sorted(_entry_points(EMULATOR_GROUP))


def emulator(name: str) -> Callable[..., int]:
    """The ``run(port, state, *, machines, vm_memory)`` function of emulator ``name`` (``infra
    emulator NAME``)."""
    return cast(Callable[..., int], _load(EMULATOR_GROUP, "emulator", name, "emulator"))


def role(name: str, where: str = "role") -> AnyRole:
    cls = _load(ROLE_GROUP, "role", name, where)
    if not (isinstance(cls, type) and issubclass(cls, Role)):
        raise ConfigError(f"{where}: plugin {name!r} is not a reconciler.kit.role.Role subclass")
    return cls()
