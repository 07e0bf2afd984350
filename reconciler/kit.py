"""The provider kit: what every provider, built-in or third-party, builds on.

One import for a provider package (``from reconciler.kit import ...``); each name lives in its
own module with its own docstring:

* :func:`require_owned` (:mod:`reconciler.ownership`): the check a ``delete`` makes on the instance
  *as the provider just read it*, against the labels of the stack it was opened for;
* :class:`ErrorTable` (:mod:`reconciler.errormap`): the one place an SDK's exceptions become
  infra's error types (whose class says whether retrying helps);
* :class:`RetryPolicy` and :func:`retry_call` (:mod:`reconciler.retry`): the one retry policy,
  honouring a server's ``retry_after``. A provider does not retry inside ``create`` or ``delete``
  (the executor retries them under this policy); it raises ``TransientError(retry_after=...)``;
* :func:`parse_settings` (:mod:`reconciler.settings`): ``provider_config`` validated by the
  provider's pydantic model, errors naming the field;
* the conformance suite is :mod:`reconciler.testing`.
"""

from reconciler.errormap import ErrorTable
from reconciler.ownership import require_owned
from reconciler.retry import RetryPolicy
from reconciler.retry import call as retry_call
from reconciler.settings import parse_settings

__all__ = ["ErrorTable", "RetryPolicy", "parse_settings", "require_owned", "retry_call"]
