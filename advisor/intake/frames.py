"""In-memory task data for the Python API: a pandas DataFrame, or a `datasets` Dataset / DatasetDict.

The rows are written as JSON Lines, one record per row in row order, and read back by the file readers
(`advisor.intake.data`): the same format detection (named table columns, `messages` chat, `prompt` /
`completion`, alpaca, ShareGPT), the same validation and the same `Example`s as a file holding those
rows. `located` then names the row and column of each problem instead of the written file's line.

- A DataFrame row is named by its index label (`df.loc[label]`); a Dataset row by its position (`ds[i]`).
- A DatasetDict: the split `split` when given, else `train`, else its only split (the rule a
  `save_to_disk` folder follows). A `ClassLabel` column is written as its class names, as when the
  dataset is read from disk.
- A cell must be text, a number, a boolean, missing (None, NaN, NA), or lists and dicts of those (chat
  turns); anything else (a date, bytes, an image) is a `DataError` naming the row and column.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from advisor.errors import DataError, Problem

KINDS = ("pandas.DataFrame", "datasets.Dataset", "datasets.DatasetDict")
_FLAGS = {"--input-col": "input_col=", "--output-col": "output_col=", "--split": "dataset_split="}


@dataclass(frozen=True)
class InMemory:
    """Rows ready to write: what they are called in messages, their labels in order, the JSON Lines."""

    name: str  # "DataFrame", "Dataset[train]"
    labels: tuple[Hashable, ...]  # line n of `text` holds the row labelled labels[n - 1]
    columns: tuple[str, ...]
    text: str


def kind(data: Any) -> str | None:
    """ "pandas.DataFrame", "datasets.Dataset" or "datasets.DatasetDict" for such an object, else None;
    pandas and datasets are not imported to find out."""
    cls = type(data)
    for base in cls.__mro__:
        name = f"{base.__module__.split('.')[0]}.{base.__name__}"
        if name in KINDS:
            return name
    return None


def to_jsonl(data: Any, split: str | None = None) -> InMemory:
    """`data` (a DataFrame, Dataset or DatasetDict) as JSON Lines; DataError naming the row and column
    of a cell that cannot be written, or what is wrong with the whole (no rows, bad column names)."""
    what = kind(data)
    if what == "pandas.DataFrame":
        return _frame(data)
    if what == "datasets.DatasetDict":
        name = _choose_split(list(data), split)
        return _dataset(data[name], name)
    if what == "datasets.Dataset":
        if split is not None:
            raise DataError("dataset_split= is for a DatasetDict", file="Dataset", field="dataset_split")
        return _dataset(data, str(data.split) if data.split is not None else "train")
    raise TypeError(f"not in-memory data: {type(data).__name__}")


def located(problems: list[Problem], path: str, data: InMemory) -> list[Problem]:
    """The problems the file readers found in the written file `path`, naming `data`'s rows and columns."""
    return [_locate(p, data) if p.file == path else p for p in problems]


def _locate(p: Problem, data: InMemory) -> Problem:
    message = p.message
    for flag, keyword in _FLAGS.items():
        message = message.replace(flag, keyword)
    column = (p.field or "").split(".")[0].split("[")[0]
    if p.line is None or column not in data.columns:  # about the data as a whole (its columns, say)
        return replace(p, message=message, file=data.name, line=None)
    inner = f" ({p.field})" if p.field != column else ""
    return Problem(f"column {column!r}{inner}: {message}", file=f"{data.name} row {_label(data, p.line)}")


def _label(data: InMemory, line: int) -> str:
    label = data.labels[line - 1] if 0 < line <= len(data.labels) else line - 1
    return str(label) if isinstance(label, int) else repr(label)


def _frame(df: Any) -> InMemory:
    names = list(df.columns)
    bad = [c for c in names if not isinstance(c, str)]
    if bad:
        raise DataError(
            f"column names must be text, got {bad[0]!r} ({type(bad[0]).__name__}); name the columns, "
            "e.g. df.columns = ['text', 'label']",
            file="DataFrame",
        )
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        raise DataError(f"columns named twice: {', '.join(twice)}", file="DataFrame")
    if len(df) == 0:
        raise DataError("no rows", file="DataFrame")
    labels = tuple(df.index)
    rows = (dict(zip(names, values, strict=True)) for values in df.itertuples(index=False, name=None))
    return InMemory("DataFrame", labels, tuple(names), _lines(rows, labels, "DataFrame"))


def _dataset(ds: Any, split: str) -> InMemory:
    from datasets import ClassLabel

    name = f"Dataset[{split}]"
    if len(ds) == 0:
        raise DataError("no rows", file=name)
    classes = {c: list(f.names) for c, f in ds.features.items() if isinstance(f, ClassLabel)}

    def rows() -> Iterator[dict[str, Any]]:
        for row in ds:
            yield {c: _class_name(v, classes[c]) if c in classes else v for c, v in row.items()}

    labels = tuple(range(len(ds)))
    return InMemory(name, labels, tuple(ds.column_names), _lines(rows(), labels, name))


def _class_name(value: Any, names: list[str]) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    if value == -1:  # ClassLabel's "no label"
        return ""
    return names[value] if 0 <= value < len(names) else value


def _choose_split(splits: list[str], split: str | None) -> str:
    listed = ", ".join(splits) or "(none)"
    if split is not None:
        if split not in splits:
            raise DataError(
                f"split '{split}' not found; it holds {listed}", file="DatasetDict", field="dataset_split"
            )
        return split
    if "train" in splits:
        return "train"
    if len(splits) == 1:
        return splits[0]
    raise DataError(
        f"several splits and none is 'train': pass dataset_split= (one of {listed})",
        file="DatasetDict",
        field="dataset_split",
    )


def _lines(rows: Iterator[Mapping[str, Any]], labels: tuple[Hashable, ...], name: str) -> str:
    out = []
    for label, row in zip(labels, rows, strict=True):
        record = {}
        for column, value in row.items():
            try:
                record[column] = _plain(value)
            except TypeError as exc:
                shown = str(label) if isinstance(label, int) else repr(label)
                raise DataError(
                    f"column {column!r}: {exc}; convert the column to text first",
                    file=f"{name} row {shown}",
                ) from None
        # ASCII escapes: a lone surrogate in a Python string is then reported by the reader, not a crash
        out.append(json.dumps(record, ensure_ascii=True))
    return "\n".join(out) + "\n"


def _plain(value: Any) -> Any:
    """A cell as plain JSON data: numpy scalars and arrays unwrapped, missing values as None."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    module = type(value).__module__.split(".")[0]
    if module == "numpy":
        return _plain(value.tolist()) if hasattr(value, "tolist") else value
    if module == "pandas" and _is_missing(value):  # pd.NA, pd.NaT
        return None
    raise TypeError(f"a {type(value).__name__} value is not text, a number or a list of chat turns")


def _is_missing(value: Any) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
