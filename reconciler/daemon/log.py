"""The daemon's structured log: one event per line on stderr, text for people or JSON for machines.

Created once per ``infra daemon`` by :mod:`reconciler.daemon.command`; every other part of the
daemon logs through it as ``log(level, event, msg, **fields)``. JSON lines carry ``ts``,
``level``, ``event``, ``msg`` and the event's fields; text lines show the fields after the
message. Thread-safe, and never raises (a closed stderr must not stop the loop).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar, TextIO


class EventLog:
    """One event per line on ``stream``: text for people, JSON for machines. Thread-safe."""

    LEVELS: ClassVar[dict[str, int]] = {"debug": 10, "info": 20, "warning": 30, "error": 40}

    def __init__(self, fmt: str = "text", stream: TextIO | None = None, level: str = "info") -> None:
        self.fmt = fmt
        self.stream = stream or sys.stderr
        self.min_level = self.LEVELS[level]
        self._lock = threading.RLock()  # a signal handler may log while the main thread does

    def __call__(self, level: str, event: str, msg: str, **fields: Any) -> None:
        if self.LEVELS.get(level, 20) < self.min_level:
            return
        now = time.time()
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        if self.fmt == "json":
            line = json.dumps({"ts": ts, "level": level, "event": event, "msg": msg, **fields}, default=str)
        else:
            extra = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items()
                             if k not in ("stack",) and v is not None and v != "")
            stack = fields.get("stack")
            where = f"[{stack}] " if stack else ""
            line = f"{ts} {level.upper():<7} {where}{msg}" + (f"  ({extra})" if extra else "")
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed stderr must not kill the loop


def _text_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


Log = Callable[..., None]
