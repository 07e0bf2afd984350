"""The GCE emulator: Compute Engine and Cloud Storage on 127.0.0.1, whose instances boot.

``infra emulator gcp`` runs it (:mod:`providers.gcp.emulator.main`); the unchanged ``gcp``
provider talks to it through ``INFRA_GCP_ENDPOINT``. Its parts: the Compute API
(:mod:`~providers.gcp.emulator.compute`, also the tests' fake, with fault injection), Cloud Storage
uploads (:mod:`~providers.gcp.emulator.storage`) and the machines that boot instances
(:mod:`~providers.gcp.emulator.machines`).
"""
