"""The in-process ``memory`` provider: instances are records in a dict.

For engine tests and benchmarks, like InfraKit's simulator: a real provider plugin with optional
simulated latency per call and a transient-error rate. Instances live as long as the Python
process; :data:`WORLDS` shares them between provider objects opened with the same ``world`` name,
so a test can reopen "the same cloud" the way a second ``infra`` run would.
"""

from __future__ import annotations

import builtins
import itertools
import random
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from reconciler.core.errors import NotFoundError, TransientError
from reconciler.core.model import Instance, InstanceStatus, MemberSpec, Problem
from reconciler.kit.ownership import merged_labels, require_label_update, require_owned
from reconciler.kit.provider import SdConfig
from reconciler.kit.settings import parse_settings


class MemoryConfig(BaseModel):
    """``provider_config`` of the memory provider."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    world: str = "default"
    latency: float = Field(0.0, ge=0, description="seconds slept per call")
    error_rate: float = Field(0.0, ge=0, le=1, description="probability a call raises TransientError")
    seed: int | None = None


class World:
    """One simulated cloud: the instances and a call counter, safe across threads."""

    def __init__(self) -> None:
        self.instances: dict[str, Instance] = {}
        self.by_name: dict[str, str] = {}
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.calls: dict[str, int] = {"list": 0, "create": 0, "delete": 0, "update": 0}

    def add_foreign(self, name: str, labels: Mapping[str, str] | None = None) -> Instance:
        """Put an instance there that ``infra`` did not create (for safety tests)."""
        with self.lock:
            inst = Instance(
                id=f"m-{next(self.ids)}", name=name, labels=dict(labels or {}), status=InstanceStatus.RUNNING
            )
            self.instances[inst.id] = inst
            self.by_name[name] = inst.id
            return inst

    def set_status(self, instance_id: str, status: InstanceStatus) -> None:
        with self.lock:
            self.instances[instance_id] = self.instances[instance_id].model_copy(update={"status": status})


WORLDS: dict[str, World] = {}
_WORLDS_LOCK = threading.Lock()


def world(name: str = "default") -> World:
    with _WORLDS_LOCK:
        return WORLDS.setdefault(name, World())


class MemoryProvider:
    """A provider whose instances are dict entries. See the module docstring."""

    name: ClassVar[str] = "memory"

    def __init__(self, config: MemoryConfig, *, stack: str = "") -> None:
        self.config = config
        self.stack = stack
        self.world = world(config.world)
        self._rng = random.Random(config.seed)

    @classmethod
    def open(cls, config: Mapping[str, Any], *, stack: str, state_dir: Path) -> MemoryProvider:
        return cls(parse_settings(MemoryConfig, config), stack=stack)

    def _call(self, kind: str) -> None:
        with self.world.lock:
            self.world.calls[kind] += 1
            fail = self.config.error_rate and self._rng.random() < self.config.error_rate
        if self.config.latency:
            time.sleep(self.config.latency)
        if fail:
            raise TransientError(f"memory: simulated transient failure of {kind}")

    def list(self, selector: Mapping[str, str]) -> list[Instance]:
        self._call("list")
        items = selector.items()
        with self.world.lock:
            return [i for i in self.world.instances.values() if items <= i.labels.items()]

    def create(self, spec: MemberSpec) -> Instance:
        self._call("create")
        with self.world.lock:
            existing = self.world.by_name.get(spec.name)
            if existing is not None:
                return self.world.instances[existing]
            inst = Instance(
                id=f"m-{next(self.world.ids)}",
                name=spec.name,
                labels=spec.labels,
                address=f"10.0.{spec.placement // 250 % 250}.{spec.placement % 250 + 1}",
                status=InstanceStatus.RUNNING,
                created_at=time.time(),
            )
            self.world.instances[inst.id] = inst
            self.world.by_name[inst.name] = inst.id
            return inst

    def delete(self, instance: Instance) -> None:
        self._call("delete")
        with self.world.lock:
            current = self.world.instances.get(instance.id)
            if current is None:
                return
            require_owned("memory", current, self.stack)
            del self.world.instances[instance.id]
            self.world.by_name.pop(current.name, None)

    def update_labels(self, instance: Instance, labels: Mapping[str, str]) -> Instance:
        """The instance's labels replaced in place (ownership checked on the record itself)."""
        self._call("update")
        with self.world.lock:
            current = self.world.instances.get(instance.id)
            if current is None:
                raise NotFoundError(f"memory: {instance.name} ({instance.id}) is gone")
            require_label_update("memory", current, labels, self.stack)
            updated = current.model_copy(update={"labels": merged_labels(current.labels, labels)})
            self.world.instances[instance.id] = updated
            return updated

    def validate(self, members: Sequence[MemberSpec]) -> builtins.list[Problem]:
        return []

    def discovery(self, selector: Mapping[str, str], port: int) -> SdConfig | None:
        return None

    def close(self) -> None:
        return None
