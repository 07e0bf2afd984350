"""What a provider's (or role's) own test suite imports from infra: the conformance suite.

``from reconciler.testing import ProviderConformance``: subclass it in a pytest module, give it
a ``provider`` fixture and an ``add_foreign`` method, and pytest runs every behaviour infra
relies on against that provider (see :mod:`reconciler.testing.conformance`). The built-in
providers' suites (``tests/conformance/``) and the third-party example of
``docs/extending.md`` use exactly this. Needs ``pytest`` (the ``test`` extra).
"""

from reconciler.testing.conformance import ProviderConformance

__all__ = ["ProviderConformance"]
