"""The table readers, CSV and TSV text with a header row and Parquet, and the row rules that JSON Lines
tables and `datasets` splits share: which column is the input and which the target (`INPUT_COLUMN_GUESSES`,
`OUTPUT_COLUMN_GUESSES`, or the columns the user names), and how one row's cells become an `Example`
(numbers and booleans turned into text; a missing or empty input is a `Problem` naming row and column).

The delimited reader parses the text lines `advisor.intake.data` reads, so the line limit, the byte-order
mark and the UTF-8 check are the same as for JSON Lines. Parquet is read here one batch at a time, with
pyarrow imported only when a Parquet file is read.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from advisor.errors import DataError, Problem
from advisor.intake.reading import ReadState, type_name
from advisor.textsafe import preview, preview_list
from advisor.types import Example, Message

INPUT_COLUMN_GUESSES = ("text", "input", "prompt", "question", "sentence")
OUTPUT_COLUMN_GUESSES = ("label", "output", "target", "completion", "answer", "category")


def _guess(available: list[str], guesses: tuple[str, ...], exclude: str | None) -> str | None:
    for g in guesses:
        if g in available and g != exclude:
            return g
    lowered = {a.lower(): a for a in reversed(available)}
    for g in guesses:
        if g in lowered and lowered[g] != exclude:
            return lowered[g]
    return None


def resolve_columns(
    available: list[str], input_col: str | None, output_col: str | None, name: str, line: int | None
) -> tuple[str, str]:
    # The header is the file's first line: shown cut short, in case the "data file" is a secret's file.
    listed = preview_list(available)
    chosen: list[str] = []
    for given, guesses, what, flag in (
        (input_col, INPUT_COLUMN_GUESSES, "input", "--input-col"),
        (output_col, OUTPUT_COLUMN_GUESSES, "output", "--output-col"),
    ):
        if given is not None:
            if given not in available:
                raise DataError(
                    f"{what} column '{preview(given, 60)}' not found; available columns: {listed}",
                    file=name,
                    line=line,
                    field=preview(given, 60),
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
        raise DataError(
            f"input and output are the same column '{preview(chosen[0], 60)}'",
            file=name,
            field=preview(chosen[0], 60),
        )
    for column in chosen:  # which of two same-named columns holds the data is anyone's guess
        if (count := available.count(column)) > 1:
            raise DataError(
                f"the header names the column '{preview(column, 60)}' {count} times; rename all but one",
                file=name,
                line=line,
                field=preview(column, 60),
            )
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
            f"{where}wrong type: expected text or a number, got {type_name(value)}",
            file=name,
            line=line,
            field=field,
        )
    if not allow_empty and not value.strip():
        return Problem(f"{where}empty", file=name, line=line, field=field)
    return value


def from_row(
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


def iter_delimited(
    lines: Iterable[str],
    name: str,
    state: ReadState,
    delimiter: str,
    input_col: str | None,
    output_col: str | None,
    report: Callable[[Problem], None],
    *,
    max_field: int,
) -> Iterator[Example]:
    """The examples of delimited text with a header row, parsed from its decoded `lines`; one field may be
    as long as the longest accepted line, `max_field`."""
    # The default limit (128 KiB per field) would reject a long but valid document.
    csv.field_size_limit(max(csv.field_size_limit(), min(sys.maxsize, max_field)))
    reader = csv.reader(lines, delimiter=delimiter)
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
            columns = resolve_columns(header, input_col, output_col, name, reader.line_num)
            idx = (header.index(columns[0]), header.index(columns[1]))
            continue
        row_no += 1
        state.n_records += 1
        assert columns is not None
        if len(row) != len(header):
            report(
                Problem(
                    f"row {row_no} has {len(row)} fields, the header has {len(header)}"
                    + ("; a quoted field may lack its closing quote" if any("\n" in f for f in row) else ""),
                    file=name,
                    line=reader.line_num,
                )
            )
            continue
        result = from_row(
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


def iter_parquet(
    p: Path,
    name: str,
    state: ReadState,
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
    columns = resolve_columns(list(pf.schema_arrow.names), input_col, output_col, name, None)
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
            result = from_row(
                {columns[0]: a, columns[1]: b}, columns, name, row_no, row_no, where=f"row {row_no}: "
            )
            if isinstance(result, Problem):
                report(result)
            else:
                yield result
    if row_no == 0:
        raise DataError("the file has no data rows", file=name)
