"""The ``directory`` provider: each instance is ``<root>/<name>.json``.

A complete provider in one module, built on infra's provider kit (``reconciler.kit``): settings
validated by a pydantic model, one error table for the OS's exceptions, the ownership check
before every delete. infra calls ``open`` once per command, then ``list``, ``create``, ``delete``
and ``validate``; ``create`` must be idempotent by ``spec.name`` (a retried create, or one whose
answer was lost, must not make a second instance).
"""

from __future__ import annotations

import builtins
import errno
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from reconciler.kit import ErrorTable, InfraError, PermanentError, TransientError, parse_settings, require_owned
from reconciler.model import Instance, InstanceStatus, MemberSpec, Problem
from reconciler.provider import SdConfig


class DirectoryConfig(BaseModel):
    """``provider_config`` of a ``directory`` stack."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    root: str


def _map_os_error(exc: BaseException, action: str) -> InfraError | None:
    if not isinstance(exc, OSError):
        return None  # not ours: a bug, left to surface as one
    message = f"directory: {action}: {exc.strerror or exc}"
    if exc.errno in (errno.EAGAIN, errno.EMFILE, errno.ENFILE, errno.EBUSY):
        return TransientError(message)  # the executor retries these
    return PermanentError(message)


TABLE = ErrorTable("directory", _map_os_error)


class DirectoryProvider:
    """Instances as JSON files in ``root``."""

    name: ClassVar[str] = "directory"

    def __init__(self, config: DirectoryConfig, *, stack: str) -> None:
        self.root = Path(config.root)
        self.stack = stack

    @classmethod
    def open(cls, config: Mapping[str, Any], *, stack: str, state_dir: Path) -> DirectoryProvider:
        return cls(parse_settings(DirectoryConfig, config), stack=stack)

    def _read(self, path: Path) -> Instance:
        return Instance.model_validate(json.loads(path.read_text()))

    def list(self, selector: Mapping[str, str]) -> list[Instance]:
        wanted = selector.items()
        with TABLE.translate("list instances"):
            if not self.root.exists():
                return []
            found = [self._read(p) for p in sorted(self.root.glob("*.json"))]
        return [i for i in found if wanted <= i.labels.items()]

    def create(self, spec: MemberSpec) -> Instance:
        path = self.root / f"{spec.name}.json"
        with TABLE.translate(f"create {spec.name}"):
            if path.exists():  # a retry, or an earlier create whose answer was lost
                existing = self._read(path)
                if not existing.owned_by(spec.stack):
                    raise PermanentError(f"directory: {spec.name} exists and is not stack {spec.stack!r}'s")
                return existing
            self.root.mkdir(parents=True, exist_ok=True)
            inst = Instance(id=spec.name, name=spec.name, labels=spec.labels, status=InstanceStatus.RUNNING)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(inst.model_dump_json())
            os.replace(tmp, path)  # atomic: a reader never sees half an instance
        return inst

    def delete(self, instance: Instance) -> None:
        path = self.root / f"{instance.id}.json"
        with TABLE.translate(f"delete {instance.name}"):
            if not path.exists():
                return  # already gone: success
            require_owned(self.name, self._read(path), self.stack)  # as read now, not as the caller says
            path.unlink(missing_ok=True)

    def validate(self, members: Sequence[MemberSpec]) -> builtins.list[Problem]:
        if self.root.exists() and not self.root.is_dir():
            return [Problem(field="provider_config.root", message=f"{self.root} is not a directory")]
        return []

    def discovery(self, selector: Mapping[str, str], port: int) -> SdConfig | None:
        return None  # no Prometheus service discovery for files

    def close(self) -> None:
        return None
