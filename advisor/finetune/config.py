"""The training configuration: one frozen pydantic model, validated as a whole, from TOML plus `key=value`.

The same config system as `advise` (advisor.config: field types, every problem at once, help text in the
fields). Defaults are the ones that work for a small instruction model on a few hundred examples: LoRA r=8
on all linear layers, lr 2e-4 with a short warm-up and cosine decay, sequences cut at 256 tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, model_validator

from advisor.config import NONE_WORDS, Figure, Int, Seed, Settings, build, one_of
from advisor.errors import ConfigError, Problem
from advisor.files import load_toml
from advisor.textsafe import shorten

SCHEDULES = ("cosine", "linear")
ALL_LINEAR = "all-linear"


def _target_modules(value: Any) -> Any:
    """'all-linear', or module names: a TOML list or `q_proj,v_proj`."""
    if isinstance(value, str) and value.strip() != ALL_LINEAR:
        value = [s.strip() for s in value.split(",") if s.strip()]
    if isinstance(value, str):
        return ALL_LINEAR
    if isinstance(value, list | tuple) and value and all(isinstance(s, str) and s for s in value):
        return tuple(value)
    raise ValueError(f"must be '{ALL_LINEAR}' or a non-empty list of module names (got {shorten(value)})")


def _bf16(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("auto", "true", "false"):
        return {"auto": "auto", "true": True, "false": False}[value.strip().lower()]
    if isinstance(value, bool):
        return value
    raise ValueError(f"must be 'auto', true or false (got {shorten(value)})")


def _model(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in NONE_WORDS:
        return None
    return value


Ratio = Annotated[Figure, Field(ge=0, lt=1)]


class TrainConfig(Settings):
    """Everything that shapes a LoRA run. `model=None` means the run's own model (the advisor's)."""

    UNKNOWN: ClassVar[str] = "unknown training option; allowed"

    model: Annotated[str | None, BeforeValidator(_model)] = Field(
        None, description="base model folder or id (default: the advise run's model)"
    )
    r: Annotated[Int, Field(ge=1)] = Field(8, description="LoRA rank")
    alpha: Annotated[Int, Field(gt=0)] = Field(16, description="LoRA alpha (scale alpha/r)")
    dropout: Ratio = Field(0.05, description="LoRA dropout, in [0, 1)")
    target_modules: Annotated[str | tuple[str, ...], BeforeValidator(_target_modules)] = Field(
        ALL_LINEAR, description="modules to adapt: all-linear, or names such as q_proj,v_proj"
    )
    lr: Annotated[Figure, Field(gt=0)] = Field(2e-4, description="peak learning rate")
    weight_decay: Annotated[Figure, Field(ge=0)] = Field(0.0, description="AdamW weight decay")
    max_grad_norm: Annotated[Figure, Field(gt=0)] = Field(1.0, description="gradient clipping norm")
    epochs: Annotated[Figure, Field(gt=0)] = Field(3.0, description="passes over the training split")
    max_steps: Annotated[Int, Field(ge=0)] = Field(0, description="optimizer steps; 0: derived from epochs")
    batch_size: Annotated[Int, Field(ge=1)] = Field(8, description="examples per micro-batch")
    grad_accum: Annotated[Int, Field(ge=1)] = Field(1, description="micro-batches per optimizer step")
    max_seq_len: Annotated[Int, Field(ge=8)] = Field(
        256, description="tokens per example at most (cut beyond)"
    )
    warmup_ratio: Ratio = Field(0.05, description="share of the steps spent warming up, in [0, 1)")
    schedule: Annotated[str, one_of(*SCHEDULES)] = Field(
        "cosine", description="learning-rate decay after warm-up: cosine or linear"
    )
    eval_every: Annotated[Int, Field(ge=0)] = Field(
        25, description="optimizer steps between dev evaluations; 0: only at the end"
    )
    early_stopping_patience: Annotated[Int, Field(ge=0)] = Field(
        3, description="dev evaluations without improvement before stopping; 0: never stop early"
    )
    save_every: Annotated[Int, Field(ge=0)] = Field(
        25, description="optimizer steps between checkpoints; 0: no checkpoints"
    )
    seed: Seed = Field(0, description="seed of the initialisation, the shuffling and dropout")
    qlora: bool = Field(False, description="4-bit QLoRA via bitsandbytes (needs CUDA)")
    bf16: Annotated[bool | str, BeforeValidator(_bf16)] = Field(
        "auto", description="bf16 mixed precision: auto, true or false"
    )
    group_by_length: bool = Field(True, description="batch examples of similar length together")
    activation_checkpointing: bool = Field(
        False, description="recompute layer activations in backward: less memory, ~25% slower"
    )
    merge: bool = Field(False, description="also write the adapter merged into the base model")
    fsdp: bool = Field(
        False,
        description="under torchrun: shard the model's weights over the ranks with torch's fully_shard "
        "(FSDP2) instead of a full copy on each (DDP); no checkpoints yet (save_every=0), so no --resume",
    )

    @model_validator(mode="after")
    def _fsdp_keeps_no_checkpoints(self) -> TrainConfig:
        if self.fsdp and self.save_every:
            raise ValueError(
                "fsdp=true keeps no checkpoints yet (each rank's optimizer state is its own shard): "
                "set save_every=0"
            )
        return self

    @classmethod
    def from_toml(cls, path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
        """Defaults, then the file's `[train]` table (or its top level), then `key=value` overrides."""
        layers: list[tuple[str | None, Mapping[str, Any]]] = []
        if path is not None:
            p = Path(path)
            doc = load_toml(p, ConfigError, "training config")
            table = doc.get("train", doc)
            if not isinstance(table, dict):
                raise ConfigError("[train] must be a table", file=str(p), field="train")
            layers.append((str(p), table))
        layers.append(("--train-set", parse_overrides(overrides)))
        return build(cls, *layers)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TrainConfig:
        return build(cls, (None, values))


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """`key=value` strings (`-` in a key read as `_`); the values are read by the field's type."""
    out: dict[str, str] = {}
    bad: list[Problem] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            bad.append(Problem(f"override '{item}' must look like key=value"))
            continue
        out[key] = raw.strip()
    if bad:
        raise ConfigError(problems=bad)
    return out
