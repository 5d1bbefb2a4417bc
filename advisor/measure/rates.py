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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor.backends.model import user_cache_dir
from advisor.errors import ConfigError
from advisor.files import load_toml, write_json_atomic

DEFAULTS_PATH = Path(__file__).parents[1] / "data" / "rates.toml"
MIN_REQUESTS = 20
"""A rate is recorded only from at least this many requests of one operation: a handful of calls is
dominated by one-off start-up costs."""


@dataclass(frozen=True)
class Rate:
    seconds_per_request: float
    basis: str  # where the figure comes from, said beside the estimate


def rates_path() -> Path:
    return user_cache_dir() / "rates.json"


def _read() -> dict[str, Any]:
    try:
        doc = json.loads(rates_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # no file yet, or a damaged one: measured again by the next run
    return doc if isinstance(doc, dict) else {}


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
    with contextlib.suppress(OSError):  # an estimate's input, never worth failing a finished run over
        write_json_atomic(rates_path(), doc)


def lookup(backend_name: str, model_id: str, op: str) -> Rate | None:
    """The measured rate for this model and operation, else the shipped default, else None."""
    entry = _read().get(f"{backend_name}:{model_id}", {}).get(op)
    if isinstance(entry, dict) and isinstance(entry.get("seconds_per_request"), int | float):
        return Rate(
            float(entry["seconds_per_request"]),
            f"measured on this machine for this model ({entry.get('requests')} requests, "
            f"{entry.get('measured')})",
        )
    default = load_toml(DEFAULTS_PATH, ConfigError, "rates file").get(backend_name, {}).get(op)
    if default is None:
        return None
    return Rate(float(default["seconds_per_request"]), f"shipped default: {default['source']}")
