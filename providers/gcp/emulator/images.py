"""The GCE emulator's images API and the storage its images are inserted from.

``images.get/getFromFamily/list/insert/delete`` and ``globalOperations.get/wait``, as
:class:`ImagesApi` over the shared :class:`~providers.gcp.emulator.base.ComputeState`; an image is
inserted from an object in the emulator's Cloud Storage (:mod:`providers.gcp.emulator.storage`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

from providers.gcp.emulator.base import ComputeState
from providers.gcp.emulator.filters import FilterError, compile_filter
from providers.gcp.emulator.resources import (
    API,
    NAME_RE,
    ApiError,
    JsonDict,
    Operation,
    _checked_labels,
    _image_json,
    _op_error,
    _raw_disk,
    _rfc3339,
    invalid,
    not_found,
)


class ImagesApi(ComputeState):
    """Images and the global operations that insert and delete them."""

    def api_image(self, project: str, name: str) -> JsonDict:
        image = self.images.get((project, name))
        if image is None:
            raise not_found(f"projects/{project}/global/images/{name}")
        return _image_json(image)

    def api_image_family(self, project: str, family: str) -> JsonDict:
        matches = [img for (p, _), img in self.images.items() if p == project and img.get("family") == family
                   and _image_json(img)["status"] == "READY"]
        if not matches:
            raise not_found(f"projects/{project}/global/images/family/{family}")
        return _image_json(max(matches, key=lambda img: str(img["creationTimestamp"]) + str(img["name"])))

    def api_images(self, project: str, query: Mapping[str, str]) -> JsonDict:
        filt = query.get("filter", "")
        try:
            pred = compile_filter(filt)
        except FilterError as exc:
            raise invalid(f"Invalid value for field 'filter': '{filt}'. {exc}") from None
        items = [_image_json(img) for (p, _), img in sorted(self.images.items()) if p == project]
        page, nxt = self._page(query, [i for i in items if pred(i)], filt)
        body: JsonDict = {"kind": "compute#imageList", "id": f"projects/{project}/global/images",
                          "selfLink": f"{API}/projects/{project}/global/images"}
        if page:
            body["items"] = page
        if nxt:
            body["nextPageToken"] = nxt
        return body

    def api_image_insert(self, project: str, query: Mapping[str, str], body: JsonDict) -> JsonDict:
        """``images.insert`` from ``rawDisk.source``: a tar.gz in the fake's Cloud Storage.

        PENDING until its global operation is DONE, then READY; FAILED (with the operation's
        error) when the object is missing or is not a gzipped tarball holding ``disk.raw``.
        """
        request_id = query.get("requestId")
        replayed = self._replayed(project, request_id)
        if replayed is not None:
            return replayed
        now = time.monotonic()
        name = str(body.get("name") or "")
        if not NAME_RE.match(name):
            raise invalid(f"Invalid value for field 'resource.name': '{name}'.")
        labels = _checked_labels(body)
        family = body.get("family")
        if family is not None and not NAME_RE.match(str(family)):
            raise invalid(f"Invalid value for field 'resource.family': '{family}'.")
        source = str((body.get("rawDisk") or {}).get("source") or "")
        m = re.fullmatch(r"https://storage\.googleapis\.com/([^/]+)/(.+)", source)
        if not m:
            raise invalid(f"Invalid value for field 'resource.rawDisk.source': '{source}'. "
                          "Use https://storage.googleapis.com/BUCKET/OBJECT.")
        if (project, name) in self.images:
            raise ApiError(409, "alreadyExists",
                           f"The resource 'projects/{project}/global/images/{name}' already exists")
        target_id = next(self.ids)
        op = self._new_op(project, "", "insert", name, target_id, request_id, resource="images")
        error, disk_bytes = _raw_disk(self.storage.get(m.group(1), m.group(2)), source)
        if error is not None:
            op.error = _op_error("INVALID_FIELD_VALUE", error)
            return op.to_json(now)
        obj = self.storage.get(m.group(1), m.group(2))
        assert obj is not None
        image: JsonDict = {
            "kind": "compute#image", "id": str(target_id), "name": name,
            "selfLink": f"{API}/projects/{project}/global/images/{name}",
            "creationTimestamp": _rfc3339(time.time()), "sourceType": "RAW",
            "rawDisk": {"source": source, "containerType": "TAR"},
            "archiveSizeBytes": str(len(obj.data)),
            "diskSizeGb": str(max(1, -(-disk_bytes // (1 << 30)))),
            "_ready_at": op.done_at,
        }
        if labels:
            image["labels"] = dict(labels)
        if family:
            image["family"] = family
        if body.get("description"):
            image["description"] = body["description"]
        self.images[(project, name)] = image
        return op.to_json(now)

    def api_image_delete(self, project: str, name: str, query: Mapping[str, str]) -> JsonDict:
        replayed = self._replayed(project, query.get("requestId"))
        if replayed is not None:
            return replayed
        now = time.monotonic()
        image = self.images.get((project, name))
        if image is None:
            raise not_found(f"projects/{project}/global/images/{name}")
        op = self._new_op(project, "", "delete", name, int(image["id"]), query.get("requestId"), resource="images")
        image["_deleting"] = True
        return op.to_json(now)

    def api_global_operation(self, project: str, name: str) -> Operation:
        op = self.operations.get((project, "", name))
        if op is None:
            raise not_found(f"projects/{project}/global/operations/{name}")
        return op

    def wait_global_operation(self, project: str, name: str) -> JsonDict:
        with self.cond:
            return self._wait(self.api_global_operation(project, name))

