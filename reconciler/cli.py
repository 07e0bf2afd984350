"""The ``infra`` command line: validate, plan, apply, destroy, status, env, daemon.

The console script ``infra`` points at :func:`main`. Each command loads the stack file
(:mod:`reconciler.loader`), wires an :class:`~reconciler.engine.Engine` and runs one pass or a
read-only view of it; the daemon (:mod:`reconciler.daemon`) runs the same pass in a loop.

Exit codes: 0 success (``plan --detailed-exitcode``: no changes), 2 changes present (only with
``--detailed-exitcode``) or a usage error, 1 any other error. Errors are one clear message on
stderr; ``--debug`` adds the traceback. Heavy imports (pydantic, rich, the engine) happen inside
the commands so that ``infra --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from rich.console import Console

    from reconciler.engine import Engine
    from reconciler.model import Problem
    from reconciler.plan import Plan

F = TypeVar("F", bound=Callable[..., Any])

_DEBUG = False
#: Stack state directories this process created, and whether it changed anything yet: a run
#: that fails before changing anything removes what it created (a bad input changes nothing,
#: not even a lock file).
_CREATED: list[Any] = []
#: The state root's entries before this process opened a stack (what it adds is its own).
_BEFORE: dict[Any, set[Any]] = {}
_CHANGED = False


def _debug_option(func: F) -> F:
    def set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        global _DEBUG
        _DEBUG = _DEBUG or value
        return value

    return click.option("--debug", is_flag=True, expose_value=False, callback=set_debug, is_eager=True,
                        help="Show tracebacks on errors.")(func)


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 1) -> NoReturn:
    _console(stderr=True).print(f"[bold red]error:[/] {message}", markup=True)
    raise SystemExit(code)


def _open(path: str, *, concurrency: int = 50, timeout: float | None = None) -> Engine:
    from reconciler.engine import Engine
    from reconciler.loader import load_stack
    from reconciler.paths import state_root
    from reconciler.retry import RetryPolicy

    stack = load_stack(path)
    root = state_root(create=False)
    sdir = root / "stacks" / stack.name
    for made in (root, sdir.parent, sdir):
        if not made.exists():
            _CREATED.append(made)
    _BEFORE[root] = set(root.iterdir()) if root.is_dir() else set()
    err = _console(stderr=True)
    retry = RetryPolicy(change_timeout=timeout) if timeout else None
    return Engine.open(stack, source=path, log=lambda m: err.print(f"  {m}", markup=False),
                       concurrency=concurrency, retry=retry)


def _changing() -> None:
    """Mark that this process is about to change something (its state is kept from now on)."""
    global _CHANGED
    _CHANGED = True


def _discard_created() -> None:
    """After a failure before any change: remove the stack directories this process created."""
    if _CHANGED:
        return
    for root, before in _BEFORE.items():  # e.g. a provider's own directory, made by its open
        if root.is_dir():
            for entry in set(root.iterdir()) - before:
                _remove_empty_dirs(entry)
    for path in reversed(_CREATED):
        if path.parent.name == "stacks":  # this stack's own directory
            shutil.rmtree(path, ignore_errors=True)
        else:  # the state root and its stacks/: shared by every stack, so only if empty
            try:
                path.rmdir()
            except OSError:
                pass


def _remove_empty_dirs(path: Any) -> None:
    """Remove ``path`` and the directories below it that hold no file (anything else stays)."""
    if not path.is_dir() or path.is_symlink():
        return
    for child in path.iterdir():
        _remove_empty_dirs(child)
    try:
        path.rmdir()
    except OSError:
        pass


def _confirm(what: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        _fail(f"refusing to {what} without confirmation: no terminal to ask on; pass --yes")
    if not click.confirm(f"Do you want to {what}?", default=False):
        _console(stderr=True).print(f"{what.capitalize()} cancelled; nothing was changed.")
        raise SystemExit(1)


# -- rendering ---------------------------------------------------------------------------------

_STYLE = {"create": "green", "delete": "red", "replace": "yellow"}


def render_plan(plan: Plan, console: Console, provider: str,
                describe: Callable[[Problem], str] | None = None) -> None:
    """The Terraform-like diff: ``+`` create, ``-`` delete, ``-/+`` replace, each with its reason.

    Warnings come first, each named by ``describe`` (the engine's ``FILE:LINE: FIELD: message``).
    """
    from rich.markup import escape

    show = describe or (lambda p: f"{p.field}: {p.message}")
    lines = [f"[yellow]warning:[/] {escape(show(p))}" for p in plan.problems]
    if plan.empty:
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
            style = _STYLE[c.action.value]
            why = c.reason.value + (f": {c.detail}" if c.detail else "")
            lines.append(f"  [{style}]{c.action.symbol:>3} {c.member}[/]  [dim]({escape(why)})[/]")
            if c.before is not None and c.after is not None:
                lines.append(f"        {c.before.name} → {c.after.name}  [dim]({c.order.value if c.order else ''})[/]")
            elif c.before is not None:
                lines.append(f"        {c.before.name}  [dim]{c.before.address or ''}[/]")
            elif c.after is not None:
                lines.append(f"        {c.after.name}")
    n = plan.counts()
    pushes = f"{len(plan.images)} image{'s' * (len(plan.images) != 1)} to push, " if plan.images else ""
    lines.append(f"\n[bold]Plan:[/] {pushes}{n['create']} to create, {n['replace']} to replace, "
                 f"{n['delete']} to delete.")
    console.print("\n".join(lines))


class ConsoleReporter:
    """Progress of an apply: a live bar on a terminal; otherwise one line per change, or, for
    plans of more than ``MANY`` changes, a count every few seconds. Failures are always shown.
    Called from the executor's worker threads (rich's console serialises its output)."""

    MANY = 200
    EVERY = 2.0

    def __init__(self, console: Console) -> None:
        import threading

        self.console = console
        self.live = console.is_terminal
        self._progress: Any = None
        self._task: Any = None
        self._lock = threading.Lock()
        self._total = 0
        self._done = 0
        self._last = 0.0
        self._upload: Any = None
        self._upload_tasks: dict[str, Any] = {}
        self._upload_steps: dict[str, int] = {}

    def begin(self, plan: Plan) -> None:
        import time

        self._total = len(plan.changes)
        self._last = time.monotonic()
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=self.console, transient=True)
            self._progress.start()
            self._task = self._progress.add_task("applying", total=self._total)

    def started(self, change: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=f"{change.action.symbol} {change.member}")

    def _count(self) -> None:
        import time

        with self._lock:
            self._done += 1
            now = time.monotonic()
            due = self._total > self.MANY and self._progress is None and (
                now - self._last >= self.EVERY or self._done == self._total)
            if due:
                self._last = now
        if due:
            self.console.print(f"  {self._done}/{self._total} changes done")
        if self._progress is not None:
            self._progress.advance(self._task)

    def finished(self, change: Any, seconds: float) -> None:
        if self._total <= self.MANY:
            done = {"create": "created", "delete": "deleted", "replace": "replaced"}[change.action.value]
            style = _STYLE[change.action.value]
            self.console.print(f"  [{style}]{change.action.symbol:>3} {change.member}[/] {done} in {seconds:.1f}s")
        self._count()

    def failed(self, change: Any, error: Any) -> None:
        from rich.markup import escape

        first = getattr(error, "message", str(error)).splitlines()[0]
        short = first if len(first) <= 160 else first[:157] + "..."
        self.console.print(f"  [bold red]  ! {change.member}[/] {change.action.value} failed: {escape(short)}")
        self._count()

    def note(self, message: str) -> None:
        self.console.print(f"  {message}", markup=False)

    def upload(self, image: str, done: int, total: int) -> None:
        """An image upload's bytes: a bar on a terminal, else a line at every quarter."""
        with self._lock:
            if self.live:
                if self._upload is None:
                    from rich.progress import (
                        BarColumn,
                        DownloadColumn,
                        Progress,
                        TextColumn,
                        TransferSpeedColumn,
                    )

                    self._upload = Progress(TextColumn("  upload {task.description}"), BarColumn(),
                                            DownloadColumn(), TransferSpeedColumn(), console=self.console,
                                            transient=True)
                    self._upload.start()
                if image not in self._upload_tasks:
                    self._upload_tasks[image] = self._upload.add_task(image, total=total)
                self._upload.update(self._upload_tasks[image], completed=done)
                if done >= total:
                    self._upload.stop()
                    self._upload = None
                    self._upload_tasks.clear()
                return
            step = 4 * done // max(total, 1)
            if done >= total or step > self._upload_steps.get(image, 0):
                self._upload_steps[image] = step
                pct = 100 * done // max(total, 1)
                self.console.print(f"  upload {image}: {done:,}/{total:,} bytes ({pct}%)", markup=False)

    def provider_error(self, call: str, error: Any) -> None:
        """Failed provider calls show up as failed changes (or the pass's error); nothing more here."""

    def end(self) -> None:
        if self._progress is not None:
            self._progress.stop()


