"""The ``prometheus`` role plugin (entry point ``infra.plugins: prometheus``).

See :mod:`plugins.prometheus.role` for what it runs and :mod:`plugins.prometheus.scrape` for
the configuration it renders.
"""

from plugins.prometheus.role import PrometheusRole
from plugins.prometheus.settings import PrometheusConfig

__all__ = ["PrometheusConfig", "PrometheusRole"]
