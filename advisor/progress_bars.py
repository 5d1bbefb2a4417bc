"""The terminal edge of `advisor.progress`: one rich bar with ETA per stage, on stderr.

Only the command-line entry points import this module (rich stays out of the measurement code).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from advisor import progress


class RichReporter:
    """A bar per stage, created when the stage first reports and left on screen when it finishes."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[detail]}"),
            console=self.console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.stages: list[str] = []  # every stage shown, in order (tests read it)

    def update(self, stage: str, done: int, total: int | None, detail: str = "") -> None:
        task = self.tasks.get(stage)
        if task is None:
            task = self.progress.add_task(stage, total=total, completed=done, detail=detail)
            self.tasks[stage] = task
            self.stages.append(stage)
        else:
            self.progress.update(task, total=total, completed=done, detail=detail)
        if total is not None and done >= total:
            del self.tasks[stage]  # the same stage name later (a re-run of an arm) gets a new bar

    def note(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False)

    @contextmanager
    def shown(self) -> Iterator[RichReporter]:
        with self.progress:
            yield self


@contextmanager
def shown(*, quiet: bool = False, bars: bool = True) -> Iterator[progress.Reporter]:
    """Install the reporter for a command: nothing with `quiet`, rich bars when `bars` and stderr is a
    terminal, else one line per finished stage."""
    reporter: progress.Reporter
    if quiet:
        reporter = progress.SilentReporter()
    elif bars and sys.stderr.isatty() and os.environ.get("TERM") != "dumb":
        rich_reporter = RichReporter()
        with rich_reporter.shown(), progress.reporting(rich_reporter):
            yield rich_reporter
        return
    else:
        reporter = progress.LineReporter()
    with progress.reporting(reporter):
        yield reporter
