"""Prometheus file-based discovery for local instances.

:meth:`providers.local.LocalProvider.discovery` hands a Prometheus server a ``file_sd_configs``
fragment pointing at a JSON file; this module keeps that file current. Each (selector, port)
handed out is registered in ``<root>/discovery/registrations.json``, so any later ``infra``
process using the same root rewrites it too: the provider calls :meth:`Discovery.refresh`
after every list, create and delete. A file holds one target group per alive instance::

    [{"targets": ["127.77.0.3:2379"],
      "labels": {"infra_instance": "...", "infra_stack": "...", "infra_group": "...", "infra_member": "..."}}]

and is replaced atomically (temporary file + rename) only when its content changes, as
Prometheus's file discovery expects.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from providers.local.store import flock, read_json, write_json, write_text
from reconciler.core.model import LABEL_GROUP, LABEL_MEMBER, LABEL_STACK, Instance

REGISTRATIONS = "registrations.json"


def _key(selector: Mapping[str, str], port: int) -> str:
    raw = json.dumps({"selector": dict(selector), "port": port}, sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()[:12]


def targets(instances: list[Instance], selector: Mapping[str, str], port: int) -> list[dict[str, Any]]:
    """The file_sd target groups for the alive instances matching ``selector``."""
    wanted = selector.items()
    groups: list[dict[str, Any]] = []
    for inst in sorted(instances, key=lambda i: i.name):
        if not inst.alive or inst.address is None or not wanted <= inst.labels.items():
            continue
        labels = {"infra_instance": inst.name}
        for label, key in ((LABEL_STACK, "infra_stack"), (LABEL_GROUP, "infra_group"), (LABEL_MEMBER, "infra_member")):
            if label in inst.labels:
                labels[key] = inst.labels[label]
        groups.append({"targets": [f"{inst.address}:{port}"], "labels": labels})
    return groups


class Discovery:
    """The discovery files under one directory and their registrations."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def _lock(self) -> Any:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # on first write, not on open
        return flock(self.dir / "discovery.lock")

    def _registrations(self) -> dict[str, dict[str, Any]]:
        doc = read_json(self.dir / REGISTRATIONS)
        return doc if isinstance(doc, dict) else {}

    def register(self, selector: Mapping[str, str], port: int) -> Path:
        """Remember (selector, port) and return the absolute path of its file."""
        key = _key(selector, port)
        parts = ("sd", selector.get(LABEL_STACK, "all"), selector.get(LABEL_GROUP), str(port), key)
        stem = "-".join(re.sub(r"[^a-z0-9-]", "_", p.lower())[:40] for p in parts if p)
        path = (self.dir / f"{stem}.json").resolve()
        with self._lock():
            regs = self._registrations()
            if key not in regs:
                regs[key] = {"selector": dict(selector), "port": port, "file": path.name}
                write_json(self.dir / REGISTRATIONS, regs)
        return path

    def refresh(self, observe: Callable[[], list[Instance]]) -> None:
        """Rewrite every registered file whose content changed. ``observe`` lists all instances.

        Runs under the discovery lock and observes inside it, so two ``infra`` processes cannot
        leave an older view on disk after a newer one.
        """
        if not (self.dir / REGISTRATIONS).exists():
            return
        with self._lock():
            regs = self._registrations()
            if not regs:
                return
            instances = observe()
            for reg in regs.values():
                try:
                    selector = {str(k): str(v) for k, v in dict(reg["selector"]).items()}
                    port = int(reg["port"])
                    name = str(reg["file"])
                except (KeyError, TypeError, ValueError):
                    continue
                if "/" in name or name.startswith("."):
                    continue
                text = json.dumps(targets(instances, selector, port), indent=2, sort_keys=True) + "\n"
                path = self.dir / name
                try:
                    if path.read_text(encoding="utf-8") == text:
                        continue
                except FileNotFoundError:
                    pass
                write_text(path, text)
