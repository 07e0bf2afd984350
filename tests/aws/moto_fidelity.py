"""The tests' moto gets the EC2 emulator's fidelity fixes (:mod:`providers.aws.emulator.fidelity`).

The product never compensates for moto in a provider: the fixes make moto behave as EC2
documents, and live with the emulator that needs them. ``tests/aws/test_images.py`` checks the
differences still exist in the installed moto (so a moto that fixes one is noticed).
"""

from __future__ import annotations

from providers.aws.emulator.fidelity import apply

__all__ = ["apply"]
