"""``python -m reconciler.cli``: the ``infra`` command (the tests run it this way)."""

from reconciler.cli.main import main

main()
