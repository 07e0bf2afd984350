"""The Pulumi bridge end to end through the real ``infra`` CLI: a stack file alone (no code)
runs instances through a plugin it names, with no Pulumi CLI and no Pulumi state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from tests.e2e.conftest import Infra, infra, infra_bin
from tests.polling import wait_for
from tests.pulumi.conftest import FakeCloud, bridge_config


def stack_file(path: Path, size: int) -> Path:
    path.write_text(
        "from plugins.command import Command\n"
        "from reconciler import Stack\n"
        "\n"
        f"stack = Stack(name='bridge', provider='pulumi', provider_config={json.dumps(bridge_config())},\n"
        f"              groups=[Command(name='web', size={size}, command=['true'], machine_type='cx22')])\n")
    return path


__all__ = ["infra"]  # the fixture


def ours(cloud: FakeCloud) -> list[dict[str, object]]:
    return [s for s in cloud.servers().values() if dict(s["labels"]).get("infra-stack") == "bridge"]  # type: ignore[call-overload]


def test_apply_replan_heal_destroy_and_foreign_resources_untouched(
    infra: Infra, fakecloud: FakeCloud, tmp_path: Path,
) -> None:
    stack = str(stack_file(tmp_path / "bridge.py", 3))
    untagged = fakecloud.add("someone-elses-server", {})
    other = fakecloud.add("bridge-web-web-9-00000000", {"infra-stack": "another", "infra-group": "web",
                                                       "infra-member": "web-9", "infra-spec": "00000000"})
    env = fakecloud.env()
    assert infra.run("validate", stack, **env).returncode == 0
    infra.run("apply", stack, "--yes", check=True, **env)
    assert sorted(str(s["name"]).rsplit("-", 1)[0] for s in ours(fakecloud)) == [
        "bridge-web-web-0", "bridge-web-web-1", "bridge-web-web-2"]
    assert infra.run("plan", stack, "--detailed-exitcode", **env).returncode == 0  # converged

    victim = next(s for s in ours(fakecloud) if str(s["name"]).startswith("bridge-web-web-1"))
    doc = json.loads(fakecloud.state.read_text())
    del doc["servers"][str(victim["id"])]  # deleted behind infra's back
    fakecloud.state.write_text(json.dumps(doc))
    plan = infra.run("plan", stack, **env)
    assert "+ web-1" in plan.stdout and "missing" in plan.stdout, plan.stdout
    infra.run("apply", stack, "--yes", check=True, **env)
    assert len(ours(fakecloud)) == 3

    infra.run("destroy", stack, "--yes", check=True, **env)
    assert ours(fakecloud) == []
    assert sorted(fakecloud.servers()) == sorted([untagged, other])  # never touched


def test_kill_9_of_apply_midway_leaves_no_duplicate(infra: Infra, fakecloud: FakeCloud, tmp_path: Path) -> None:
    stack = str(stack_file(tmp_path / "bridge.py", 6))
    env = {**os.environ, **infra.env(), **fakecloud.env(), "FAKECLOUD_CREATE_SECONDS": "0.4"}
    proc = subprocess.Popen([*infra_bin(), "apply", stack, "--yes", "--concurrency", "2"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(ours(fakecloud)) >= 2, "two servers created by the first apply", timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = len(ours(fakecloud))
    assert 2 <= partial < 6
    infra.run("apply", stack, "--yes", check=True, **fakecloud.env())
    names = [str(s["name"]) for s in ours(fakecloud)]
    assert len(names) == 6 and len(set(names)) == 6, names  # no member twice
    assert infra.run("plan", stack, "--detailed-exitcode", **fakecloud.env()).returncode == 0
    infra.run("destroy", stack, "--yes", check=True, **fakecloud.env())
