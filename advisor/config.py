"""The advise run's configuration: one dataclass with defaults, one optional TOML file, key=value overrides.

Precedence: defaults < config file (`--config FILE`, table `[advise]` or top level) < explicit flags <
`--set key=value`. The resolved config is written next to every run's outputs (config.json).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor.errors import ConfigError
from advisor.files import load_toml
from advisor.report.textsafe import has_url_credentials, redact_url, shorten

BACKENDS = ("hf", "openai", "none")
TASKS = ("classify", "generate")
METRICS = ("accuracy", "macro_f1", "exact_match", "normalized_exact_match", "token_f1", "chrf")
MAX_FIGURE = 1e12
"""Largest number any setting takes (a volume, a latency budget, a horizon, a threshold): larger is a typo,
and would overflow the cost arithmetic to infinity."""
MAX_INT = 2**63 - 1
"""Largest integer setting (seeds and sizes go to numpy and torch, which take 64-bit integers)."""
URL_CREDENTIALS_HELP = (
    "a user name or password in the server URL is refused (it would be written to the run's files and "
    "sent as Basic auth); put the API key in the environment variable named by --api-key-env "
    "(default OPENAI_API_KEY)"
)


@dataclass(frozen=True)
class AdviseConfig:
    data: str = ""
    fmt: str | None = None
    input_col: str | None = None
    output_col: str | None = None
    dataset_split: str | None = None  # a `datasets` dataset's split (None: train, else its only split)
    task: str | None = None  # None: detected from the data
    target_metric: str | None = None  # None: accuracy for classification, chrf for generation
    quality_target: float | None = None
    volume_per_day: float | None = None
    latency_budget_ms: float | None = None
    domain: str | None = None
    needs_consistent_style: bool = False
    task_description: str | None = None
    system_prompt_file: str | None = None
    out: str = ""
    seed: int = 0
    eval_size: int = 200
    dev_size: int = 100
    backend: str = "hf"
    model: str | None = None  # None: the embedded SmolLM2-135M-Instruct (or the server's only model)
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    k_ladder: tuple[int, ...] = (1, 2, 4, 8)
    demo_selection: str = "stratified"
    min_gain: float = 0.02
    max_gen_tokens: int = 64
    max_requests: int | None = None
    max_tokens: int | None = None
    timeout: float = 60.0  # seconds for each request to the model server (each attempt)
    max_retries: int = 5  # retries of a failed request (429, 5xx, timeouts), each counted in max_requests
    latency_samples: int = 20
    horizon_days: float = 90.0
    prices: str | None = None
    rules_dirs: tuple[str, ...] = ()
    thresholds: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _choice("backend", self.backend, BACKENDS)
        if self.task is not None:
            _choice("task", self.task, TASKS)
        if self.target_metric is not None:
            _choice("target_metric", self.target_metric, METRICS)
        if self.demo_selection not in ("stratified", "nearest"):
            _choice("demo_selection", self.demo_selection, ("stratified", "nearest"))
        for name in ("eval_size", "dev_size", "max_gen_tokens", "latency_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be at least 1, got {getattr(self, name)}", field=name)
        if self.quality_target is not None and not 0.0 <= self.quality_target <= 1.0:
            raise ConfigError(f"must be between 0 and 1, got {self.quality_target}", field="quality_target")
        if any(k < 1 for k in self.k_ladder):
            raise ConfigError(f"every k must be at least 1, got {list(self.k_ladder)}", field="k_ladder")
        if not (self.timeout > 0 and self.timeout < float("inf")):
            raise ConfigError(f"must be a positive number of seconds, got {self.timeout}", field="timeout")
        if self.max_retries < 0:
            raise ConfigError(f"must be 0 or more, got {self.max_retries}", field="max_retries")
        for f in dataclasses.fields(self):
            _check_number(f.name, getattr(self, f.name))
        for name, value in self.thresholds.items():
            _check_number(f"thresholds.{name}", value)
        for name in ("volume_per_day", "latency_budget_ms", "horizon_days"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"must be positive, got {value}", field=name)
        if self.base_url is not None and has_url_credentials(self.base_url):
            raise ConfigError(URL_CREDENTIALS_HELP, field="base_url")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}
        if d["base_url"] is not None:  # refused above; redacted again in case a caller bypassed that
            d["base_url"] = redact_url(d["base_url"])
        return d


def _check_number(name: str, value: Any) -> None:
    """Every number in the config is finite and of a sane size; NaN would pass every `<= 0` check."""
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"must be a finite number, got {v}", field=name)
        limit = MAX_INT if isinstance(v, int) else MAX_FIGURE
        if abs(v) > limit:
            raise ConfigError(f"must be at most {limit:g} in size, got {float(v):g}", field=name)


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{value!r} is not one of: {', '.join(allowed)}", field=name)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def read_config_file(path: str) -> dict[str, Any]:
    """Read a TOML config file: the `[advise]` table if present, else the top level."""
    doc = load_toml(path, ConfigError, "config file")
    table = doc.get("advise", doc)
    if not isinstance(table, dict):
        raise ConfigError("[advise] must be a table", file=path, field="advise")
    return {k: v for k, v in table.items() if k not in ("train",)}


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """`key=value` strings into a dict; values stay strings and are coerced by `resolve`."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected key=value, got {pair!r}", field="--set")
        out[key.strip()] = value.strip()
    return out


def resolve(*layers: Mapping[str, Any], source: str = "config") -> AdviseConfig:
    """Merge layers (later wins), coerce each value to its field's type, and validate."""
    fields = {f.name: f for f in dataclasses.fields(AdviseConfig)}
    hints = typing.get_type_hints(AdviseConfig)
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if value is None:
                continue
            if key.startswith("thresholds."):
                thresholds = dict(merged.get("thresholds", {}))
                thresholds[key.split(".", 1)[1]] = _coerce(key, value, float)
                merged["thresholds"] = thresholds
                continue
            if key not in fields:
                known = ", ".join(sorted(fields))
                raise ConfigError(f"unknown setting {key!r}; known settings: {known}", file=source, field=key)
            merged[key] = _coerce(key, value, hints[key])
    if not merged.get("out"):
        stem = Path(str(merged.get("data", "run"))).name.split(".")[0] or "run"
        merged["out"] = os.path.join("runs", stem)
    return AdviseConfig(**merged)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        if isinstance(value, str) and value.lower() in ("none", "null", ""):
            return None
        return _coerce(name, value, inner[0])
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if hint is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if hint is str:
            return str(value)
        if origin is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(
                _coerce(name, v.strip() if isinstance(v, str) else v, args[0]) for v in items if v != ""
            )
        if origin is Mapping or origin is dict:
            if not isinstance(value, Mapping):
                raise ValueError(value)
            return {str(k): float(v) for k, v in value.items()}
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"invalid value {shorten(value)}", field=name) from None
    return value


def parse_target(text: str) -> tuple[str, float]:
    """`accuracy=0.85` -> ("accuracy", 0.85)."""
    metric, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(f"expected METRIC=VALUE, got {text!r}", field="--target")
    _choice("--target", metric.strip(), METRICS)
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"not a number: {value!r}", field="--target") from None
    if not 0.0 <= number <= 1.0:  # also refuses nan
        raise ConfigError(f"must be between 0 and 1, got {value.strip()!r}", field="--target")
    return metric.strip(), number
