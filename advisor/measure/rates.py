"""Model time per request, measured by real runs on this machine, for the dry run's wall-time estimate.

Every advise run that sent enough requests records, per model and operation (log-likelihood scoring,
generation), the seconds the backend spent per request it answered (the response cache times each
batch it sends). This module is the only owner of that file: `rates.json` in the user cache folder.
Without a measurement for the model the shipped defaults (advisor/data/rates.toml, each with its
source) are used, and the estimate says which basis it used.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor.backends.model import user_cache_dir
from advisor.errors import ConfigError, FilesError, TunegateError
from advisor.files import load_toml, read_regular, write_json_atomic

DEFAULTS_PATH = Path(__file__).parents[1] / "data" / "rates.toml"
MAX_FILE_BYTES = 1024 * 1024
"""A rates file larger than this is not one tunegate wrote: ignored, and replaced by the next run."""
MIN_REQUESTS = 20
"""A rate is recorded only from at least this many requests of one operation: a handful of calls is
dominated by one-off start-up costs."""


@dataclass(frozen=True)
class Rate:
    seconds_per_request: float
    basis: str  # where the figure comes from, said beside the estimate


def rates_path() -> Path:
    return user_cache_dir() / "rates.json"


def _read() -> dict[str, dict[str, dict[str, Any]]]:
    """The measured rates, `{"backend:model": {op: record}}`, keeping only well-formed records.

    The file is derived data (every run measures again), so a missing, unreadable or damaged one (not a
    regular file, not JSON, nested too deeply, a number too large, entries of the wrong shape) counts as
    holding only its well-formed records, and the next run that measures rewrites it.
    """
    try:
        doc = json.loads(read_regular(rates_path(), FilesError, "rates file", max_bytes=MAX_FILE_BYTES))
    except (TunegateError, ValueError, RecursionError):  # ValueError: JSON, UTF-8, huge integers
        return {}
    if not isinstance(doc, dict):
        return {}
    rates: dict[str, dict[str, dict[str, Any]]] = {}
    for key, entry in doc.items():
        if isinstance(entry, dict):
            ops = {op: r for op, raw in entry.items() if (r := _record(raw)) is not None}
            if ops:
                rates[key] = ops
    return rates


def _record(raw: Any) -> dict[str, Any] | None:
    """One operation's record, rebuilt from what is well-formed in `raw`; None when it holds no rate."""
    if not isinstance(raw, dict):
        return None
    seconds = raw.get("seconds_per_request")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return None
    try:
        seconds = float(seconds)
    except OverflowError:  # an integer of hundreds of digits
        return None
    if not (math.isfinite(seconds) and seconds > 0):
        return None
    requests, measured = raw.get("requests"), raw.get("measured")
    return {
        "seconds_per_request": seconds,
        "requests": requests if isinstance(requests, int) and 0 < requests < 2**63 else None,
        "measured": measured if isinstance(measured, str) and len(measured) <= 10 else None,
    }


def record(backend: Any) -> None:
    """Store the model time per request the run measured (a backend without timings records nothing)."""
    model_time = getattr(backend, "model_time", None)
    if not callable(model_time):
        return
    measured = {op: (n, s) for op, (n, s) in model_time().items() if n >= MIN_REQUESTS and s > 0}
    if not measured:
        return
    doc = _read()
    entry = doc.setdefault(f"{backend.name}:{backend.model_id}", {})
    stamp = time.strftime("%Y-%m-%d")
    for op, (n, seconds) in measured.items():
        entry[op] = {"seconds_per_request": seconds / n, "requests": n, "measured": stamp}
    with contextlib.suppress(OSError, TunegateError):  # an estimate's input: never fails a finished run
        write_json_atomic(rates_path(), doc)


def lookup(backend_name: str, model_id: str, op: str) -> Rate | None:
    """The measured rate for this model and operation, else the shipped default, else None."""
    entry = _read().get(f"{backend_name}:{model_id}", {}).get(op)
    if entry is not None:
        return Rate(
            entry["seconds_per_request"],
            f"measured on this machine for this model ({entry.get('requests')} requests, "
            f"{entry.get('measured')})",
        )
    default = load_toml(DEFAULTS_PATH, ConfigError, "rates file").get(backend_name, {}).get(op)
    if default is None:
        return None
    return Rate(float(default["seconds_per_request"]), f"shipped default: {default['source']}")
