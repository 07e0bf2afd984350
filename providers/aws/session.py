"""The one EC2 session of an aws provider: its clients and how a planning read is retried.

Made by :meth:`providers.aws.provider.AwsProvider.open` and used by both halves of the provider,
the instances (:mod:`providers.aws.provider`) and the images (:mod:`providers.aws.images`), so
neither imports the other: the EC2 client (every call goes through it; tests register botocore
hooks on it), the EBS direct APIs client (made on first use: only an image push needs it), and
:meth:`Ec2Session.planning_read`, the retry of reads nothing above retries.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import botocore.session
from botocore.config import Config as BotoConfig
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_random_exponential

from providers.aws import errors
from reconciler.core.errors import is_retryable

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

T = TypeVar("T")


@dataclass(frozen=True)
class ReadRetry:
    """How reads made while planning are retried (see :meth:`Ec2Session.planning_read`)."""

    attempts: int = 5
    base: float = 0.2  # seconds; backoff is random in [0, base * 2**n], capped
    cap: float = 5.0
    deadline: float = 30.0


READ_RETRY = ReadRetry()

#: botocore settings of the one EC2 client: no hidden retries (see the module docstring), bounded
#: timeouts, and enough pooled connections for the executor's 50 parallel changes.
BOTO_CONFIG = BotoConfig(
    retries={"total_max_attempts": 1, "mode": "standard"},
    connect_timeout=10,
    read_timeout=60,
    max_pool_connections=64,
    user_agent_extra="infra/0.1",
)


_loader_lock = threading.Lock()
_loader: Any = None


def new_session() -> boto3.session.Session:
    """A boto3 session on the default credential chain.

    Sessions share one botocore data loader, so EC2's service model (a large JSON document)
    is parsed once per process rather than once per provider opened (the daemon and the tests
    open many).
    """
    global _loader
    core = botocore.session.get_session()
    with _loader_lock:
        if _loader is None:
            _loader = core.get_component("data_loader")
        else:
            core.register_component("data_loader", _loader)
    return boto3.session.Session(botocore_session=core)


def ebs_endpoint() -> str | None:
    """The EBS endpoint override, as boto3 itself would read it."""
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    return os.environ.get("AWS_ENDPOINT_URL_EBS") or os.environ.get("AWS_ENDPOINT_URL") or None


class Ec2Session:
    """The clients of one provider (one region) and its planning-read retry."""

    def __init__(self, client: EC2Client, region: str, session: boto3.session.Session | None = None) -> None:
        #: The one EC2 client; every call goes through it.
        self.client = client
        self.region = region
        self._session = session
        self._ebs: Any = None
        self._lock = threading.Lock()

    def ebs(self) -> Any:
        """The EBS direct APIs client (made on first use: only an image push needs it)."""
        with self._lock:
            if self._ebs is None:
                session = self._session or new_session()
                with errors.translate("create the EBS client"):
                    self._ebs = session.client("ebs", region_name=self.region, endpoint_url=ebs_endpoint(),
                                               config=BOTO_CONFIG)
            return self._ebs

    def credentials(self) -> Any:
        """The session's credentials (frozen), or None: what signs a request made outside boto3."""
        found = (self._session or new_session()).get_credentials()
        return None if found is None else found.get_frozen_credentials()

    def planning_read(self, action: str, call: Callable[[], T]) -> T:
        """A read made while planning (list, validate, address_for), retried here page by page.

        The executor retries what it applies (create, delete), but nothing retries a plan's
        reads: a throttled page is retried with full-jitter backoff for ``READ_RETRY`` before
        the TransientError reaches the caller.
        """

        def attempt() -> T:
            with errors.translate(action):
                return call()

        retrying = Retrying(
            retry=retry_if_exception(is_retryable),
            wait=wait_random_exponential(multiplier=READ_RETRY.base, max=READ_RETRY.cap),
            stop=stop_after_attempt(READ_RETRY.attempts) | stop_after_delay(READ_RETRY.deadline),
            reraise=True,
        )
        return retrying(attempt)

    def close(self) -> None:
        self.client.close()
        if self._ebs is not None:
            self._ebs.close()
