"""Renders ``prometheus.yml`` from the groups a Prometheus member watches. Pure: no I/O.

Called by :meth:`plugins.prometheus.role.PrometheusRole.expand`. Each scrape job takes its
targets from the service-discovery fragment the provider returns for the watched group
(``file_sd_configs`` locally, ``ec2_sd_configs`` / ``gce_sd_configs`` / ``hetzner_sd_configs``
in a cloud); no address is
ever written into the configuration. Relabelling then gives every target the same labels
whatever discovered it:

``member``    the member's stable logical id (``etcd-0``), from the ``infra-member`` label/tag;
``instance``  the same id, so ``up{job="etcd", instance="etcd-0"}`` names the member, not an
              address that changes when the member is replaced;
``group``     the watched group; ``stack`` the stack.

For a cloud fragment the scrape address is set to the instance's *private* IP and the port the
watched role serves metrics on, instances that are not running are dropped, and targets are
kept only when their ``infra-stack``/``infra-group`` tags match (a second filter under the
fragment's own, so a broad fragment can never make Prometheus scrape another stack).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from reconciler.core.model import LABEL_GROUP, LABEL_MEMBER, LABEL_STACK
from reconciler.kit.provider import SdConfig
from reconciler.kit.role import MetricsTarget

#: Where the TLS files of mutual-TLS targets live, relative to ``prometheus.yml`` (Prometheus
#: resolves relative paths in its configuration against the configuration file's directory).
TLS_DIR = "tls"
CA_FILE = f"{TLS_DIR}/ca.pem"
CERT_FILE = f"{TLS_DIR}/client.pem"
KEY_FILE = f"{TLS_DIR}/client-key.pem"

#: A relabel rule, as it appears in ``relabel_configs``.
Relabel = dict[str, Any]


def label_name(label: str) -> str:
    """``infra-member`` as Prometheus sees it after sanitising (``infra_member``)."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in label)


@dataclass(frozen=True)
class Job:
    """One scrape job: a watched group's metrics endpoint and how to discover its members."""

    name: str
    group: str
    target: MetricsTarget
    discovery: SdConfig


def job_names(group: str, targets: Sequence[MetricsTarget]) -> list[str]:
    """Job names for a group's endpoints: the group name when it has one endpoint.

    With several, ``group:port`` (plus the path when two share a port). ``:`` cannot occur in a
    group name, so these never collide with another group's job.
    """
    if len(targets) == 1:
        return [group]
    ports = [t.port for t in targets]
    return [f"{group}:{t.port}" + (t.path if ports.count(t.port) > 1 else "") for t in targets]


def _kind(discovery: SdConfig) -> str:
    if "ec2_sd_configs" in discovery:
        return "ec2"
    if "gce_sd_configs" in discovery:
        return "gce"
    if "hetzner_sd_configs" in discovery:
        return "hetzner"
    if "digitalocean_sd_configs" in discovery:
        return "digitalocean"
    return "generic"


def _meta(kind: str, label: str) -> str:
    """The meta label under which ``kind`` discovery exposes an instance label or tag."""
    if kind == "ec2":
        return f"__meta_ec2_tag_{label_name(label)}"
    if kind == "gce":
        return f"__meta_gce_label_{label_name(label)}"
    if kind == "hetzner":
        return f"__meta_hetzner_hcloud_label_{label_name(label)}"
    return label_name(label)  # file/HTTP discovery: the provider's labels arrive sanitised


