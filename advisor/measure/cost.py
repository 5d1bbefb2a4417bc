"""What prompting and fine-tuning cost at the declared volume: pure arithmetic over a `CostConfig`.

No vendor price lives in this module. Prices come from the user (flags or a TOML file shaped like
`advisor/data/prices.example.toml`, whose figures are examples, not quotes). Two ways to serve:

- ``api``: a price per million prompt tokens and per million completion tokens;
- ``self_hosted``: a price per GPU-hour and a throughput (prompt and output tokens per second), so a
  request costs the GPU time it occupies.

A month is 30 days. The fine-tuned model is served with a zero-shot-length prompt: its saving per
request is the best prompting arm's cost minus the fine-tuned model's cost at that short prompt.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from advisor.config import MAX_FIGURE
from advisor.errors import ConfigError
from advisor.files import load_toml

DAYS_PER_MONTH = 30.0
SERVING_MODES = ("api", "self_hosted")

_UNIT_DAYS = {"hour": 1.0 / 24.0, "day": 1.0, "week": 7.0, "month": DAYS_PER_MONTH}
_UNIT_ALIASES = {"h": "hour", "hr": "hour", "d": "day", "w": "week", "wk": "week", "mo": "month"}
_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6}
_VOLUME_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([kKmM]?)\s*/\s*([A-Za-z]+)\s*$")


def parse_volume(text: str) -> float:
    """Requests per day from ``"20000/day"``, ``"20k/day"``, ``"1.5M/month"``, ``"500/hour"``, ``"3k/week"``.

    A month counts 30 days. Raises `ConfigError` (field ``volume``) on anything else.
    """
    m = _VOLUME_RE.match(text)
    if m is None:
        raise ConfigError(
            f"cannot read volume {text!r}: expected N/day, N/hour, N/week or N/month "
            "(N may end in k or M, e.g. 20k/day)",
            field="volume",
        )
    number, suffix, unit = m.groups()
    unit = unit.lower()
    if unit.endswith("s") and unit[:-1] in _UNIT_DAYS:
        unit = unit[:-1]
    unit = _UNIT_ALIASES.get(unit, unit)
    if unit not in _UNIT_DAYS:
        raise ConfigError(
            f"unknown volume unit {m.group(3)!r} in {text!r}: use hour, day, week or month",
            field="volume",
        )
    value = float(number) * _SUFFIX[suffix.lower()]
    if not value <= MAX_FIGURE:
        raise ConfigError(
            f"volume must be at most {MAX_FIGURE:g} per {unit}, got {text[:40]!r}", field="volume"
        )
    if value <= 0:
        raise ConfigError(f"volume must be positive, got {text!r}", field="volume")
    return value / _UNIT_DAYS[unit]


@dataclass(frozen=True)
class CostConfig:
    """Prices and throughputs. Every figure is the user's; `None` means "not given".

    `finetuned_*_per_million` default to the base prices (some API vendors charge more for serving a
    fine-tuned model: set them then). The one-time fine-tuning cost is `finetune_cost` when the user
    knows it, else the estimate ``train tokens × epochs ÷ train_tokens_per_s × gpu_hour / 3600``
    plus `overhead`, a fixed figure for the work around a training run (running it, checking it,
    shipping it) that compute prices leave out and that dominates on small datasets.
    """

    serving: str = "api"
    finetuned_serving: str | None = None
    input_per_million: float | None = None
    output_per_million: float | None = None
    finetuned_input_per_million: float | None = None
    finetuned_output_per_million: float | None = None
    gpu_hour: float | None = None
    prompt_tokens_per_s: float | None = None
    output_tokens_per_s: float | None = None
    train_tokens_per_s: float | None = None
    epochs: float = 3.0
    overhead: float | None = None
    finetune_cost: float | None = None
    currency: str = "USD"
    price_date: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        for name in ("serving", "finetuned_serving"):
            mode = getattr(self, name)
            if mode is not None and mode not in SERVING_MODES:
                raise ConfigError(
                    f"{name} must be one of {', '.join(SERVING_MODES)}, got {mode!r}", field=name
                )
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type != "float | None" or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"must be a number, got {value!r}", field=f.name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"must be a finite number >= 0, got {value!r}", field=f.name)
            if value > MAX_FIGURE:
                raise ConfigError(f"must be at most {MAX_FIGURE:g}, got {value:g}", field=f.name)
        for name in ("prompt_tokens_per_s", "output_tokens_per_s", "train_tokens_per_s"):
            if getattr(self, name) == 0:
                raise ConfigError("a throughput must be > 0", field=name)
        epochs_ok = isinstance(self.epochs, int | float) and not isinstance(self.epochs, bool)
        if not (epochs_ok and math.isfinite(self.epochs) and 0 < self.epochs <= MAX_FIGURE):
            raise ConfigError(f"must be a number > 0, got {self.epochs!r}", field="epochs")

    def mode(self, finetuned: bool = False) -> str:
        """How a model is served: the prompted one by `serving`, the fine-tuned one by
        `finetuned_serving` when given, else the same way."""
        return (self.finetuned_serving or self.serving) if finetuned else self.serving


def load_cost_config(path: Path, overrides: Mapping[str, Any] | None = None) -> CostConfig:
    """Read a price file (see `prices.example.toml`), then apply `overrides` (e.g. from flags).

    Every unknown key and every bad value is reported in one `ConfigError` naming the file.
    """
    doc = load_toml(path, ConfigError, "price file")
    layout = {
        "meta": {
            "date": "price_date",
            "currency": "currency",
            "serving": "serving",
            "finetuned_serving": "finetuned_serving",
        },
        "api": {
            "input_per_million": "input_per_million",
            "output_per_million": "output_per_million",
            "finetuned_input_per_million": "finetuned_input_per_million",
            "finetuned_output_per_million": "finetuned_output_per_million",
        },
        "self_hosted": {
            "gpu_hour": "gpu_hour",
            "prompt_tokens_per_s": "prompt_tokens_per_s",
            "output_tokens_per_s": "output_tokens_per_s",
        },
        "finetune": {
            "train_tokens_per_s": "train_tokens_per_s",
            "epochs": "epochs",
            "overhead": "overhead",
            "cost": "finetune_cost",
        },
    }
    values: dict[str, Any] = {"source": str(path)}
    problems: list[str] = []
    for section, body in doc.items():
        if section not in layout or not isinstance(body, dict):
            problems.append(f"unknown section [{section}] (allowed: {', '.join(layout)})")
            continue
        for key, value in body.items():
            if key == "note":
                continue
            if key not in layout[section]:
                problems.append(f"unknown key {section}.{key} (allowed: {', '.join(layout[section])}, note)")
                continue
            name = layout[section][key]
            if name in ("price_date", "currency", "serving", "finetuned_serving"):
                values[name] = str(value)
            elif isinstance(value, bool) or not isinstance(value, int | float):
                problems.append(f"{section}.{key} must be a number, got {value!r}")
            else:
                try:
                    values[name] = float(value)
                except OverflowError:  # an integer too large for a float
                    problems.append(f"{section}.{key} must be at most {MAX_FIGURE:g}")
    if problems:
        raise ConfigError("; ".join(problems), file=str(path))
    if "serving" not in values:
        has_api = "input_per_million" in values or "output_per_million" in values
        values["serving"] = "api" if has_api or "gpu_hour" not in values else "self_hosted"
    values.update(overrides or {})
    try:
        return CostConfig(**values)
    except ConfigError as exc:
        raise ConfigError(problems=[replace(p, file=str(path)) for p in exc.problems]) from exc


def example_prices_path() -> Path:
    """The shipped example price file (figures are examples, not vendor facts)."""
    return Path(__file__).parents[1] / "data" / "prices.example.toml"


def cost_per_request(
    config: CostConfig, prompt_tokens: float, completion_tokens: float, *, finetuned: bool = False
) -> float | None:
    """Serving cost of one request, or None when the needed prices are missing. The prompted model is
    served as `serving` says; the fine-tuned one as `finetuned_serving` says (default: the same), so an
    API-served model A and a self-hosted fine-tuned B are each priced their own way."""
    if config.mode(finetuned) == "api":
        inp, out = config.input_per_million, config.output_per_million
        if finetuned:
            inp = (
                config.finetuned_input_per_million if config.finetuned_input_per_million is not None else inp
            )
            out = (
                config.finetuned_output_per_million
                if config.finetuned_output_per_million is not None
                else out
            )
        if inp is None or out is None:
            return None
        return (prompt_tokens * inp + completion_tokens * out) / 1e6
    if config.gpu_hour is None or config.prompt_tokens_per_s is None or config.output_tokens_per_s is None:
        return None
    seconds = prompt_tokens / config.prompt_tokens_per_s + completion_tokens / config.output_tokens_per_s
    return seconds * config.gpu_hour / 3600.0


def monthly_cost(per_request: float | None, volume_per_day: float | None) -> float | None:
    if per_request is None or volume_per_day is None:
        return None
    return per_request * volume_per_day * DAYS_PER_MONTH


def finetune_cost(config: CostConfig, train_tokens: float | None) -> float | None:
    """One-time cost: the user's figure, else tokens × epochs ÷ throughput × GPU-hour price + overhead."""
    if config.finetune_cost is not None:
        return config.finetune_cost
    if train_tokens is None or config.train_tokens_per_s is None or config.gpu_hour is None:
        return None
    hours = train_tokens * config.epochs / config.train_tokens_per_s / 3600.0
    return hours * config.gpu_hour + (config.overhead or 0.0)


