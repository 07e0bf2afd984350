"""The ``prometheus`` role plugin (entry point ``infra.plugins: prometheus``).

See :mod:`plugins.prometheus.role` for what it runs and :mod:`plugins.prometheus.scrape` for
the configuration it renders. Stack files declare a group with :class:`Prometheus`.
"""

from plugins.prometheus.role import PrometheusRole
from plugins.prometheus.settings import PrometheusConfig
from reconciler.core.stack import Group


class Prometheus(Group, PrometheusConfig):
    """A Prometheus group with typed settings: ``Prometheus(name="prometheus", size=1, watch=[etcd])``.

    ``watch`` takes the watched groups themselves (or their names). The same group as
    ``Group(name="prometheus", size=1, role="prometheus", config={"watch": ["etcd"]})``.
    """

    settings_model = PrometheusConfig
    role_name = "prometheus"
    role: str = "prometheus"


__all__ = ["Prometheus", "PrometheusConfig", "PrometheusRole"]
