"""The training configuration: one frozen dataclass, validated as a whole, from TOML plus `key=value`.

Defaults are the ones that work for a small instruction model on a few hundred examples: LoRA r=8 on all
linear layers, lr 2e-4 with a short warm-up and cosine decay, sequences cut at 256 tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from advisor.config import MAX_FIGURE, MAX_INT
from advisor.errors import ConfigError, Problem
from advisor.files import load_toml
from advisor.report.textsafe import shorten

SCHEDULES = ("cosine", "linear")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a LoRA run. `model=None` means the run's own model (the advisor's)."""

    model: str | None = None
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"
    lr: float = 2e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    epochs: float = 3.0
    max_steps: int = 0  # 0: derived from epochs
    batch_size: int = 8
    grad_accum: int = 1
    max_seq_len: int = 256
    warmup_ratio: float = 0.05
    schedule: str = "cosine"
    eval_every: int = 25  # optimizer steps between dev evaluations; 0: only at the end
    early_stopping_patience: int = 3  # dev evaluations without improvement before stopping; 0: never stop
    save_every: int = 25  # optimizer steps between checkpoints; 0: no checkpoints
    seed: int = 0
    qlora: bool = False
    bf16: str | bool = "auto"
    group_by_length: bool = True
    activation_checkpointing: bool = (
        False  # recompute layer activations in backward: less memory, ~25% slower
    )
    merge: bool = False

    def __post_init__(self) -> None:
        problems = [Problem(msg, field=name) for name, msg in _field_problems(self)]
        if problems:
            raise ConfigError(problems=problems)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if isinstance(self.target_modules, tuple):
            d["target_modules"] = list(self.target_modules)
        return d

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_toml(cls, path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
        """Defaults, then the file's `[train]` table (or its top level), then `key=value` overrides."""
        values: dict[str, Any] = {}
        if path is not None:
            p = Path(path)
            doc = load_toml(p, ConfigError, "training config")
            table = doc.get("train", doc)
            if not isinstance(table, dict):
                raise ConfigError("[train] must be a table", file=str(p), field="train")
            values.update(_check_keys(table, str(p)))
        values.update(parse_overrides(overrides))
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TrainConfig:
        values = dict(_check_keys(values, None))
        tm = values.get("target_modules")
        if isinstance(tm, list):
            values["target_modules"] = tuple(tm)
        return cls(**values)


_FIELD_TYPES: dict[str, str] = {f.name: str(f.type) for f in fields(TrainConfig)}


def _check_keys(table: Mapping[str, Any], file: str | None) -> Mapping[str, Any]:
    unknown = sorted(set(table) - set(_FIELD_TYPES))
    if unknown:
        allowed = ", ".join(_FIELD_TYPES)
        raise ConfigError(
            problems=[
                Problem(f"unknown training option; allowed: {allowed}", file=file, field=k) for k in unknown
            ]
        )
    return table


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`key=value` strings to typed values, by the field's declared type."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"override '{item}' must look like key=value")
        if key not in _FIELD_TYPES:
            raise ConfigError(f"unknown training option; allowed: {', '.join(_FIELD_TYPES)}", field=key)
        out[key] = _coerce(key, raw.strip())
    return out


def _coerce(key: str, raw: str) -> Any:
    kind = _FIELD_TYPES[key]
    low = raw.lower()
    try:
        if key == "bf16":
            return {"true": True, "false": False, "auto": "auto"}.get(low, raw)
        if key == "target_modules":
            return raw if raw == "all-linear" else tuple(s.strip() for s in raw.split(",") if s.strip())
        if key == "model":
            return None if low in ("", "none") else raw
        if kind == "bool":
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)  # more than 4,300 digits is a ValueError (sys.get_int_max_str_digits)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        raise ConfigError(f"'{raw}' is not a valid {kind}", field=key) from exc
    return raw


def _field_problems(c: TrainConfig) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []

    def need(ok: bool, name: str, msg: str) -> None:
        if not ok:
            out.append((name, f"{msg} (got {shorten(getattr(c, name))})"))

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and abs(v) <= MAX_INT

    def is_num(v: Any) -> bool:  # finite and of a sane size: NaN passes every comparison check
        return isinstance(v, int | float) and not isinstance(v, bool) and abs(v) <= MAX_FIGURE

    need(is_int(c.r) and c.r >= 1, "r", "must be an integer >= 1")
    need(is_num(c.alpha) and c.alpha > 0, "alpha", "must be a number > 0")
    need(is_num(c.dropout) and 0 <= c.dropout < 1, "dropout", "must be in [0, 1)")
    tm = c.target_modules
    need(
        tm == "all-linear"
        or (isinstance(tm, tuple) and len(tm) > 0 and all(isinstance(s, str) and s for s in tm)),
        "target_modules",
        "must be 'all-linear' or a non-empty list of module names",
    )
    need(is_num(c.lr) and c.lr > 0, "lr", "must be a number > 0")
    need(is_num(c.weight_decay) and c.weight_decay >= 0, "weight_decay", "must be >= 0")
    need(is_num(c.max_grad_norm) and c.max_grad_norm > 0, "max_grad_norm", "must be > 0")
    need(is_num(c.epochs) and c.epochs > 0, "epochs", "must be > 0")
    need(is_int(c.max_steps) and c.max_steps >= 0, "max_steps", "must be an integer >= 0 (0: use epochs)")
    need(is_int(c.batch_size) and c.batch_size >= 1, "batch_size", "must be an integer >= 1")
    need(is_int(c.grad_accum) and c.grad_accum >= 1, "grad_accum", "must be an integer >= 1")
    need(is_int(c.max_seq_len) and c.max_seq_len >= 8, "max_seq_len", "must be an integer >= 8")
    need(is_num(c.warmup_ratio) and 0 <= c.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
    need(c.schedule in SCHEDULES, "schedule", f"must be one of {', '.join(SCHEDULES)}")
    need(
        is_int(c.eval_every) and c.eval_every >= 0,
        "eval_every",
        "must be an integer >= 0 (0: only at the end)",
    )
    need(
        is_int(c.early_stopping_patience) and c.early_stopping_patience >= 0,
        "early_stopping_patience",
        "must be an integer >= 0 (0: never stop early)",
    )
    need(
        is_int(c.save_every) and c.save_every >= 0,
        "save_every",
        "must be an integer >= 0 (0: no checkpoints)",
    )
    need(is_int(c.seed), "seed", "must be an integer")
    need(isinstance(c.qlora, bool), "qlora", "must be true or false")
    need(c.bf16 == "auto" or isinstance(c.bf16, bool), "bf16", "must be 'auto', true or false")
    need(isinstance(c.group_by_length, bool), "group_by_length", "must be true or false")
    need(isinstance(c.merge, bool), "merge", "must be true or false")
    need(isinstance(c.activation_checkpointing, bool), "activation_checkpointing", "must be true or false")
    need(
        c.model is None or (isinstance(c.model, str) and c.model != ""),
        "model",
        "must be a model folder or id",
    )
    return out
