"""How the gcp provider reaches Compute Engine: reads as JSON, writes through google-cloud-compute.

Built once per provider by :class:`providers.gcp.provider.GcpProvider` (and used by
:mod:`providers.gcp.images`). One set of credentials (the access token
``INFRA_GCP_ACCESS_TOKEN`` under the endpoint override ``INFRA_GCP_ENDPOINT``, else Application
Default Credentials) and one endpoint serve two halves:

* **reads** — every ``GET`` infra makes (``instances.get``/``list``/``aggregatedList``,
  ``machineTypes.get``, ``images.get``/``getFromFamily``/``list``) — go as JSON over google-auth's
  ``AuthorizedSession``, the transport google-cloud-compute's own REST clients use. A failed
  answer becomes the exception those clients raise (``google.api_core.exceptions.from_http_response``),
  so :mod:`providers.gcp.errors` maps both halves with one table. The answers are the API's JSON
  resources (camelCase fields), which the provider turns straight into Instances and ImageRecords.
* **writes** — inserts, deletes and the waits on their operations — keep google-cloud-compute's
  typed requests (:attr:`ComputeApi.writes`), built on the first write.

Why the split: importing google-cloud-compute costs about 0.8 s (its package imports all of its
~100 clients and one 9 MB module of message types), and a CLI call that only reads — ``infra
validate``, a no-op ``infra plan``, ``infra status`` — paid it every time. Now only a call that
changes something does. The URI templates below are google-cloud-compute's own:
``tests/gcp/test_api.py`` compares them with its REST transport, so a drift is noticed.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from providers.gcp import errors
from providers.gcp.config import ACCESS_TOKEN_ENV, CLOUD_PLATFORM_SCOPE
from reconciler.kit import RetryPolicy, retry_call

if TYPE_CHECKING:
    from google.cloud import compute_v1

#: The API's default host (google-cloud-compute's ``DEFAULT_ENDPOINT``).
DEFAULT_ENDPOINT = "https://compute.googleapis.com"

#: Every read infra makes: API method name → URI template (google-cloud-compute's ``http_options``).
READS: Mapping[str, str] = {
    "instances.get": "/compute/v1/projects/{project}/zones/{zone}/instances/{instance}",
    "instances.list": "/compute/v1/projects/{project}/zones/{zone}/instances",
    "instances.aggregatedList": "/compute/v1/projects/{project}/aggregated/instances",
    "machineTypes.get": "/compute/v1/projects/{project}/zones/{zone}/machineTypes/{machine_type}",
    "images.get": "/compute/v1/projects/{project}/global/images/{image}",
    "images.getFromFamily": "/compute/v1/projects/{project}/global/images/family/{family}",
    "images.list": "/compute/v1/projects/{project}/global/images",
}

JsonDict = dict[str, Any]


def credentials_for(endpoint: str | None) -> Any:
    """For an endpoint override, its access token (``INFRA_GCP_ACCESS_TOKEN``, sent as
    ``Authorization: Bearer``; anonymous without one); else Application Default Credentials.

    Raises the mapped PermanentError when no credentials are found.
    """
    if endpoint:
        token = os.environ.get(ACCESS_TOKEN_ENV, "").strip()
        if token:
            from google.oauth2.credentials import Credentials

            return Credentials(token=token)  # type: ignore[no-untyped-call]
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()  # type: ignore[no-untyped-call]
    import google.auth

    try:
        credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    except Exception as exc:
        raise errors.map_api_error(exc, action="load Application Default Credentials") from exc
    return credentials


class ComputeApi:
    """One provider's way to Compute: JSON reads now, google-cloud-compute writes when first needed."""

    def __init__(self, endpoint: str | None, *, timeout: float) -> None:
        from google.auth.transport.requests import AuthorizedSession

        self.timeout = timeout
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self.base = self.endpoint or DEFAULT_ENDPOINT
        self.credentials = credentials_for(endpoint)
        self.session = AuthorizedSession(self.credentials)  # type: ignore[no-untyped-call]

    def url(self, method: str, params: Mapping[str, str]) -> str:
        """The URL of read ``method`` with its path ``params`` filled in (each one escaped)."""
        path = READS[method].format(**{k: urllib.parse.quote(str(v), safe="") for k, v in params.items()})
        return self.base + path

    def get(self, method: str, params: Mapping[str, str], query: Mapping[str, Any] | None = None) -> JsonDict:
        """One read, once: the resource (or page) as JSON.

        Raises what google-cloud-compute's clients raise for the same answer (a
        ``google.api_core.exceptions.GoogleAPICallError`` by status, or a ``requests``
        exception when the endpoint cannot be reached).
        """
        response = self.session.get(self.url(method, params), params=dict(query or {}), timeout=self.timeout)
        if response.status_code >= 400:
            from google.api_core import exceptions as gexc

            raise gexc.from_http_response(response)  # type: ignore[no-untyped-call]
        answer: JsonDict = response.json()
        return answer

    def read(self, action: str, method: str, params: Mapping[str, str], query: Mapping[str, Any] | None = None,
             *, retry: RetryPolicy | None = None) -> JsonDict:
        """:meth:`get`, its failure mapped to infra's errors (naming ``action``) and, with ``retry``,
        tried again under that policy while the failure is retryable (throttling, 5xx, no answer).

        Only reads that nothing above retries pass ``retry`` (a listing's pages, ``validate``'s
        lookups); a read made inside ``create`` or ``delete`` is tried once, since the executor
        retries the whole change.
        """
        def once() -> JsonDict:
            with errors.translate(action):
                return self.get(method, params, query)

        return retry_call(once, retry) if retry is not None else once()

    def pages(self, action: str, method: str, params: Mapping[str, str], query: Mapping[str, Any], *,
              retry: RetryPolicy | None = None) -> Iterator[JsonDict]:
        """Every page of a list call, following ``nextPageToken``; each page is retried on its own."""
        token: str | None = None
        while True:
            page = self.read(action, method, params, {**query, **({"pageToken": token} if token else {})},
                             retry=retry)
            yield page
            token = page.get("nextPageToken") or None
            if not token:
                return

    @cached_property
    def writes(self) -> _Writers:
        """google-cloud-compute's clients for inserts, deletes and operation waits (imported now)."""
        return _Writers(self.endpoint, self.credentials)

    def close(self) -> None:
        self.session.close()  # type: ignore[no-untyped-call]
        if "writes" in self.__dict__:
            self.writes.close()


