"""What a training run reports as it goes: the curve of its metrics log (train/metrics.jsonl, kept by
`advisor.rundir.TrainDir`) for decision.json's training section, which the renderers plot.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

CURVE_EVENTS = ("train", "dev")
MAX_TRAIN_RECORDS = 500  # train records kept in the document's curve (every dev record is kept)


def training_curve(lines: Iterable[str], max_train: int = MAX_TRAIN_RECORDS) -> list[dict[str, Any]]:
    """The per-step records of a training log's lines (`TrainDir.read_metrics`) for the document's
    training section.

    Keeps the `train` and `dev` events; `train` records are thinned to at most `max_train` (every n-th,
    the last kept) so decision.json stays small, and every `dev` record is kept.
    """
    records = []
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash mid-write
        if isinstance(rec, dict) and rec.get("event") in CURVE_EVENTS:
            keep = ("event", "step", "loss") if rec["event"] == "train" else tuple(rec)
            # decision.json is strict JSON: a NaN loss (a diverged step) is recorded as null
            records.append({k: _finite_or_none(rec[k]) for k in keep if k in rec})
    train = [r for r in records if r["event"] == "train"]
    if len(train) > max_train:
        stride = math.ceil(len(train) / max_train)
        kept = {id(r) for r in train[::stride]} | {id(train[-1])}
        records = [r for r in records if r["event"] != "train" or id(r) in kept]
    return records


def _finite_or_none(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v
