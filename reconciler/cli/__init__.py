"""The CLI: what a person runs. The outermost layer; it may import every other one.

:mod:`~reconciler.cli.main` (the console script, errors and exit codes),
:mod:`~reconciler.cli.commands` (the commands), :mod:`~reconciler.cli.render` (the plan and status
as text) and :mod:`~reconciler.cli.reporter` (an apply's progress). ``python -m reconciler.cli``
runs it too.
"""

from reconciler.cli.main import main

__all__ = ["main"]
