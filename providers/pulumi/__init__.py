"""The ``pulumi`` provider: a bridge to any Pulumi resource provider plugin (``infra.providers: pulumi``).

See :mod:`providers.pulumi.provider` (the provider), :mod:`providers.pulumi.plugin` (running a
plugin as the Pulumi engine does), :mod:`providers.pulumi.config` (settings and presets) and
``docs/providers/pulumi.md``.
"""

from providers.pulumi.provider import PulumiProvider

__all__ = ["PulumiProvider"]
