"""Progress of the long stages, reported through one small protocol; how it is shown is the edge's choice.

The measurement and training code call `report(stage, done, total)` as work finishes and `note(text)`
for a one-off message; neither imports rich. The command line installs a `Reporter` for the run with
`reporting(...)`: rich bars on a terminal (advisor/progress_bars.py), one line per finished stage
otherwise (`LineReporter`), nothing with `-q` (`SilentReporter`). Without an installed reporter
(the Python API) progress is dropped and notes go to stderr.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol


class Reporter(Protocol):
    def update(self, stage: str, done: int, total: int | None, detail: str = "") -> None:
        """`done` of `total` units of `stage` are finished (`total` None: unknown, shown as elapsed time)."""
        ...

    def note(self, text: str) -> None:
        """A one-line message for the user (not a result)."""
        ...


_current: ContextVar[Reporter | None] = ContextVar("tunegate_progress", default=None)


def report(stage: str, done: int, total: int | None, detail: str = "") -> None:
    reporter = _current.get()
    if reporter is not None:
        reporter.update(stage, done, total, detail)


def note(text: str) -> None:
    reporter = _current.get()
    if reporter is None:
        print(text, file=sys.stderr, flush=True)
    else:
        reporter.note(text)


def installed() -> bool:
    """Whether a reporter is installed (an entry point already chose how progress is shown)."""
    return _current.get() is not None


@contextmanager
def reporting(reporter: Reporter) -> Iterator[Reporter]:
    token = _current.set(reporter)
    try:
        yield reporter
    finally:
        _current.reset(token)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """One step of unknown length (loading or converting a model): reported started, then finished."""
    report(name, 0, 1)
    yield
    report(name, 1, 1)


class SilentReporter:
    """`-q`: nothing but the result."""

    def update(self, stage: str, done: int, total: int | None, detail: str = "") -> None:
        pass

    def note(self, text: str) -> None:
        pass


class LineReporter:
    """Not a terminal (a log file, CI): one line per finished stage, with its duration; no bars."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    def update(self, stage: str, done: int, total: int | None, detail: str = "") -> None:
        start = self._started.setdefault(stage, time.monotonic())
        if total is not None and done >= total:
            seconds = time.monotonic() - start
            extra = f", {detail}" if detail else ""
            print(f"  {stage}: {done}/{total} done in {seconds:.1f} s{extra}", file=sys.stderr, flush=True)
            del self._started[stage]

    def note(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)
