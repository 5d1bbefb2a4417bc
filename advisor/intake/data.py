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
  (and `OUTPUT_COLUMN_GUESSES`) is used, by exact name and then case-insensitively. Numbers and booleans
  in a table cell are turned into text (labels are often 0/1).

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
"""

from __future__ import annotations

import codecs
import csv
import functools
import hashlib
import json
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from advisor.errors import ConfigError, DataError, Problem
from advisor.files import check_regular, open_regular
from advisor.intake import hfdata
from advisor.report.textsafe import surrogate_path
from advisor.types import ROLES, Example, Message, TaskKind

MAX_PROBLEMS = 20
"""Problems collected before `load_examples` stops reading and raises one `DataError` listing them."""

MAX_LINE_BYTES = 64 * 1024 * 1024
"""Longest accepted JSON Lines / CSV line; a longer one is reported (and skipped) without reading it whole."""

FORMATS = ("chat", "sharegpt", "prompt_completion", "alpaca", "table")
JSONL_EXTENSIONS = (".jsonl", ".ndjson", ".json")
TABLE_EXTENSIONS = (".csv", ".tsv", ".parquet")

INPUT_COLUMN_GUESSES = ("text", "input", "prompt", "question", "sentence")
OUTPUT_COLUMN_GUESSES = ("label", "output", "target", "completion", "answer", "category")

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


@dataclass
class _State:
    """What a reader learns while it streams: the detected format and how many records it saw."""

    fmt: str | None = None
    n_records: int = 0
    fmt_line: int = 0  # the line of the record the format was detected from
    columns: tuple[str, str] | None = None  # tables: (input column, output column)


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
    state = _State()
    if chunk is not None:
        state = _State(fmt=chunk.fmt, fmt_line=chunk.fmt_line, columns=chunk.columns)
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
                    columns = _resolve_columns(list(obj), input_col, output_col, str(p), lineno)
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
    state = _State()
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
    columns = _resolve_columns(list(opened.columns), input_col, output_col, opened.name, None)
    for column in columns:
        opened.check_text(column)
    digest = hashlib.sha256()
    problems: list[Problem] = []
    examples: list[Example] = []
    n = 0
    for n, (text, target) in enumerate(opened.rows(*columns), start=1):
        digest.update(json.dumps([text, target], ensure_ascii=False, default=str).encode() + b"\n")
        row = {columns[0]: text, columns[1]: target}
        result = _from_row(row, columns, opened.name, n, n, where=f"row {n}: ")
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
    state: _State,
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
            yield from _iter_parquet(p, name, state, input_col, output_col, report)
        else:
            state.fmt = "table"
            yield from _iter_delimited(
                p, name, state, "\t" if ext == ".tsv" else ",", input_col, output_col, report
            )
    except _Full:
        return


def _raw_lines(
    fh: Any,
    name: str,
    state: _State,
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


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    )


def _iter_jsonl(
    p: Path,
    name: str,
    state: _State,
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
                        f"wrong type: expected a JSON object, got {_type_name(obj)}{hint}",
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
                    columns = _resolve_columns(list(obj), input_col, output_col, name, lineno)
                if kind is not None and not all(c in obj for c in columns):
                    report(_mixed(name, lineno, kind, fmt, first_line))
                    continue
                result = _from_row(obj, columns, name, lineno, lineno)
            elif kind is not None and kind != fmt:
                report(_mixed(name, lineno, kind, fmt, first_line))
                continue
            elif fmt == "chat":
                result = _from_chat(obj, name, lineno)
            elif fmt == "sharegpt":
                result = _from_conversation(obj, "conversations", _SHAREGPT, name, lineno)
            elif fmt == "prompt_completion":
                result = _from_prompt_completion(obj, name, lineno)
            else:
                result = _from_alpaca(obj, name, lineno)
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


def _text_field(
    obj: dict[str, Any],
    key: str,
    field: str,
    name: str,
    line: int,
    *,
    allow_empty: bool = False,
    required: bool = True,
) -> str | Problem:
    if key not in obj or (obj[key] is None and not required):
        if required:
            return Problem("missing", file=name, line=line, field=field)
        return ""
    value = obj[key]
    if not isinstance(value, str):
        return Problem(
            f"wrong type: expected a string, got {_type_name(value)}", file=name, line=line, field=field
        )
    if not allow_empty and not value.strip():
        return Problem("empty", file=name, line=line, field=field)
    return value


_ROLE_SET = frozenset(ROLES)


def _from_chat(obj: dict[str, Any], name: str, line: int) -> Example | Problem:
    """The common case, checked with as little work per turn as possible; anything odd goes to the
    detailed check, which names the problem."""
    msgs = obj.get("messages")
    if type(msgs) is list and len(msgs) >= 2:
        last = msgs[-1]
        if type(last) is dict and last.get("role") == "assistant" and type(last.get("content")) is str:
            turns = []
            user = False
            for m in msgs[:-1]:
                if type(m) is not dict:
                    break
                role, content = m.get("role"), m.get("content")
                if type(role) is not str or role not in _ROLE_SET or type(content) is not str:
                    break
                if not content or content.isspace():
                    break
                if role == "user":
                    user = True
                    turns.append(Message(role, content))
                else:
                    turns.append(_shared_message(role, content))
            else:
                if user:
                    return Example(line=line, messages=tuple(turns), target=last["content"])
    return _check_chat(obj, name, line)


@functools.lru_cache(maxsize=1024)
def _shared_message(role: str, content: str) -> Message:
    """System prompts and shared history repeat on every record: build each such turn once."""
    return Message(role, content)


@dataclass(frozen=True)
class _Dialect:
    """How one conversational format spells a turn: its keys and its role names (mapped to ours)."""

    role_key: str
    content_key: str
    roles: dict[str, str]  # the format's role name -> system/user/assistant, or "tool" (dropped)


_TOOL = "tool"
_OPENAI = _Dialect(
    "role",
    "content",
    {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": _TOOL},
)
_SHAREGPT = _Dialect(
    "from",
    "value",
    {
        "system": "system",
        "human": "user",
        "user": "user",
        "gpt": "assistant",
        "assistant": "assistant",
        "tool": _TOOL,
    },
)


def _check_chat(obj: dict[str, Any], name: str, line: int) -> Example | Problem:
    return _from_conversation(obj, "messages", _OPENAI, name, line)


def _from_conversation(
    obj: dict[str, Any], key: str, dialect: _Dialect, name: str, line: int
) -> Example | Problem:
    """A record holding one conversation: its last turn (the assistant's) is the target."""
    msgs = obj.get(key)
    if msgs is None:
        return Problem("missing", file=name, line=line, field=key)
    turns = _turns(msgs, key, dialect, name, line, target_last=True)
    if isinstance(turns, Problem):
        return turns
    if not any(t.role == "user" for t in turns[:-1]):
        return Problem("no user turn before the assistant's reply", file=name, line=line, field=key)
    return Example(line=line, messages=tuple(turns[:-1]), target=turns[-1].content)


def _turns(
    msgs: Any, field: str, dialect: _Dialect, name: str, line: int, *, target_last: bool
) -> list[Message] | Problem:
    """The text turns of a list of messages, tool turns dropped (see the module docstring).

    With `target_last`, the last item must be the assistant's reply, kept even when empty."""
    if not isinstance(msgs, list):
        return Problem(
            f"wrong type: expected a list of messages, got {_type_name(msgs)}",
            file=name,
            line=line,
            field=field,
        )
    if not msgs:
        need = "a user turn and a final assistant turn" if target_last else "at least one turn"
        return Problem(f"empty: need {need}", file=name, line=line, field=field)
    turns: list[Message] = []
    last = len(msgs) - 1
    for i, m in enumerate(msgs):
        where = f"{field}[{i}]"
        if not isinstance(m, dict):
            return Problem(
                f"wrong type: expected an object, got {_type_name(m)}", file=name, line=line, field=where
            )
        role_field = f"{where}.{dialect.role_key}"
        given = _text_field(m, dialect.role_key, role_field, name, line)
        if isinstance(given, Problem):
            return given
        role = dialect.roles.get(given)
        if role is None:
            return Problem(
                f"unknown role '{given}'; expected one of {', '.join(dialect.roles)}",
                file=name,
                line=line,
                field=role_field,
            )
        is_target = target_last and i == last
        if is_target and role != "assistant":
            return Problem(
                f"the last turn is '{given}'; it must be the assistant's reply (the target)",
                file=name,
                line=line,
                field=role_field,
            )
        if role == _TOOL:
            continue
        raw = m.get(dialect.content_key)
        if role == "assistant" and not is_target and m.get("tool_calls") and (raw is None or raw == ""):
            continue  # a turn that only calls tools
        content = _content(m, dialect.content_key, f"{where}.{dialect.content_key}", name, line, is_target)
        if isinstance(content, Problem):
            return content
        turns.append(Message(role, content))
    return turns


def _content(
    m: dict[str, Any], key: str, field: str, name: str, line: int, allow_empty: bool
) -> str | Problem:
    """A turn's text: a string, or OpenAI's list of text parts joined with no separator."""
    parts = m.get(key)
    if not isinstance(parts, list):
        return _text_field(m, key, field, name, line, allow_empty=allow_empty)
    texts = []
    for j, part in enumerate(parts):
        where = f"{field}[{j}]"
        if not isinstance(part, dict):
            return Problem(
                f"wrong type: expected a content part object, got {_type_name(part)}",
                file=name,
                line=line,
                field=where,
            )
        kind = part.get("type")
        if kind != "text":
            shown = f"'{kind}'" if isinstance(kind, str) else _type_name(kind)
            return Problem(
                f"content part of type {shown} is not text; tunegate benchmarks text only, so remove "
                "the part or describe it in a text part",
                file=name,
                line=line,
                field=f"{where}.type",
            )
        text = _text_field(part, "text", f"{where}.text", name, line, allow_empty=True)
        if isinstance(text, Problem):
            return text
        texts.append(text)
    joined = "".join(texts)
    if not allow_empty and not joined.strip():
        return Problem("empty", file=name, line=line, field=field)
    return joined


def _from_prompt_completion(obj: dict[str, Any], name: str, line: int) -> Example | Problem:
    if isinstance(obj.get("prompt"), list):
        return _from_conversational_pc(obj, name, line)
    prompt = _text_field(obj, "prompt", "prompt", name, line)
    if isinstance(prompt, Problem):
        return prompt
    completion = _text_field(obj, "completion", "completion", name, line, allow_empty=True)
    if isinstance(completion, Problem):
        return completion
    return Example(line=line, messages=(Message("user", prompt),), target=completion)


def _from_conversational_pc(obj: dict[str, Any], name: str, line: int) -> Example | Problem:
    """TRL's conversational prompt/completion: both fields are lists of chat messages."""
    prompt = _turns(obj["prompt"], "prompt", _OPENAI, name, line, target_last=False)
    if isinstance(prompt, Problem):
        return prompt
    if not any(t.role == "user" for t in prompt):
        return Problem("no user turn in the prompt", file=name, line=line, field="prompt")
    if "completion" not in obj:
        return Problem("missing", file=name, line=line, field="completion")
    if not isinstance(obj["completion"], list):
        return Problem(
            f"wrong type: the prompt is a list of messages, so the completion must be one too, got "
            f"{_type_name(obj['completion'])}",
            file=name,
            line=line,
            field="completion",
        )
    completion = _turns(obj["completion"], "completion", _OPENAI, name, line, target_last=True)
    if isinstance(completion, Problem):
        return completion
    if len(completion) != 1:
        return Problem(
            f"expected one assistant turn (the target) besides tool turns, got {len(completion)} text turns",
            file=name,
            line=line,
            field="completion",
        )
    return Example(line=line, messages=tuple(prompt), target=completion[0].content)


def _from_alpaca(obj: dict[str, Any], name: str, line: int) -> Example | Problem:
    instruction = _text_field(obj, "instruction", "instruction", name, line)
    if isinstance(instruction, Problem):
        return instruction
    extra = _text_field(obj, "input", "input", name, line, allow_empty=True, required=False)
    if isinstance(extra, Problem):
        return extra
    output = _text_field(obj, "output", "output", name, line, allow_empty=True)
    if isinstance(output, Problem):
        return output
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return Example(line=line, messages=(Message("user", user),), target=output)


# ---------------------------------------------------------------------------------------------------
# Tables


def _guess(available: list[str], guesses: tuple[str, ...], exclude: str | None) -> str | None:
    for g in guesses:
        if g in available and g != exclude:
            return g
    lowered = {a.lower(): a for a in reversed(available)}
    for g in guesses:
        if g in lowered and lowered[g] != exclude:
            return lowered[g]
    return None


def _resolve_columns(
    available: list[str], input_col: str | None, output_col: str | None, name: str, line: int | None
) -> tuple[str, str]:
    listed = ", ".join(available) if available else "(none)"
    chosen: list[str] = []
    for given, guesses, what, flag in (
        (input_col, INPUT_COLUMN_GUESSES, "input", "--input-col"),
        (output_col, OUTPUT_COLUMN_GUESSES, "output", "--output-col"),
    ):
        if given is not None:
            if given not in available:
                raise DataError(
                    f"{what} column '{given}' not found; available columns: {listed}",
                    file=name,
                    line=line,
                    field=given,
                )
            chosen.append(given)
            continue
        guess = _guess(available, guesses, chosen[0] if chosen else None)
        if guess is None:
            raise DataError(
                f"no {what} column: none of {', '.join(guesses)} found; available columns: {listed}; "
                f"pass {flag}",
                file=name,
                line=line,
                field=what,
            )
        chosen.append(guess)
    if chosen[0] == chosen[1]:
        raise DataError(f"input and output are the same column '{chosen[0]}'", file=name, field=chosen[0])
    return chosen[0], chosen[1]


def _cell(value: Any, field: str, name: str, line: int, where: str, *, allow_empty: bool) -> str | Problem:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Problem(f"{where}missing value", file=name, line=line, field=field)
    if isinstance(value, float) and math.isinf(value):
        return Problem(f"{where}not a finite number", file=name, line=line, field=field)
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, int | float):
        value = str(value)
    elif not isinstance(value, str):
        return Problem(
            f"{where}wrong type: expected text or a number, got {_type_name(value)}",
            file=name,
            line=line,
            field=field,
        )
    if not allow_empty and not value.strip():
        return Problem(f"{where}empty", file=name, line=line, field=field)
    return value


