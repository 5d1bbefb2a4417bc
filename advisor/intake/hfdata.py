"""Hugging Face `datasets` as task data: a `save_to_disk` folder, or a Hub dataset id.

This module only opens the dataset and describes it; `advisor.intake.data` turns its rows into `Example`s with
the same column rules and problem reports as a table file. `datasets` is imported only when a dataset is
actually opened.

- A folder written by `Dataset.save_to_disk` (state.json) or `DatasetDict.save_to_disk`
  (dataset_dict.json) is read with `load_from_disk`.
- Anything else that is not an existing path and looks like a Hub id (`name` or `org/name`, no data-file
  extension) is read with `load_dataset`, which uses the Hugging Face datasets cache and, unless
  `HF_HUB_OFFLINE` is set, downloads what is missing.
- The split: `split` when given; else `train` when there is one; else the only split; else an error
  listing them.
- A `ClassLabel` column holds integers; they are read as the class names (so the model is asked for
  "positive", not "1"), and -1 (no label) as an empty target.
- The split's Arrow files are validated in full (offsets, UTF-8) before a row is read, so a damaged file
  (truncated, overwritten, not Arrow) is one error naming it, never a crash halfway through the rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor.backends.model import HUB_ID
from advisor.errors import DataError

SAVED_MARKERS = ("dataset_dict.json", "state.json")
"""Files `save_to_disk` writes at the top of its folder (a DatasetDict, a Dataset)."""
DATA_FILE_EXTENSIONS = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet")
TEXT_DTYPES = frozenset(
    {"string", "large_string", "bool", "float16", "float32", "float64"}
    | {f"{sign}int{n}" for sign in ("", "u") for n in (8, 16, 32, 64)}
)
"""`Value` dtypes read as text (numbers and booleans become their text, as in a table file)."""
BATCH_ROWS = 4096


def is_dataset(source: str) -> bool:
    """True for a `save_to_disk` folder, and for a name that is no existing path but looks like a Hub id."""
    path = Path(source).expanduser()
    if path.is_dir():
        return any((path / marker).is_file() for marker in SAVED_MARKERS)
    return (
        not path.exists()
        and HUB_ID.match(source) is not None
        and path.suffix.lower() not in DATA_FILE_EXTENSIONS
    )


@dataclass(frozen=True)
class OpenedDataset:
    """One split of a dataset, ready to read: its name for messages, columns and their kinds."""

    name: str  # "SOURCE[split]": the `file` of every problem
    split: str
    columns: tuple[str, ...]
    table: Any  # a datasets.Dataset

    def check_text(self, column: str) -> None:
        """DataError unless `column` holds text, numbers, booleans or class labels."""
        from datasets import ClassLabel, Value

        feature = self.table.features[column]
        if isinstance(feature, ClassLabel) or (isinstance(feature, Value) and feature.dtype in TEXT_DTYPES):
            return
        raise DataError(
            f"column '{column}' holds {_describe(feature)}, not text; pick a text column with "
            "--input-col/--output-col",
            file=self.name,
            field=column,
        )

    def rows(self, input_col: str, output_col: str) -> Iterator[tuple[Any, Any]]:
        """(input, output) per row, class labels already turned into their names."""
        names = {c: self._label_names(c) for c in (input_col, output_col)}
        for batch in self.table.select_columns(list(dict.fromkeys([input_col, output_col]))).iter(BATCH_ROWS):
            ins = [_label(v, names[input_col]) for v in batch[input_col]]
            outs = [_label(v, names[output_col]) for v in batch[output_col]]
            yield from zip(ins, outs, strict=True)

    def _label_names(self, column: str) -> Sequence[str] | None:
        from datasets import ClassLabel

        feature = self.table.features[column]
        return list(feature.names) if isinstance(feature, ClassLabel) else None


def open_dataset(source: str, split: str | None) -> OpenedDataset:
    """The chosen split of a `save_to_disk` folder or a Hub dataset; DataError naming what is wrong."""
    path = Path(source).expanduser()
    loaded = _load_saved(path, source) if path.is_dir() else _load_hub(source)
    from datasets import Dataset

    if isinstance(loaded, Dataset):
        own = loaded.split
        if split is not None and own is not None and split != str(own):
            raise DataError(f"split '{split}' not found; the folder holds one split, '{own}'", file=source)
        name = str(own or split or "train")
        table = loaded
    else:
        splits = list(loaded)
        name = _choose_split(splits, split, source)
        table = loaded[name]
    for cached in table.cache_files:
        _check_arrow(Path(cached["filename"]))
    return OpenedDataset(name=f"{source}[{name}]", split=name, columns=tuple(table.column_names), table=table)


def _check_arrow(path: Path) -> None:
    """DataError naming `path` unless it is a whole, valid Arrow stream (`datasets`' file format)."""
    import pyarrow as pa

    try:
        with pa.memory_map(str(path)) as source:
            pa.ipc.open_stream(source).read_all().validate(full=True)
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise DataError(
            f"a damaged Arrow file of the dataset ({_first_line(exc)}); save the dataset again",
            file=str(path),
        ) from None


def _choose_split(splits: list[str], split: str | None, source: str) -> str:
    listed = ", ".join(splits) or "(none)"
    if split is not None:
        if split not in splits:
            raise DataError(
                f"split '{split}' not found; available splits: {listed}", file=source, field="split"
            )
        return split
    if "train" in splits:
        return "train"
    if len(splits) == 1:
        return splits[0]
    raise DataError(f"several splits and none is 'train': pass --split (one of {listed})", file=source)


def _load_saved(path: Path, source: str) -> Any:
    import pyarrow as pa
    from datasets import load_from_disk

    try:
        return load_from_disk(str(path))
    except (OSError, ValueError, KeyError, IndexError, TypeError, RecursionError, pa.ArrowException) as exc:
        for arrow in sorted(path.rglob("*.arrow")):  # a damaged data file: named, not the folder
            _check_arrow(arrow)
        raise DataError(f"not a readable `save_to_disk` folder: {_first_line(exc)}", file=source) from None


def _load_hub(source: str) -> Any:
    from datasets import config, load_dataset
    from datasets.exceptions import DatasetNotFoundError

    try:
        return load_dataset(source)
    except (DatasetNotFoundError, FileNotFoundError, ConnectionError) as exc:
        where = " in the datasets cache (HF_HUB_OFFLINE is set)" if config.HF_HUB_OFFLINE else ""
        raise DataError(
            f"no such file or folder, and no Hugging Face dataset by that id{where}: {_first_line(exc)}",
            file=source,
        ) from None


def _label(value: Any, names: Sequence[str] | None) -> Any:
    if names is None or not isinstance(value, int) or isinstance(value, bool):
        return value
    if value == -1:  # ClassLabel's "no label"
        return ""
    return names[value] if 0 <= value < len(names) else value


def _describe(feature: Any) -> str:
    dtype = getattr(feature, "dtype", None)
    return f"{type(feature).__name__} values" + (f" ({dtype})" if isinstance(dtype, str) else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
