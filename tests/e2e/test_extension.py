"""Extending infra from a package of its own, as docs/extending.md shows it.

The example package (``docs/examples/infra-example``: the ``directory`` provider and the
``greeter`` role) is installed into a fresh virtual environment the way a user installs a
third-party plugin (pip, offline: ``--no-build-isolation`` over this environment's packages),
registered only by its entry points. Then, inside that environment: its own test suite runs the
conformance suite imported from ``reconciler.testing``, and the real ``infra`` CLI drives a stack
that uses both. Also checks that the code shown in docs/extending.md is the code of the example.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "infra-example"
DOC = REPO / "docs" / "extending.md"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the venv's python, a copy of the example package) with the package pip-installed."""
    base = tmp_path_factory.mktemp("ext")
    package = base / "infra-example"
    shutil.copytree(EXAMPLE, package, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    venv.create(base / "venv", system_site_packages=True, with_pip=True)
    python = base / "venv" / "bin" / "python"
    run = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--disable-pip-version-check", "--no-index", str(package)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return python, package


def in_env(python: Path, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, **env}, stdin=subprocess.DEVNULL)


def test_the_example_is_not_importable_outside_its_environment() -> None:
    import importlib.util

    assert importlib.util.find_spec("infra_example") is None  # only the venv has it: a real install


def test_the_packages_own_tests_pass_the_conformance_suite(env: tuple[Path, Path]) -> None:
    python, package = env
    proc = in_env(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", cwd=package)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\b11 passed\b", proc.stdout), proc.stdout  # 9 conformance cases + 2 of its own


def test_the_cli_finds_both_by_entry_point_and_runs_a_stack(env: tuple[Path, Path], tmp_path: Path) -> None:
    python, _ = env
    cloud = tmp_path / "cloud"
    stack = tmp_path / "greet.py"
    stack.write_text(
        "from infra_example import Greeter\n"
        "from reconciler import Stack\n"
        "\n"
        f"stack = Stack(name='greet', provider='directory', provider_config={{'root': {str(cloud)!r}}},\n"
        "              groups=[Greeter(name='hi', size=2, greeting='hej')])\n"
    )
    state = {"INFRA_STATE_DIR": str(tmp_path / "state"), "NO_COLOR": "1", "COLUMNS": "200"}

    def infra(*args: str) -> subprocess.CompletedProcess[str]:
        return in_env(python, "-m", "reconciler.cli", *args, cwd=tmp_path, **state)

    assert infra("validate", str(stack)).returncode == 0
    applied = infra("apply", str(stack), "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    made = sorted(p.name for p in cloud.iterdir())
    assert [n.rsplit("-", 1)[0] for n in made] == ["greet-hi-hi-0", "greet-hi-hi-1"], made
    assert infra("plan", str(stack), "--detailed-exitcode").returncode == 0  # converged
    sorted(cloud.iterdir())[0].unlink()  # an instance lost behind infra's back
    healed = infra("apply", str(stack), "--yes")
    assert healed.returncode == 0 and "missing" in healed.stdout, healed.stdout
    assert len(list(cloud.iterdir())) == 2
    assert infra("destroy", str(stack), "--yes").returncode == 0
    assert list(cloud.iterdir()) == []
    stack.write_text(stack.read_text().replace("greeting='hej'", "greting='hej'"))
    typo = infra("plan", str(stack))
    assert typo.returncode == 1 and "greet.py:5: Greeter.greting: no setting 'greting'; did you mean 'greeting'?" \
        in typo.stderr, typo.stderr


def test_the_code_in_the_extension_guide_is_the_example_package() -> None:
    text = DOC.read_text()
    blocks = re.findall(r"<!-- file: (\S+) -->\n```(?:python|toml)\n(.*?)```", text, flags=re.S)
    assert {name for name, _ in blocks} >= {"pyproject.toml", "infra_example/provider.py", "infra_example/role.py",
                                            "tests/test_conformance.py"}
    for name, body in blocks:
        assert body == (EXAMPLE / name).read_text(), f"docs/extending.md shows an old {name}"

