"""LinuxKit images on Compute Engine: find by digest label, upload to GCS, ``images.insert``.

Called by :class:`providers.gcp.provider.GcpProvider`'s image methods (the optional
:class:`reconciler.kit.provider.ImageStore` protocol), so by the engine's image pipeline and
``infra image push|list`` and ``infra destroy --images``. What ``linuxkit push gcp`` does, done
by infra so that it honours the endpoint override (``INFRA_GCP_ENDPOINT``, and
``INFRA_GCS_ENDPOINT`` for storage, defaulting to the same), never deletes an image to replace
it, and survives a crash at any step:

1. **find** (:func:`find`): one ``images.list`` with the filter ``labels.infra-image = "<digest>"``.
   A READY image is reused as it is: nothing is uploaded.
2. **upload**: the ``<name>.img.tar.gz`` artefact (a tarball holding ``disk.raw``, what GCE
   imports) to ``gs://<image_bucket>/infra-images/<digest>/<file>`` with google-cloud-storage, unless
   an object of that name and size is already there (the upload of a push that crashed before
   its insert), and with ``ifGenerationMatch=0``, so a concurrent push never overwrites it.
3. **insert**: ``images.insert`` of ``image.name`` in family ``infra-<group>`` with the digest
   label and the object as its ``rawDisk.source`` (a ``https://storage.googleapis.com/...`` URL, the
   only form the API accepts), with a ``requestId`` derived from the digest, then a wait on the
   *global* operation. A 409 for that name is success when the image found carries the digest,
   and a PermanentError (a foreign image holds the name) otherwise.

The image's LinuxKit YAML is uploaded beside the disk (``<name>.yml``): what the image was built
from. The objects stay in the bucket after the insert (the image does not need them;
``delete_image`` removes them). Against infra's GCE emulator with no ``linuxkit`` installed, the
pipeline registers the YAML itself as the image (the emulator boots from the document).
Every failure goes through :mod:`providers.gcp.errors`.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from providers.gcp import errors
from providers.gcp.api import ComputeApi, JsonDict, done
from reconciler.core.errors import ConfigError, NotFoundError, PermanentError, TransientError
from reconciler.core.image import LABEL_IMAGE, ImageRecord, ImageSpec
from reconciler.kit.provider import Progress

if TYPE_CHECKING:
    from google.cloud import compute_v1

    from providers.gcp.config import GcpConfig


class ImageHost(Protocol):
    """What the image code needs of its provider (:class:`providers.gcp.provider.GcpProvider`):
    the Compute API session, the settings, the endpoint, and whether that is infra's emulator."""

    api: ComputeApi
    config: GcpConfig
    endpoint: str | None
    _emulator: bool | None

#: Environment variable: the Cloud Storage endpoint (default: INFRA_GCP_ENDPOINT when that is set).
STORAGE_ENDPOINT_ENV = "INFRA_GCS_ENDPOINT"
#: The host ``rawDisk.source`` must name, whatever endpoint the upload went to.
STORAGE_URL = "https://storage.googleapis.com"
OBJECT_PREFIX = "infra-images"
REQUEST_ID_NAMESPACE = uuid.UUID("3d0f9a52-6c1e-4f7b-8a3e-2b5c7d9e1f04")
_STATUS = {"READY": "ready", "PENDING": "pending", "FAILED": "failed", "DELETING": "pending"}


def object_name(image: ImageSpec, artefact: Path) -> str:
    return f"{OBJECT_PREFIX}/{image.digest}/{artefact.name}"


def family(image: ImageSpec) -> str:
    return f"infra-{image.group}"


def _record(img: JsonDict) -> ImageRecord:
    """An image resource as the API's JSON gives it → an ImageRecord."""
    status = str(img.get("status") or "")
    size = int(img["archiveSizeBytes"]) if img.get("archiveSizeBytes") else None  # int64: a JSON string
    return ImageRecord(name=img["name"], id=img.get("selfLink") or img["name"],
                       digest=(img.get("labels") or {}).get(LABEL_IMAGE, ""), size=size,
                       status=_STATUS.get(status, "pending"))


