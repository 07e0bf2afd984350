"""The Pulumi bridge over the real plugin protocol: what infra does that the Pulumi engine would,
and what it does instead of keeping a Pulumi state (fakecloud plugin, a real gRPC process)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from providers.pulumi import PulumiProvider, values
from providers.pulumi.config import parse_config
from providers.pulumi.plugin import find_plugin
from reconciler.core.errors import ConfigError, PermanentError, TransientError
from reconciler.core.model import MemberSpec, stack_selector
from reconciler.kit import retry
from tests.pulumi.conftest import BIN, TOKEN, FakeCloud, bridge_config

FAST = retry.RetryPolicy(attempts=6, base=0.01, cap=0.05)


def member(n: int = 0, stack: str = "br", machine_type: str = "cx22") -> MemberSpec:
    return MemberSpec(stack=stack, group="web", member=f"web-{n}", role="command", machine_type=machine_type,
                      placement=n)


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


@pytest.fixture
def bridge(fakecloud: FakeCloud, tmp_path: Path) -> Iterator[PulumiProvider]:
    p = PulumiProvider.open(bridge_config(), stack="br", state_dir=tmp_path)
    logs: list[tuple[str, str]] = []
    p._log = lambda level, message: logs.append((level, message))
    p.logs = logs  # type: ignore[attr-defined]
    yield p
    p.close()


def test_the_plugin_is_started_as_the_engine_starts_it_and_its_logs_reach_infra(bridge: PulumiProvider) -> None:
    assert bridge.plugin_info() == "0.1.0"
    proc = psutil.Process(bridge.plugin._proc.pid)  # type: ignore[union-attr]
    assert proc.cmdline()[-1] == bridge.plugin.engine_address and bridge.plugin.engine_address.startswith("127.0.0.1:")
    assert ("info", "pulumi plugin fakecloud: fakecloud configured") in bridge.logs  # type: ignore[attr-defined]
    bridge.close()
    assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE  # SIGINT, then kill


def test_list_is_one_invoke_filtered_again_on_infras_side(bridge: PulumiProvider, fakecloud: FakeCloud) -> None:
    a = bridge.create(member(0))
    bridge.create(member(1))
    fakecloud.add("other", {"infra-stack": "other", "infra-group": "web", "infra-member": "web-0", "infra-spec": "x"})
    bridge.calls.clear()
    seen = bridge.list(stack_selector("br"))
    assert sorted(i.name for i in seen) == sorted([a.name, member(1).name])
    assert bridge.calls == {"Invoke": 1}  # never one Read per instance
    assert a.id.isdigit() and a.address and a.address.startswith("127.92.")  # integer ids, as text


def test_secrets_never_reach_an_instance_an_error_or_a_log(bridge: PulumiProvider, fakecloud: FakeCloud) -> None:
    inst = bridge.create(member(0))
    stored = next(iter(fakecloud.servers().values()))["rootPassword"]
    assert stored not in repr(inst) and stored not in repr(bridge.list(stack_selector("br")))
    assert TOKEN not in bridge.config.model_dump_json()  # the settings hold the variable's name, not its value
    logs = bridge.logs  # type: ignore[attr-defined]
    assert wait_until(lambda: any("stderr: fakecloud: configured with token=[secret]" in m for _, m in logs))
    assert all(TOKEN not in m for _, m in logs)  # its stderr reached the log, scrubbed
    assert json.loads(fakecloud.state.read_text())["secret_inputs"][inst.id] == ["userData"]  # the member's files (keys): a secret


def test_a_rate_limited_call_is_transient_and_the_retry_converges(bridge: PulumiProvider, fakecloud: FakeCloud) -> None:
    bridge.plugin_info()
    fakecloud.inject(rate_limit=2)
    with pytest.raises(TransientError, match="rate_limit_exceeded"):
        bridge.create(member(0))
    inst = retry.call(lambda: bridge.create(member(0)), FAST)
    assert len(fakecloud.servers()) == 1 and inst.name == member(0).name


def test_a_create_whose_answer_is_lost_is_adopted_not_made_twice(bridge: PulumiProvider, fakecloud: FakeCloud) -> None:
    bridge.plugin_info()
    fakecloud.inject(lose_create=1)
    inst = retry.call(lambda: bridge.create(member(0)), FAST)
    assert list(fakecloud.servers()) == [inst.id]


def test_a_plugin_that_dies_mid_create_is_restarted_and_nothing_is_duplicated(
    bridge: PulumiProvider, fakecloud: FakeCloud,
) -> None:
    bridge.plugin_info()
    first_pid = bridge.plugin._proc.pid  # type: ignore[union-attr]
    fakecloud.inject(crash_create=1)
    with pytest.raises(TransientError, match="exited during the call"):
        bridge.create(member(0))
    inst = retry.call(lambda: bridge.create(member(0)), FAST)
    assert bridge.plugin._proc.pid != first_pid and bridge.plugin.starts == 2  # type: ignore[union-attr]
    assert list(fakecloud.servers()) == [inst.id]


def test_a_plugin_killed_between_calls_is_restarted_and_configured_again(bridge: PulumiProvider) -> None:
    bridge.plugin_info()
    os.kill(bridge.plugin._proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
    bridge.plugin._proc.wait()  # type: ignore[union-attr]
    assert bridge.list(stack_selector("br")) == []  # configured again: an unconfigured plugin would refuse
    assert bridge.plugin.starts == 2


def test_a_foreign_resource_holding_the_name_is_never_adopted(bridge: PulumiProvider, fakecloud: FakeCloud) -> None:
    fakecloud.add(member(0).name, {})
    with pytest.raises(PermanentError, match="will not adopt"):
        bridge.create(member(0))
    assert len(fakecloud.servers()) == 1


def test_delete_reads_first_and_an_empty_id_means_gone(bridge: PulumiProvider, fakecloud: FakeCloud) -> None:
    inst = bridge.create(member(0))
    bridge.calls.clear()
    bridge.delete(inst)
    assert bridge.calls == {"Read": 1, "Delete": 1} and fakecloud.servers() == {}
    bridge.delete(inst)  # already gone: Read answers an empty id, nothing is deleted
    assert bridge.calls == {"Read": 2, "Delete": 1}


def test_validate_names_the_refused_input(bridge: PulumiProvider) -> None:
    problems = bridge.validate([member(0, machine_type="cx999"), member(1, machine_type="cx999")])
    assert [(p.field, "cx999" in p.message) for p in problems] == [("groups.web.inputs.serverType", True)]


def test_a_wrong_token_is_a_permanent_error_that_never_shows_the_token(
    fakecloud: FakeCloud, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("FAKECLOUD_API_TOKEN", "wrong-token-123")
    p = PulumiProvider.open(bridge_config(), stack="br", state_dir=tmp_path)
    try:
        with pytest.raises(PermanentError, match="not authorised") as err:
            p.list(stack_selector("br"))
        assert "wrong-token-123" not in str(err.value)  # the plugin's error quotes it: scrubbed
        assert "[secret]" in str(err.value)
    finally:
        p.close()


def test_configuration_errors_name_the_key(fakecloud: FakeCloud, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.delenv("FAKECLOUD_API_TOKEN")
    with pytest.raises(ConfigError, match=r"provider_config.config.token: environment variable FAKECLOUD_API_TOKEN"):
        PulumiProvider.open(bridge_config(), stack="br", state_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"provider_config\.plugin: no pulumi-resource-nosuch"):
        PulumiProvider.open(bridge_config(plugin="nosuch"), stack="br", state_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"provider_config\.list"):
        PulumiProvider.open({k: v for k, v in bridge_config().items() if k != "list"}, stack="br", state_dir=tmp_path)


def test_the_plugin_is_found_on_path_in_pulumi_home_or_at_plugin_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    binary = BIN / "pulumi-resource-fakecloud"
    assert find_plugin("fakecloud", None, str(binary)) == binary
    monkeypatch.setenv("PATH", f"{BIN}:/usr/bin:/bin")
    assert find_plugin("fakecloud", None, None) == binary
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    home = tmp_path / "pulumi-home"
    installed = home / "plugins" / "resource-fakecloud-v0.1.0" / "pulumi-resource-fakecloud"
    installed.parent.mkdir(parents=True)
    installed.symlink_to(binary)
    monkeypatch.setenv("PULUMI_HOME", str(home))
    assert find_plugin("fakecloud", "0.1.0", None) == installed
    with pytest.raises(ConfigError, match=r"resource-fakecloud-v9\.9\.9"):
        find_plugin("fakecloud", "9.9.9", None)


def test_presets_fill_the_generic_keys_and_explicit_keys_win() -> None:
    hcloud = parse_config({"preset": "hcloud", "config": {"token": {"env": "HCLOUD_TOKEN"}}})
    assert hcloud.plugin == "hcloud" and hcloud.resource == "hcloud:index/server:Server"
    assert hcloud.list.function == "hcloud:index/getServers:getServers" and hcloud.inputs["labels"] == "{labels}"
    assert hcloud.discovery == "hetzner" and hcloud.status["off"] == "stopped"
    do = parse_config({"preset": "digitalocean", "plugin_path": "/x", "resource": "digitalocean:index/droplet:Droplet"})
    assert do.inputs["tags"] == "{label_tags}" and do.list.fields.labels_as == "tags"
    mine = parse_config({"preset": "hcloud", "resource": "hcloud:index/server:Server", "status": {"up": "running"}})
    assert mine.status == {"up": "running"}


def test_every_template_is_checked_against_the_variables_of_its_place() -> None:
    """A variable that does not exist where it is written is a validate error naming the key and
    what is available, not a KeyError at plan time; the selector is there as a map too."""
    base = {"plugin": "p", "resource": "r"}
    with pytest.raises(ConfigError, match=r"list\.args\.filter: \{labels\} is not a variable here \(available: "
                                          r"\{selector\}, \{selector_map\}, \{stack_tag\}\)"):
        parse_config({**base, "list": {"function": "f", "args": {"filter": "{labels}"}}})
    with pytest.raises(ConfigError, match=r"inputs\.name: \{nme\} is not a variable here"):
        parse_config({**base, "inputs": {"name": "{nme}"}, "list": {"function": "f"}})
    with pytest.raises(ConfigError, match=r"inputs\.note: \{labels\} stands for a whole value"):
        parse_config({**base, "inputs": {"note": "x-{labels}"}, "list": {"function": "f"}})
    tags = parse_config({**base, "list": {"function": "aws:ec2/getInstances:getInstances",
                                          "args": {"instanceTags": "{selector_map}"}}})
    assert values.render(tags.list.args, {"selector": "a=1", "selector_map": {"a": "1"}, "stack_tag": "x"}) == {
        "instanceTags": {"a": "1"}}


def test_discovery_is_the_clouds_own_service_discovery_with_no_token_in_it(fakecloud: FakeCloud) -> None:
    hcloud = PulumiProvider(parse_config({"preset": "hcloud"}), stack="br", binary=BIN / "pulumi-resource-hcloud")
    do = PulumiProvider(parse_config({"preset": "digitalocean", "plugin": "fakecloud"}), stack="br",
                        binary=BIN / "pulumi-resource-fakecloud")
    generic = PulumiProvider(parse_config(bridge_config()), stack="br", binary=BIN / "pulumi-resource-fakecloud")
    try:
        (sd,) = hcloud.discovery(stack_selector("br"), 9100)["hetzner_sd_configs"]  # type: ignore[index]
        assert sd["role"] == "hcloud" and sd["port"] == 9100 and "credentials_file" in sd["authorization"]
        assert "digitalocean_sd_configs" in (do.discovery(stack_selector("br"), 9100) or {})
        assert generic.discovery(stack_selector("br"), 9100) is None
    finally:
        for p in (hcloud, do, generic):
            p.close()
