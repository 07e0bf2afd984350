"""What the CLI prints: the plan as a diff, the status tables and a role's facts.

Called by the commands (:mod:`reconciler.cli.commands`); pure functions of the values the engine
returns, drawn with rich. Nothing here reads or changes anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from reconciler.core.model import Problem
    from reconciler.core.plan import Plan
    from reconciler.engine.views import GroupStatus


STYLE = {"create": "green", "delete": "red", "replace": "yellow", "update": "cyan"}


def render_plan(plan: Plan, console: Console, provider: str,
                describe: Callable[[Problem], str] | None = None) -> None:
    """The Terraform-like diff: ``+`` create, ``-`` delete, ``-/+`` replace, ``~`` update in place,
    each with its reason; held changes with why they are held; then what infra keeps (groups no
    longer declared) and refuses (protected groups).

    Warnings come first, each named by ``describe`` (the engine's ``FILE:LINE: FIELD: message``).
    """
    from rich.markup import escape

    show = describe or (lambda p: f"{p.field}: {p.message}")
    lines = [f"[yellow]warning:[/] {escape(show(p))}" for p in plan.problems]
    kept = [f"  [bold]# {escape(u.message)}[/]" for u in plan.undeclared]
    blocked = [f"  [bold red]# refused:[/] {escape(b)}" for b in plan.blocked]
    if not plan.changes and not plan.images:
        if kept or blocked:
            lines.append("")
            lines.extend(blocked + kept)
        lines.append(f"[green]No changes.[/] Stack [bold]{plan.stack}[/] matches its declaration "
                     f"({plan.observed} instances observed).")
        console.print("\n".join(lines))
        return
    verb = "destroy" if plan.destroy else "change"
    lines.append(f"infra will {verb} stack [bold]{plan.stack}[/] at provider [bold]{provider}[/]:\n")
    if plan.images:
        lines.append("  [bold]# images[/] (built from the groups' LinuxKit documents, pushed first)")
        for image in plan.images:
            lines.append(f"  [green]  ^ {image.name}[/]  [dim](push: group {image.group}, "
                         f"format {image.format}, digest {image.digest})[/]")
        lines.append("")
    for gp in plan.groups:
        lines.append(f"  [bold]# group {gp.group}[/] ({gp.policy}{', bootstrap' if gp.bootstrap else ''})")
        for c in gp.changes:
            style = "dim" if c.held else STYLE[c.action.value]
            why = c.reason.value + (f": {c.detail}" if c.detail else "")
            lines.append(f"  [{style}]{c.action.symbol:>3} {c.member}[/]  [dim]({escape(why)})[/]")
            if c.held:
                lines.append(f"        [yellow]held:[/] {escape(c.held)}")
            if c.action.value == "update":
                continue
            if c.before is not None and c.after is not None:
                lines.append(f"        {c.before.name} → {c.after.name}  [dim]({c.order.value if c.order else ''})[/]")
            elif c.before is not None:
                lines.append(f"        {c.before.name}  [dim]{c.before.address or ''}[/]")
            elif c.after is not None:
                lines.append(f"        {c.after.name}")
    if kept or blocked:
        lines.append("")
        lines.extend(blocked + kept)
    n = plan.counts()
    pushes = f"{len(plan.images)} image{'s' * (len(plan.images) != 1)} to push, " if plan.images else ""
    held = f", {n['held']} held (not applied)" if n["held"] else ""
    lines.append(f"\n[bold]Plan:[/] {pushes}{n['create']} to create, {n['replace']} to replace, "
                 f"{n['update']} to update in place, {n['delete']} to delete{held}.")
    console.print("\n".join(lines))


def render_status(stack: str, groups: list[GroupStatus], out: Console, *, wide: bool = False,
                  paused: str | None = None, undeclared: Sequence[str] = ()) -> None:
    """The member tables and each role's facts; narrow enough for 80 columns unless ``wide``."""
    from rich.markup import escape
    from rich.table import Table

    colour = {"healthy": "green", "unhealthy": "red", "unknown": "yellow"}
    if paused:
        out.print(f"[bold yellow]paused:[/] {escape(paused)}")
    for g in groups:
        table = Table(title=f"{stack}/{g.name} ({g.role}, {len(g.members)}/{g.size} members)",
                      title_justify="left")
        columns = ["member", "address", "status", "healthy", "spec"] + (["instance"] if wide else [])
        for col in columns:
            table.add_column(col, no_wrap=True)
        for m in g.members:
            row = [m.member, m.address or "-", m.status, f"[{colour[m.healthy]}]{m.healthy}[/]",
                   "current" if m.spec_current else "[yellow]outdated[/]"]
            table.add_row(*row, *([m.name] if wide else []))
        out.print(table)
        if g.paused:
            out.print(f"  [yellow]paused:[/] {escape(g.paused)}")
        for reason in g.held:
            out.print(f"  [yellow]held:[/] {escape(reason)}")
        render_extra(out, g.extra, wide=wide)
    for note in undeclared:
        out.print(f"[bold]kept:[/] {escape(note)}")



def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def render_extra(out: Console, extra: Any, *, wide: bool = False) -> None:
    """A role's status facts: scalars as ``key: value``, lists of records as tables.

    Unless ``wide``, a table keeps only its short, single-valued columns (an etcd member's id,
    started, healthy, leader; not its URLs) so that it fits 80 columns; --wide and --json show all.
    """
    from rich.table import Table

    for key, value in extra.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            columns: list[str] = []
            for row in value:
                columns.extend(k for k in row if k not in columns)
            if not wide:
                columns = [c for c in columns if all(not isinstance(r.get(c), list | tuple | dict)
                                                     and len(_cell(r.get(c))) <= 16 for r in value)]
            table = Table(title=f"  {key}", title_justify="left", show_edge=False)
            for col in columns:
                table.add_column(col, no_wrap=True)
            for row in value:
                table.add_row(*(_cell(row.get(c)) for c in columns))
            out.print(table)
        elif isinstance(value, dict):
            out.print(f"  {key}: " + ", ".join(f"{k}={v}" for k, v in value.items()), markup=False)
        else:
            out.print(f"  {key}: {value}", markup=False)