def done(op: compute_v1.Operation) -> bool:
    """Whether an operation a write returned (google-cloud-compute's message) has finished."""
    from google.cloud import compute_v1

    return bool(op.status == compute_v1.Operation.Status.DONE)


class _Writers:
    """The google-cloud-compute REST clients that change things, sharing credentials and endpoint.

    Every mutation goes through these (``*_unary`` methods), including the waits on zone and
    global operations, so no hidden default client ever talks to the real API.
    """

    def __init__(self, endpoint: str | None, credentials: Any) -> None:
        from google.cloud import compute_v1

        options: dict[str, Any] = {"api_endpoint": endpoint} if endpoint else {}

        def make(cls: Any) -> Any:
            return cls(credentials=credentials, client_options=dict(options), transport="rest")

        self.instances: compute_v1.InstancesClient = make(compute_v1.InstancesClient)
        self.operations: compute_v1.ZoneOperationsClient = make(compute_v1.ZoneOperationsClient)
        self.images: compute_v1.ImagesClient = make(compute_v1.ImagesClient)
        self.global_operations: compute_v1.GlobalOperationsClient = make(compute_v1.GlobalOperationsClient)

    def close(self) -> None:
        for client in (self.instances, self.operations, self.images, self.global_operations):
            try:
                client.transport.close()  # type: ignore[no-untyped-call]
            except Exception:  # closing is best effort
                pass
