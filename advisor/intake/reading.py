"""What every reader of a data file shares: the state one file's reading builds up, and the name a problem
gives a JSON value's type.

`data.py` (the entry points and the JSON Lines reader) imports `records.py` (the record formats) and
`tables.py` (CSV, TSV, Parquet); those two import only this module of the package, never `data.py`, so
intake has no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class ReadState:
    """What a reader learns while it streams: the detected format and how many records it saw."""

    fmt: str | None = None
    n_records: int = 0
    fmt_line: int = 0  # the line of the record the format was detected from
    columns: tuple[str, str] | None = None  # tables: (input column, output column)


def type_name(value: Any) -> str:
    """A JSON value's type as a problem names it: null, object, list, string, boolean or number."""
    if value is None:
        return "null"
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    )
