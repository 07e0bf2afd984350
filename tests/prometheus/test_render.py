"""What the prometheus role renders: valid configuration, discovery only, secrets kept out of sight.

These run the role's ``validate``/``expand`` against a fake provider that hands out the kind of
discovery fragment under test, and check the result with the real ``promtool``.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from plugins.prometheus import PrometheusConfig, PrometheusRole
from plugins.prometheus.scrape import relabel_configs
from reconciler.core.errors import ConfigError
from reconciler.core.model import MemberSpec
from reconciler.kit.role import MetricsTarget, RoleContext, UpdatePolicy
from tests.prometheus.conftest import PROMTOOL, require_binary, write_member_files

MakeCtx = Callable[..., RoleContext]


def prometheus_yml(member: MemberSpec) -> dict[str, Any]:
    (f,) = [f for f in member.files if f.path == "prometheus/prometheus.yml"]
    doc = yaml.safe_load(f.content)
    assert isinstance(doc, dict)
    return doc


def jobs(member: MemberSpec) -> dict[str, dict[str, Any]]:
    return {j["job_name"]: j for j in prometheus_yml(member)["scrape_configs"]}


def promtool_check(member: MemberSpec, config_dir: Path) -> subprocess.CompletedProcess[str]:
    yml = write_member_files(member, config_dir)
    return subprocess.run(
        [require_binary(PROMTOOL), "check", "config", str(yml)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("kind", ["file", "ec2", "gce"])
def test_rendered_config_passes_promtool(make_ctx: MakeCtx, role: PrometheusRole, tmp_path: Path, kind: str) -> None:
    ctx = make_ctx({"watch": ["etcd", "web"]}, kind=kind)
    (member,) = role.expand(ctx)
    result = promtool_check(member, tmp_path / "config")
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(jobs(member)) == {"prom", "etcd", "web"}


def test_no_address_is_written_into_the_configuration(make_ctx: MakeCtx, role: PrometheusRole) -> None:
    ctx = make_ctx({"watch": ["etcd", "web"]})
    observed = [i.address for insts in ctx.observed.values() for i in insts]
    assert len(observed) == 6
    (member,) = role.expand(ctx)
    text = next(f.content for f in member.files if f.path == "prometheus/prometheus.yml")
    for address in observed:
        assert address is not None and address not in text
    for candidate in re.findall(r"\d+\.\d+\.\d+\.\d+", text):
        with pytest.raises(ValueError):
            ipaddress.ip_address(candidate)
    assert "static_configs" not in text
    # Every job is fed by the provider's discovery for exactly its group and port.
    assert sorted((sel["infra-group"], port) for sel, port in ctx.provider.calls) == [  # type: ignore[attr-defined]
        ("etcd", 2379),
        ("prom", 9090),
        ("web", 8080),
    ]


def test_scaling_a_watched_group_does_not_change_prometheus(make_ctx: MakeCtx, role: PrometheusRole) -> None:
    state = None
    specs = []
    for size in (3, 5, 1):
        ctx = make_ctx({"watch": ["etcd"]}, sizes={"etcd": size}, state_dir=state)
        state = ctx.state_dir
        (member,) = role.expand(ctx)
        specs.append(member.spec_hash)
    assert len(set(specs)) == 1, "a scale of the watched group would replace Prometheus"


def test_mtls_target_gets_tls_files_next_to_the_config(make_ctx: MakeCtx, role: PrometheusRole) -> None:
    ctx = make_ctx({"watch": ["etcd", "web"]})
    (member,) = role.expand(ctx)
    etcd, web = jobs(member)["etcd"], jobs(member)["web"]
    assert etcd["scheme"] == "https"
    tls = etcd["tls_config"]
    files = {f.path: f for f in member.files}
    for key in ("ca_file", "cert_file", "key_file"):
        assert not tls[key].startswith("/"), "relative to prometheus.yml's directory"
        assert f"prometheus/{tls[key]}" in files
    key_file = files[f"prometheus/{tls['key_file']}"]
    assert key_file.secret and key_file.mode == 0o600
    assert "PRIVATE KEY" in key_file.content
    assert not files[f"prometheus/{tls['cert_file']}"].secret
    assert "tls_config" not in web and web["scheme"] == "http" and web["metrics_path"] == "/metrics"


def test_no_tls_files_when_nothing_needs_mtls(make_ctx: MakeCtx, role: PrometheusRole) -> None:
    (member,) = role.expand(make_ctx({"watch": ["web"]}))
    assert [f.path for f in member.files] == ["prometheus/prometheus.yml"]
    assert not (make_ctx().state_dir / "pki").exists()


def test_private_key_never_in_plan_view_repr_or_spec(make_ctx: MakeCtx, role: PrometheusRole) -> None:
    ctx = make_ctx({"watch": ["etcd"]})
    (member,) = role.expand(ctx)
    key = next(f for f in member.files if f.secret)
    secret_line = key.content.strip().splitlines()[1]
    assert secret_line not in repr(member)
    assert secret_line not in str(member.public_view())
    assert secret_line not in member.model_dump_json(exclude={"files"})
    for f in member.files:
        assert secret_line not in repr(f)
    # The key does not count towards the spec hash: another key, same spec.
    other = member.with_files(key.model_copy(update={"content": "-----BEGIN PRIVATE KEY-----\nx\n"}))
    assert other.spec_hash == member.spec_hash


def test_expand_is_stable_across_passes(make_ctx: MakeCtx, role: PrometheusRole) -> None:
    """The client certificate is cached by the stack's CA: re-planning replaces nothing."""
    first = make_ctx({"watch": ["etcd"]}, size=2)
    a = role.expand(first)
    b = role.expand(make_ctx({"watch": ["etcd"]}, size=2, state_dir=first.state_dir))
    assert [m.member for m in a] == ["prom-0", "prom-1"]
    assert [m.spec_hash for m in a] == [m.spec_hash for m in b]
    assert len({m.spec_hash for m in a}) == 1, "cattle members share one spec"


