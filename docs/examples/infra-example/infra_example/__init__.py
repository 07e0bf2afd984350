"""An example of extending infra from a package of its own: a provider and a role.

See ``docs/extending.md`` in infra's repository. ``directory`` keeps each instance as a JSON file
in a directory (a "cloud" anyone can inspect with ``ls``); ``greeter`` runs one greeting service
per member. Both are found by infra through their entry points in ``pyproject.toml``.
"""

from infra_example.provider import DirectoryProvider
from infra_example.role import Greeter, GreeterConfig, GreeterRole

__all__ = ["DirectoryProvider", "Greeter", "GreeterConfig", "GreeterRole"]
