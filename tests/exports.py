"""The start-up contract of infra's emulators and the tests' moto server, read by whoever starts one.

Each prints the shell exports a client needs, one ``export NAME=value`` line each (the value
shell-quoted), then a line ``# ready``. Used by the emulator fixture (``tests/emulator/conftest.py``),
``bench/emulator.py`` and :func:`tests.aws.moto_server.running` (which the benches that time the
CLI against moto start it with).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

READY = "# ready"


def parse_export(line: str) -> tuple[str, str] | None:
    """``("NAME", "value")`` for an ``export NAME=value`` line (unquoted as the shell would), else None."""
    if not line.startswith("export "):
        return None
    key, _, value = line.removeprefix("export ").strip().partition("=")
    return key, (shlex.split(value)[0] if value.strip() else "")


def read_exports(lines: Iterable[str]) -> dict[str, str]:
    """The exports printed before ``# ready``; AssertionError when the output ends without it."""
    exports: dict[str, str] = {}
    for line in lines:
        if line.startswith(READY):
            return exports
        if (pair := parse_export(line)) is not None:
            exports[pair[0]] = pair[1]
    raise AssertionError(f"the process ended before printing {READY!r}; exports so far: {sorted(exports)}")