def test_service_runs_prometheus_on_the_member_address(make_ctx: MakeCtx, role: PrometheusRole) -> None:
    ctx = make_ctx({"watch": ["etcd"], "retention": "2d"})
    (member,) = role.expand(ctx)
    (service,) = member.services
    assert service.image == "prom/prometheus:v2.42.0"
    assert service.ports == (9090,)
    assert service.command[0] == "prometheus"
    assert "--config.file={config}/prometheus/prometheus.yml" in service.command
    assert "--web.listen-address={address}:9090" in service.command
    assert "--storage.tsdb.path={data}/tsdb" in service.command
    assert "--storage.tsdb.retention.time=2d" in service.command
    assert role.policy is UpdatePolicy.CATTLE
    assert role.metrics(ctx) == [MetricsTarget(port=9090)]


def test_relabelling_names_the_member(make_ctx: MakeCtx, role: PrometheusRole) -> None:
    for kind, source in (
        ("file", "infra_member"),
        ("ec2", "__meta_ec2_tag_infra_member"),
        ("gce", "__meta_gce_label_infra_member"),
    ):
        (member,) = role.expand(make_ctx({"watch": ["etcd"]}, kind=kind))
        rules = jobs(member)["etcd"]["relabel_configs"]
        by_target = {r.get("target_label"): r for r in rules}
        assert by_target["member"]["source_labels"] == [source]
        assert by_target["instance"]["source_labels"] == [source]
        assert by_target["group"]["replacement"] == "etcd"


@pytest.mark.parametrize(
    ("kind", "ip", "state", "running"),
    [
        ("ec2", "__meta_ec2_private_ip", "__meta_ec2_instance_state", "running"),
        ("gce", "__meta_gce_private_ip", "__meta_gce_instance_status", "RUNNING"),
    ],
)
def test_cloud_discovery_scrapes_private_ip_of_running_members_of_the_group(
    make_ctx: MakeCtx, role: PrometheusRole, kind: str, ip: str, state: str, running: str
) -> None:
    (member,) = role.expand(make_ctx({"watch": ["etcd"]}, kind=kind))
    job = jobs(member)["etcd"]
    assert f"{kind}_sd_configs" in job
    rules = job["relabel_configs"]
    address = next(r for r in rules if r.get("target_label") == "__address__")
    assert address["source_labels"] == [ip] and address["replacement"] == "${1}:2379"
    keeps = {tuple(r["source_labels"]): r["regex"] for r in rules if r.get("action") == "keep"}
    tag = "tag" if kind == "ec2" else "label"
    assert keeps[(state,)] == running
    assert keeps[(f"__meta_{kind}_{tag}_infra_stack",)] == "demo"
    assert keeps[(f"__meta_{kind}_{tag}_infra_group",)] == "etcd"


def test_relabel_regex_matches_the_stack_name_literally() -> None:
    rules = relabel_configs({"ec2_sd_configs": [{}]}, stack="a.b", group="g", port=1)
    assert rules[0]["regex"] == "a\\.b"


