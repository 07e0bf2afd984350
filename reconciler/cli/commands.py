"""The ``infra`` commands: validate, plan, apply, destroy, status, graph, image, env, emulator.

Each command loads the stack file (:mod:`reconciler.engine.loader`), wires an
:class:`~reconciler.engine.Engine` and runs one pass or a read-only view of it; what it prints is
drawn by :mod:`reconciler.cli.render` and :mod:`reconciler.cli.reporter`. A command that writes
(apply, destroy, image push) does so inside the state directory's
:meth:`~reconciler.engine.state.StateDir.writing`: under the stack's lock, and a failure before the
first change leaves nothing behind that this command made. Heavy imports (pydantic, rich, the
engine) happen inside the commands so that ``infra --help`` stays fast. Called by
:func:`reconciler.cli.main.main`.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from reconciler.cli import render
from reconciler.cli.reporter import ConsoleReporter

if TYPE_CHECKING:
    from rich.console import Console

    from reconciler.engine.engine import Engine, PlannedPass

F = TypeVar("F", bound=Callable[..., Any])

#: Whether to show tracebacks (``--debug`` anywhere on the line, or INFRA_DEBUG=1).
DEBUG = False


def _debug_option(func: F) -> F:
    def set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        global DEBUG
        DEBUG = DEBUG or value
        return value

    return click.option("--debug", is_flag=True, expose_value=False, callback=set_debug, is_eager=True,
                        help="Show tracebacks on errors.")(func)


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    console(stderr=True).print(f"[bold red]error:[/] {message}", markup=True)
    raise SystemExit(code)


def _open(path: str, *, concurrency: int = 50, timeout: float | None = None) -> Engine:
    """Load ``path`` and wire its engine; nothing is created on disk."""
    from reconciler.engine.engine import Engine
    from reconciler.engine.loader import load_stack
    from reconciler.kit import coordination, secretstore
    from reconciler.kit.retry import RetryPolicy

    stack = load_stack(path)
    err = console(stderr=True)
    retry = RetryPolicy(change_timeout=timeout) if timeout else None
    return Engine.open(stack, source=path, log=lambda m: err.print(f"  {m}", markup=False),
                       concurrency=concurrency, retry=retry, secrets=secretstore.from_environment(),
                       coordination=coordination.from_environment())


@contextlib.contextmanager
def _coordinated(engine: Engine) -> Iterator[None]:
    """With a coordinating etcd: the stack's leader key too, for this command's life, so a daemon
    leading the stack on another machine (or a person there) and this command never both write.
    LockHeldError names the holder. Nothing without one (the local lock is taken already)."""
    if engine.coordination is None:
        yield
        return
    from reconciler.core.errors import LockHeldError, TransientError
    from reconciler.daemon.leader import EtcdLeader, FileLeader
    from reconciler.daemon.session import Session

    if engine.coordination.user:
        from reconciler.kit.coordination import check_login

        check_login(engine.coordination)  # a refused login is a ConfigError here, not "unreachable"
    session = Session(engine.coordination, ttl=15)
    leader = EtcdLeader(session, engine.stack.name, local=FileLeader(engine.state, engine.stack.name))
    if not leader.acquire():
        reachable = leader.held() is not None
        session.close()
        if not reachable:
            raise TransientError(f"cannot reach the coordinating etcd {engine.coordination} to take the lock of "
                                 f"stack {engine.stack.name!r}; nothing was changed",
                                 hint="check it and the network (INFRA_COORDINATION), then try again")
        raise LockHeldError(f"stack {engine.stack.name!r} is being changed elsewhere: {leader.holder()}",
                            hint="wait for it (a daemon leading the stack: pause it, or make the change through "
                            "its stack file)")
    try:
        yield
    finally:
        leader.release()
        session.close()


def _confirm(what: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        fail(f"refusing to {what} without confirmation: no terminal to ask on; pass --yes")
    if not click.confirm(f"Do you want to {what}?", default=False):
        console(stderr=True).print(f"{what.capitalize()} cancelled; nothing was changed.")
        raise SystemExit(1)


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
    out = console()
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


_TARGET = click.option("--target", "targets", multiple=True, metavar="GROUP[/MEMBER]",
                       help="Only these changes; the others are shown as not targeted (repeatable).")


@cli.command()
@click.argument("stack_file", metavar="STACK")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 0 when the stack matches its declaration, 2 when anything differs (held changes and "
                   "groups no longer declared included).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="Save the plan for 'apply --plan'.")
@click.option("--destroy", is_flag=True, help="Plan the destruction of every instance of the stack.")
@_TARGET
@_debug_option
def plan(stack_file: str, as_json: bool, detailed_exitcode: bool, out_file: str | None, destroy: bool,
         targets: tuple[str, ...]) -> None:
    """Show what apply would change, and why."""
    engine = _open(stack_file)
    try:
        planned = engine.plan(destroy=destroy, writing=False, conditions=_conditions(engine, targets, ()))
    finally:
        engine.close()
    the_plan, preflight_error = planned.plan, planned.refusal
    if out_file:
        with open(out_file, "w", encoding="utf-8") as fh:
            fh.write(the_plan.dumps())
    if as_json:
        click.echo(the_plan.dumps())
    else:
        render.render_plan(the_plan, console(), engine.stack.provider, engine.describe)
        if out_file:
            console().print(f"\nSaved the plan to {out_file}; apply exactly it with: "
                            f"infra apply {stack_file} --plan {out_file}")
    if preflight_error is not None:
        fail(str(preflight_error))
    if detailed_exitcode and the_plan.drift:
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
@_TARGET
@click.option("--replace", "replace", multiple=True, metavar="GROUP/MEMBER",
              help="Replace this member even though it is healthy and current, through its role (repeatable).")
@_debug_option
def apply(stack_file: str, yes: bool, plan_file: str | None, concurrency: int, timeout: float,
          targets: tuple[str, ...], replace: tuple[str, ...]) -> None:
    """Converge the provider to the stack: create, replace, update and delete instances."""
    _run_pass(stack_file, yes=yes, plan_file=plan_file, destroy=False, concurrency=concurrency, timeout=timeout,
              targets=targets, replace=replace)


@cli.command()
@click.argument("stack_file", metavar="STACK")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--images", "with_images", is_flag=True,
              help="Also delete the images the stack's groups boot (default: images are kept).")
@click.option("--concurrency", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--timeout", default=600.0, show_default=True, type=click.FloatRange(1))
@_debug_option
def destroy(stack_file: str, yes: bool, with_images: bool, concurrency: int, timeout: float) -> None:
    """Delete every instance of the stack (and its local state); images stay unless --images.

    A protected group (protect=True, recorded on its instances) is never deleted: destroy then
    refuses and deletes nothing.
    """
    _run_pass(stack_file, yes=yes, plan_file=None, destroy=True, concurrency=concurrency, timeout=timeout,
              with_images=with_images)


def _conditions(engine: Engine, targets: tuple[str, ...], replace: tuple[str, ...]) -> Any:
    """The planner's conditions for a pass by hand: targets and replacements, checked against the
    stack (no clock: a person's apply is explicit intent, see docs/safety.md)."""
    from reconciler.core.planner import Conditions

    groups = {g.name: g for g in engine.stack.groups}
    known = sorted({*groups, *(r.group for r in engine.stack.removed)})

    def parse(text: str, option: str, *, member_required: bool) -> tuple[str, str | None]:
        group, _, member = text.partition("/")
        if group not in known:
            fail(f"{option} {text}: no group {group!r} in stack {engine.stack.name!r} (groups: {', '.join(known)})")
        if member_required and not member:
            fail(f"{option} {text}: name one member, as GROUP/MEMBER (e.g. {group}/{group}-0)")
        return group, member or None

    target_set = frozenset(parse(t, "--target", member_required=False) for t in targets) if targets else None
    forced = set()
    for text in replace:
        group, member = parse(text, "--replace", member_required=True)
        assert member is not None
        forced.add((group, member))
    if target_set is not None and forced:
        target_set = target_set | frozenset(forced)
    return Conditions(targets=target_set, replace=frozenset(forced))


def _run_pass(stack_file: str, *, yes: bool, plan_file: str | None, destroy: bool,
              concurrency: int, timeout: float, with_images: bool = False,
              targets: tuple[str, ...] = (), replace: tuple[str, ...] = ()) -> None:
    saved = _read_saved(plan_file) if plan_file else None
    engine = _open(stack_file, concurrency=concurrency, timeout=timeout)
    out = console()
    try:
        conditions = _conditions(engine, targets, replace)
        with engine.state.writing() as writing, _coordinated(engine):
            planned = engine.plan(destroy=destroy, images=with_images, writing=True, conditions=conditions)
            the_plan = planned.plan
            if saved is not None:
                saved.check(the_plan)
            _refuse_blocked_or_paused(engine, planned, out)
            _check_replaced(planned, replace)
            doomed = planned.images_to_delete
            if planned.refusal is not None and the_plan.changes:  # e.g. etcd lost its quorum
                render.render_plan(the_plan, out, engine.stack.provider, engine.describe)
                fail(str(planned.refusal))
            if the_plan.empty:
                if destroy and not doomed and not the_plan.changes:
                    out.print(f"Nothing of stack [bold]{engine.stack.name}[/] exists; nothing to destroy.")
                elif destroy and doomed:
                    _delete_images(engine, planned, yes, out, writing.changing)
                else:  # nothing to do, or only held changes: show them and why
                    render.render_plan(the_plan, out, engine.stack.provider, engine.describe)
                return_code = 0
            else:
                render.render_plan(the_plan, out, engine.stack.provider, engine.describe)
                if doomed:
                    out.print("  [bold]# images[/] (--images)\n" + "\n".join(
                        f"  [red]  - {r.name}[/]  [dim]({r.id})[/]" for r in doomed))
                if saved is None:
                    _confirm("destroy these instances" if destroy else "apply these changes", yes)
                out.print()
                writing.changing()
                result = engine.apply(planned, reporter=ConsoleReporter(console(stderr=True)))
                if result.ok:
                    n = result.applied
                    pushed = (f"{len(the_plan.images)} image{'s' * (len(the_plan.images) != 1)} pushed, "
                              if the_plan.images else "")
                    held = f" ({len(the_plan.held)} held, not applied)" if the_plan.held else ""
                    out.print(f"\n[bold green]{'Destroy' if destroy else 'Apply'} complete:[/] "
                              f"{pushed}{len(n)} change{'s' * (len(n) != 1)} in {result.seconds:.1f}s{held}.")
                    if doomed:
                        _delete_images(engine, planned, True, out, writing.changing)
                    return_code = 0
                else:
                    quorum = result.quorum_lost
                    if quorum is not None:
                        console(stderr=True).print(f"[bold red]error:[/] {quorum}", markup=True)
                    else:
                        for change, err in result.failed:
                            console(stderr=True).print(
                                f"[bold red]error:[/] {change.action.value} {change.group}/{change.member}: {err}")
                    if result.skipped:
                        console(stderr=True).print(f"{len(result.skipped)} change(s) not attempted.")
                    return_code = 1
            if destroy and return_code == 0 and not the_plan.held:
                engine.state.remove()  # while the lock is still held: no second writer in between
    finally:
        engine.close()
    raise SystemExit(return_code)


def _refuse_blocked_or_paused(engine: Engine, planned: PlannedPass, out: Console) -> None:
    """Exit 1, changing nothing, when the plan would delete a protected group, or the stack is paused."""
    the_plan = planned.plan
    stack_pause = planned.paused.get("")
    if the_plan.blocked or (stack_pause is not None and the_plan.changes):
        render.render_plan(the_plan, out, engine.stack.provider, engine.describe)
        if the_plan.blocked:
            fail("refusing to apply this plan: " + "; ".join(the_plan.blocked) + ". Nothing was changed.")
        assert stack_pause is not None
        fail(f"stack {engine.stack.name!r}: {stack_pause.describe()}. Nothing was changed; "
             f"'infra resume {engine.source or engine.stack.name}' lifts the pause.")


def _check_replaced(planned: PlannedPass, replace: tuple[str, ...]) -> None:
    """Every ``--replace GROUP/MEMBER`` names an existing member of a declared group."""
    planned_replaces = {(c.group, c.member) for c in planned.plan.changes if c.reason.value == "replace requested"}
    for text in replace:
        group, _, member = text.partition("/")
        if (group, member) not in planned_replaces:
            members = sorted(i.member or "" for i in planned.observed.get(group, []))
            fail(f"--replace {text}: {group}/{member} is not a member of stack {planned.plan.stack!r} that can be "
                 f"replaced (members of {group}: {', '.join(members) or 'none'})")


def _read_saved(path: str) -> Any:
    """The plan saved in ``path`` (``plan --out``), as a :class:`~reconciler.core.plan.SavedPlan`."""
    from reconciler.core.errors import ConfigError
    from reconciler.core.plan import SavedPlan

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such plan file", hint="save one with: infra plan STACK --out FILE") from None
    except OSError as exc:
        raise ConfigError(f"{path}: not a plan file saved by 'infra plan --out': {exc}") from None
    return SavedPlan.parse(text, path)


def _pauses(stack_file: str, group: str | None) -> Any:
    """The stack's pauses, and ``group`` checked against its declaration (no provider is opened)."""
    from reconciler.engine.loader import load_stack
    from reconciler.engine.pause import Pauses
    from reconciler.engine.state import StateDir
    from reconciler.kit import coordination

    stack = load_stack(stack_file)
    if group is not None and group not in {g.name for g in stack.groups}:
        fail(f"--group {group}: no group {group!r} in stack {stack.name!r} "
             f"(groups: {', '.join(g.name for g in stack.groups) or 'none'})")
    return stack, Pauses(StateDir(stack.name), coordination.from_environment())


@cli.command()
@click.argument("stack_file", metavar="STACK")
@click.option("--group", help="Pause only this group (default: the whole stack).")
@click.option("--reason", required=True, help="Why: shown by plan, status, the daemon's log and page.")
@_debug_option
def pause(stack_file: str, group: str | None, reason: str) -> None:
    """Stop every writer from changing the stack (or one group): it is observed, planned and reported.

    Seen by 'infra apply' and the daemon from their next pass; a stopped or killed member is left
    as it is until 'infra resume'.
    """
    _, pauses = _pauses(stack_file, group)
    if not reason.strip():
        fail("--reason: say why the stack is paused (it is shown to everyone who looks)")
    made = pauses.pause(group or "", reason.strip())
    console().print(f"Paused: {made.describe()}. 'infra resume {stack_file}"
                    f"{f' --group {group}' if group else ''}' lifts it.")


@cli.command()
@click.argument("stack_file", metavar="STACK")
@click.option("--group", help="Resume only this group (default: the whole stack).")
@_debug_option
def resume(stack_file: str, group: str | None) -> None:
    """Lift a pause made by 'infra pause': writers change the stack (or group) again."""
    stack, pauses = _pauses(stack_file, group)
    lifted = pauses.resume(group or "")
    what = f"group {group} of stack {stack.name}" if group else f"stack {stack.name}"
    if lifted is None:
        console().print(f"{what.capitalize()} was not paused.")
        return
    console().print(f"Resumed {what} (it was paused since "
                    f"{lifted.describe().split(' paused since ', 1)[1]}).")


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
        whole = engine.stack_status()
    finally:
        engine.close()
    groups = whole.groups
    if as_json:
        doc = {
            "stack": engine.stack.name,
            "provider": engine.stack.provider,
            "paused": whole.paused,
            "undeclared": [u.to_json() for u in whole.undeclared],
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
                    "held": g.held,
                    "paused": g.paused,
                }
                for g in groups
            ],
        }
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    render.render_status(engine.stack.name, groups, console(), wide=wide, paused=whole.paused,
                         undeclared=[u.message for u in whole.undeclared])


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
    from reconciler.views import graph as drawing

    if fmt is None:
        suffix = (output or "").rsplit(".", 1)[-1].lower() if output and "." in output else ""
        fmt = suffix if suffix in ("svg", "png", "dot", "gv") else "svg"
        fmt = "dot" if fmt == "gv" else fmt
    if fmt == "png" and output is None and sys.stdout.isatty():
        fail("--format png writes binary data: pass -o FILE (or redirect the output)")
    engine = _open(stack_file)
    try:
        if with_plan:  # one pass: the picture shows what that plan observed
            planned = engine.plan(writing=False)
            groups, the_plan = engine.status_of_pass(planned), planned.plan
        else:
            groups, the_plan = engine.status(), None
        links = engine.links()
    finally:
        engine.close()
    picture = drawing.render(drawing.build(engine.stack.name, engine.stack.provider, groups, links,
                                           quorum=engine.quorum_groups, plan=the_plan), fmt)
    if output:
        with open(output, "wb") as fh:
            fh.write(picture)
        console(stderr=True).print(f"wrote {output} ({fmt}, {len(picture):,} bytes)")
    else:
        sys.stdout.buffer.write(picture)
        sys.stdout.flush()


