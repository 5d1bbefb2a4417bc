"""Data intake: read task data in any supported format and normalise it into `Example`s.

Formats (detected per file from the first record that parses as a JSON object; `fmt` forces one):

- ``chat``: OpenAI chat JSONL, ``{"messages": [{"role": ..., "content": ...}, ...]}``. Roles are
  system/user/assistant, plus OpenAI's ``developer`` (read as system) and ``tool``; the last turn must be
  the assistant's and is the target; the earlier turns are the input and must contain a user turn.
  ``content`` is a string or OpenAI's list of parts, ``[{"type": "text", "text": ...}, ...]``, whose
  texts are joined with no separator; a part of any other type (an image, audio, a file) is an error
  naming it, because tunegate benchmarks text.
- ``sharegpt``: ``{"conversations": [{"from": ..., "value": ...}, ...]}`` with ``from`` one of
  system, human/user, gpt/assistant or tool; read exactly as ``chat``.
- ``prompt_completion``: ``{"prompt": ..., "completion": ...}``; a text prompt becomes the user turn.
  TRL's conversational form, where both are lists of chat messages, is read too: the prompt's turns are
  the input, and the completion must hold one assistant turn, the target.

Tool turns (the rule for every conversational format): tunegate benchmarks text prompting, so ``tool``
turns, and assistant turns that only call tools (``tool_calls`` with no text content), are dropped from
the input. A task whose answers depend on tool results will therefore look harder for prompting than it
is; put the results into the user turn if they matter.
- ``alpaca``: ``{"instruction": ..., "input": ..., "output": ...}``; ``input`` is optional; the user turn
  is the instruction, followed by a blank line and the input when the input is not empty.
- ``table``: CSV, TSV, Parquet, or JSONL of flat records. One column is the input (the user turn), one is
  the target. Without ``input_col``/``output_col`` the first column found among `INPUT_COLUMN_GUESSES`
  (and `OUTPUT_COLUMN_GUESSES`, both in tables.py) is used, by exact name and then case-insensitively.
  Numbers and booleans in a table cell are turned into text (labels are often 0/1).

A Hugging Face `datasets` dataset is read too: a `save_to_disk` folder, or a Hub dataset id (from the
datasets cache, downloaded unless HF_HUB_OFFLINE is set), one split (`split`, default `train`), with the
table rules for its columns; `ClassLabel` integers become their class names (advisor/intake/hfdata.py).

The container comes from the file extension: ``.jsonl``, ``.ndjson`` and ``.json`` are JSON Lines,
``.csv`` and ``.tsv`` are delimited text with a header row (standard double-quote quoting), ``.parquet``
is Parquet. JSON Lines and delimited text are streamed one line at a time, Parquet one batch at a time,
so memory stays bounded by the longest record (`MAX_LINE_BYTES`), not the file.

Input rules: a UTF-8 byte-order mark at the start of the file is accepted silently; blank lines are
skipped; a missing or empty input field is an error, while an empty *target* is accepted and counted by
the audit (`empty_target_count`), because it is a data-quality finding rather than a malformed record.
Every problem names the file, the line (JSON Lines; for tables the data row and the line it ends on) and
the field. `load_examples` reports up to `MAX_PROBLEMS` problems in one `DataError`, then stops reading.

This module holds the entry points, the line reader, and the JSON Lines reader that detects each file's
format; `records.py` turns one JSON record of each format into an `Example`, `tables.py` reads CSV, TSV
and Parquet and picks the input and target columns, and `reading.py` holds the little the three share.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from advisor.errors import ConfigError, DataError, Problem
from advisor.files import check_regular, open_regular
from advisor.intake import hfdata, records, tables
from advisor.intake.reading import ReadState, type_name
from advisor.intake.tables import OUTPUT_COLUMN_GUESSES
from advisor.textsafe import surrogate_path
from advisor.types import Example, TaskKind

MAX_PROBLEMS = 20
"""Problems collected before `load_examples` stops reading and raises one `DataError` listing them."""

MAX_LINE_BYTES = 64 * 1024 * 1024
"""Longest accepted JSON Lines / CSV line; a longer one is reported (and skipped) without reading it whole."""

FORMATS = ("chat", "sharegpt", "prompt_completion", "alpaca", "table")
JSONL_EXTENSIONS = (".jsonl", ".ndjson", ".json")
TABLE_EXTENSIONS = (".csv", ".tsv", ".parquet")

# Task detection: targets form a small closed label set when all of these hold (see `detect_task`).
MAX_LABELS = 20
"""At most this many distinct (stripped, non-empty) targets."""
MAX_LABEL_WORDS = 4
"""Every distinct target has at most this many whitespace-separated words..."""
MAX_LABEL_CHARS = 40
"""...and at most this many characters."""
MIN_EXAMPLES_PER_LABEL = 5
"""Targets repeat: the distinct count is at most n / 5 (at least 2 labels are always allowed)."""


@dataclass(frozen=True)
class LoadedData:
    """A whole data file, validated and normalised."""

    path: str
    fmt: str
    examples: tuple[Example, ...]
    sha256: str
    n_records: int


class _Full(Exception):
    """Raised inside the readers when the problem list is full, to stop reading."""


@dataclass(frozen=True)
class Chunk:
    """A byte range of a JSON Lines file that starts on a line boundary, with what the whole file's
    first record decided (format, columns), so ranges can be read in parallel (`jsonl_chunks`)."""

    start: int
    end: int
    first_line: int
    fmt: str
    fmt_line: int
    columns: tuple[str, str] | None


def iter_examples(
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    input_col: str | None = None,
    output_col: str | None = None,
    problems: list[Problem] | None = None,
    max_problems: int = MAX_PROBLEMS,
    chunk: Chunk | None = None,
) -> Iterator[Example]:
    """Stream the examples of one data file (or of one `Chunk` of a JSON Lines file).

    Without `problems`, the first malformed record raises `DataError`. With a list, each malformed record
    appends a `Problem` and is skipped; reading stops (the iterator ends) once the list holds
    `max_problems`. Problems with the file as a whole (missing, a directory, empty, unknown extension,
    missing table columns) always raise at once.
    """
    state = ReadState()
    if chunk is not None:
        state = ReadState(fmt=chunk.fmt, fmt_line=chunk.fmt_line, columns=chunk.columns)
    return _iter(path, state, fmt, input_col, output_col, problems, max_problems, chunk)


def jsonl_chunks(
    path: str | os.PathLike[str],
    parts: int,
    *,
    fmt: str | None = None,
    input_col: str | None = None,
    output_col: str | None = None,
) -> list[Chunk]:
    """Cut a JSON Lines file into about `parts` ranges of whole lines, each knowing its first line number.

    Returns [] when the file is not JSON Lines or holds no JSON object to take the format from; read it
    whole then (`iter_examples` reports why).
    """
    p = Path(path)
    if p.suffix.lower() not in JSONL_EXTENSIONS or not p.is_file() or parts < 1:
        return []
    sniffed = _sniff_jsonl(p, fmt, input_col, output_col)
    if sniffed is None:
        return []
    fmt, fmt_line, columns = sniffed
    size = p.stat().st_size
    bounds = [0]
    with open_regular(p, DataError, "data file") as fh:
        for k in range(1, parts):
            fh.seek(max(bounds[-1], size * k // parts))
            while (rest := fh.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass  # to the end of the line, a MiB at a time
            if fh.tell() < size and fh.tell() > bounds[-1]:
                bounds.append(fh.tell())
        bounds.append(size)
        first_lines = [1]
        fh.seek(0)
        for bound in bounds[1:-1]:
            first_lines.append(first_lines[-1] + _count_newlines(fh, bound - fh.tell()))
    return [
        Chunk(start=a, end=b, first_line=first, fmt=fmt, fmt_line=fmt_line, columns=columns)
        for a, b, first in zip(bounds[:-1], bounds[1:], first_lines, strict=True)
    ]


def _count_newlines(fh: Any, n: int) -> int:
    count = 0
    while n > 0:
        block = fh.read(min(n, 1 << 20))
        if not block:
            break
        count += block.count(b"\n")
        n -= len(block)
    return count


def _sniff_jsonl(
    p: Path, fmt: str | None, input_col: str | None, output_col: str | None
) -> tuple[str, int, tuple[str, str] | None] | None:
    """(format, its line, table columns) from the first line that is a JSON object, or None."""
    if fmt is None and (input_col is not None or output_col is not None):
        fmt = "table"
    with open_regular(p, DataError, "data file") as fh:
        lineno = 0
        while raw := fh.readline(MAX_LINE_BYTES + 1):
            lineno += 1
            try:
                obj, _ = parse_json_line(raw.decode("utf-8-sig" if lineno == 1 else "utf-8"))
            except UnicodeDecodeError:
                continue
            if isinstance(obj, dict):
                fmt = fmt or _kind(obj) or "table"
                columns = None
                if fmt == "table":
                    columns = tables.resolve_columns(list(obj), input_col, output_col, str(p), lineno)
                return fmt, lineno, columns
    return None


def load_examples(
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    input_col: str | None = None,
    output_col: str | None = None,
    max_problems: int = MAX_PROBLEMS,
    split: str | None = None,
) -> LoadedData:
    """Read and validate a whole file (or a `datasets` dataset's `split`); raise one `DataError` listing
    up to `max_problems` problems."""
    if hfdata.is_dataset(str(path)):
        if fmt not in (None, "table"):
            raise ConfigError(
                f"format '{fmt}' does not apply to a `datasets` dataset", file=str(path), field="format"
            )
        return _load_dataset(str(path), split, input_col, output_col, max_problems)
    if split is not None:
        raise ConfigError(
            "--split is for a `datasets` dataset (a save_to_disk folder or a Hub id)", field="split"
        )
    problems: list[Problem] = []
    state = ReadState()
    try:
        examples = tuple(_iter(path, state, fmt, input_col, output_col, problems, max_problems))
    except DataError as exc:
        # A whole-file finding after record problems (say, "no data rows" when every row was bad)
        # is reported after them, so the record problems are not lost.
        raise DataError(problems=problems + exc.problems) from None
    _raise_problems(problems, max_problems, str(path))
    return LoadedData(
        path=str(path),
        fmt=state.fmt or "",
        examples=examples,
        sha256=file_sha256(path),
        n_records=state.n_records,
    )


def _raise_problems(problems: list[Problem], max_problems: int, name: str) -> None:
    if problems:
        if len(problems) >= max_problems:
            problems.append(
                Problem(f"stopped reading after {max_problems} problems; fix these and run again", file=name)
            )
        raise DataError(problems=problems)


def _load_dataset(
    source: str, split: str | None, input_col: str | None, output_col: str | None, max_problems: int
) -> LoadedData:
    """One split of a `datasets` dataset, read as a table; its sha256 is of the rows read (input and
    output per row, class names already applied), since a dataset is no single file."""
    opened = hfdata.open_dataset(source, split)
    columns = tables.resolve_columns(list(opened.columns), input_col, output_col, opened.name, None)
    for column in columns:
        opened.check_text(column)
    digest = hashlib.sha256()
    problems: list[Problem] = []
    examples: list[Example] = []
    n = 0
    for n, (text, target) in enumerate(opened.rows(*columns), start=1):
        digest.update(json.dumps([text, target], ensure_ascii=False, default=str).encode() + b"\n")
        row = {columns[0]: text, columns[1]: target}
        result = tables.from_row(row, columns, opened.name, n, n, where=f"row {n}: ")
        if isinstance(result, Problem):
            problems.append(result)
            if len(problems) >= max_problems:
                break
        else:
            examples.append(result)
    if n == 0:
        raise DataError("the split has no rows", file=opened.name)
    _raise_problems(problems, max_problems, opened.name)
    return LoadedData(
        path=source, fmt="datasets", examples=tuple(examples), sha256=digest.hexdigest(), n_records=n
    )


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open_regular(path, DataError, "data file") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def detect_task(examples: Iterable[Example]) -> tuple[TaskKind, tuple[str, ...]]:
    """Classification when the stripped targets come from a small closed set, else generation.

    Classification needs all of: at least 2 and at most `MAX_LABELS` (20) distinct non-empty stripped
    targets; each of them at most `MAX_LABEL_WORDS` (4) words and `MAX_LABEL_CHARS` (40) characters; and
    repetition, i.e. the distinct count is at most n / `MIN_EXAMPLES_PER_LABEL` (n / 5), but 2 labels are
    always allowed. Empty targets are ignored here (the audit counts them). Labels come back sorted.
    The CLI's ``--task`` overrides the result.
    """
    counts = LabelCounter()
    for ex in examples:
        counts.add(ex.target)
    return counts.decide()


class LabelCounter:
    """Streaming state for `detect_task`: counts distinct targets until there are too many to be labels."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.n = 0
        self.overflow = False

    def add(self, target: str) -> None:
        self.n += 1
        if self.overflow:
            return
        label = target.strip()
        if not label:
            return
        if label not in self.counts and (
            len(self.counts) >= MAX_LABELS
            or len(label) > MAX_LABEL_CHARS
            or len(label.split()) > MAX_LABEL_WORDS
        ):
            self.overflow = True
            self.counts.clear()
            return
        self.counts[label] += 1

    def merge(self, other: LabelCounter) -> None:
        """Add another counter's targets (from another part of the same data)."""
        self.n += other.n
        if not self.overflow and not other.overflow:
            self.counts.update(other.counts)
        if other.overflow or len(self.counts) > MAX_LABELS:
            self.overflow = True
            self.counts.clear()

    def decide(self) -> tuple[TaskKind, tuple[str, ...]]:
        distinct = len(self.counts)
        if self.overflow or distinct < 2 or distinct > max(2, self.n // MIN_EXAMPLES_PER_LABEL):
            return TaskKind.GENERATE, ()
        return TaskKind.CLASSIFY, tuple(sorted(self.counts))


def with_labels(examples: Iterable[Example], labels: Iterable[str]) -> tuple[Example, ...]:
    """Set `Example.label` to the stripped target when it is one of `labels` (else None)."""
    allowed = set(labels)
    out = []
    for ex in examples:
        label = ex.target.strip()
        out.append(replace(ex, label=label if label in allowed else None))
    return tuple(out)


# ---------------------------------------------------------------------------------------------------
# Readers


def _iter(
    path: str | os.PathLike[str],
    state: ReadState,
    fmt: str | None,
    input_col: str | None,
    output_col: str | None,
    problems: list[Problem] | None,
    max_problems: int,
    chunk: Chunk | None = None,
) -> Iterator[Example]:
    name = str(path)
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"unknown format '{fmt}'; expected one of {', '.join(FORMATS)}", field="format")
    p = Path(path)
    if not p.exists():
        raise DataError("no such file", file=name)
    check_regular(p, DataError, "data file")
    ext = p.suffix.lower()
    if ext not in JSONL_EXTENSIONS + TABLE_EXTENSIONS:
        shown = f"'{p.suffix}'" if p.suffix else "none"
        known = ", ".join(JSONL_EXTENSIONS + TABLE_EXTENSIONS)
        raise DataError(
            f"unknown file extension ({shown}); expected one of {known}",
            file=name,
        )
    if ext in TABLE_EXTENSIONS and fmt not in (None, "table"):
        raise ConfigError(f"format '{fmt}' needs a JSON Lines file, not {ext}", field="format")

    def report(problem: Problem) -> None:
        if problems is None:
            raise DataError(problems=[problem])
        problems.append(problem)
        if len(problems) >= max_problems:
            raise _Full

    try:
        if ext in JSONL_EXTENSIONS:
            yield from _iter_jsonl(p, name, state, fmt, input_col, output_col, report, chunk)
        elif chunk is not None:
            raise ConfigError("byte ranges (chunks) are for JSON Lines files only", field="chunk")
        elif ext == ".parquet":
            state.fmt = "table"
            yield from tables.iter_parquet(p, name, state, input_col, output_col, report)
        else:
            state.fmt = "table"
            with open_regular(p, DataError, "data file") as fh:
                yield from tables.iter_delimited(
                    (text for _, text in _raw_lines(fh, name, state, report)),
                    name,
                    state,
                    "\t" if ext == ".tsv" else ",",
                    input_col,
                    output_col,
                    report,
                    max_field=MAX_LINE_BYTES,
                )
    except _Full:
        return


def _raw_lines(
    fh: Any,
    name: str,
    state: ReadState,
    report: Callable[[Problem], None],
    lineno: int = 0,
    end: int | None = None,
) -> Iterator[tuple[int, str]]:
    """(line number, decoded text) for every line (up to byte `end`, numbered after `lineno`);
    undecodable or over-long lines are reported (and counted as records, so a file of only such lines
    is not called empty)."""
    while True:
        if end is not None and fh.tell() >= end:
            return
        raw = fh.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while chunk := fh.readline(1 << 20):
                if chunk.endswith(b"\n"):
                    break
            state.n_records += 1
            report(Problem(f"line longer than {MAX_LINE_BYTES:,} bytes; skipped", file=name, line=lineno))
            continue
        if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            state.n_records += 1
            report(
                Problem(
                    f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line); "
                    "save the file as UTF-8",
                    file=name,
                    line=lineno,
                )
            )
            continue
        yield lineno, text


MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects accepted in one JSON Lines record (real records use < 10)."""

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_json_line(text: str) -> tuple[Any, str | None]:
    """(value, None) for one line of JSON, or (None, why not): invalid, nested deeper than
    `MAX_JSON_DEPTH`, or holding a number too large to read. Never raises for bad input."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} (column {exc.colno})"
    except RecursionError:  # deeper than the parser itself can go
        return None, f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels"
    except ValueError as exc:  # an integer of thousands of digits (sys.get_int_max_str_digits)
        first = str(exc).split(":")[0]
        return None, f"invalid JSON: a number is too large to read ({first})"
    # Only a line with many brackets can be deep; counting them is cheap, walking is not.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _too_deep(value):
        return None, f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels"
    return value, None


def _too_deep(value: Any) -> bool:
    """Whether arrays and objects nest deeper than `MAX_JSON_DEPTH`: one level at a time, no recursion."""
    level = [value]
    for _ in range(MAX_JSON_DEPTH):
        level = [
            child
            for node in level
            for child in (node.values() if type(node) is dict else node)
            if type(child) is list or type(child) is dict
        ]
        if not level:
            return False
    return True


def _kind(obj: dict[str, Any]) -> str | None:
    """The record format a JSON object looks like, or None for a plain flat record (a table row)."""
    if "messages" in obj:
        return "chat"
    if "conversations" in obj:
        return "sharegpt"
    if "instruction" in obj:
        return "alpaca"
    if "completion" in obj or ("prompt" in obj and not any(k in obj for k in OUTPUT_COLUMN_GUESSES)):
        return "prompt_completion"
    return None


