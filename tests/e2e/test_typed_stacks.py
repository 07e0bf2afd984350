"""Typed role groups through the CLI: mistakes at their line, and no roll when a stack file is
rewritten from the dict form into the typed form (a test that upgrading never rolls a cluster)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.e2e.conftest import REPO, Infra

HEAD = "from plugins.etcd import Etcd\nfrom plugins.prometheus import Prometheus\nfrom reconciler import Stack\n"


def stack_file(path: Path, body: str) -> Path:
    path.write_text(HEAD + textwrap.dedent(body))
    return path


def failed_cleanly(infra: Infra, *args: str) -> str:
    proc = infra.run(*args)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert list(infra.state.iterdir()) == []  # no lock file, no directory
    return proc.stdout + proc.stderr  # validate reports its problems on stdout


def test_a_typo_in_a_setting_is_reported_at_the_line_that_builds_the_group(infra: Infra, tmp_path: Path) -> None:
    path = stack_file(tmp_path / "typo.py", """
        etcd = Etcd(
            name="etcd",
            size=3,
            heartbeat_interval=50,
        )
        stack = Stack(name="typo", groups=[etcd])
    """)
    for command in ("validate", "plan"):
        err = failed_cleanly(infra, command, str(path))
        # line 5 is "etcd = Etcd(" (three import lines, then the blank line of the body)
        assert "typo.py:5: Etcd.heartbeat_interval: no setting 'heartbeat_interval'; " \
               "did you mean 'heartbeat_interval_ms'?" in err, err


def test_a_bad_value_names_the_field_and_the_reason(infra: Infra, tmp_path: Path) -> None:
    path = stack_file(tmp_path / "bad.py", """
        stack = Stack(name="bad", groups=[Etcd(name="etcd", size=3, heartbeat_interval_ms=5)])
    """)
    err = failed_cleanly(infra, "plan", str(path))
    assert "bad.py:5: Etcd.heartbeat_interval_ms: Input should be greater than or equal to 10 (got 5)" in err, err


def test_a_size_the_role_cannot_run_is_refused_before_anything_is_opened(infra: Infra, tmp_path: Path) -> None:
    path = stack_file(tmp_path / "big.py", """
        stack = Stack(
            name="big",
            provider="local",
            groups=[
                Etcd(name="etcd", size=9),
            ],
        )
    """)
    for command in ("validate", "plan", "apply"):
        err = failed_cleanly(infra, command, str(path), *(["--yes"] if command == "apply" else []))
        assert "big.py:9: groups[0].size: 9 members is too many" in err, err


def test_a_problem_found_by_validate_points_at_its_group(infra: Infra, tmp_path: Path) -> None:
    path = stack_file(tmp_path / "watch.py", """
        etcd = Etcd(name="etcd", size=1)
        stack = Stack(
            name="watch",
            provider="memory",
            groups=[etcd, Prometheus(name="prometheus", size=1, watch=[etcd, "etc"])],
        )
    """)
    err = failed_cleanly(infra, "validate", str(path))
    assert "watch.py:9: groups[1].watch[1]: no group named 'etc'" in err, err


def test_settings_are_not_accepted_twice(infra: Infra, tmp_path: Path) -> None:
    path = stack_file(tmp_path / "both.py", """
        stack = Stack(name="both", groups=[Etcd(name="etcd", size=1, config={"version": "3.4.23"})])
    """)
    err = failed_cleanly(infra, "validate", str(path))
    assert "both.py:5: Etcd: " in err and "takes its role's settings as keywords, not config=" in err, err


#: stacks/hello-local.py as it was written before typed groups (Group(role="command", config={...})).
DICT_FORM = REPO / "tests" / "typed" / "dict_form" / "hello-local.py"


def test_a_stack_applied_in_the_dict_form_plans_no_change_in_the_typed_form(infra: Infra, tmp_path: Path) -> None:
    old = tmp_path / "hello-dict.py"
    old.write_text(DICT_FORM.read_text())
    assert 'role="command"' in old.read_text() and "Command(" not in old.read_text()
    infra.run("apply", str(old), "--yes", check=True)
    try:
        typed = REPO / "stacks" / "hello-local.py"  # the same declaration, written with Command(...)
        assert "Command(" in typed.read_text() and "Group(" not in typed.read_text()
        plan = infra.run("plan", str(typed), "--detailed-exitcode")
        assert plan.returncode == 0, plan.stdout + plan.stderr
        assert "No changes." in plan.stdout and "(3 instances observed)" in plan.stdout
    finally:
        infra.run("destroy", str(old), "--yes", check=True)


def test_a_providers_problem_names_the_group_by_its_index_and_line(infra: Infra, tmp_path: Path) -> None:
    path = tmp_path / "tool.py"
    path.write_text(textwrap.dedent("""\
        from plugins.command import Command
        from reconciler import Stack

        stack = Stack(
            name="tool",
            provider="local",
            groups=[
                Command(name="web", size=2, command=["infra-no-such-tool"]),
            ],
        )
    """))
    out = failed_cleanly(infra, "validate", str(path))
    # one line for the group (not one per member), at the line that builds it
    assert out.count("groups[0].services.web.command") == 1, out
    assert "tool.py:8: groups[0].services.web.command: command 'infra-no-such-tool' of service 'web' is not found" \
        in out, out
