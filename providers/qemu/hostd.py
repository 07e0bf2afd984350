"""The qemu provider's host process: the VMs' metadata server and their discovery endpoint.

Started (detached, in its own session) by :class:`providers.qemu.provider.QemuProvider` when it
creates the first VM, stopped when it deletes the last: ``python -m providers.qemu.hostd ROOT
GATEWAY SD_PORT``. It holds no state of its own; every answer is read from the instance records
under ``ROOT/instances/`` (``instance.json``, and ``user-data``, 0600):

* 169.254.169.254:80, GCE-shaped (:class:`reconciler.kit.vmhost.MetadataServer`, which the Debian
  image's init and LinuxKit's ``metadata gcp`` both read): a VM gets its own user-data, found by
  its source address, and nobody else's;
* ``GATEWAY:SD_PORT/sd?label=value&...&port=N``: Prometheus HTTP service discovery of the running
  VMs whose labels match, ``[{"targets": ["addr:N"], "labels": {"infra_member": ...}}]`` (labels
  and addresses only: no user-data). Bound to the gateway, so only the bridge reaches it.
"""

from __future__ import annotations

import http.server
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from reconciler.kit.vmhost import GuestInfo, MetadataServer
from reconciler.kit.vmnet import running


def records(root: Path) -> list[dict[str, Any]]:
    """Every instance record, with ``alive``: its QEMU process runs."""
    out = []
    for path in sorted((root / "instances").glob("*/instance.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        record["alive"] = qemu_pid(path.parent) is not None
        out.append(record)
    return out


def qemu_pid(directory: Path) -> int | None:
    """The pid of the instance's QEMU when it runs (its pid file, the instance's directory in its command)."""
    return running(directory / "qemu.pid", str(directory))


def guest(root: Path, address: str) -> GuestInfo | None:
    for record in records(root):
        if record.get("address") == address and record["alive"]:
            try:
                user_data = (root / "instances" / record["name"] / "user-data").read_text()
            except OSError:
                return None
            return GuestInfo(user_data=user_data, hostname=str(record["name"]), address=address)
    return None


def targets(root: Path, selector: dict[str, str], port: int) -> list[dict[str, Any]]:
    out = []
    for record in records(root):
        labels = record.get("labels") or {}
        if not record["alive"] or not record.get("address") or any(labels.get(k) != v for k, v in selector.items()):
            continue
        shown = {"infra_instance": str(record["name"])}
        shown.update({k.replace("-", "_"): str(v) for k, v in labels.items() if k.startswith("infra-")})
        out.append({"targets": [f"{record['address']}:{port}"], "labels": shown})
    return out


def serve_discovery(root: Path, gateway: str, port: int) -> http.server.ThreadingHTTPServer:
    class Discovery(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path != "/sd":
                self.send_error(404)
                return
            query = dict(parse_qsl(url.query))
            try:
                target_port = int(query.pop("port", ""))
            except ValueError:
                self.send_error(400, "port=N is required")
                return
            body = json.dumps(targets(root, query, target_port)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((gateway, port), Discovery)
    server.daemon_threads = True
    return server


def main(argv: list[str]) -> int:
    root, gateway, sd_port = Path(argv[0]), argv[1], int(argv[2])
    metadata = MetadataServer("gcp", lambda address: guest(root, address))
    discovery = serve_discovery(root, gateway, sd_port)
    (root / "net" / "hostd.pid").write_text(f"{os.getpid()}\n")
    threading.Thread(target=discovery.serve_forever, daemon=True).start()
    metadata.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