def relabel_configs(discovery: SdConfig, *, stack: str, group: str, port: int) -> list[Relabel]:
    """Rules that filter a discovery fragment's targets and label them by member. See module doc."""
    kind = _kind(discovery)
    rules: list[Relabel] = []
    if kind in ("ec2", "gce", "hetzner"):
        state, running, private_ip = {
            "ec2": ("__meta_ec2_instance_state", "running", "__meta_ec2_private_ip"),
            "gce": ("__meta_gce_instance_status", "RUNNING", "__meta_gce_private_ip"),
            # Hetzner Cloud (through the Pulumi bridge): the server's public IPv4 (its first
            # address; a private network's address is per network name).
            "hetzner": ("__meta_hetzner_server_status", "running", "__meta_hetzner_public_ipv4"),
        }[kind]
        rules += [
            {"source_labels": [_meta(kind, LABEL_STACK)], "regex": _literal(stack), "action": "keep"},
            {"source_labels": [_meta(kind, LABEL_GROUP)], "regex": _literal(group), "action": "keep"},
            {"source_labels": [state], "regex": running, "action": "keep"},
            {
                "source_labels": [private_ip],
                "regex": "(.+)",
                "target_label": "__address__",
                "replacement": f"${{1}}:{port}",
            },
        ]
    if kind == "digitalocean":
        # Droplets have tags, not labels: infra's labels are "key:value" tags, which Prometheus
        # joins as ",tag1,tag2," in one meta label.
        tags = "__meta_digitalocean_tags"
        return [
            {"source_labels": [tags], "regex": f".*,{LABEL_STACK}:{_literal(stack)},.*", "action": "keep"},
            {"source_labels": [tags], "regex": f".*,{LABEL_GROUP}:{_literal(group)},.*", "action": "keep"},
            {"source_labels": ["__meta_digitalocean_status"], "regex": "active", "action": "keep"},
            {"source_labels": ["__meta_digitalocean_private_ipv4"], "regex": "(.+)", "target_label": "__address__",
             "replacement": f"${{1}}:{port}"},
            {"source_labels": [tags], "regex": f".*,{LABEL_MEMBER}:([^,]+),.*", "target_label": "member"},
            {"source_labels": [tags], "regex": f".*,{LABEL_MEMBER}:([^,]+),.*", "target_label": "instance"},
            {"target_label": "group", "replacement": group},
            {"target_label": "stack", "replacement": stack},
        ]
    member = _meta(kind, LABEL_MEMBER)
    rules += [
        {"source_labels": [member], "regex": "(.+)", "target_label": "member"},
        {"source_labels": [member], "regex": "(.+)", "target_label": "instance"},
        {"target_label": "group", "replacement": group},
        {"target_label": "stack", "replacement": stack},
    ]
    if kind == "generic":
        # The provider's raw ``infra_*`` labels are now ``member``/``group``/``stack``.
        rules.append({"regex": "infra_.*", "action": "labeldrop"})
    return rules


def _literal(value: str) -> str:
    """A relabel regex (anchored by Prometheus) matching exactly ``value``."""
    return "".join("\\" + c if not (c.isalnum() or c in "_-") else c for c in value)


def scrape_config(job: Job, *, stack: str, interval: str, timeout: str) -> dict[str, Any]:
    """One ``scrape_configs`` entry for ``job``."""
    doc: dict[str, Any] = {
        "job_name": job.name,
        "scrape_interval": interval,
        "scrape_timeout": timeout,
        "metrics_path": job.target.path,
        "scheme": job.target.scheme,
    }
    if job.target.mtls:
        doc["tls_config"] = {"ca_file": CA_FILE, "cert_file": CERT_FILE, "key_file": KEY_FILE}
    doc.update(_plain(job.discovery))
    doc["relabel_configs"] = relabel_configs(job.discovery, stack=stack, group=job.group, port=job.target.port)
    return doc


def _plain(value: Any) -> Any:
    """``value`` with mappings and sequences turned into dicts and lists (safe for yaml.safe_dump)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def render(jobs: Sequence[Job], *, stack: str, interval: str, timeout: str) -> str:
    """The whole ``prometheus.yml``: global settings and one scrape job per entry of ``jobs``."""
    doc = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": timeout,
            "evaluation_interval": interval,
        },
        "scrape_configs": [scrape_config(j, stack=stack, interval=interval, timeout=timeout) for j in jobs],
    }
    header = f"# Rendered by infra's prometheus role for stack {stack!r}; targets come from discovery.\n"
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
