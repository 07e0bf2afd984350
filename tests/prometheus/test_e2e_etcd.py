"""The issue's check on the real stack: ``infra apply stacks/etcd-local.py --yes``, then
Prometheus reports every etcd member ``up`` within 60 s, scraped over mutual TLS, found by
discovery, and ``infra status`` shows it.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest

from tests.prometheus.conftest import PROMETHEUS, InfraCli, require_binary

STACK = "stacks/etcd-local.py"
DEADLINE = 60.0


def group(status: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [g for g in status["groups"] if g["name"] == name]
    return dict(found)


def etcd_targets(address: str) -> dict[str, dict[str, Any]]:
    with urllib.request.urlopen(f"http://{address}:9090/api/v1/targets?state=active", timeout=5) as resp:
        doc = json.load(resp)
    return {t["labels"]["member"]: t for t in doc["data"]["activeTargets"] if t["scrapePool"] == "etcd"}


def test_prometheus_reports_every_etcd_member_up_within_60s(infra_cli: InfraCli) -> None:
    require_binary(PROMETHEUS)
    require_binary("/usr/bin/etcd")
    # The client key Prometheus scrapes with never appears in a plan or in apply's output.
    plan = infra_cli.run("plan", STACK, "--json", check=True).stdout
    assert "prometheus-0" in plan and "PRIVATE KEY" not in plan
    start = time.monotonic()
    applied = infra_cli.run("apply", STACK, "--yes", check=True)
    assert "PRIVATE KEY" not in applied.stdout + applied.stderr
    status = infra_cli.json("status", STACK)
    etcd = {m["member"]: m for m in group(status, "etcd")["members"]}
    assert sorted(etcd) == ["etcd-0", "etcd-1", "etcd-2"]
    (prom,) = group(status, "prometheus")["members"]

    seen: dict[str, dict[str, Any]] = {}
    while time.monotonic() - start < DEADLINE:
        seen = etcd_targets(prom["address"])
        if sorted(seen) == sorted(etcd) and all(t["health"] == "up" for t in seen.values()):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"not every etcd member up within {DEADLINE:.0f}s of apply: {json.dumps(seen, indent=1)}")
    print(f"every etcd member up in Prometheus {time.monotonic() - start:.1f}s after apply started")

    for member, target in seen.items():
        # Scraped at the member's observed address, over TLS, labelled by member.
        assert target["scrapeUrl"] == f"https://{etcd[member]['address']}:2379/metrics"
        assert target["labels"]["instance"] == member

    # The configuration Prometheus runs holds no address, only discovery.
    with urllib.request.urlopen(f"http://{prom['address']}:9090/api/v1/status/config", timeout=5) as resp:
        yml = json.load(resp)["data"]["yaml"]
    assert "file_sd_configs" in yml
    for m in etcd.values():
        assert m["address"] not in yml

    # infra status shows Prometheus's verdict on each etcd member.
    status = infra_cli.json("status", STACK)
    rows = group(status, "prometheus")["role_status"]["targets"]
    assert {r["member"]: r["health"] for r in rows if r["job"] == "etcd"} == dict.fromkeys(etcd, "up")

    # Nothing to change on the next pass: the client certificate is reused, not reissued.
    assert infra_cli.run("plan", STACK, "--detailed-exitcode").returncode == 0

    # The key reached the member as a private file next to prometheus.yml.
    (key,) = infra_cli.state.glob(f"**/{prom['name']}/config/prometheus/tls/client-key.pem")
    assert key.stat().st_mode & 0o777 == 0o600
