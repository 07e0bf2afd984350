"""The ``etcd`` role plugin: a quorum-safe etcd cluster with mutual TLS.

Registered in ``pyproject.toml`` as ``etcd = "plugins.etcd:EtcdRole"`` under ``infra.plugins``.
See :mod:`plugins.etcd.role` for the hooks, :mod:`plugins.etcd.config` for the settings,
:mod:`plugins.etcd.render` for the files a member receives and :mod:`plugins.etcd.client` for
how ``infra`` talks to etcd.
"""

from plugins.etcd.config import EtcdConfig
from plugins.etcd.role import EtcdRole

__all__ = ["EtcdConfig", "EtcdRole"]