def find(provider: ImageHost, image: ImageSpec) -> ImageRecord | None:
    """The image labelled with ``image.digest`` in the stack's project (one list call)."""
    query = {"filter": f'labels.{LABEL_IMAGE} = "{image.digest}"', "maxResults": 10}
    found = [img for page in provider.api.pages(f"look up image {image.name}", "images.list",
                                                  {"project": provider.config.project}, query)
             for img in page.get("items") or ()]
    mine = [i for i in found if (i.get("labels") or {}).get(LABEL_IMAGE) == image.digest]
    if not mine:
        return None
    mine.sort(key=lambda i: (i.get("status") != "READY", i["name"] != image.name, i["name"]))
    return _record(mine[0])


class _Reader:
    """A file whose reads report progress (google-cloud-storage reads the upload through it)."""

    def __init__(self, fh: IO[bytes], total: int, progress: Progress) -> None:
        self.fh, self.total, self.progress, self.done = fh, total, progress, 0

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.done += len(data)
        self.progress(self.done, self.total)
        return data

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.fh, attr)


def _storage_client(provider: ImageHost) -> Any:
    from google.cloud import storage  # type: ignore[attr-defined]  # only pushes need it (start-up)

    endpoint = os.environ.get(STORAGE_ENDPOINT_ENV) or provider.endpoint
    options = {"api_endpoint": endpoint.rstrip("/")} if endpoint else None
    with errors.translate("create the Cloud Storage client"):  # the credentials Compute is called with
        return storage.Client(project=provider.config.project, credentials=provider.api.credentials,
                              client_options=options)


def _upload(provider: ImageHost, bucket_name: str, name: str, artefact: Path, progress: Progress) -> None:
    """Upload ``artefact`` as ``name`` unless an object of that name and size is there already."""
    from google.api_core import exceptions as gexc

    client = _storage_client(provider)
    size = artefact.stat().st_size
    try:
        with errors.translate(f"look up gs://{bucket_name}/{name}"):
            bucket = client.bucket(bucket_name)
            blob = bucket.get_blob(name, timeout=provider.config.request_timeout)
        if blob is not None and blob.size == size:
            progress(size, size)
            return
        blob = bucket.blob(name)
        with open(artefact, "rb") as fh, errors.translate(f"upload {artefact.name} to gs://{bucket_name}"):
            try:
                blob.upload_from_file(_Reader(fh, size, progress), size=size, content_type="application/gzip",
                                      if_generation_match=0, timeout=max(provider.config.request_timeout, 600.0),
                                      retry=None)
            except gexc.PreconditionFailed:
                return  # another push uploaded the same artefact first
    finally:
        client.close()


def _upload_document(provider: ImageHost, bucket_name: str, image: ImageSpec, disk: str) -> None:
    """The image's LinuxKit YAML beside its disk (``<name>.yml``): what the image was built from,
    for a person, and what an emulator boots. Uploaded unless it is there already."""
    from google.api_core import exceptions as gexc

    client = _storage_client(provider)
    name = f"{disk.rsplit('/', 1)[0]}/{image.name}.yml"
    try:
        with errors.translate(f"upload {image.name}.yml to gs://{bucket_name}"):
            if client.bucket(bucket_name).get_blob(name, timeout=provider.config.request_timeout) is not None:
                return
            try:
                client.bucket(bucket_name).blob(name).upload_from_string(
                    image.yaml(), content_type="application/yaml", if_generation_match=0,
                    timeout=provider.config.request_timeout, retry=None)
            except gexc.PreconditionFailed:
                pass  # already there
    finally:
        client.close()


def accepts_documents(provider: ImageHost) -> bool:
    """Whether the endpoint override is infra's GCE emulator (``GET /_emulator/info``).

    Only ever asked of an override endpoint (the real API is never called for this); the answer
    is kept for the provider's life.
    """
    if not provider.endpoint:
        return False
    if provider._emulator is None:
        import requests

        try:
            answer = provider.api.session.get(provider.endpoint.rstrip("/") + "/_emulator/info", timeout=5)
            provider._emulator = answer.ok and bool(answer.json().get("boots"))
        except (requests.RequestException, ValueError):
            provider._emulator = False
    return provider._emulator


def wait_global(provider: ImageHost, op: compute_v1.Operation, action: str) -> compute_v1.Operation:
    deadline = time.monotonic() + provider.config.operation_deadline
    while not done(op):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TransientError(f"gcp: {action}: operation {op.name} still {op.status.name} after "
                                 f"{provider.config.operation_deadline:g}s",
                                 hint="it may still finish; the next push finds the image by its digest")
        with errors.translate(f"{action}: wait for {op.name}"):
            op = provider.api.writes.global_operations.wait(
                project=provider.config.project, operation=op.name, retry=None,
                timeout=min(remaining, provider.config.request_timeout + 130.0))
    return op