# -- commands ------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@_debug_option
@click.version_option("0.1.0", prog_name="infra")
def cli() -> None:
    """Declare node groups in a Python stack file; infra converges a provider to them.

    \b
      infra validate stacks/hello-local.py
      infra plan     stacks/hello-local.py
      infra apply    stacks/hello-local.py --yes
      infra status   stacks/hello-local.py
      infra destroy  stacks/hello-local.py --yes

    State (locks, a stack's CA, local instances) lives under $INFRA_STATE_DIR
    (default: $XDG_STATE_HOME/infra or ~/.local/state/infra).
    """


@cli.command()
@click.argument("stack_file", metavar="STACK")
@_debug_option
def validate(stack_file: str) -> None:
    """Check a stack file and its plugins' settings; change nothing."""
    engine = _open(stack_file)
    try:
        problems = engine.validate()
    finally:
        engine.close()
    out = _console()
    errors = [p for p in problems if p.is_error]
    for p in problems:
        label = "[red]error:[/]" if p.is_error else "[yellow]warning:[/]"
        out.print(f"{label} {engine.describe(p)}", markup=True)
    if errors:
        raise SystemExit(1)
    groups = engine.stack.groups
    members = sum(g.size for g in groups)
    out.print(f"[green]✓[/] {stack_file}: stack [bold]{engine.stack.name}[/] is valid "
              f"({len(groups)} group{'s' * (len(groups) != 1)}, {members} members, provider {engine.stack.provider})")


