"""A small client for the two Prometheus HTTP endpoints the role reads: readiness and targets.

Called by :class:`plugins.prometheus.role.PrometheusRole` from ``health``, ``after_create`` and
``status``. Standard library only (``urllib``), short timeouts: a health check must be quick.

Failures are reported as :class:`PrometheusUnreachable` (nothing answered: refused, timed out,
reset) or :class:`PrometheusBadAnswer` (something answered, but not like a ready Prometheus);
the role turns them into a health verdict or a line of ``infra status``, never into a crash.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

#: Seconds a single request may take. Prometheus answers both endpoints in milliseconds.
TIMEOUT = 2.0


class PrometheusUnreachable(Exception):
    """Nothing answered at the address (connection refused or reset, timeout)."""


class PrometheusBadAnswer(Exception):
    """An HTTP answer that is not what a ready Prometheus sends (status, body)."""


@dataclass(frozen=True)
class Target:
    """One active scrape target as Prometheus reports it."""

    job: str
    member: str | None  # the ``member`` label the role's relabelling sets
    scrape_url: str
    health: str  # "up", "down" or "unknown"
    last_error: str
    last_scrape: str | None

    def as_json(self) -> dict[str, str | None]:
        return {
            "job": self.job,
            "member": self.member,
            "health": self.health,
            "last_error": self.last_error or None,
            "scrape_url": self.scrape_url,
            "last_scrape": self.last_scrape,
        }


def base_url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}"


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read() if exc.fp is not None else b""
    except urllib.error.URLError as exc:
        raise PrometheusUnreachable(f"{url}: {exc.reason}") from None
    except (TimeoutError, OSError) as exc:
        raise PrometheusUnreachable(f"{url}: {exc}") from None


def ready(address: str, port: int, *, timeout: float = TIMEOUT) -> bool:
    """True when ``/-/ready`` answers 200; False when it answers 503 (still starting up).

    Raises PrometheusUnreachable when nothing answers, PrometheusBadAnswer on any other status.
    """
    status, body = _get(base_url(address, port) + "/-/ready", timeout)
    if status == 200:
        return True
    if status == 503:
        return False
    raise PrometheusBadAnswer(f"/-/ready answered HTTP {status}: {body[:200].decode(errors='replace')}")


def _when(value: Any) -> str | None:
    """A scrape time, or None for Prometheus's zero time (never scraped yet)."""
    if not isinstance(value, str) or value.startswith("0001-01-01"):
        return None
    return value


def active_targets(address: str, port: int, *, timeout: float = TIMEOUT) -> list[Target]:
    """The active targets from ``/api/v1/targets?state=active``, sorted by job and member.

    Raises PrometheusUnreachable or PrometheusBadAnswer (non-200, not JSON, ``status`` not
    ``success``).
    """
    status, body = _get(base_url(address, port) + "/api/v1/targets?state=active", timeout)
    if status != 200:
        raise PrometheusBadAnswer(f"/api/v1/targets answered HTTP {status}")
    try:
        doc: Any = json.loads(body)
    except ValueError:
        raise PrometheusBadAnswer("/api/v1/targets answered something that is not JSON") from None
    if not isinstance(doc, dict) or doc.get("status") != "success":
        raise PrometheusBadAnswer(f"/api/v1/targets answered status {doc.get('status')!r}")
    targets = []
    for raw in doc.get("data", {}).get("activeTargets", []):
        labels = raw.get("labels", {})
        targets.append(
            Target(
                job=str(raw.get("scrapePool") or labels.get("job", "")),
                member=labels.get("member"),
                scrape_url=str(raw.get("scrapeUrl", "")),
                health=str(raw.get("health", "unknown")),
                last_error=str(raw.get("lastError", "")),
                last_scrape=_when(raw.get("lastScrape")),
            )
        )
    return sorted(targets, key=lambda t: (t.job, t.member or "", t.scrape_url))
