"""``infra status`` fits an 80-column terminal; --wide shows the instance names and the URLs."""

from __future__ import annotations

from rich.console import Console

from reconciler.cli.render import render_status
from reconciler.engine.views import GroupStatus, MemberStatus


def etcd_group() -> GroupStatus:
    members = [MemberStatus(member=f"etcd-{i}", name=f"etcd-local-etcd-etcd-{i}-0123abcd", id=f"i-{i:017d}",
                            address=f"127.77.0.{i + 10}", status="running", healthy="healthy", spec_current=True)
               for i in range(3)]
    rows = [{"member": f"etcd-{i}", "id": f"{0x8e9e05c52164694d + i:x}",
             "name": f"etcd-local-etcd-etcd-{i}-0123abcd",
             "peer_urls": [f"https://127.77.0.{i + 10}:2380"], "client_urls": [f"https://127.77.0.{i + 10}:2379"],
             "started": True, "healthy": True, "leader": i == 0} for i in range(3)]
    extra = {"cluster_id": "cdf818194e3a8c32", "leader": "etcd-0", "quorum": 2, "healthy": 3, "members": rows}
    return GroupStatus("etcd", "etcd", 3, members, extra)


def rendered(wide: bool, width: int = 80) -> list[str]:
    console = Console(width=width, record=True, color_system=None, force_terminal=False)
    render_status("etcd-local", [etcd_group()], console, wide=wide)
    return console.export_text().splitlines()


def test_status_fits_80_columns_and_truncates_nothing() -> None:
    lines = rendered(wide=False)
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    text = "\n".join(lines)
    assert "…" not in text
    for member in ("etcd-0", "etcd-1", "etcd-2"):
        assert member in text
    assert "127.77.0.10" in text and "8e9e05c52164694d" in text and "leader: etcd-0" in text


def test_wide_shows_the_instance_names_and_urls_in_full() -> None:
    text = "\n".join(rendered(wide=True, width=200))  # --wide is for a wide terminal (or a pipe)
    assert "etcd-local-etcd-etcd-0-0123abcd" in text and "https://127.77.0.10:2380" in text
    assert "…" not in text
