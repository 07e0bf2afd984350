"""The ``gcp`` provider plugin: Compute Engine instances.

Registered under the ``infra.providers`` entry point as ``gcp``; see
:mod:`providers.gcp.provider` for how the provider protocol maps onto Compute Engine,
:mod:`providers.gcp.api` for how it reaches the API (JSON reads, google-cloud-compute writes),
:mod:`providers.gcp.config` for its settings and :mod:`providers.gcp.errors` for the error mapping.
"""

from providers.gcp.config import ENDPOINT_ENV, GcpConfig
from providers.gcp.provider import GcpProvider, image_source, label_filter, request_id

__all__ = ["ENDPOINT_ENV", "GcpConfig", "GcpProvider", "image_source", "label_filter", "request_id"]
