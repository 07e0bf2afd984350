"""The daemon's live page at ``/``: what it reconciles, as a person looks at it.

Served by :mod:`reconciler.daemon.metrics`'s HTTP server (the same loopback address as ``/metrics``)
from the views the stack loops publish (:class:`StackView`, made from each pass's planned pass
— no extra provider call). Server-rendered HTML that refreshes itself every few seconds with a
``<meta http-equiv="refresh">`` (no JavaScript, no front-end build); every value is escaped.

Per stack: its provider and leadership; each group's members (address, status, health, spec
current or outdated); the role's facts (etcd's leader and quorum, Prometheus's targets); the
pending plan of the latest pass (what the daemon is changing right now); the last passes with
their outcome and duration; and the stack's graph (:mod:`reconciler.views.graph`), drawn from the
same data, inline as SVG when Graphviz's ``dot`` is installed.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.core.plan import Plan
    from reconciler.engine.views import GroupStatus

REFRESH_SECONDS = 2
HEALTH_CLASS = {"healthy": "ok", "unhealthy": "bad", "unknown": "unknown"}


@dataclass(frozen=True)
class PassRecord:
    """One finished pass, as the page lists it."""

    at: float
    outcome: str
    seconds: float
    planned: int
    applied: int
    failed: int
    error: str | None = None


@dataclass
class StackView:
    """What the latest pass of one stack observed and planned (replaced, never mutated, per pass)."""

    stack: str
    provider: str
    path: str
    groups: list[GroupStatus] = field(default_factory=list)
    links: list[tuple[str, str, str]] = field(default_factory=list)
    quorum: list[str] = field(default_factory=list)
    plan: Plan | None = None
    observed_at: float = 0.0
    applying: bool = False
    #: the pause of the whole stack, described, when it is paused
    paused: str | None = None
    #: the picture of this view, drawn once per pass (:func:`draw`), never per page request
    svg: str = ""


@dataclass
class StackPage:
    """What the page shows of one stack: its latest view, its last passes, who leads."""

    view: StackView | None
    history: Sequence[PassRecord]
    leading: bool
    name: str
    error: str | None = None
    #: who leads it when this daemon does not (the leader key's holder), and this daemon's id
    #: among the daemons sharing the stacks ("" with the file lock)
    holder: str = ""
    daemon: str = ""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _when(at: float, now: float) -> str:
    ago = max(0.0, now - at)
    return f"{ago:.0f}s ago" if ago < 120 else time.strftime("%H:%M:%S", time.localtime(at))


def _facts(extra: Any) -> str:
    rows, tables = [], []
    for key, value in dict(extra or {}).items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            columns: list[str] = []
            for row in value:
                columns.extend(k for k in row if k not in columns)
            head = "".join(f"<th>{_e(c)}</th>" for c in columns)
            body = "".join("<tr>" + "".join(f"<td>{_e(_cell(r.get(c)))}</td>" for c in columns) + "</tr>"
                           for r in value)
            tables.append(f"<details><summary>{_e(key)} ({len(value)})</summary><table class='facts'>"
                          f"<tr>{head}</tr>{body}</table></details>")
        else:
            rows.append(f"<dt>{_e(key)}</dt><dd>{_e(_cell(value))}</dd>")
    return (f"<dl class='facts'>{''.join(rows)}</dl>" if rows else "") + "".join(tables)


def _cell(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return "" if value is None else str(value)


def _group(g: GroupStatus, pending: dict[str, str]) -> str:
    rows = []
    for m in g.members:
        change = pending.get(m.member, "")
        rows.append(
            f"<tr class='member {HEALTH_CLASS.get(m.healthy, 'unknown')}' data-member='{_e(m.member)}' "
            f"data-health='{_e(m.healthy)}'><td>{_e(m.member)}</td><td>{_e(m.address or '-')}</td>"
            f"<td>{_e(m.status)}</td><td class='health'>{_e(m.healthy)}</td>"
            f"<td>{'current' if m.spec_current else 'outdated'}</td><td class='change'>{_e(change)}</td></tr>")
    for member, change in sorted(pending.items()):
        if not any(m.member == member for m in g.members):
            rows.append(f"<tr class='member pending' data-member='{_e(member)}' data-health='none'>"
                        f"<td>{_e(member)}</td><td>-</td><td>-</td><td>-</td><td>-</td>"
                        f"<td class='change'>{_e(change)}</td></tr>")
    table = ("<table class='members'><tr><th>member</th><th>address</th><th>status</th><th>health</th>"
             f"<th>spec</th><th>pending</th></tr>{''.join(rows)}</table>")
    return (f"<section class='group' id='group-{_e(g.name)}'><h3>{_e(g.name)} <small>{_e(g.role)}, "
            f"{len(g.members)}/{g.size} members</small></h3>{table}{_facts(g.extra)}</section>")


def draw(view: StackView) -> str:
    """The view's picture as inline SVG (or a note saying why there is none). Called once per pass
    by the stack's loop, so a page request never runs Graphviz."""
    from reconciler.views import graph

    try:
        svg = graph.render(graph.build(view.stack, view.provider, view.groups, view.links, quorum=view.quorum,
                                       plan=view.plan), "svg").decode()
    except Exception as exc:  # no dot installed, or a drawing problem: the page still serves
        return f"<p class='note'>no picture: {_e(exc)}</p>"
    return f"<figure class='graph'>{svg[svg.index('<svg'):]}</figure>" if "<svg" in svg else ""


