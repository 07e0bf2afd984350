"""The ``etcd`` role plugin: a quorum-safe etcd cluster with mutual TLS.

Registered in ``pyproject.toml`` as ``etcd = "plugins.etcd:EtcdRole"`` under ``infra.plugins``.
See :mod:`plugins.etcd.role` for the hooks, :mod:`plugins.etcd.config` for the settings,
:mod:`plugins.etcd.render` for the files a member receives and :mod:`plugins.etcd.client` for
how ``infra`` talks to etcd. Stack files declare a group with :class:`Etcd`.
"""

from plugins.etcd.config import EtcdConfig
from plugins.etcd.role import EtcdRole
from reconciler.core.stack import Group


class Etcd(Group, EtcdConfig):
    """An etcd group with typed settings: ``Etcd(name="etcd", size=3, version="3.4.23")``.

    The same group as ``Group(name="etcd", size=3, role="etcd", config={"version": "3.4.23"})``
    (equal spec hashes); each setting of :class:`EtcdConfig` is a keyword, checked where the
    group is built.
    """

    settings_model = EtcdConfig
    role_name = "etcd"
    role: str = "etcd"


__all__ = ["Etcd", "EtcdConfig", "EtcdRole"]
