"""A fake of the Compute Engine v1 REST API (see :mod:`tests.gcp_fake.server` for what it
reproduces and what not). ``python -m tests.gcp_fake --port 8089`` runs it by hand."""

from tests.gcp_fake.server import ApiError, FakeCompute

__all__ = ["ApiError", "FakeCompute"]
