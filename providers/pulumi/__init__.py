"""The ``pulumi`` provider: a bridge to any Pulumi resource provider plugin (``infra.providers: pulumi``).

See :mod:`providers.pulumi.provider` (the provider), :mod:`providers.pulumi.plugin` (running a
plugin as the Pulumi engine does), :mod:`providers.pulumi.config` (settings and presets) and
``docs/providers/pulumi.md``.
"""

import os

# The plugin is started with fork+exec while gRPC's threads run; its fork handlers only log that
# they are skipped. infra's plugins never use gRPC in a forked child, so turn them off.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from providers.pulumi.provider import PulumiProvider

__all__ = ["PulumiProvider"]
