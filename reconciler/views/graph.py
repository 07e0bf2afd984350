"""The picture of a stack: its groups and members with status and health, the links between
groups, and (optionally) a plan's pending changes, as a Graphviz graph.

Called by ``infra graph`` (and meant for the daemon's page). Pure: it takes what the engine
already reports (:meth:`reconciler.engine.engine.Engine.status`, :meth:`~reconciler.engine.engine.Engine.links`,
a :class:`~reconciler.core.plan.Plan`) and builds the DOT source with the ``graphviz`` library;
rendering to SVG or PNG needs Graphviz's ``dot`` (Debian: ``graphviz``, installed by the set-up
script), the DOT text needs nothing.

Drawn: one box (a cluster) per group, titled with its role and size; one node per member, filled
by its health (green healthy, red unhealthy, grey unknown) and bordered orange when its spec is
outdated; the members of a quorum group joined as peers; an arrow between groups for each link a
role declares (Prometheus ``scrapes`` etcd). With a plan, pending changes are coloured as the
diff colours them: a dashed green node for each create, a red border and ``-`` for a delete,
yellow and ``-/+`` for a replace, each with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import graphviz

if TYPE_CHECKING:
    from reconciler.core.plan import Plan
    from reconciler.engine.views import GroupStatus

FILL = {"healthy": "#c8e6c9", "unhealthy": "#ffcdd2", "unknown": "#eeeeee"}
CHANGE = {"create": "#2e7d32", "delete": "#c62828", "replace": "#f9a825"}


def _id(group: str, member: str) -> str:
    return f"{group}/{member}"


def build(stack: str, provider: str, groups: Sequence[GroupStatus], links: Sequence[tuple[str, str, str]],
          *, quorum: Sequence[str] = (), plan: Plan | None = None) -> graphviz.Digraph:
    """The graph of ``groups`` (as ``Engine.status`` reports them); see the module docstring."""
    g = graphviz.Digraph(name=stack, graph_attr={
        "label": f"stack {stack} at {provider}", "labelloc": "t", "fontname": "Helvetica", "rankdir": "LR",
        "compound": "true", "nodesep": "0.3"},
        node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica", "fontsize": "10"},
        edge_attr={"fontname": "Helvetica", "fontsize": "9"})
    changes: dict[str, list[Any]] = {}
    for change in plan.changes if plan is not None else []:
        changes.setdefault(change.group, []).append(change)
    anchors: dict[str, str] = {}
    for gs in groups:
        with g.subgraph(name=f"cluster_{gs.name}") as c:
            c.attr(label=f"{gs.name} ({gs.role}, {len(gs.members)}/{gs.size})", style="rounded", color="#607d8b")
            by_member = {ch.member: ch for ch in changes.get(gs.name, [])}
            for m in gs.members:
                node = _id(gs.name, m.member)
                label = f"{m.member}\\n{m.address or '-'}\\n{m.status}, {m.healthy}"
                attrs = {"fillcolor": FILL.get(m.healthy, FILL["unknown"])}
                if not m.spec_current:
                    attrs.update(color="#ef6c00", penwidth="2")
                change = by_member.pop(m.member, None)
                if change is not None:
                    mark = change.action.symbol
                    label = f"{mark} {label}\\n({change.reason.value})"
                    attrs.update(color=CHANGE[change.action.value], penwidth="3")
                c.node(node, label=label, **attrs)
                anchors.setdefault(gs.name, node)
            for member, change in sorted(by_member.items()):  # creates: members that do not exist yet
                node = _id(gs.name, member)
                c.node(node, label=f"+ {member}\\n({change.reason.value})", style="rounded,dashed",
                       color=CHANGE["create"], fontcolor=CHANGE["create"], fillcolor="white")
                anchors.setdefault(gs.name, node)
            if gs.name not in anchors:
                node = _id(gs.name, "(none)")
                c.node(node, label="no members", style="dotted", fillcolor="white")
                anchors[gs.name] = node
            if gs.name in quorum:
                members = [_id(gs.name, m.member) for m in gs.members]
                for a, b in zip(members, members[1:] + members[:1], strict=True):
                    if a != b:
                        c.edge(a, b, dir="none", style="dotted", color="#90a4ae",
                               label="peer" if a == members[0] else "")
    for source, target, why in links:
        if source in anchors and target in anchors:
            g.edge(anchors[source], anchors[target], label=why, ltail=f"cluster_{source}", lhead=f"cluster_{target}",
                   color="#1565c0", fontcolor="#1565c0")
    return g


def render(graph: graphviz.Digraph, fmt: str) -> bytes:
    """The graph as ``fmt`` (``dot``, ``svg``, ``png``). ``dot`` needs nothing; the others need
    Graphviz's ``dot`` on PATH (a ConfigError says how to get it)."""
    from reconciler.core.errors import ConfigError

    if fmt == "dot":
        source: str = graph.source
        return source.encode()
    try:
        picture: bytes = graph.pipe(format=fmt)
        return picture
    except graphviz.ExecutableNotFound:
        raise ConfigError(f"--format {fmt} needs Graphviz's 'dot' program, which is not installed",
                          hint="apt-get install graphviz (scripts/install.sh does), or use --format dot") from None