def _iter_jsonl(
    p: Path,
    name: str,
    state: ReadState,
    fmt: str | None,
    input_col: str | None,
    output_col: str | None,
    report: Callable[[Problem], None],
    chunk: Chunk | None = None,
) -> Iterator[Example]:
    if fmt is None and (input_col is not None or output_col is not None):
        fmt = "table"
    fmt = state.fmt or fmt
    first_line = state.fmt_line
    columns = state.columns
    with open_regular(p, DataError, "data file") as fh:
        if chunk is not None:
            fh.seek(chunk.start)
        lines = (
            _raw_lines(fh, name, state, report)
            if chunk is None
            else _raw_lines(fh, name, state, report, chunk.first_line - 1, chunk.end)
        )
        for lineno, text in lines:
            if text.isspace() or not text:
                continue
            state.n_records += 1
            obj, error = parse_json_line(text)
            if error is not None:
                limit = error.endswith(" levels") or "too large" in error  # not a syntax slip
                hint = (
                    _ARRAY_HINT
                    if state.n_records == 1 and text.lstrip().startswith("[") and not limit
                    else ""
                )
                report(Problem(f"{error}{hint}", file=name, line=lineno))
                continue
            bad = surrogate_path(obj) if _SURROGATE_ESCAPE.search(text) else None
            if bad is not None:
                report(
                    Problem(
                        "holds a lone UTF-16 surrogate escape (such as \\ud800), which is not valid "
                        "Unicode text; fix the escape or re-export the file",
                        file=name,
                        line=lineno,
                        field=bad,
                    )
                )
                continue
            if not isinstance(obj, dict):
                hint = _ARRAY_HINT if state.n_records == 1 and isinstance(obj, list) else ""
                report(
                    Problem(
                        f"wrong type: expected a JSON object, got {type_name(obj)}{hint}",
                        file=name,
                        line=lineno,
                    )
                )
                continue
            kind = _kind(obj)
            if fmt is None:
                fmt = kind or "table"
            if state.fmt is None:
                state.fmt = fmt
                first_line = lineno
            if fmt == "table":
                if columns is None:
                    columns = tables.resolve_columns(list(obj), input_col, output_col, name, lineno)
                if kind is not None and not all(c in obj for c in columns):
                    report(_mixed(name, lineno, kind, fmt, first_line))
                    continue
                result = tables.from_row(obj, columns, name, lineno, lineno)
            elif kind is not None and kind != fmt:
                report(_mixed(name, lineno, kind, fmt, first_line))
                continue
            elif fmt == "chat":
                result = records.from_chat(obj, name, lineno)
            elif fmt == "sharegpt":
                result = records.from_sharegpt(obj, name, lineno)
            elif fmt == "prompt_completion":
                result = records.from_prompt_completion(obj, name, lineno)
            else:
                result = records.from_alpaca(obj, name, lineno)
            if isinstance(result, Problem):
                report(result)
            else:
                yield result
    if state.n_records == 0 and chunk is None:
        raise DataError("the file is empty (no records)", file=name)


_ARRAY_HINT = "; the file looks like one JSON array, but it must be JSON Lines (one object per line)"


def _mixed(name: str, lineno: int, kind: str | None, fmt: str, first_line: int) -> Problem:
    return Problem(
        f"mixed formats: this record looks like {kind or 'a table row'}, but the file's format is {fmt} "
        f"(from line {first_line}); use one format per file",
        file=name,
        line=lineno,
    )
