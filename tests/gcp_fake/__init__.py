"""The tests' handle on the Compute and Cloud Storage fake: the GCE emulator's API without its
machines (:mod:`providers.gcp.emulator.compute`), with its fault injection and admin API."""

from providers.gcp.emulator.compute import ApiError, FakeCompute

__all__ = ["ApiError", "FakeCompute"]
