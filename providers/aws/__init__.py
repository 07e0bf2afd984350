"""The ``aws`` provider plugin: EC2 instances through boto3 (see :mod:`providers.aws.provider`).

Registered as the ``aws`` entry point of ``infra.providers``; the CLI opens it with
``AwsProvider.open(stack.provider_config, stack=..., state_dir=...)``.
"""

from providers.aws.config import AwsConfig
from providers.aws.provider import AwsProvider, client_token

__all__ = ["AwsConfig", "AwsProvider", "client_token"]