@cli.command()
@click.argument("stack_file", metavar="STACK")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 when there are no changes, 2 when there are.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="Save the plan for 'apply --plan'.")
@click.option("--destroy", is_flag=True, help="Plan the destruction of every instance of the stack.")
@_debug_option
def plan(stack_file: str, as_json: bool, detailed_exitcode: bool, out_file: str | None, destroy: bool) -> None:
    """Show what apply would change, and why."""
    engine = _open(stack_file)
    try:
        planned = engine.plan(destroy=destroy)
    finally:
        engine.close()
    the_plan, preflight_error = planned.plan, planned.refusal
    if out_file:
        with open(out_file, "w", encoding="utf-8") as fh:
            fh.write(the_plan.dumps())
    if as_json:
        click.echo(the_plan.dumps())
    else:
        render_plan(the_plan, _console(), engine.stack.provider, engine.describe)
        if out_file:
            _console().print(f"\nSaved the plan to {out_file}; apply exactly it with: "
                             f"infra apply {stack_file} --plan {out_file}")
    if preflight_error is not None:
        _fail(str(preflight_error))
    if detailed_exitcode and not the_plan.empty:
        raise SystemExit(2)


@cli.command()
@click.argument("stack_file", metavar="STACK")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--plan", "plan_file", type=click.Path(dir_okay=False),
              help="Apply exactly this saved plan; refuse it if it is stale.")
@click.option("--concurrency", default=50, show_default=True, type=click.IntRange(1, 1000),
              help="Changes in flight at once (cattle groups).")
@click.option("--timeout", default=600.0, show_default=True, type=click.FloatRange(1),
              help="Seconds allowed per change, retries included.")
@_debug_option
def apply(stack_file: str, yes: bool, plan_file: str | None, concurrency: int, timeout: float) -> None:
    """Converge the provider to the stack: create, replace and delete instances."""
    _run_pass(stack_file, yes=yes, plan_file=plan_file, destroy=False, concurrency=concurrency, timeout=timeout)


@cli.command()
@click.argument("stack_file", metavar="STACK")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--images", "with_images", is_flag=True,
              help="Also delete the images the stack's groups boot (default: images are kept).")
