"""The progress of an apply on the console: what the executor reports, drawn for a person.

Made by the writing commands (:mod:`reconciler.cli.commands`) and handed to the engine as its
:class:`~reconciler.engine.executor.Reporter`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reconciler.cli.render import STYLE

if TYPE_CHECKING:
    from rich.console import Console

    from reconciler.core.plan import Plan


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

        self._total = len(plan.actionable)
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
            done = {"create": "created", "delete": "deleted", "replace": "replaced",
                    "update": "updated in place"}[change.action.value]
            style = STYLE[change.action.value]
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
