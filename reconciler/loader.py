"""Loads a stack file: runs the Python file and finds its one :class:`~reconciler.stack.Stack`.

Called by every CLI command and by the daemon (on start and whenever the file changes). Every
way a stack file can be wrong — missing, a syntax error, an exception, no stack, two stacks, a
value that fails validation — becomes one :class:`~reconciler.errors.ConfigError` whose message
names the file, the line where it can be found, and the field, with no traceback (the CLI shows
one only with ``--debug``). Loading changes nothing outside the Python process.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from reconciler.errors import ConfigError
from reconciler.stack import Stack


def format_loc(loc: tuple[int | str, ...]) -> str:
    """``('groups', 0, 'size')`` → ``groups[0].size``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def validation_message(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem: ``field: what is wrong (got VALUE)``."""
    lines = []
    for err in exc.errors():
        loc = format_loc(tuple(err["loc"]))
        where = f"{prefix}.{loc}" if prefix and loc != "(top level)" else (prefix or loc)
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        shown = "" if isinstance(value, dict | list) or value is None else f" (got {value!r})"
        lines.append(f"{where}: {msg}{shown}")
    return "; ".join(lines)


def _line_in(tb: Any, path: str) -> int | None:
    line = None
    for frame, lineno in traceback.walk_tb(tb):
        if frame.f_code.co_filename == path:
            line = lineno
    return line


def load_stack(path: str | Path) -> Stack:
    """Run the stack file at ``path`` and return the one Stack it defines."""
    file = Path(path)
    shown = str(path)
    if not file.exists():
        raise ConfigError(f"{shown}: no such stack file", hint="pass the path of a Python file that defines a Stack")
    if not file.is_file():
        raise ConfigError(f"{shown}: not a file")
    try:
        source = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{shown}: cannot read the stack file: {exc}") from None
    filename = str(file.resolve())
    try:
        code = compile(source, filename, "exec")
    except SyntaxError as exc:
        raise ConfigError(f"{shown}:{exc.lineno}: syntax error: {exc.msg}") from None

    namespace: dict[str, Any] = {"__name__": f"infra_stack_{file.stem.replace('-', '_')}", "__file__": filename}
    parent = str(file.resolve().parent)
    sys.path.insert(0, parent)
    try:
        exec(code, namespace)
    except ValidationError as exc:
        line = _line_in(exc.__traceback__, filename)
        where = f"{shown}:{line}" if line else shown
        raise ConfigError(f"{where}: invalid {exc.title}: {validation_message(exc)}") from exc
    except SystemExit as exc:
        raise ConfigError(f"{shown}: the stack file called exit({exc.code})") from None
    except Exception as exc:
        line = _line_in(exc.__traceback__, filename)
        where = f"{shown}:{line}" if line else shown
        raise ConfigError(f"{where}: the stack file raised {type(exc).__name__}: {exc}") from exc
    finally:
        try:
            sys.path.remove(parent)
        except ValueError:
            pass

    stacks: dict[int, tuple[str, Stack]] = {}
    for name, value in namespace.items():
        if isinstance(value, Stack) and id(value) not in stacks:
            stacks[id(value)] = (name, value)
    if not stacks:
        raise ConfigError(
            f"{shown}: defines no Stack",
            hint="assign one at module level, e.g. stack = Stack(name='demo', groups=[Group(name='web', size=3)])",
        )
    if len(stacks) > 1:
        names = ", ".join(f"{var} ({s.name!r})" for var, s in stacks.values())
        raise ConfigError(f"{shown}: defines {len(stacks)} stacks: {names}; a stack file must define exactly one")
    return next(iter(stacks.values()))[1]