@click.option("--concurrency", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--timeout", default=600.0, show_default=True, type=click.FloatRange(1))
@_debug_option
def destroy(stack_file: str, yes: bool, with_images: bool, concurrency: int, timeout: float) -> None:
    """Delete every instance of the stack (and its local state); images stay unless --images."""
    _run_pass(stack_file, yes=yes, plan_file=None, destroy=True, concurrency=concurrency, timeout=timeout,
              with_images=with_images)


def _run_pass(stack_file: str, *, yes: bool, plan_file: str | None, destroy: bool,
              concurrency: int, timeout: float, with_images: bool = False) -> None:
    from reconciler.lock import StackLock
    from reconciler.plan import saved_keys

    saved = saved_keys(plan_file) if plan_file else None
    engine = _open(stack_file, concurrency=concurrency, timeout=timeout)
    out = _console()
    lock = StackLock(engine.state_dir, engine.stack.name)
    try:
        with lock:
            planned = engine.plan(destroy=destroy)
            the_plan = planned.plan
            if saved is not None:
                engine.check_saved(planned, *saved)
            doomed = _images_to_delete(engine) if with_images else []
            if the_plan.empty:
                if destroy and not doomed:
                    out.print(f"Nothing of stack [bold]{engine.stack.name}[/] exists; nothing to destroy.")
                elif destroy:
                    _delete_images(engine, doomed, yes, out)
                else:
                    render_plan(the_plan, out, engine.stack.provider, engine.describe)
                return_code = 0
            else:
                render_plan(the_plan, out, engine.stack.provider, engine.describe)
                refused = planned.refusal
                if refused is not None:  # e.g. etcd lost its quorum: refuse before asking anything
                    _fail(str(refused))
                if doomed:
                    out.print("  [bold]# images[/] (--images)\n" + "\n".join(
                        f"  [red]  - {r.name}[/]  [dim]({r.id})[/]" for _, r in doomed))
                if saved is None:
                    _confirm("destroy these instances" if destroy else "apply these changes", yes)
                out.print()
                _changing()
                result = engine.apply(planned, reporter=ConsoleReporter(_console(stderr=True)))
                if result.ok:
                    n = result.applied
                    pushed = (f"{len(the_plan.images)} image{'s' * (len(the_plan.images) != 1)} pushed, "
                              if the_plan.images else "")
                    out.print(f"\n[bold green]{'Destroy' if destroy else 'Apply'} complete:[/] "
                              f"{pushed}{len(n)} change{'s' * (len(n) != 1)} in {result.seconds:.1f}s.")
                    if doomed:
                        _delete_images(engine, doomed, True, out)
                    return_code = 0
                else:
                    quorum = result.quorum_lost
                    if quorum is not None:
                        _console(stderr=True).print(f"[bold red]error:[/] {quorum}", markup=True)
                    else:
                        for change, err in result.failed:
                            _console(stderr=True).print(
                                f"[bold red]error:[/] {change.action.value} {change.group}/{change.member}: {err}")
                    if result.skipped:
                        _console(stderr=True).print(f"{len(result.skipped)} change(s) not attempted.")
                    return_code = 1
    finally:
        engine.close()
    if destroy and return_code == 0:
        shutil.rmtree(engine.state_dir, ignore_errors=True)
    raise SystemExit(return_code)


@cli.command()
@click.argument("stack_file", metavar="STACK")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.option("--wide", is_flag=True, help="Also show instance names and every column of the role's facts.")
@_debug_option
def status(stack_file: str, as_json: bool, wide: bool) -> None:
    """Show every member: address, status, health, and what its role reports.

    Fits an 80-column terminal: the instance names and the role's long columns (URLs) are left to
    --wide and --json, which show everything in full.
    """
    engine = _open(stack_file)
    try:
        groups = engine.status()
    finally:
        engine.close()
    if as_json:
        doc = {
            "stack": engine.stack.name,
            "provider": engine.stack.provider,
            "groups": [
                {
                    "name": g.name, "role": g.role, "size": g.size,
                    "members": [
                        {"member": m.member, "name": m.name, "id": m.id, "address": m.address,
                         "status": m.status,
                         "healthy": {"healthy": True, "unhealthy": False}.get(m.healthy),
                         "spec_current": m.spec_current}
                        for m in g.members
                    ],
                    **({"role_status": dict(g.extra)} if g.extra else {}),
                }
                for g in groups
            ],
        }
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    render_status(engine.stack.name, groups, _console(), wide=wide)


def render_status(stack: str, groups: list[Any], out: Console, *, wide: bool = False) -> None:
    """The member tables and each role's facts; narrow enough for 80 columns unless ``wide``."""
    from rich.table import Table

    colour = {"healthy": "green", "unhealthy": "red", "unknown": "yellow"}
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
        _render_extra(out, g.extra, wide=wide)


@cli.command()
@click.argument("stack_file", metavar="STACK")
@click.option("--format", "fmt", type=click.Choice(["svg", "png", "dot"]), default=None,
              help="What to draw [default: from -o's extension, else svg].")
@click.option("--plan", "with_plan", is_flag=True, help="Also draw the pending changes, coloured as the diff.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the picture here instead of stdout.")
@_debug_option
def graph(stack_file: str, fmt: str | None, with_plan: bool, output: str | None) -> None:
    """Draw the stack: groups, members with status and health, links; with --plan, the changes.

    \b
      infra graph stacks/etcd-local.py -o etcd.svg
      infra graph stacks/etcd-local.py --plan --format dot | dot -Tpng > plan.png
    """
    from reconciler import graph as drawing
    from reconciler.model import UpdatePolicy

    if fmt is None:
        suffix = (output or "").rsplit(".", 1)[-1].lower() if output and "." in output else ""
        fmt = suffix if suffix in ("svg", "png", "dot", "gv") else "svg"
        fmt = "dot" if fmt == "gv" else fmt
    if fmt == "png" and output is None and sys.stdout.isatty():
        _fail("--format png writes binary data: pass -o FILE (or redirect the output)")
    engine = _open(stack_file)
    try:
        groups = engine.status()
        links = engine.links()
        planned = engine.plan().plan if with_plan else None
        quorum = [name for name, role in engine.roles.items() if role.policy == UpdatePolicy.QUORUM]
    finally:
        engine.close()
    picture = drawing.render(drawing.build(engine.stack.name, engine.stack.provider, groups, links, quorum=quorum,
                                           plan=planned), fmt)
    if output:
        with open(output, "wb") as fh:
            fh.write(picture)
        _console(stderr=True).print(f"wrote {output} ({fmt}, {len(picture):,} bytes)")
    else:
        sys.stdout.buffer.write(picture)
        sys.stdout.flush()


def _images_to_delete(engine: Engine) -> list[tuple[Any, Any]]:
    """The stored images the stack's declaration boots: (spec, record) for ``destroy --images``."""
    return [(s.spec, s.record) for s in engine.images() if s.record is not None]


def _delete_images(engine: Engine, doomed: list[tuple[Any, Any]], yes: bool, out: Console) -> None:
    from reconciler.provider import image_store

    store = image_store(engine.provider)
    if store is None or not doomed:
        return
    names = ", ".join(r.name for _, r in doomed)
    _confirm(f"delete {len(doomed)} image{'s' * (len(doomed) != 1)} ({names})", yes)
    _changing()
    for _, record in doomed:
        store.delete_image(record)
        out.print(f"  [red]-[/] image {record.name} deleted")


# -- images ------------------------------------------------------------------------------------


@cli.group()
def image() -> None:
    """Build, push and list the LinuxKit images a stack's groups boot."""


def _image_engine(stack_file: str) -> Engine:
    from reconciler.provider import image_store

    engine = _open(stack_file)
    if image_store(engine.provider) is None:
        engine.close()
        _fail(f"{stack_file}: provider {engine.stack.provider!r} runs no images "
              "(its members run as they are); nothing to build or push")
    return engine


@image.command("list")
@click.argument("stack_file", metavar="STACK")
@click.option("--json", "as_json", is_flag=True, help="Print the images as JSON.")
@_debug_option
def image_list(stack_file: str, as_json: bool) -> None:
    """Each group's image: digest, name, present at the provider or not, size."""
    engine = _image_engine(stack_file)
    try:
        states = engine.images()
    finally:
        engine.close()
    rows = [
        {"group": s.spec.group, "name": s.spec.name, "digest": s.spec.digest, "format": s.spec.format,
         "present": s.present, "id": s.record.id if s.record else None,
         "status": s.record.status if s.record else None,
         "size": s.record.size if s.record and s.record.size is not None else
         (s.artefact.stat().st_size if s.artefact else None),
         "built": s.artefact is not None, "artefact": str(s.artefact) if s.artefact else None}
        for s in states
    ]
    if as_json:
        click.echo(json.dumps({"stack": engine.stack.name, "provider": engine.stack.provider, "images": rows},
                              indent=2))
        return
    out = _console()
    if not rows:
        out.print(f"{stack_file}: every group pins its image; the pipeline builds none.")
        return
    for r in rows:
        where = "[green]present[/]" if r["present"] else "[yellow]missing[/]"
        size = f"{r['size']:,} bytes" if r["size"] is not None else "-"
        out.print(f"{r['group']}: {r['name']}  {where}  digest {r['digest']}  {size}"
                  + ("  (built locally)" if r["built"] else ""))


@image.command("build")
@click.argument("stack_file", metavar="STACK")
@_debug_option
def image_build(stack_file: str) -> None:
    """Build each group's image with linuxkit (cached by digest); push nothing."""
    from reconciler import imagebuild

    engine = _image_engine(stack_file)
    try:
        states = engine.images()
        out = _console()
        for s in states:
            cached = s.artefact is not None
            path = imagebuild.build(s.spec, engine.image_root, log=lambda m: _console(stderr=True).print(
                f"  {m}", markup=False))
            out.print(f"{s.spec.group}: {s.spec.name} {'cached' if cached else 'built'}: {path}")
    finally:
        engine.close()


@image.command("push")
@click.argument("stack_file", metavar="STACK")
@_debug_option
def image_push(stack_file: str) -> None:
    """Build (if needed) and push each group's image the provider lacks."""
    from reconciler.lock import StackLock

    engine = _image_engine(stack_file)
    out = _console()
    try:
        with StackLock(engine.state_dir, engine.stack.name):
            states = engine.images()
            missing = [s.spec for s in states if not s.present]
            for s in states:
                if s.present:
                    out.print(f"{s.spec.group}: {s.spec.name} is present ({s.record.id if s.record else ''})")
            if missing:
                _changing()
            engine.push_images(missing, ConsoleReporter(_console(stderr=True)))
            for spec in missing:
                out.print(f"{spec.group}: {spec.name} pushed")
    finally:
        engine.close()
    out.print(f"[bold green]Push complete:[/] {len(missing)} pushed, {len(states) - len(missing)} already present.")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _render_extra(out: Console, extra: Any, *, wide: bool = False) -> None:
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


@cli.command()
@click.argument("stack_file", metavar="STACK")
@_debug_option
def env(stack_file: str) -> None:
    """Print shell exports for the stack's clients: eval "$(infra env STACK)"."""
    import shlex

    engine = _open(stack_file)
    try:
        variables = engine.env()
    finally:
        engine.close()
    if not variables:
        _fail(f"{stack_file}: no role of this stack exports client settings")
    for key, value in variables.items():
        click.echo(f"export {key}={shlex.quote(value)}")


@cli.command()
@click.argument("cloud", metavar="CLOUD")
@click.option("--port", default=8089, show_default=True, type=click.IntRange(0, 65535),
              help="Port on 127.0.0.1 to serve the cloud's API on (0: any free port).")
@click.option("--state", "state_dir", type=click.Path(file_okay=False),
              help="Directory for the emulator's instances (default: <state root>/emulator/CLOUD).")
@_debug_option
def emulator(cloud: str, port: int, state_dir: str | None) -> None:
    """Run an emulated cloud on this machine whose instances boot: gcp or aws.

    \b
    It prints the exports a client needs, then '# ready':
      infra emulator gcp > gcp.env &     (or: infra emulator aws > aws.env &)
      . ./gcp.env; infra apply stacks/etcd-gcp.py --yes
    SIGTERM or Ctrl-C stops every instance it booted.
    """
    from pathlib import Path

    from reconciler import registry
    from reconciler.paths import state_root

    run = registry.emulator(cloud)
    state = Path(state_dir) if state_dir else state_root() / "emulator" / cloud
    raise SystemExit(run(port, state))


def _add_daemon() -> None:
    from reconciler.daemon import daemon_command  # light: its heavy imports happen when it runs

    cli.add_command(daemon_command, "daemon")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``infra`` console script."""
    from reconciler import netguard

    netguard.install()
    global _DEBUG
    _DEBUG = _DEBUG or os.environ.get("INFRA_DEBUG") == "1"
    args = sys.argv[1:] if argv is None else argv
    _add_daemon()
    try:
        try:
            cli.main(args=args, prog_name="infra", standalone_mode=False)
        except SystemExit as exc:
            if exc.code == 1:
                _discard_created()
            raise
        except Exception:
            _discard_created()
            raise
    except click.exceptions.Abort:
        _fail("aborted")
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except SystemExit:
        raise
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:
        from reconciler.errors import InfraError

        if _DEBUG:
            traceback.print_exc()
        if isinstance(exc, InfraError):
            _fail(str(exc))
        _fail(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
    raise SystemExit(0)


if __name__ == "__main__":
    main()