def test_provider_without_discovery_renders_no_job_and_says_so(make_ctx: MakeCtx, role: PrometheusRole) -> None:
    logs: list[str] = []
    ctx = make_ctx({"watch": ["etcd"]}, kind="none")
    ctx.log = logs.append
    (member,) = role.expand(ctx)
    assert prometheus_yml(member)["scrape_configs"] == []
    assert any("no service discovery" in line and "'etcd'" in line for line in logs)


# -- validation ---------------------------------------------------------------------------------


def test_validate_accepts_existing_groups(make_ctx: MakeCtx, role: PrometheusRole) -> None:
    assert role.validate(make_ctx({"watch": ["etcd", "web"]})) == []


def test_validate_names_the_bad_watch_entry(make_ctx: MakeCtx, role: PrometheusRole) -> None:
    ctx = make_ctx({"watch": ["etcd", "nope", "prom", "etcd", "batch"]})
    problems = role.validate(ctx)
    by_field = {p.field: p for p in problems}
    # prom is the 4th group of the stack (etcd, web, batch, prom).
    assert "no group named 'nope'" in by_field["groups[3].config.watch[1]"].message
    assert "'etcd'" in by_field["groups[3].config.watch[1]"].message  # lists the real groups
    assert "cannot watch itself" in by_field["groups[3].config.watch[2]"].message
    assert "listed twice" in by_field["groups[3].config.watch[3]"].message
    warning = by_field["groups[3].config.watch[4]"]
    assert warning.severity == "warning" and "serves no Prometheus metrics" in warning.message
    assert [p.is_error for p in problems] == [True, True, True, False]


def test_expand_refuses_an_unknown_group(make_ctx: MakeCtx, role: PrometheusRole) -> None:
    with pytest.raises(ConfigError, match="'nope'"):
        role.expand(make_ctx({"watch": ["nope"]}))


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"scrape_interval": "5 seconds"}, "not a Prometheus duration"),
        ({"scrape_interval": "0s"}, "zero"),
        ({"scrape_interval": "5s", "scrape_timeout": "10s"}, "longer than scrape_interval"),
        ({"retention": "forever"}, "not a Prometheus duration"),
        ({"port": 0}, "greater than or equal to 1"),
        ({"wacth": ["etcd"]}, "Extra inputs are not permitted"),
    ],
)
def test_bad_settings_are_refused(config: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        PrometheusConfig.model_validate(config)


def test_scrape_timeout_defaults_within_the_interval() -> None:
    assert PrometheusConfig().effective_scrape_timeout() == "5s"
    assert PrometheusConfig(scrape_interval="1m").effective_scrape_timeout() == "10s"
    assert PrometheusConfig(scrape_interval="1m30s", scrape_timeout="20s").effective_scrape_timeout() == "20s"


def test_hetzner_discovery_is_filtered_on_the_servers_labels_and_status() -> None:
    rules = relabel_configs({"hetzner_sd_configs": [{"role": "hcloud"}]}, stack="demo", group="web", port=2379)
    keeps = {tuple(r["source_labels"]): r["regex"] for r in rules if r.get("action") == "keep"}
    assert keeps == {("__meta_hetzner_hcloud_label_infra_stack",): "demo",
                     ("__meta_hetzner_hcloud_label_infra_group",): "web",
                     ("__meta_hetzner_server_status",): "running"}
    address = next(r for r in rules if r.get("target_label") == "__address__")
    assert address["source_labels"] == ["__meta_hetzner_public_ipv4"] and address["replacement"] == "${1}:2379"
    member = next(r for r in rules if r.get("target_label") == "member")
    assert member["source_labels"] == ["__meta_hetzner_hcloud_label_infra_member"]


def test_digitalocean_discovery_reads_infras_labels_from_the_droplets_tags() -> None:
    rules = relabel_configs({"digitalocean_sd_configs": [{}]}, stack="demo", group="web", port=9100)
    keeps = [(r["source_labels"], r["regex"]) for r in rules if r.get("action") == "keep"]
    assert keeps == [(["__meta_digitalocean_tags"], ".*,infra-stack:demo,.*"),
                     (["__meta_digitalocean_tags"], ".*,infra-group:web,.*"),
                     (["__meta_digitalocean_status"], "active")]
    member = next(r for r in rules if r.get("target_label") == "member")
    import re

    assert re.fullmatch(member["regex"], ",infra-group:web,infra-member:web-2,infra-stack:demo,").group(1) == "web-2"