def _delete_images(engine: Engine, planned: PlannedPass, yes: bool, out: Console,
                   changing: Callable[[], None]) -> None:
    doomed = planned.images_to_delete
    if not doomed:
        return
    names = ", ".join(r.name for r in doomed)
    _confirm(f"delete {len(doomed)} image{'s' * (len(doomed) != 1)} ({names})", yes)
    changing()
    engine.delete_images(planned, lambda record: out.print(f"  [red]-[/] image {record.name} deleted"))


# -- shared secrets ----------------------------------------------------------------------------


@cli.group()
def secrets() -> None:
    """The stack's CA and secrets, shared by writers on several machines (INFRA_COORDINATION)."""


@secrets.command("push")
@click.argument("stack_file", metavar="STACK")
def secrets_push(stack_file: str) -> None:
    """Move this machine's CA and secrets of STACK to the coordinating etcd (once).

    \b
      export INFRA_COORDINATION=etcd://10.0.0.5:2379 INFRA_SECRETS_KEY=$PWD/infra.key
      infra secrets push stacks/etcd-gcp.py
    Afterwards every machine's writers use that CA. Refused when the store holds another one.
    """
    from reconciler.engine.loader import load_stack
    from reconciler.engine.state import StateDir
    from reconciler.kit import secretstore
    from reconciler.kit.pki import StackCA

    stack = load_stack(stack_file)
    store = secretstore.from_environment()
    if store is None:
        fail("INFRA_COORDINATION is not set: name the coordinating etcd (etcd://HOST:PORT) to push to")
    state = StateDir(stack.name)
    ca = StackCA(state.path, create=False)
    if not ca.ca_key_path.exists():
        fail(f"stack {stack.name!r} has no CA on this machine ({ca.dir}): nothing to push")
    with state.lock(timeout=0):
        copied = ca.push(store)
    click.echo(f"stack {stack.name}: {', '.join(copied)} now shared in {store.where}")


