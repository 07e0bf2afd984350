"""The subset of the Cloud Storage JSON API the ``gcp`` provider's image push uses .

Served by :mod:`providers.gcp.emulator.compute` on the same port as the Compute fake: the provider's
storage client reaches it through ``INFRA_GCS_ENDPOINT`` (default: ``INFRA_GCP_ENDPOINT``), with
paths and parameters of the real API as google-cloud-storage sends them.

Reproduced: buckets (``GET /storage/v1/b/{b}``, ``POST /storage/v1/b``); objects (get metadata,
``alt=media`` download, list with ``prefix``, delete); uploads (``uploadType=multipart``, the
multipart/related body google-cloud-storage sends for files up to 8 MiB, and
``uploadType=resumable``: a session URL in ``Location``, ``PUT`` chunks with ``Content-Range``,
308 with ``Range`` until the last chunk); ``ifGenerationMatch`` (0: only if absent, else 412
``conditionNotMet``); error bodies shaped like Google's; a call counter (``storage.objects.insert``
...). Not reproduced: authentication and ACLs, object versioning beyond a generation counter,
compose, rewrite, XML API, signed URLs, CRC32C/MD5 validation of what the client says it sent.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import google_crc32c

JsonDict = dict[str, Any]
Answer = tuple[int, dict[str, str], bytes]


@dataclass
class StoredObject:
    bucket: str
    name: str
    data: bytes
    generation: int
    content_type: str
    created: float

    def to_json(self) -> JsonDict:
        return {
            "kind": "storage#object",
            "id": f"{self.bucket}/{self.name}/{self.generation}",
            "name": self.name,
            "bucket": self.bucket,
            "generation": str(self.generation),
            "metageneration": "1",
            "contentType": self.content_type,
            "size": str(len(self.data)),
            "md5Hash": base64.b64encode(hashlib.md5(self.data).digest()).decode(),
            # google-cloud-storage checks a resumable upload (over 8 MiB) against it
            "crc32c": base64.b64encode(google_crc32c.value(self.data).to_bytes(4, "big")).decode(),
            "timeCreated": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(self.created)),
            "selfLink": f"https://www.googleapis.com/storage/v1/b/{self.bucket}/o/{quote(self.name, safe='')}",
            "mediaLink": f"https://storage.googleapis.com/download/storage/v1/b/{self.bucket}/o/"
                         f"{quote(self.name, safe='')}?generation={self.generation}&alt=media",
        }


def _error(code: int, reason: str, message: str) -> Answer:
    body = {"error": {"code": code, "message": message, "errors": [{"domain": "global", "reason": reason,
                                                                    "message": message}]}}
    return code, {"Content-Type": "application/json"}, json.dumps(body).encode()


def _ok(body: JsonDict, headers: Mapping[str, str] | None = None) -> Answer:
    return 200, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()


class FakeStorage:
    """Buckets and objects in memory. Thread-safe; every method returns (code, headers, body)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.buckets: dict[str, JsonDict] = {}
        self.objects: dict[tuple[str, str], StoredObject] = {}
        self.sessions: dict[str, JsonDict] = {}
        self.generations = itertools.count(1_700_000_000_000_001)
        self.calls: dict[str, int] = {}
        self.base_url = ""  # set by the server: where resumable session URLs point

    def count(self, method: str) -> None:
        with self.lock:
            self.calls[method] = self.calls.get(method, 0) + 1

    def add_bucket(self, name: str, project: str = "my-project") -> JsonDict:
        with self.lock:
            bucket = {"kind": "storage#bucket", "id": name, "name": name, "projectNumber": "123456789012",
                      "location": "US", "storageClass": "STANDARD", "project": project}
            self.buckets[name] = bucket
            return bucket

    def get(self, bucket: str, name: str) -> StoredObject | None:
        with self.lock:
            return self.objects.get((bucket, name))

    # -- the HTTP surface --------------------------------------------------------------------

    def handle(self, verb: str, path: str, query: Mapping[str, str], headers: Mapping[str, str],
               body: bytes) -> Answer | None:
        """The answer for a storage request, or None when ``path`` is not a storage path."""
        if m := re.fullmatch(r"/storage/v1/b/?", path):
            if verb == "POST":
                self.count("storage.buckets.insert")
                name = str(json.loads(body or b"{}").get("name") or "")
                if not re.fullmatch(r"[a-z0-9][-a-z0-9_.]{1,61}[a-z0-9]", name):
                    return _error(400, "invalid", f"Invalid bucket name: '{name}'")
                if name in self.buckets:
                    return _error(409, "conflict", "Your previous request to create the named bucket succeeded "
                                                   "and you already own it.")
                return _ok(self.add_bucket(name, query.get("project", "my-project")))
            return None
        if m := re.fullmatch(r"/storage/v1/b/([^/]+)", path):
            self.count("storage.buckets.get")
            found = self.buckets.get(unquote(m.group(1)))
            return _ok(found) if found else _error(404, "notFound", "The specified bucket does not exist.")
        if m := re.fullmatch(r"/storage/v1/b/([^/]+)/o", path):
            self.count("storage.objects.list")
            return self._list(unquote(m.group(1)), query)
        if m := re.fullmatch(r"/(?:download/)?storage/v1/b/([^/]+)/o/(.+)", path):
            bucket, name = unquote(m.group(1)), unquote(m.group(2))
            if verb == "DELETE":
                self.count("storage.objects.delete")
                with self.lock:
                    if self.objects.pop((bucket, name), None) is None:
                        return _error(404, "notFound", f"No such object: {bucket}/{name}")
                return 204, {}, b""
            self.count("storage.objects.get")
            obj = self.get(bucket, name)
            if obj is None:
                return _error(404, "notFound", f"No such object: {bucket}/{name}")
            if query.get("alt") == "media":
                return 200, {"Content-Type": obj.content_type, "X-Goog-Generation": str(obj.generation)}, obj.data
            return _ok(obj.to_json())
        if m := re.fullmatch(r"/upload/storage/v1/b/([^/]+)/o", path):
            bucket = unquote(m.group(1))
            if verb == "PUT" and "upload_id" in query:
                return self._resumable_chunk(query["upload_id"], headers, body)
            if verb != "POST":
                return None
            kind = query.get("uploadType")
            if kind == "multipart":
                self.count("storage.objects.insert")
                return self._multipart(bucket, query, headers, body)
            if kind == "resumable":
                self.count("storage.objects.insert")
                return self._start_resumable(bucket, query, body)
            return _error(400, "invalid", f"Unsupported uploadType {kind!r}")
        return None

    def _list(self, bucket: str, query: Mapping[str, str]) -> Answer:
        if bucket not in self.buckets:
            return _error(404, "notFound", "The specified bucket does not exist.")
        prefix = query.get("prefix", "")
        with self.lock:
            items = [o.to_json() for (b, n), o in sorted(self.objects.items()) if b == bucket and n.startswith(prefix)]
        body: JsonDict = {"kind": "storage#objects"}
        if items:
            body["items"] = items
        return _ok(body)

    def _store(self, bucket: str, name: str, data: bytes, content_type: str, query: Mapping[str, str]) -> Answer:
        if bucket not in self.buckets:
            return _error(404, "notFound", "The specified bucket does not exist.")
        if not name:
            return _error(400, "required", "Required object name")
        with self.lock:
            existing = self.objects.get((bucket, name))
            match = query.get("ifGenerationMatch")
            if match is not None and str(existing.generation if existing else 0) != match:
                return _error(412, "conditionNotMet", "At least one of the pre-conditions you specified did not hold.")
            obj = StoredObject(bucket, name, data, next(self.generations), content_type, time.time())
            self.objects[(bucket, name)] = obj
        return _ok(obj.to_json())

    def _multipart(self, bucket: str, query: Mapping[str, str], headers: Mapping[str, str], body: bytes) -> Answer:
        ctype = headers.get("content-type", "")
        m = re.search(r'boundary="?([^";]+)"?', ctype)
        if not m or not ctype.startswith("multipart/related"):
            return _error(400, "invalid", "multipart upload needs a multipart/related body")
        sep = b"--" + m.group(1).encode()
        parts = [p for p in body.split(sep) if p.strip() and p.strip() != b"--"]
        if len(parts) < 2:
            return _error(400, "invalid", "multipart upload needs metadata and media parts")

        def split(part: bytes) -> tuple[dict[str, str], bytes]:
            head, _, payload = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
            fields = {}
            for line in head.decode().split("\r\n"):
                k, _, v = line.partition(":")
                fields[k.strip().lower()] = v.strip()
            return fields, payload[:-2] if payload.endswith(b"\r\n") else payload

        _, meta_raw = split(parts[0])
        media_headers, media = split(parts[1])
        meta = json.loads(meta_raw or b"{}")
        name = str(meta.get("name") or query.get("name") or "")
        return self._store(bucket, name, media, media_headers.get("content-type", "application/octet-stream"), query)

    def _start_resumable(self, bucket: str, query: Mapping[str, str], body: bytes) -> Answer:
        meta = json.loads(body or b"{}")
        name = str(meta.get("name") or query.get("name") or "")
        if bucket not in self.buckets:
            return _error(404, "notFound", "The specified bucket does not exist.")
        upload_id = uuid.uuid4().hex
        with self.lock:
            self.sessions[upload_id] = {"bucket": bucket, "name": name, "data": bytearray(), "query": dict(query),
                                        "content_type": meta.get("contentType") or "application/octet-stream"}
        location = (f"{self.base_url}/upload/storage/v1/b/{quote(bucket, safe='')}/o"
                    f"?uploadType=resumable&upload_id={upload_id}")
        return 200, {"Location": location, "Content-Length": "0"}, b""

    def _resumable_chunk(self, upload_id: str, headers: Mapping[str, str], body: bytes) -> Answer:
        with self.lock:
            session = self.sessions.get(upload_id)
        if session is None:
            return _error(404, "notFound", "No such upload session")
        rng = headers.get("content-range", "")
        m = re.fullmatch(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)", rng)
        if not m:
            return _error(400, "invalid", f"bad Content-Range {rng!r}")
        data: bytearray = session["data"]
        if m.group(1) is not None:
            start = int(m.group(1))
            if start != len(data):
                return 308, {"Range": f"bytes=0-{len(data) - 1}"} if data else {}, b""
            data.extend(body)
        total = m.group(3)
        if total != "*" and len(data) == int(total):
            with self.lock:
                self.sessions.pop(upload_id, None)
            return self._store(session["bucket"], session["name"], bytes(data), session["content_type"],
                               session["query"])
        return 308, {"Range": f"bytes=0-{len(data) - 1}"} if data else {}, b""