def push(provider: ImageHost, image: ImageSpec, artefact: Path, progress: Progress) -> ImageRecord:
    """See the module docstring. Raises ConfigError without ``image_bucket``."""
    cfg = provider.config
    found = find(provider, image)
    if found is not None and found.ready:
        return found
    if found is not None and found.status == "failed":
        raise PermanentError(f"gcp: image {found.name} with digest {image.digest} exists in state FAILED",
                             hint=f"delete it (gcloud compute images delete {found.name}) and push again")
    if found is None:
        if not cfg.image_bucket:
            raise ConfigError("provider_config.image_bucket: the gcp provider uploads images to a Cloud Storage "
                              "bucket; name one (in the stack's project) to push images",
                              hint="create it with: gcloud storage buckets create gs://NAME --location=REGION")
        from google.cloud import compute_v1

        name = object_name(image, artefact)
        _upload(provider, cfg.image_bucket, name, artefact, progress)
        if not artefact.name.endswith(".yml"):  # the document beside the disk: what the image holds
            _upload_document(provider, cfg.image_bucket, image, name)
        resource = compute_v1.Image(
            name=image.name,
            family=family(image),
            labels=image.labels,
            description=f"LinuxKit image of group {image.group}, built by infra (digest {image.digest})",
            raw_disk=compute_v1.RawDisk(source=f"{STORAGE_URL}/{cfg.image_bucket}/{name}"),
        )
        action = f"insert image {image.name}"
        try:
            with errors.translate(action):
                op = provider.api.writes.images.insert_unary(
                    request=compute_v1.InsertImageRequest(
                        project=cfg.project, image_resource=resource,
                        request_id=str(uuid.uuid5(REQUEST_ID_NAMESPACE, f"{cfg.project}/{image.digest}"))),
                    retry=None, timeout=cfg.request_timeout)
        except errors.AlreadyExists:
            pass
        else:
            op = wait_global(provider, op, action)
            failure = errors.operation_error(op, action=action)
            if failure is not None and not isinstance(failure, errors.AlreadyExists):
                raise failure
    return _ready(provider, image)


def _ready(provider: ImageHost, image: ImageSpec) -> ImageRecord:
    """The image named ``image.name`` once READY (it must carry the digest)."""
    deadline = time.monotonic() + provider.config.operation_deadline
    while True:
        img = provider.api.read(f"get image {image.name}", "images.get",
                                {"project": provider.config.project, "image": image.name})
        record = _record(img)
        if record.digest != image.digest:
            raise PermanentError(f"gcp: an image named {image.name} exists without label "
                                 f"{LABEL_IMAGE}={image.digest}; infra will not use or replace it",
                                 hint="delete or rename that image")
        if record.ready:
            return record
        if record.status == "failed":
            raise PermanentError(f"gcp: image {image.name} failed to import (status FAILED)",
                                 hint="check that the artefact is a tar.gz holding disk.raw; delete the image "
                                      "and push again")
        if time.monotonic() > deadline:
            raise TransientError(f"gcp: image {image.name} is still {img.get('status')} after "
                                 f"{provider.config.operation_deadline:g}s")
        time.sleep(1.0)


def delete(provider: ImageHost, record: ImageRecord) -> None:
    """Delete the image and its uploaded object. Already gone is success."""
    if not record.digest:
        raise PermanentError(f"gcp: refusing to delete image {record.name}: it lacks the {LABEL_IMAGE} label")
    cfg = provider.config
    action = f"delete image {record.name}"
    from google.api_core import exceptions as gexc

    try:
        with errors.translate(action):
            op = provider.api.writes.images.delete_unary(project=cfg.project, image=record.name, retry=None,
                                                      timeout=cfg.request_timeout)
        wait_global(provider, op, action)
    except (NotFoundError, PermanentError) as exc:
        if not isinstance(exc.__cause__, gexc.NotFound):  # a 404 is mapped as "image does not exist"
            raise
    if cfg.image_bucket:
        client = _storage_client(provider)
        try:
            with errors.translate(f"delete gs://{cfg.image_bucket}/{OBJECT_PREFIX}/{record.digest}/"):
                for blob in client.list_blobs(cfg.image_bucket, prefix=f"{OBJECT_PREFIX}/{record.digest}/"):
                    blob.delete()
        except NotFoundError:
            pass
        finally:
            client.close()
