"""The folders are the layers: ``ls reconciler/`` shows them, and a module in the wrong place fails CI.

The contracts live in ``pyproject.toml`` and CI runs ``lint-imports``; these tests keep them
honest by breaking them on purpose in a copy of the tree: a module that imports a layer above
its own, a module dropped into ``reconciler/`` outside every layer, and an import cycle inside a
provider package each make ``lint-imports`` fail.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["cli", "daemon", "views", "testing", "engine", "kit", "core"]
#: What third parties import today, kept at the top (shims over the layers).
PUBLIC = ["__init__.py", "model.py", "role.py", "provider.py"]


def test_the_top_of_reconciler_is_its_layers_and_the_public_paths() -> None:
    entries = sorted(p.name for p in (ROOT / "reconciler").iterdir()
                     if p.name not in ("__pycache__", "py.typed"))
    assert entries == sorted(LAYERS + PUBLIC)


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_says_what_it_is_for_and_what_it_may_import(layer: str) -> None:
    doc = ast.get_docstring(ast.parse((ROOT / "reconciler" / layer / "__init__.py").read_text()))
    assert doc and "import" in doc, f"reconciler/{layer}/__init__.py needs a docstring naming what it may import"


def test_the_public_paths_keep_working() -> None:
    from reconciler import Group, Stack
    from reconciler.kit import ConfigError, ErrorTable, PermanentError, RetryPolicy, require_owned
    from reconciler.model import Instance, MemberSpec
    from reconciler.provider import Provider, SdConfig
    from reconciler.role import Role, RoleConfig, RoleContext, UpdatePolicy
    from reconciler.testing import ProviderConformance

    assert {Group, Stack, ConfigError, ErrorTable, PermanentError, RetryPolicy, require_owned, Instance,
            MemberSpec, Provider, SdConfig, Role, RoleConfig, RoleContext, UpdatePolicy, ProviderConformance}


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports")
    assert exe, "import-linter is part of the test extra"
    return subprocess.run([exe, "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)})


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in ("reconciler", "providers", "plugins"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contracts_hold_on_the_tree_as_it_is(tree: Path) -> None:
    proc = lint(tree)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("path", "body", "contract"),
    [
        ("reconciler/core/shortcut.py", "from reconciler.engine import Engine\n", "layers point inward"),
        ("reconciler/kit/peek.py", "import reconciler.daemon.worker\n", "layers point inward"),
        ("reconciler/stray.py", "X = 1\n", "layers point inward"),
        ("reconciler/core/uses_shim.py", "from reconciler.model import Instance\n", "never the public shims"),
        ("providers/aws/back.py", "import providers.aws.provider\n", "no import cycle"),
        ("plugins/etcd/reach.py", "import reconciler.engine.executor\n", "the kit and the core only"),
    ],
    ids=["core-imports-engine", "kit-imports-daemon", "module-outside-every-layer", "internal-shim-import",
         "cycle-in-a-provider", "plugin-imports-engine"],
)
def test_a_module_in_the_wrong_place_breaks_a_contract(tree: Path, path: str, body: str, contract: str) -> None:
    target = tree / path
    if path == "providers/aws/back.py":  # aws.provider imports it back: a cycle of two siblings
        provider = tree / "providers" / "aws" / "provider.py"
        provider.write_text(provider.read_text() + "\nfrom providers.aws import back  # noqa\n")
    target.write_text(body)
    proc = lint(tree)
    assert proc.returncode != 0, f"{path} should break a contract:\n{proc.stdout}"
    broken = proc.stdout.split("Broken contracts")[-1]
    assert contract in broken, proc.stdout
