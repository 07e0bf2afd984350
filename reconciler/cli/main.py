"""The ``infra`` console script: :func:`main` runs the commands and turns every error into one line.

Exit codes: 0 success (``plan --detailed-exitcode``: no changes), 2 changes present (only with
``--detailed-exitcode``) or a usage error, 1 any other error. Errors are one clear message on
stderr; ``--debug`` (or ``INFRA_DEBUG=1``) adds the traceback. The commands are in
:mod:`reconciler.cli.commands`; ``infra daemon`` is added from :mod:`reconciler.daemon`.
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from reconciler.cli import commands
from reconciler.cli.commands import cli, fail


def add_daemon() -> None:
    """Register ``infra daemon`` (light: its heavy imports happen when it runs)."""
    from reconciler.daemon import daemon_command

    cli.add_command(daemon_command, "daemon")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``infra`` console script."""
    from reconciler.kit import netguard

    netguard.install()
    commands.DEBUG = commands.DEBUG or os.environ.get("INFRA_DEBUG") == "1"
    args = sys.argv[1:] if argv is None else argv
    add_daemon()
    try:
        cli.main(args=args, prog_name="infra", standalone_mode=False)
    except click.exceptions.Abort:
        fail("aborted")
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except SystemExit:
        raise
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as exc:
        from reconciler.core.errors import InfraError

        if commands.DEBUG:
            traceback.print_exc()
        if isinstance(exc, InfraError):
            fail(str(exc))
        fail(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
    raise SystemExit(0)