def _stack(page: StackPage, now: float) -> str:
    parts = [f"<article class='stack' id='stack-{_e(page.name)}'>"]
    view = page.view
    me = f" (daemon {page.daemon})" if page.daemon else ""
    lead = (f"led by this daemon{me}" if page.leading
            else f"standing by{me}: led by {page.holder or 'another writer (it holds the lock)'}")
    if view is None:
        parts.append(f"<h2>{_e(page.name)}</h2><p>{_e(lead)}; no pass has observed it yet.</p>")
    else:
        state = "applying the changes below" if view.applying else "observed"
        parts.append(f"<h2>{_e(view.stack)} <small>at {_e(view.provider)} · {_e(view.path)}</small></h2>"
                     f"<p class='meta'>{_e(lead)} · {state} {_e(_when(view.observed_at, now))}</p>")
        pending: dict[str, dict[str, str]] = {}
        changes = view.plan.changes if view.plan is not None else []
        for c in changes:
            pending.setdefault(c.group, {})[c.member] = (f"{c.action.symbol} {c.reason.value}"
                                                         + (f": {c.detail}" if c.detail else "")
                                                         + (f" — held: {c.held}" if c.held else ""))
        for g in view.groups:
            if g.paused:
                parts.append(f"<p class='paused'>paused: {_e(g.paused)}</p>")
        if view.paused:
            parts.append(f"<p class='paused'>paused: {_e(view.paused)}</p>")
        if changes:
            items = "".join(f"<li class='{'held' if c.held else 'change'}'>{_e(c.action.symbol)} {_e(c.group)}/"
                            f"{_e(c.member)} ({_e(c.reason.value)}{': ' + _e(c.detail) if c.detail else ''})"
                            f"{' <b>held:</b> ' + _e(c.held) if c.held else ''}</li>" for c in changes)
            parts.append(f"<div class='plan'><h3>pending plan</h3><ul>{items}</ul></div>")
        else:
            parts.append("<p class='plan none'>pending plan: no changes</p>")
        if view.plan is not None and (view.plan.undeclared or view.plan.blocked):
            notes = "".join(f"<li>{_e(u.message)}</li>" for u in view.plan.undeclared)
            notes += "".join(f"<li>refused: {_e(b)}</li>" for b in view.plan.blocked)
            parts.append(f"<div class='kept'><h3>kept</h3><ul>{notes}</ul></div>")
        parts.extend(_group(g, pending.get(g.name, {})) for g in view.groups)
        parts.append(view.svg)
    if page.error:
        parts.append(f"<p class='error'>{_e(page.error)}</p>")
    if page.history:
        rows = "".join(
            f"<tr class='pass {_e(p.outcome)}'><td>{_e(_when(p.at, now))}</td><td>{_e(p.outcome)}</td>"
            f"<td>{p.seconds:.2f}s</td><td>{p.planned}</td><td>{p.applied}</td><td>{p.failed}</td>"
            f"<td>{_e(p.error or '')}</td></tr>" for p in reversed(page.history))
        parts.append("<h3>last passes</h3><table class='passes'><tr><th>when</th><th>outcome</th><th>took</th>"
                     f"<th>planned</th><th>applied</th><th>failed</th><th>error</th></tr>{rows}</table>")
    parts.append("</article>")
    return "".join(parts)


STYLE = """
body{font-family:system-ui,Helvetica,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{border-bottom:1px solid #ccc}small{color:#666;font-weight:normal}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ddd;padding:.2em .6em;font-size:.9em}
tr.ok td.health{background:#c8e6c9}tr.bad td.health{background:#ffcdd2}tr.unknown td.health{background:#eee}
tr.pending{color:#2e7d32;font-style:italic}.plan li{font-family:monospace}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:0 1em}dt{color:#666}
.error{color:#c62828}figure.graph svg{max-width:100%;height:auto}
.paused{background:#fff3cd;padding:.3em .6em}li.held{color:#8a6d3b}
"""


def render(pages: Sequence[StackPage], *, now: float | None = None) -> str:
    """The whole page: every stack the daemon reconciles."""
    now = time.time() if now is None else now
    body = "".join(_stack(p, now) for p in pages)
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'><title>infra daemon</title>"
            f"<style>{STYLE}</style></head><body><h1>infra daemon</h1>"
            f"<p class='meta'>{len(pages)} stack(s) · refreshed every {REFRESH_SECONDS}s · "
            f"<a href='/metrics'>/metrics</a> · <a href='/healthz'>/healthz</a></p>{body}</body></html>")
