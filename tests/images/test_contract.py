"""The linuxkit stand-in against the real CLI's contract (tests/linuxkit_standin/contract.json).

The contract was read from linuxkit's sources (``build.go`` flags and defaults, ``output.go``
formats and file names, cobra's ``Error:`` prefix); the stand-in is checked against it here, and
a real ``linuxkit`` on PATH is checked against the same contract (marker ``real_linuxkit``), so a
drift of either side from the other fails a test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.linuxkit_standin.artefact import STANDIN

CONTRACT = json.loads((STANDIN.parent / "contract.json").read_text())
REAL = shutil.which("linuxkit")
YAML = "kernel:\n  image: linuxkit/kernel:6.6.71\ninit: []\nservices:\n  - name: a\n    image: busybox\n"


def run(exe: str | Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, timeout=600, check=False)


@pytest.fixture(params=["standin", pytest.param("real", marks=pytest.mark.real_linuxkit)])
def exe(request: pytest.FixtureRequest) -> str:
    if request.param == "real":
        if REAL is None:
            pytest.skip("no real linuxkit on PATH")
        return REAL
    return str(STANDIN)


def test_help_lists_every_flag_of_the_contract(exe: str, tmp_path: Path) -> None:
    out = run(exe, "build", "--help", cwd=tmp_path)
    assert out.returncode == 0
    for flag in CONTRACT["flags"]:
        assert flag in out.stdout, flag


def test_an_unknown_format_is_refused_with_linuxkits_words(exe: str, tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(YAML)
    out = run(exe, "build", "--format", "bogus", "a.yml", cwd=tmp_path)
    assert out.returncode == CONTRACT["exit_code_on_error"]
    assert CONTRACT["errors"]["unknown_format"].format(format="bogus") in out.stderr
    assert not list(tmp_path.glob("a*.*")) or list(tmp_path.iterdir()) == [tmp_path / "a.yml"]


def test_a_missing_file_is_refused_with_linuxkits_words(exe: str, tmp_path: Path) -> None:
    out = run(exe, "build", "--format", "aws", "nope.yml", cwd=tmp_path)
    assert out.returncode == 1
    assert CONTRACT["errors"]["missing_file"].format(path="nope.yml") in out.stderr


@pytest.mark.parametrize("fmt", ["aws", "gcp"])
def test_outputs_are_named_as_linuxkit_names_them(exe: str, tmp_path: Path, fmt: str) -> None:
    (tmp_path / "demo.yml").write_text(YAML)
    out = run(exe, "build", "-f", fmt, "--dir", "out", "demo.yml", cwd=tmp_path)  # default name: the file's
    assert out.returncode == 0, out.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == [CONTRACT["outputs"][fmt].format(name="demo")]
    named = run(exe, "build", "--format", fmt, "--name", "other", "--dir", "out2", "demo.yml", cwd=tmp_path)
    assert named.returncode == 0
    assert [p.name for p in (tmp_path / "out2").iterdir()] == [CONTRACT["outputs"][fmt].format(name="other")]


def test_the_default_size_is_linuxkits(tmp_path: Path) -> None:
    (tmp_path / "demo.yml").write_text(YAML)
    assert run(STANDIN, "build", "-f", "aws", "demo.yml", cwd=tmp_path).returncode == 0
    assert (tmp_path / "demo.raw").stat().st_size == 1024 << 20 == int(CONTRACT["flags"]["--size"]["default"][:-1]) << 20


def test_a_config_linuxkit_would_refuse_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text(YAML + "members: []\n")
    out = run(STANDIN, "build", "-f", "aws", "bad.yml", cwd=tmp_path)
    assert out.returncode == 1 and out.stderr.startswith("Error: invalid config: ")


@pytest.mark.parametrize("fmt", sorted(set(CONTRACT["formats"]) - {"aws", "gcp"}))
def test_the_standin_accepts_every_linuxkit_format_and_says_it_does_not_build_it(tmp_path: Path, fmt: str) -> None:
    (tmp_path / "demo.yml").write_text(YAML)
    out = run(STANDIN, "build", "-f", fmt, "demo.yml", cwd=tmp_path)
    assert out.returncode == 1
    assert "unknown format type" not in out.stderr  # a valid linuxkit format ...
    assert f"does not build format {fmt}" in out.stderr  # ... that the stand-in says it cannot make