# -- images ------------------------------------------------------------------------------------


@cli.group()
def image() -> None:
    """Build, push and list the LinuxKit images a stack's groups boot."""


def _image_engine(stack_file: str) -> Engine:
    engine = _open(stack_file)
    if not engine.stores_images:
        engine.close()
        fail(f"{stack_file}: provider {engine.stack.provider!r} runs no images "
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
    out = console()
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
    from reconciler.engine import imagebuild

    engine = _image_engine(stack_file)
    try:
        states = engine.images()
        out = console()
        for s in states:
            cached = s.artefact is not None
            path = imagebuild.build(s.spec, engine.image_root, log=lambda m: console(stderr=True).print(
                f"  {m}", markup=False))
            out.print(f"{s.spec.group}: {s.spec.name} {'cached' if cached else 'built'}: {path}")
    finally:
        engine.close()


@image.command("push")
@click.argument("stack_file", metavar="STACK")
@_debug_option
def image_push(stack_file: str) -> None:
    """Build (if needed) and push each group's image the provider lacks."""
    engine = _image_engine(stack_file)
    out = console()
    try:
        with engine.state.writing() as writing:
            states = engine.images()
            missing = [s.spec for s in states if not s.present]
            for s in states:
                if s.present:
                    out.print(f"{s.spec.group}: {s.spec.name} is present ({s.record.id if s.record else ''})")
            if missing:
                writing.changing()
            engine.push_images(missing, ConsoleReporter(console(stderr=True)))
            for spec in missing:
                out.print(f"{spec.group}: {spec.name} pushed")
    finally:
        engine.close()
    out.print(f"[bold green]Push complete:[/] {len(missing)} pushed, {len(states) - len(missing)} already present.")


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
        fail(f"{stack_file}: no role of this stack exports client settings")
    for key, value in variables.items():
        click.echo(f"export {key}={shlex.quote(value)}")


@cli.command()
@click.argument("cloud", metavar="CLOUD")
@click.option("--port", default=8089, show_default=True, type=click.IntRange(0, 65535),
              help="Port to serve the cloud's API on (0: any free port); on 127.0.0.1, or with --machines vm "
                   "on the emulated subnet's gateway.")
@click.option("--state", "state_dir", type=click.Path(file_okay=False),
              help="Directory for the emulator's instances (default: <state root>/emulator/CLOUD).")
@click.option("--machines", type=click.Choice(["process", "vm"]), default="process", show_default=True,
              help="What an instance boots as: the image's services as local processes, or a QEMU VM booting "
                   "the pushed disk (only in a private network namespace; see docs/emulator.md).")
@click.option("--vm-memory", default=512, show_default=True, type=click.IntRange(128, 65536),
              help="Memory of each VM, MiB (--machines vm).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- COMMAND...]")
@_debug_option
def emulator(cloud: str, port: int, state_dir: str | None, machines: str, vm_memory: int,
             command: tuple[str, ...]) -> None:
    """Run an emulated cloud on this machine whose instances boot: gcp or aws.

    \b
    It prints the exports a client needs, then '# ready':
      infra emulator gcp > gcp.env &     (or: infra emulator aws > aws.env &)
      . ./gcp.env; infra apply stacks/etcd-gcp.py --yes
    SIGTERM or Ctrl-C stops every instance it booted.

    \b
    With a COMMAND after '--', it makes a private network namespace, runs the emulator there and
    COMMAND beside it with the exports set, and stops the emulator when COMMAND ends:
      infra emulator gcp --machines vm -- bash
    """
    from pathlib import Path

    from reconciler.kit import registry
    from reconciler.kit.paths import state_root

    run = registry.emulator(cloud)
    state = Path(state_dir) if state_dir else state_root() / "emulator" / cloud
    if command:
        from reconciler.cli.namespace import run_beside

        raise SystemExit(run_beside(cloud, port, state, machines, vm_memory, list(command)))
    raise SystemExit(run(port, state, machines=machines, vm_memory=vm_memory))


