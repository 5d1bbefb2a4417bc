"""Errors a user can fix, and the documented exit codes.

Every problem the user can act on is a `TunegateError`: it names the file, the line (or row) and
the field when they are known, so the CLI can print one clear line instead of a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit codes (README "Exit codes"). Verdict codes are distinct so pipelines can gate."""

    PROMPT = 0
    OK = 0
    USAGE = 2
    BAD_INPUT = 3
    BAD_RULES = 4
    GATE_REFUSED = 5
    BACKEND = 6
    BUDGET = 7
    FILES = 8
    FEW_SHOT = 10
    FINE_TUNE = 11
    COLLECT_DATA = 12
    INCONCLUSIVE = 13
    VETOED = 14  # train: the fine-tuned model did not verify against the best prompting arm
    INTERRUPTED = 130
    BROKEN_PIPE = 141  # stdout or stderr's reader went away (`| head -1`): the shell's code for SIGPIPE
    INTERNAL = 70


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one place in one file."""

    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        field = f"field '{self.field}': " if self.field else ""
        return f"{where}{field}{self.message}"


class TunegateError(Exception):
    """A problem the user can fix. Carries one or more `Problem`s and the exit code to use."""

    exit_code: ExitCode = ExitCode.BAD_INPUT

    def __init__(
        self,
        message: str | None = None,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        problems: list[Problem] | None = None,
    ) -> None:
        if problems is None:
            problems = [Problem(message or "error", file=file, line=line, field=field)]
        self.problems = problems
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class DataError(TunegateError):
    exit_code = ExitCode.BAD_INPUT


class ConfigError(TunegateError):
    exit_code = ExitCode.USAGE


class RulesError(TunegateError):
    exit_code = ExitCode.BAD_RULES


class GateError(TunegateError):
    exit_code = ExitCode.GATE_REFUSED


class BackendError(TunegateError):
    exit_code = ExitCode.BACKEND


class BudgetError(TunegateError):
    exit_code = ExitCode.BUDGET


class FilesError(TunegateError):
    """A file or folder cannot be written (or read) because of the environment: permissions, a full
    disk, a read-only file system, a path that is a file where a folder is needed."""

    exit_code = ExitCode.FILES


class DeprecatedSetting(UserWarning):
    """A setting or flag given by its old name (still read for one release); the CLI prints it as one
    line on stderr, `tunegate: warning: ...`."""