def _from_row(
    row: dict[str, Any], columns: tuple[str, str], name: str, line: int, ex_line: int, where: str = ""
) -> Example | Problem:
    in_col, out_col = columns
    for col in columns:
        if col not in row:
            return Problem(f"{where}missing", file=name, line=line, field=col)
    text = _cell(row[in_col], in_col, name, line, where, allow_empty=False)
    if isinstance(text, Problem):
        return text
    target = _cell(row[out_col], out_col, name, line, where, allow_empty=True)
    if isinstance(target, Problem):
        return target
    return Example(line=ex_line, messages=(Message("user", text),), target=target)


def _iter_delimited(
    p: Path,
    name: str,
    state: _State,
    delimiter: str,
    input_col: str | None,
    output_col: str | None,
    report: Callable[[Problem], None],
) -> Iterator[Example]:
    # The default limit (128 KiB per field) would reject a long but valid document.
    csv.field_size_limit(max(csv.field_size_limit(), min(sys.maxsize, MAX_LINE_BYTES)))
    with open_regular(p, DataError, "data file") as fh:
        reader = csv.reader((text for _, text in _raw_lines(fh, name, state, report)), delimiter=delimiter)
        header: list[str] | None = None
        columns: tuple[str, str] | None = None
        idx: tuple[int, int] = (0, 0)
        row_no = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                report(Problem(f"row {row_no + 1}: unreadable: {exc}", file=name, line=reader.line_num))
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if header is None:
                header = [h.strip() for h in row]
                columns = _resolve_columns(header, input_col, output_col, name, reader.line_num)
                idx = (header.index(columns[0]), header.index(columns[1]))
                continue
            row_no += 1
            state.n_records += 1
            assert columns is not None
            if len(row) != len(header):
                report(
                    Problem(
                        f"row {row_no} has {len(row)} fields, the header has {len(header)}"
                        + (
                            "; a quoted field may lack its closing quote"
                            if any("\n" in f for f in row)
                            else ""
                        ),
                        file=name,
                        line=reader.line_num,
                    )
                )
                continue
            result = _from_row(
                {columns[0]: row[idx[0]], columns[1]: row[idx[1]]},
                columns,
                name,
                reader.line_num,
                row_no,
                where=f"row {row_no}: ",
            )
            if isinstance(result, Problem):
                report(result)
            else:
                yield result
    if state.n_records == 0:
        if header is None:
            raise DataError("the file is empty (no header row)", file=name)
        raise DataError("the file has a header but no data rows", file=name)


def _iter_parquet(
    p: Path,
    name: str,
    state: _State,
    input_col: str | None,
    output_col: str | None,
    report: Callable[[Problem], None],
) -> Iterator[Example]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(p)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"not a readable Parquet file: {exc}", file=name) from None
    columns = _resolve_columns(list(pf.schema_arrow.names), input_col, output_col, name, None)
    row_no = 0
    batches = pf.iter_batches(batch_size=4096, columns=list(columns))
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"unreadable after row {row_no}: {exc}", file=name) from None
        if batch is None:
            break
        ins = batch.column(columns[0]).to_pylist()
        outs = batch.column(columns[1]).to_pylist()
        for a, b in zip(ins, outs, strict=True):
            row_no += 1
            state.n_records += 1
            result = _from_row(
                {columns[0]: a, columns[1]: b}, columns, name, row_no, row_no, where=f"row {row_no}: "
            )
            if isinstance(result, Problem):
                report(result)
            else:
                yield result
    if row_no == 0:
        raise DataError("the file has no data rows", file=name)