@dataclass(frozen=True)
class BreakEven:
    """When the one-time fine-tuning cost is paid back by cheaper requests.

    `requests`/`days` are None when fine-tuning never pays back (no saving per request) or when a
    figure is missing; `reason` then says which.
    """

    saving_per_request: float | None
    monthly_saving: float | None
    requests: float | None
    days: float | None
    reason: str | None = None


def break_even(
    best_arm_per_request: float | None,
    finetuned_per_request: float | None,
    one_time_cost: float | None,
    volume_per_day: float | None,
) -> BreakEven:
    """Break-even volume (requests) and days at the declared volume."""
    if best_arm_per_request is None or finetuned_per_request is None:
        return BreakEven(None, None, None, None, "no prices for serving")
    saving = best_arm_per_request - finetuned_per_request
    monthly = monthly_cost(saving, volume_per_day)
    if one_time_cost is None:
        return BreakEven(saving, monthly, None, None, "no fine-tuning cost (give a throughput or a figure)")
    if saving <= 0:
        return BreakEven(saving, monthly, None, None, "the fine-tuned model saves nothing per request")
    requests = one_time_cost / saving
    if volume_per_day is None:
        return BreakEven(saving, monthly, requests, None, "no volume declared")
    return BreakEven(saving, monthly, requests, requests / volume_per_day)
