"""The EC2 emulator: moto's EC2 and EBS on 127.0.0.1, whose instances boot.

``infra emulator aws`` runs it (:mod:`providers.aws.emulator.main`); the unchanged ``aws``
provider talks to it through ``AWS_ENDPOINT_URL``. Its parts: moto's server with the fixes of
:mod:`~providers.aws.emulator.fidelity`, and the machines that boot instances
(:mod:`~providers.aws.emulator.machines`).
"""
