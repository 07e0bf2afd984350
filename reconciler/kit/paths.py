"""Where ``infra`` keeps its few local files: the state directory.

The provider is the source of truth for instances; locally ``infra`` keeps only secrets (a
stack's CA), its lock, and the local provider's instance directories. The root is
``$INFRA_STATE_DIR``, else ``$XDG_STATE_HOME/infra``, else ``~/.local/state/infra``. Called by the
state directory (:mod:`reconciler.engine.state`, which makes and removes the stack's own
directory) and the local provider (its default root).
"""

from __future__ import annotations

import os
from pathlib import Path


def state_root(*, create: bool = True) -> Path:
    """The state root directory (created 0700 on first use, unless ``create`` is False)."""
    explicit = os.environ.get("INFRA_STATE_DIR")
    if explicit:
        root = Path(explicit)
    else:
        xdg = os.environ.get("XDG_STATE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".local" / "state") / "infra"
    if create:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return root
