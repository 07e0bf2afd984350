"""One way to name a field of a declaration, and the stack-file line that declared it.

Every error about a declaration — a stack or group that fails validation, a provider's or a
role's settings, a problem found by ``validate`` — is shown as::

    stacks/etcd-local.py:31: groups[0].size: 9 members is too many: ...

``FILE:LINE`` is where the object holding the field was built (:attr:`reconciler.core.stack.Group.
declared_at`, known when the stack came from a stack file); ``FIELD`` is the path from the stack
(``groups[1].watch[0]``, ``provider_config.zones``). A typed group (``Prometheus(watch=...)``)
takes its role's settings as keywords, so its paths leave out the ``config`` a generic
``Group(config={...})`` has. Errors found while an object is being built (pydantic's) name the
class instead: ``stacks/x.py:12: Etcd.heartbeat_interval: unknown setting``.

Called by the loader, the engine, the CLI and the daemon; :class:`~reconciler.errors.
ConfigError` carries the field it is about (``field``) so a provider's ``open`` need not know
the file.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

    from reconciler.core.stack import Stack

def format_loc(loc: Iterable[int | str]) -> str:
    """``('groups', 0, 'size')`` → ``groups[0].size``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_TOKEN = re.compile(r"\[(\d+)\]|([^.\[\]]+)")

Part = str | int


@dataclass(frozen=True)
class FieldPath:
    """A path from the stack to a field, ``("groups", 0, "config", "watch", 1)``: a value until printed.

    ``str()`` gives ``groups[0].config.watch[1]``; :meth:`parse` reads that form back (roles and
    providers report fields as text); ``/`` appends a field, an index or a relative path.
    """

    parts: tuple[Part, ...] = ()

    @classmethod
    def parse(cls, text: str | FieldPath) -> FieldPath:
        """``"groups[0].size"`` → ``FieldPath(("groups", 0, "size"))``; a FieldPath is returned as is."""
        if isinstance(text, FieldPath):
            return text
        parts: list[Part] = []
        for index, name in _TOKEN.findall(text):
            parts.append(int(index) if index else name)
        return cls(tuple(parts))

    @classmethod
    def group(cls, index: int) -> FieldPath:
        """``groups[index]``."""
        return cls(("groups", index))

    def __truediv__(self, other: str | int | FieldPath) -> FieldPath:
        if isinstance(other, int):
            return FieldPath((*self.parts, other))
        return FieldPath((*self.parts, *FieldPath.parse(other).parts))

    @property
    def group_index(self) -> int | None:
        """``i`` for a path under ``groups[i]``, else None."""
        if len(self.parts) >= 2 and self.parts[0] == "groups" and isinstance(self.parts[1], int):
            return self.parts[1]
        return None

    def __bool__(self) -> bool:
        return bool(self.parts)

    def __str__(self) -> str:
        return format_loc(self.parts)


def join(prefix: str, field: str) -> str:
    """``join("groups[0]", "config.watch")`` → ``groups[0].config.watch``; indexes attach directly."""
    return str(FieldPath.parse(prefix) / field)


_BY_NAME = re.compile(r"^groups\.([a-z][a-z0-9-]*)(?=\.|$)")


def normalize(stack: Stack, field: str | FieldPath) -> FieldPath:
    """A provider's ``groups.<name>.machine_type`` as ``groups[<index>].machine_type``.

    Providers name a group by its name (they see members, not the stack's list); everything
    shown to a user indexes groups as the stack file lists them.
    """
    if isinstance(field, FieldPath):
        return field
    m = _BY_NAME.match(field)
    if m is not None:
        for i, group in enumerate(stack.groups):
            if group.name == m.group(1):
                return FieldPath.group(i) / field[m.end():]
    return FieldPath.parse(field)


def shown(stack: Stack, field: str | FieldPath) -> str:
    """``field`` as the user wrote it: a typed group's ``config.`` left out."""
    path = FieldPath.parse(field)
    index = path.group_index
    if index is None:
        return str(path)
    rest = path.parts[2:]
    if index < len(stack.groups) and stack.groups[index].typed and rest[:1] == ("config",):
        rest = rest[1:]
    return str(FieldPath(("groups", index, *rest)))


def line_of(stack: Stack, field: str | FieldPath) -> int | None:
    """The stack-file line that declared ``field`` (its group's line, else the stack's)."""
    index = FieldPath.parse(field).group_index
    if index is not None and index < len(stack.groups):
        at = stack.groups[index].declared_at
        if at is not None:
            return at[1]
    at = stack.declared_at
    return at[1] if at is not None else None


def where(stack: Stack, source: str, field: str | FieldPath) -> str:
    """``FILE:LINE: FIELD`` (or ``FILE: FIELD`` when no line is known, ``FIELD`` with no file)."""
    line = line_of(stack, field)
    path = f"{source}:{line}" if source and line else source
    name = shown(stack, field) if field else ""
    if path and name:
        return f"{path}: {name}"
    return path or name or "(stack)"


def validation_problems(exc: ValidationError, known: Iterable[str] = ()) -> list[tuple[str, str]]:
    """``(field, what is wrong (got VALUE))`` per pydantic error (``field`` empty at the top level);
    an unknown setting gets the closest of ``known`` (the model's fields) as a suggestion."""
    known = tuple(known)
    problems = []
    for err in exc.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")
        value = err.get("input")
        got = "" if isinstance(value, dict | list) or value is None else f" (got {value!r})"
        if err["type"] == "extra_forbidden" and err["loc"]:
            name = str(err["loc"][-1])
            close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
            msg = f"no setting {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
            got = ""
        problems.append((format_loc(err["loc"]), f"{msg}{got}"))
    return problems
