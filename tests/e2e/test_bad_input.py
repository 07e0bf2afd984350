"""Bad input gets one clear message naming the file, line or field; exit 1; nothing changes.

Also the safety rails around writers: confirmation, the one-writer lock, saved plans.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Infra, infra_bin, write_stack

CMD = '{"command": ["python3", "-m", "http.server", "8080", "--bind", "{address}"], "port": 8080}'


def assert_clean_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in proc.stderr, f"{needle!r} not in:\n{proc.stderr}"


def nothing_created(infra: Infra) -> bool:
    inst = infra.state / "local" / "instances"
    return not inst.exists() or not list(inst.iterdir())


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        ("stack = Stack(name='x', groups=[Group(name='web', size=-1)])\n", ["bad.py:2: Group.size: ", "greater than or equal to 0"]),
        ("stack = Stack(name='Bad_Name')\n", ["bad.py:2", "name", "lowercase"]),
        ("stack = Stack(name='x', groups=[Group(name='web', size=1, sise=3)])\n", ["bad.py:2: Group.sise: no setting 'sise'; did you mean 'size'?"]),
        ("stack = Stack(name='x'\n", ["bad.py:2", "syntax error"]),
        ("import nosuchmodule\n", ["bad.py:2", "ModuleNotFoundError", "nosuchmodule"]),
        ("raise RuntimeError('boom')\n", ["bad.py:2", "RuntimeError", "boom"]),
        ("x = 1\n", ["bad.py", "defines no Stack"]),
        ("a = Stack(name='a')\nb = Stack(name='b')\n", ["bad.py", "2 stacks", "exactly one"]),
        ("stack = Stack(name='x', groups=[Group(name='w', size=1), Group(name='w', size=2)])\n",
         ["bad.py:2", "declared twice"]),
        ("stack = Stack(name='x', provider='nocloud', groups=[])\n", ["bad.py", "unknown provider 'nocloud'",
                                                                     "local", "memory"]),
        ("stack = Stack(name='x', groups=[Group(name='w', size=1, role='norole')])\n",
         ["bad.py:2: groups[0].role", "unknown role 'norole'", "command"]),
        ("stack = Stack(name='x', groups=[Group(name='w', size=1, config={'port': 80})])\n",
         ["bad.py:2: groups[0].config.command: Field required"]),
        ("stack = Stack(name='x', provider_config={'nope': 1}, groups=[])\n",
         ["bad.py:2: provider_config.nope: "]),
    ],
    ids=["negative-size", "bad-name", "unknown-field", "syntax", "import", "raises", "no-stack", "two-stacks",
         "duplicate-group", "unknown-provider", "unknown-role", "role-config", "provider-config"],
)
def test_bad_stack_files(infra: Infra, tmp_path: Path, body: str, needles: list[str]) -> None:
    path = write_stack(tmp_path / "bad.py", body)
    for command in ("validate", "plan", "apply"):
        args = [command, str(path)] + (["--yes"] if command == "apply" else [])
        assert_clean_error(infra.run(*args), *needles)
        if command == "plan":
            assert_clean_error(infra.run(command, str(path), "--detailed-exitcode"), *needles)
    assert nothing_created(infra)
    assert list(infra.state.iterdir()) == []  # not even a lock file or a directory


def test_missing_file_and_debug_traceback(infra: Infra, tmp_path: Path) -> None:
    assert_clean_error(infra.run("plan", str(tmp_path / "nope.py")), "nope.py: no such stack file")
    path = write_stack(tmp_path / "bad.py", "raise RuntimeError('boom')\n")
    debug = infra.run("--debug", "plan", str(path))
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_port_collision_is_a_clear_error_and_changes_nothing(infra: Infra, tmp_path: Path) -> None:
    import socket

    # Something else owns the port on every loopback address: no member can get it.
    squatter = socket.socket()
    squatter.bind(("0.0.0.0", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    try:
        path = write_stack(tmp_path / "clash.py", "stack = Stack(name='clash', groups=[Group(name='web', size=1, "
                           f"config={{'command': ['python3', '-m', 'http.server', '{port}'], 'port': {port}}})])\n")
        proc = infra.run("apply", str(path), "--yes")
        assert proc.returncode == 1
        assert f"{port}" in proc.stderr and "in use" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert nothing_created(infra)
    finally:
        squatter.close()


def test_apply_and_destroy_refuse_without_a_terminal_or_yes(infra: Infra, tmp_path: Path) -> None:
    path = write_stack(tmp_path / "c.py", f"stack = Stack(name='confirm', groups=[Group(name='web', size=1, config={CMD})])\n")
    assert_clean_error(infra.run("apply", str(path)), "no terminal", "--yes")
    assert nothing_created(infra)
    infra.run("apply", str(path), "--yes", check=True)
    assert_clean_error(infra.run("destroy", str(path)), "no terminal", "--yes")
    assert len(list((infra.state / "local" / "instances").iterdir())) == 1


def test_a_second_writer_fails_fast_naming_the_holder(infra: Infra, tmp_path: Path) -> None:
    path = write_stack(tmp_path / "l.py", f"stack = Stack(name='locked', groups=[Group(name='web', size=1, config={CMD})])\n")
    holder = subprocess.Popen(
        [*infra_bin()[:-1], *(["python3"] if len(infra_bin()) == 1 else []), "-c",
         "import sys, time; from reconciler.engine.state import StateDir; "
         "l = StateDir('locked').lock(); l.acquire(); print('held', flush=True); time.sleep(60)"],
        env=infra.env(), stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        proc = infra.run("apply", str(path), "--yes")
        assert_clean_error(proc, "locked by pid", str(holder.pid))
        assert nothing_created(infra)
        # plan is read-only and does not need the lock
        assert infra.run("plan", str(path)).returncode == 0
    finally:
        holder.kill()
        holder.wait()
    infra.run("apply", str(path), "--yes", check=True)  # the dead holder released it


def test_saved_plan_applies_exactly_and_a_stale_one_is_refused(infra: Infra, tmp_path: Path) -> None:
    def stack(size: int) -> str:
        return str(write_stack(tmp_path / "p.py", f"stack = Stack(name='saved', groups=[Group(name='web', "
                               f"size={size}, config={CMD})])\n"))

    path = stack(2)
    saved = tmp_path / "plan.json"
    infra.run("plan", path, "--out", str(saved), check=True)
    assert json.loads(saved.read_text())["stack"] == "saved"
    infra.run("apply", path, "--plan", str(saved), check=True)  # no --yes needed: the plan was reviewed
    assert infra.run("plan", path, "--detailed-exitcode").returncode == 0

    stale = tmp_path / "stale.json"
    stack(3)
    infra.run("plan", path, "--out", str(stale), check=True)
    stack(1)  # the world (declared state) moved on since the plan was saved
    assert_clean_error(infra.run("apply", path, "--plan", str(stale)), "stale")
    assert len(list((infra.state / "local" / "instances").iterdir())) == 2
    assert_clean_error(infra.run("apply", path, "--plan", str(tmp_path / "missing.json")), "no such plan file")


def test_destroy_of_an_empty_stack_succeeds_and_says_so(infra: Infra, tmp_path: Path) -> None:
    path = write_stack(tmp_path / "e.py", f"stack = Stack(name='empty', groups=[Group(name='web', size=2, config={CMD})])\n")
    proc = infra.run("destroy", str(path), "--yes", check=True)
    assert "nothing to destroy" in proc.stdout


def test_unknown_command_is_a_usage_error(infra: Infra) -> None:
    proc = infra.run("frobnicate")
    assert proc.returncode == 2 and "No such command" in proc.stderr


def test_an_env_name_that_is_not_a_shell_identifier_is_refused_at_its_line(infra: Infra, tmp_path: Path) -> None:
    """A name is spliced into the member's boot wrapper (``export NAME=...``): one that is not an
    identifier is an error at the line that declared it, and nothing runs it."""
    pwned = tmp_path / "pwned"
    typed = tmp_path / "typed.py"
    typed.write_text("from plugins.command import Command\nfrom reconciler import Stack\n"
                     f"stack = Stack(name='envs', groups=[Command(name='web', size=1, command=['true'],\n"
                     f"    env={{'X;touch {pwned};Y': 'v'}})])\n")
    generic = write_stack(tmp_path / "generic.py", "stack = Stack(name='envs', groups=[Group(name='web', size=1, "
                          "config={'command': ['true'], 'env': {'A B': 'v'}})])\n")
    for command in ("validate", "plan", "apply"):
        extra = ["--yes"] if command == "apply" else []
        assert_clean_error(infra.run(command, str(typed), *extra), "typed.py:3: Command.env",
                           "is not a valid environment variable name")
        assert_clean_error(infra.run(command, str(generic), *extra), "generic.py:2: groups[0].config.env",
                           "'A B' is not a valid environment variable name")
    assert not pwned.exists()
    assert list(infra.state.iterdir()) == []
