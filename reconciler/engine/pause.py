"""Pauses: a person stops infra from changing a stack, or one of its groups, with a reason.

``infra pause STACK [--group G] --reason TEXT`` writes a pause and ``infra resume`` lifts it;
every writer of the stack reads the pauses at the start of each pass (:meth:`Engine.plan`), so
``infra apply`` and the daemon alike observe, plan and report, and change nothing that is paused
(a stopped member is left stopped). The pauses live in the stack's state directory
(``<state root>/stacks/<stack>/pause.json``, written atomically, no lock needed: the daemon that
holds the lock must see a pause made while it runs); ``infra destroy`` of the stack removes them
with the rest of its state. When writers coordinate through an etcd (``INFRA_COORDINATION``, a
daemon's ``--lock etcd://``), they live there instead (``/infra/pauses/<stack>``), so a pause made
on any machine stops the daemon that leads the stack on another; when that etcd cannot be asked,
reading them fails (TransientError) and the pass changes nothing.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.core.errors import ConfigError, TransientError
from reconciler.engine.state import StateDir
from reconciler.kit.coordination import EtcdTarget, etcd_client

#: Where the pauses of a stack live in the coordinating etcd.
PREFIX = "/infra/pauses/"


@dataclass(frozen=True)
class Pause:
    """One pause: of the stack (``group == ""``) or of one group."""

    group: str
    reason: str
    since: float
    by: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        what = f"group {self.group}" if self.group else "the stack"
        return f"{what} paused since {when} by {self.by}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {"group": self.group, "reason": self.reason, "since": self.since, "by": self.by}


class Pauses:
    """The pauses of one stack, read from and written to its state directory."""

    def __init__(self, state: StateDir, shared: EtcdTarget | None = None) -> None:
        self.state = state
        self.path = state.path / "pause.json"
        self.shared = shared
        self.key = PREFIX + state.stack

    def _shared_doc(self, shared: EtcdTarget) -> Any:
        try:
            found = etcd_client(shared, timeout=5.0).get(self.key)
        except Exception as exc:  # requests' or etcd3gw's: the etcd cannot say
            raise TransientError(f"cannot read the pauses of stack {self.state.stack!r} from the coordinating etcd "
                                 f"{shared}: {type(exc).__name__}", hint="infra changes nothing while it cannot tell"
                                 ) from None
        return json.loads(found[0]) if found else {}

    def read(self) -> dict[str, Pause]:
        """The pauses in force, by group (``""``: the whole stack). A missing file: none."""
        try:
            doc = (self._shared_doc(self.shared) if self.shared is not None
                   else json.loads(self.path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the pauses of stack {self.state.stack!r} ({self.path}): {exc}",
                              hint="fix or remove the file; infra changes nothing while it cannot tell") from None
        out: dict[str, Pause] = {}
        for entry in doc.get("pauses", []) if isinstance(doc, dict) else []:
            try:
                pause = Pause(str(entry["group"]), str(entry["reason"]), float(entry["since"]), str(entry["by"]))
            except (KeyError, TypeError, ValueError):
                continue
            out[pause.group] = pause
        return out

    def pause(self, group: str, reason: str) -> Pause:
        """Pause the stack (``group=""``) or one group; a second pause replaces the reason."""
        pauses = self.read()
        who = f"{getpass.getuser()}@{socket.gethostname()}"
        pauses[group] = Pause(group, reason, time.time(), who)
        self._write(pauses)
        return pauses[group]

    def resume(self, group: str) -> Pause | None:
        """Lift the pause of the stack or of one group; returns it (None when there was none)."""
        pauses = self.read()
        lifted = pauses.pop(group, None)
        if lifted is not None:
            self._write(pauses)
        return lifted

    def _write(self, pauses: dict[str, Pause]) -> None:
        doc = {"pauses": [p.to_json() for _, p in sorted(pauses.items())]}
        if self.shared is not None:
            try:
                etcd_client(self.shared, timeout=5.0).put(self.key, json.dumps(doc))
            except Exception as exc:
                raise TransientError(f"cannot write the pauses of stack {self.state.stack!r} to the coordinating "
                                     f"etcd {self.shared}: {type(exc).__name__}") from None
            return
        self.state.ensure()
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".pause.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=2)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
