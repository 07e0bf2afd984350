"""The Compute Engine v1 REST API of the GCE emulator, and the tests' fake of it.

``infra emulator gcp`` (:mod:`providers.gcp.emulator.main`) serves it on 127.0.0.1 with the
emulator's machines attached (:mod:`providers.gcp.emulator.machines`: instances boot); test
fixtures run it bare in the test process (:class:`FakeCompute` is a context manager running a
threaded HTTP server), where instances are records and nothing runs. The provider reaches it by
setting ``INFRA_GCP_ENDPOINT=http://127.0.0.1:PORT``.

Reproduced, because the provider depends on it:

* ``instances``: insert, get, list, aggregatedList, delete, setLabels (with its
  ``labelFingerprint``: a stale one answers 412 ``conditionNotMet``); ``zoneOperations``: get, wait;
  ``machineTypes``: get, list; ``images``: get, getFromFamily. Paths, query parameters and JSON
  field names are the real ones (``/compute/v1/projects/{p}/zones/{z}/instances`` ...).
* Asynchronous operations: an operation is PENDING, then RUNNING, then DONE ``op_delay`` seconds
  after it was accepted. An inserted instance is PROVISIONING until its operation is DONE, then
  STAGING for ``boot_delay`` seconds, then RUNNING. A deleted instance is STOPPING until its
  operation is DONE, then gone.
* ``zoneOperations.wait`` blocks until the operation is DONE or ``wait_max`` seconds have passed
  (the real API's limit is about two minutes) and then answers with the operation as it is.
* ``requestId``: a second insert or delete with the same requestId in the same project answers
  with the *same* operation (in whatever state it has reached, DONE included) and does nothing
  else, for ``request_id_ttl`` seconds (the real API keeps them at least 60 minutes).
* Label filters (``(labels.k = "v") AND (labels.k2 = "v2")``, ``!=``, ``eq``/``ne`` regexes,
  ``OR``, ``NOT``, parentheses; fields ``name``, ``status``, ``zone``, ``machineType``); a filter
  it cannot parse gets 400 like the real API.
* ``maxResults`` (0..500, default 500) and opaque ``pageToken`` pagination; ``nextPageToken`` is
  present only while results remain; ``items`` is omitted from an empty page; aggregatedList
  answers per-zone scopes with ``NO_RESULTS_ON_PAGE`` warnings for empty ones.
* Error bodies shaped like Google's: ``{"error": {"code", "message", "errors": [{"domain",
  "reason", "message"}]}}`` for 400 ``invalid`` (bad name, labels, machine type, filter, page
  token), 404 ``notFound`` (instance, operation, zone, machine type, image), 409 ``alreadyExists``
  (an instance of that name exists in the zone), 429 ``rateLimitExceeded``, 503 ``backendError``.
* Operation errors (``operation.error.errors[].code``): ``QUOTA_EXCEEDED`` when a project's
  instance quota (``quota_instances``) is exhausted, ``ZONE_RESOURCE_POOL_EXHAUSTED`` in
  ``stockout_zones``; the instance then never appears.
* Fault injection: a fraction ``fault_rate`` of API requests answers 429 or 503 (``fault_codes``).
  For inserts and deletes, a share ``fault_after_share`` of those faults happens *after* the change
  was made, like a lost response, which is what makes requestId and 409 handling matter.
* A call counter per API method (``instances.list``, ``zoneOperations.wait`` ...), every request
  counted, injected failures included.

Who may ask (:mod:`~providers.gcp.emulator.server`): every request, admin and storage included,
must carry ``Authorization: Bearer <token>``, a random token per run (``FakeCompute.token``,
exported as ``INFRA_GCP_ACCESS_TOKEN``; the gcp provider sends it as its access token), and name
this server in its ``Host`` header; without them it is 401 or 403. ``/_emulator/sd/...`` also
takes ``sd_token`` (``INFRA_GCP_SD_TOKEN``), which Prometheus presents and which opens nothing
else. Bodies of API calls must be ``application/json``; no CORS headers, ``OPTIONS`` is 405.

Not reproduced (the provider does not depend on it, or tests must not): OAuth itself (the token
is a shared secret, not a signed grant), IAM and 403 answers of IAM (403 only through the admin
``/_admin/fail`` queue), real VMs (nothing boots; addresses
are allocated from ``address_prefix`` and nothing listens on them), regions, networks and
subnetworks (accepted and echoed, not checked), disks as separate resources, global and region
operations, ``orderBy``, ``returnPartialSuccess``, quotas other than an instance count, and
eventual consistency of list after insert (the fake is immediately consistent).

Admin API (no faults, not counted), for tests and demos:

* ``GET /_admin/calls`` → ``{"calls": {method: n}}``; ``POST /_admin/calls/reset``
* ``POST /_admin/config`` with any of ``fault_rate``, ``fault_codes``, ``fault_after_share``,
  ``seed``, ``op_delay``, ``boot_delay``, ``wait_max``, ``quota_instances``, ``stockout_zones``,
  ``latency`` (seconds added to every API answer)
* ``POST /_admin/fail`` ``{"method": "instances.insert", "code": 403, "reason": "quotaExceeded",
  "message": "...", "after": false, "retry_after": null}`` queues one specific failure for the
  next call of that method (``after``: answer with it once the call took effect, a lost
  response; ``retry_after``: seconds sent in a ``Retry-After`` header)
* ``GET /_admin/instances``; ``POST /_admin/instances`` (one ``{"project", "zone", "name",
  "labels", "status"}`` or ``{"instances": [...]}``) puts instances there without any operation,
  as another tool would; ``DELETE /_admin/instances/{project}/{zone}/{name}`` removes one at once
  (out of band); ``POST /_admin/instances/{project}/{zone}/{name}/status`` ``{"status": ...}``
* ``GET /_emulator/info`` (what this server is: ``{"emulator": "gce", "boots": bool}``, which
  infra's image push asks before it registers a LinuxKit YAML as an image);
  ``GET /_emulator/sd/{project}?filter=...&port=N``: Prometheus HTTP service discovery of the
  RUNNING instances matching the label filter (``gce_sd`` has no endpoint setting);
* ``POST /_admin/images`` ``{"project", "name", "family"}``; ``GET /_admin/images``;
  ``POST /_admin/buckets`` ``{"name"}``; ``GET /_admin/storage/calls``; ``GET /_admin/health``

Images (for the image pipeline): ``images.list`` (label filters, pagination), ``images.insert``
from ``rawDisk.source`` (an object in the fake's Cloud Storage, :mod:`providers.gcp.emulator.storage`,
served on the same port; the image is PENDING until its *global* operation is DONE, then READY,
and the operation fails when the object is missing or not a tar.gz holding ``disk.raw``),
``images.delete``, ``globalOperations.get``/``wait``, ``requestId`` replay for both; an instance
cannot be inserted from an image that is not READY.

The package, by concern: :mod:`~providers.gcp.emulator.resources` (errors, operations, instances
as values), :mod:`~providers.gcp.emulator.base` (the shared state and its clock),
:mod:`~providers.gcp.emulator.instances` (instances and zone operations),
:mod:`~providers.gcp.emulator.images` (images, global operations, and the storage they come from),
:mod:`~providers.gcp.emulator.admin` (faults and the admin API), :mod:`~providers.gcp.emulator.server`
(the HTTP front), and this module, which puts them together as :class:`FakeCompute`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from http.server import ThreadingHTTPServer

from providers.gcp.emulator.admin import AdminApi
from providers.gcp.emulator.images import ImagesApi
from providers.gcp.emulator.instances import InstancesApi
from providers.gcp.emulator.resources import ApiError, FakeInstance, JsonDict, Operation, not_found
from providers.gcp.emulator.server import Handler

__all__ = ["ApiError", "FakeCompute", "FakeInstance", "JsonDict", "Operation"]


class FakeCompute(InstancesApi, ImagesApi, AdminApi):
    """The emulator's API and its HTTP server. See the module docstring.

    Use as a context manager (``with FakeCompute() as fake: fake.url``) or ``start()``/``stop()``.
    Every knob is also settable at run time through ``configure`` (or ``POST /_admin/config``).
    """

    def start(self) -> FakeCompute:
        handler = type("Handler", (Handler,), {"fake": self})
        server = ThreadingHTTPServer((self.host, self.port), handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self.port = server.server_address[1]
        self.storage.base_url = self.url
        self._thread = threading.Thread(target=server.serve_forever, name="gcp-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> FakeCompute:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """What a client of this server sets: the endpoint, its access token, the discovery token."""
        return {"INFRA_GCP_ENDPOINT": self.url, "INFRA_GCP_ACCESS_TOKEN": self.token,
                "INFRA_GCP_SD_TOKEN": self.sd_token}

    def headers(self) -> dict[str, str]:
        """The header every request to this server carries."""
        return {"Authorization": f"Bearer {self.token}"}

    def call(self, method: str, args: Sequence[str], query: Mapping[str, str], body: JsonDict) -> JsonDict:
        """One Compute API call by its method name (under the lock; the handler counted it)."""
        fake = self
        if method == "zoneOperations.wait":
            return self.wait_operation(*args)
        if method == "globalOperations.wait":
            return self.wait_global_operation(*args)
        self._tick()
        if method == "instances.insert":
            return fake.api_insert(args[0], args[1], query, body)
        if method == "instances.list":
            return fake.api_list(args[0], args[1], query)
        if method == "instances.aggregatedList":
            return fake.api_aggregated(args[0], query)
        if method == "instances.get":
            return fake.api_get(*args)
        if method == "instances.getSerialPortOutput":
            return fake.serial_output(*args)
        if method == "instances.setLabels":
            return fake.api_set_labels(args[0], args[1], args[2], query, body)
        if method == "instances.delete":
            return fake.api_delete(args[0], args[1], args[2], query)
        if method == "zoneOperations.get":
            return fake.api_operation(*args).to_json(time.monotonic())
        if method == "machineTypes.get":
            return fake.api_machine_type(*args)
        if method == "machineTypes.list":
            return fake.api_machine_types(args[0], args[1], query)
        if method == "images.getFromFamily":
            return fake.api_image_family(*args)
        if method == "images.get":
            return fake.api_image(*args)
        if method == "images.list":
            return fake.api_images(args[0], query)
        if method == "images.insert":
            return fake.api_image_insert(args[0], query, body)
        if method == "images.delete":
            return fake.api_image_delete(args[0], args[1], query)
        if method == "globalOperations.get":
            return fake.api_global_operation(*args).to_json(time.monotonic())
        raise not_found(method)

