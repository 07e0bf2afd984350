"""The ``qemu`` provider: each instance is a QEMU virtual machine on this machine.

Registered under the ``infra.providers`` entry point as ``qemu``: the local desktop of "desktop to
cloud", booting the very disks infra builds for the clouds (``image_builder="debian"``). See
:mod:`providers.qemu.provider` for the instances and :mod:`providers.qemu.hostd` for the host
process that serves their metadata and discovery.

The export is imported lazily: the host process (``python -m providers.qemu.hostd``) imports this
package first and needs none of the provider.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from providers.qemu.provider import QemuProvider

__all__ = ["QemuProvider"]


def __getattr__(name: str) -> object:
    if name == "QemuProvider":
        from providers.qemu.provider import QemuProvider

        return QemuProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
