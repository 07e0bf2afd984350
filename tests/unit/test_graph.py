"""``infra graph``'s picture (reconciler.views.graph): groups, members by health, links, and a plan's changes."""

from __future__ import annotations

import shutil

from reconciler.core.model import Instance, MemberSpec
from reconciler.core.plan import Action, Change, GroupPlan, Plan, Reason
from reconciler.engine.views import GroupStatus, MemberStatus
from reconciler.views import graph


def member(group: str, i: int, healthy: str = "healthy", current: bool = True) -> MemberStatus:
    return MemberStatus(member=f"{group}-{i}", name=f"s-{group}-{group}-{i}-abc", id=f"id-{group}-{i}",
                        address=f"127.77.0.{i + 10}", status="running", healthy=healthy, spec_current=current)


def groups() -> list[GroupStatus]:
    etcd = GroupStatus("etcd", "etcd", 3, [member("etcd", 0), member("etcd", 1, "unhealthy"), member("etcd", 2)])
    prom = GroupStatus("prometheus", "prometheus", 1, [member("prometheus", 0, current=False)])
    return [etcd, prom]


def a_plan() -> Plan:
    inst = Instance(id="id-etcd-1", name="s-etcd-etcd-1-abc")
    spec = MemberSpec(stack="s", group="etcd", member="etcd-1", role="etcd")
    new = MemberSpec(stack="s", group="etcd", member="etcd-3", role="etcd")
    changes = (Change(Action.REPLACE, "etcd", "etcd-1", Reason.UNHEALTHY, before=inst, after=spec),
               Change(Action.CREATE, "etcd", "etcd-3", Reason.MISSING, after=new))
    return Plan(stack="s", groups=(GroupPlan("etcd", "quorum", changes),))


def test_the_picture_has_every_group_member_health_and_link() -> None:
    dot = graph.build("s", "local", groups(), [("prometheus", "etcd", "scrapes")], quorum=["etcd"]).source
    assert 'subgraph cluster_etcd' in dot and 'label="etcd (etcd, 3/3)"' in dot
    assert '"etcd/etcd-1" [label="etcd-1\\n127.77.0.11\\nrunning, unhealthy" fillcolor="#ffcdd2"]' in dot
    assert '"prometheus/prometheus-0"' in dot and 'color="#ef6c00"' in dot  # outdated spec: orange border
    assert dot.count('label=peer') == 1 and dot.count("dir=none") == 3  # the etcd peers, in a ring
    assert '"prometheus/prometheus-0" -> "etcd/etcd-0" [label=scrapes' in dot


def test_a_plans_changes_are_coloured_as_the_diff() -> None:
    dot = graph.build("s", "local", groups(), [], quorum=["etcd"], plan=a_plan()).source
    assert "-/+ etcd-1" in dot and "(unhealthy)" in dot and 'color="#f9a825"' in dot  # replace: yellow
    assert '"etcd/etcd-3" [label="+ etcd-3\\n(missing)"' in dot and "dashed" in dot  # create: green, dashed


def test_svg_and_png_are_rendered_by_graphviz() -> None:
    assert shutil.which("dot"), "Graphviz's dot is missing: scripts/install.sh installs it (apt-get install graphviz)"
    g = graph.build("s", "local", groups(), [("prometheus", "etcd", "scrapes")], quorum=["etcd"], plan=a_plan())
    svg = graph.render(g, "svg").decode().replace("&#45;", "-")  # Graphviz writes '-' as an entity
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "etcd-1" in svg and "scrapes" in svg
    assert graph.render(g, "png").startswith(b"\x89PNG")
