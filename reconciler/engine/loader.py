"""Loads a stack file: runs the Python file and finds its one :class:`~reconciler.core.stack.Stack`.

Called by every CLI command and by the daemon (on start and whenever the file changes). Every
way a stack file can be wrong — missing, a syntax error, an exception, no stack, two stacks, a
value that fails validation — becomes one :class:`~reconciler.core.errors.ConfigError` whose message
names the file, the line where it can be found, and the field (``stacks/x.py:12:
Etcd.heartbeat_interval: no setting 'heartbeat_interval'; did you mean
'heartbeat_interval_ms'?``, :mod:`reconciler.core.fieldpath`), with no traceback (the CLI shows
one only with ``--debug``). Loading changes nothing outside the Python process.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from reconciler.core.errors import ConfigError
from reconciler.core.fieldpath import validation_problems
from reconciler.core.stack import LOADING, Stack


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
    token = LOADING.set(filename)
    try:
        exec(code, namespace)
    except ValidationError as exc:
        line = _line_in(exc.__traceback__, filename)
        where = f"{shown}:{line}" if line else shown
        model = namespace.get(exc.title)
        known = model.model_fields if isinstance(model, type) and issubclass(model, BaseModel) else ()
        problems = [f"{exc.title}.{field}: {msg}" if field else f"{exc.title}: (top level): {msg}"
                    for field, msg in validation_problems(exc, known=known)]
        raise ConfigError(f"{where}: " + "; ".join(problems)) from exc
    except SystemExit as exc:
        raise ConfigError(f"{shown}: the stack file called exit({exc.code})") from None
    except Exception as exc:
        line = _line_in(exc.__traceback__, filename)
        where = f"{shown}:{line}" if line else shown
        raise ConfigError(f"{where}: the stack file raised {type(exc).__name__}: {exc}") from exc
    finally:
        LOADING.reset(token)
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
