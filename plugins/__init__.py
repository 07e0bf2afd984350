"""Role plugins: what runs on instances (command, etcd, prometheus), one package each.

Each subclasses :class:`reconciler.kit.role.Role` and is registered under the ``infra.plugins``
entry-point group. Plugins never import each other or any provider.
"""
