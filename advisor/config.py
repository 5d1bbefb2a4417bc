"""Configuration: frozen pydantic models, one optional TOML file, `key=value` overrides.

One system for `advise` (AdviseConfig, here) and `train` (advisor.finetune.config.TrainConfig): the shared
field types and `build()` live here. Every field carries its help text (`Field(description=...)`), which the
CLI's --help and its settings listing read. Values from `--set`/`--train-set` arrive as strings and are
read by the field's type (`none` for an unset optional value, `a,b` for a list). Every problem in every
layer is reported at once (one line each, naming the field and, for a config file, the file): a
ConfigError, exit 2.

Precedence: defaults < config file (`--config FILE`, table `[advise]` or top level) < explicit flags <
`--set key=value`. The resolved config is written next to every run's outputs (config.json).
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from advisor.errors import ConfigError, DeprecatedSetting, Problem
from advisor.files import load_toml
from advisor.textsafe import has_url_credentials, redact_url, shorten

BACKENDS = ("hf", "openai", "none")
TASKS = ("classify", "generate")
METRICS = ("accuracy", "macro_f1", "exact_match", "normalized_exact_match", "token_f1", "chrf")
DEMO_SELECTIONS = ("stratified", "nearest")
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
NONE_WORDS = ("none", "null", "")
RENAMED = {"max_tokens": "max_total_tokens"}
"""Old setting names still read, for one release, as their new names (with a DeprecatedSetting warning):
`max_tokens` was the run's token budget, which every OpenAI and vLLM user reads as the reply length."""


# --------------------------------------------------------------------------- field types shared by both


def _not_bool(value: Any) -> Any:
    """`seed = true` in TOML is a slip, not the number 1."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got {str(value).lower()}")
    return value


def _int_size(value: int) -> int:
    if abs(value) > MAX_INT:
        raise ValueError(
            f"must be at most {float(MAX_INT):g} in size, got a {len(str(abs(value)))}-digit number"
        )
    return value


def _figure_size(value: float) -> float:
    # NaN and infinity are refused by the models' `allow_inf_nan=False`: NaN would pass every `<= 0` check.
    if abs(value) > MAX_FIGURE:
        raise ValueError(f"must be at most {MAX_FIGURE:g} in size, got {value:g}")
    return value


Int = Annotated[int, BeforeValidator(_not_bool), AfterValidator(_int_size)]
"""An integer of a size numpy and torch take."""
MAX_SEED = 2**31 - 1
Seed = Annotated[Int, Field(ge=0, le=MAX_SEED)]
"""A seed: numpy's generators refuse negative seeds and scikit-learn's `random_state` stops at 2^32 - 1;
2^31 - 1 leaves room for the seeds derived from it (seed + step)."""
Figure = Annotated[float, BeforeValidator(_not_bool), AfterValidator(_figure_size)]
"""A finite number of a sane size."""


def _threshold_value(value: Any) -> Any:
    """A threshold override: a finite number (text that reads as one is one, as `--threshold NAME=500`
    arrives), true/false, other text (`a,b` for a list) or a list. Whether it suits the threshold it
    replaces (a number for a list is refused) is checked when the rules load."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ValueError(f"must be a finite number, got {shorten(str(value))}")
        return _figure_size(number)
    if isinstance(value, list | tuple):
        return tuple(item if isinstance(item, str) else _threshold_value(item) for item in value)
    raise ValueError(f"must be a number, true or false, or a list, got {type(value).__name__}")


ThresholdOverride = Annotated[Any, PlainValidator(_threshold_value)]
"""A rule threshold's new value (see `_threshold_value`)."""


def one_of(*allowed: str) -> AfterValidator:
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"{shorten(value)} is not one of: {', '.join(allowed)}")
        return value

    return AfterValidator(check)


class Settings(BaseModel):
    """The base of AdviseConfig and TrainConfig: frozen, unknown keys refused, no NaN or infinity."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, validate_default=False)
    UNKNOWN: ClassVar[str] = "unknown setting; known settings"

    @model_validator(mode="before")
    @classmethod
    def _read_text_values(cls, data: Any) -> Any:
        """`--set` values are strings: `none` unsets an optional field, `a,b` is a list."""
        if not isinstance(data, Mapping):
            return data
        out = renamed(cls, data)
        for key, value in list(out.items()):
            info = cls.model_fields.get(key)
            if info is None or not isinstance(value, str):
                continue
            hint = info.annotation
            args = typing.get_args(hint)
            if type(None) in args and value.strip().lower() in NONE_WORDS:
                out[key] = None
            elif typing.get_origin(hint) is tuple:
                out[key] = [item.strip() for item in value.split(",") if item.strip()]
        return out

    def __init__(self, **values: Any) -> None:
        """Keyword construction reports every problem at once as a ConfigError, like the files do."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(problems=problems(type(self), exc)) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def replace(self: _S, **changes: Any) -> _S:
        """A copy with `changes`, validated like any other."""
        return type(self).model_validate({**self.model_dump(), **changes})


_S = TypeVar("_S", bound=Settings)


def renamed(cls: type[Settings], values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with the old names of `cls`'s settings (RENAMED) read as the new ones, each with a
    DeprecatedSetting warning; both names with different values is refused."""
    out = dict(values)
    for old, new in RENAMED.items():
        if old not in out or new not in cls.model_fields:
            continue
        value = out.pop(old)
        if out.get(new) is not None and value is not None and out[new] != value:
            raise ConfigError(f"give one of '{old}' (its old name) and '{new}', not both", field=new)
        if out.get(new) is None:
            out[new] = value
        warnings.warn(
            f"the setting '{old}' is now '{new}' (the old name goes in the next release)",
            DeprecatedSetting,
            stacklevel=3,
        )
    return out


def build(cls: type[_S], *layers: tuple[str | None, Mapping[str, Any]]) -> _S:
    """Merge (source, values) layers, later winning, and validate them as one model.

    Every problem is reported at once, each naming its field and the source (a config file, `--set`) the
    value came from; `None` values are "not given" (argparse's default) and skipped.
    """
    merged: dict[str, Any] = {}
    source_of: dict[str, str | None] = {}
    for source, given in layers:
        values = renamed(cls, given)  # per layer, so a later layer's old name still wins
        for key, value in values.items():
            if value is None:
                continue
            if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                value = {**merged[key], **value}  # tables merge key by key (thresholds)
            merged[key] = value
            source_of[key] = source
    try:
        return cls(**merged)
    except ConfigError as exc:  # name where each bad value came from
        raise ConfigError(
            problems=[
                dataclasses.replace(p, file=source_of.get((p.field or "").split(".")[0].split("[")[0]))
                for p in exc.problems
            ]
        ) from None


def problems(cls: type[Settings], exc: ValidationError) -> list[Problem]:
    """pydantic's errors as Problems: one per field, in our wording, with the value shown."""
    out: list[Problem] = []
    seen: set[str] = set()
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or None
        if field in seen:
            continue  # a union reports each branch; the first says enough
        seen.add(field or "")
        kind = err["type"]
        if kind == "extra_forbidden":
            message = f"{cls.UNKNOWN}: {', '.join(cls.model_fields)}"
        elif kind in ("value_error", "assertion_error"):
            message = str(err["ctx"]["error"])
        else:
            message = f"{err['msg'][0].lower()}{err['msg'][1:]} (got {shorten(err['input'])})"
        out.append(Problem(message, field=field))
    return out


def describe(cls: type[Settings], name: str) -> str:
    """A field's help text with its default, for an argparse flag."""
    info = cls.model_fields[name]
    default = None if info.default_factory is not None else info.default
    if default is None or default == "" or default == ():
        return str(info.description)
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    return f"{info.description} (default {shown})"


def settings_help(cls: type[Settings], heading: str) -> str:
    """Every setting of `cls` with its help text and default: the listing --help shows."""
    lines = [heading]
    for name in cls.model_fields:
        lines.append(f"  {name:<24} {describe(cls, name)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- advise


def _no_url_credentials(url: str | None) -> str | None:
    if url is not None and has_url_credentials(url):
        raise ValueError(URL_CREDENTIALS_HELP)
    return url


Positive = Annotated[Figure, Field(gt=0)]


class AdviseConfig(Settings):
    data: str = Field(
        "",
        description="task data: chat/ShareGPT/prompt-completion/alpaca JSONL, a CSV/TSV/Parquet/JSONL table, "
        "or a Hugging Face `datasets` dataset (a save_to_disk folder or a Hub dataset id)",
    )
    fmt: str | None = Field(None, description="force the input format instead of detecting it")
    input_col: str | None = Field(None, description="table or dataset column holding the input text")
    output_col: str | None = Field(None, description="table or dataset column holding the target text")
    dataset_split: str | None = Field(
        None, description="the `datasets` split to read (default: train, or the only one)"
    )
    task: Annotated[str, one_of(*TASKS)] | None = Field(
        None, description="task kind: classify or generate (default: detected from the data)"
    )
    target_metric: Annotated[str, one_of(*METRICS)] | None = Field(
        None, description="target metric (default: accuracy for classification, chrf for generation)"
    )
    quality_target: Annotated[Figure, Field(ge=0, le=1)] | None = Field(
        None, description="quality the target metric must reach, between 0 and 1"
    )
    volume_per_day: Positive | None = Field(None, description="expected requests per day")
    latency_budget_ms: Positive | None = Field(None, description="latency budget per request, milliseconds")
    domain: str | None = Field(None, description="declared domain language, e.g. legal, medical, code")
    needs_consistent_style: bool = Field(False, description="outputs must keep one consistent tone or style")
    task_description: str | None = Field(
        None, description="one-sentence task description for the system prompt"
    )
    system_prompt_file: str | None = Field(None, description="system prompt file for the system arm")
    out: str = Field("", description="run folder (default: runs/<data file stem>)")
    seed: Seed = Field(0, description="seed of the split, the demonstrations and the resampling")
    eval_size: Annotated[Int, Field(ge=1)] = Field(200, description="held-out eval items")
    dev_size: Annotated[Int, Field(ge=1)] = Field(100, description="dev items for training")
    backend: Annotated[str, one_of(*BACKENDS)] = Field("hf", description="model backend: hf, openai or none")
    model: str | None = Field(
        None,
        description="a Hugging Face Hub id[@revision], a local HF model folder or a .gguf file; with "
        "--backend openai the server's model name (default: the embedded SmolLM2-135M-Instruct)",
    )
    base_url: Annotated[str | None, AfterValidator(_no_url_credentials)] = Field(
        None, description="OpenAI-compatible server URL (or env OPENAI_BASE_URL)"
    )
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    tokenizer: str | None = Field(
        None,
        description="--backend openai: the served model's tokenizer (a Hub id or a local folder), for exact "
        "prompt-logprob (echo) scoring",
    )
    concurrency: Annotated[Int, Field(ge=1)] = Field(
        4, description="--backend openai: requests in flight at once (the next is sent as one finishes)"
    )
    k_ladder: tuple[Annotated[Int, Field(ge=1)], ...] = Field((1, 2, 4, 8), description="few-shot ladder")
    demo_selection: Annotated[str, one_of(*DEMO_SELECTIONS)] = Field(
        "stratified", description="few-shot demonstrations: stratified random or TF-IDF nearest neighbours"
    )
    min_gain: Figure = Field(
        0.02, description="smallest gain over a cheaper arm that counts as beating it (plateau test)"
    )
    max_gen_tokens: Annotated[Int, Field(ge=1)] = Field(64, description="tokens generated per answer at most")
    max_prompt_tokens: Annotated[Int, Field(ge=16)] = Field(
        2048,
        description="prompt budget: the longest prompt (demonstrations included) a few-shot arm may send; "
        "the ladder and its extension stop at the largest k that fits",
    )
    max_requests: Annotated[Int, Field(ge=1)] | None = Field(
        None, description="hard budget on model requests for this run (HTTP attempts, retries included)"
    )
    max_total_tokens: Annotated[Int, Field(ge=1)] | None = Field(
        None,
        description="hard budget on tokens for this whole run, prompts and answers together (not the "
        "length of one answer: that is max_gen_tokens); formerly max_tokens",
    )
    timeout: Positive = Field(60.0, description="seconds for each model server request (each attempt)")
    max_retries: Annotated[Int, Field(ge=0)] = Field(
        5, description="retries of a failed request (429, 5xx, timeouts), each counted in max_requests"
    )
    latency_samples: Annotated[Int, Field(ge=1)] = Field(
        20, description="requests timed per arm to measure latency"
    )
    pilot: bool = Field(
        True,
        description="train short LoRA pilots (the `train` recipe, on nested subsets of the train split) to "
        "measure the fine-tuning side; needs a local trainable model (the hf backend's)",
    )
    finetune_model: str | None = Field(
        None,
        description="the model to fine-tune (the candidate B: a Hub id[@revision], a local HF model folder "
        "or "
        "a .gguf file), when it is not the model the arms prompt; its pilots train, it is also measured "
        "prompted, and `run` trains it (default: the arms' model, when it is a local one)",
    )
    pilot_steps: Annotated[Int, Field(ge=1)] = Field(
        60, description="optimizer steps the pilots may take in all (their sizes follow from it)"
    )
    horizon_days: Positive = Field(
        90.0, description="days over which the break-even of fine-tuning is judged"
    )
    prices: str | None = Field(None, description="price file (TOML), see advisor/data/prices.example.toml")
    rules_dirs: tuple[str, ...] = Field((), description="extra rules folders")
    thresholds: dict[str, ThresholdOverride] = Field(
        default_factory=dict,
        description="rule threshold overrides (thresholds.NAME=VALUE; a list threshold as NAME=a,b)",
    )

    @field_validator("tokenizer")
    @classmethod
    def _tokenizer_needs_a_server(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("backend", "openai") != "openai":
            raise ValueError("only --backend openai takes a tokenizer (a local model brings its own)")
        return value

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if d["base_url"] is not None:  # refused by the model; redacted again in case a caller bypassed that
            d["base_url"] = redact_url(d["base_url"])
        return d


def read_config_file(path: str) -> dict[str, Any]:
    """Read a TOML config file: the `[advise]` table if present (with a top-level `[thresholds]` table
    beside it), else the top level; `[train]` is the training settings' (read by `tunegate train`).

    Beside `[advise]`, anything but `[thresholds]` and `[train]` is refused: a setting there would
    otherwise be dropped without a word."""
    doc = load_toml(path, ConfigError, "config file")
    if "advise" not in doc:
        return {k: v for k, v in doc.items() if k != "train"}
    table = doc["advise"]
    if not isinstance(table, dict):
        raise ConfigError("[advise] must be a table", file=path, field="advise")
    stray = sorted(k for k in doc if k not in ("advise", "thresholds", "train"))
    if stray:
        raise ConfigError(
            f"{', '.join(stray)} beside the [advise] table: put settings in [advise] (the file holds "
            "[advise], [thresholds] and [train])",
            file=path,
            field=stray[0],
        )
    out = {k: v for k, v in table.items() if k != "train"}
    outer = doc.get("thresholds")
    if outer is not None:
        inner = out.get("thresholds") or {}
        if not isinstance(outer, dict) or not isinstance(inner, dict):
            raise ConfigError("[thresholds] must be a table", file=path, field="thresholds")
        out["thresholds"] = {**outer, **inner}  # [advise.thresholds] wins over [thresholds]
    return out


def parse_overrides(pairs: list[str], flag: str = "--set") -> dict[str, str]:
    """`key=value` strings into a dict; values stay strings and are read by the field's type."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected key=value, got {pair!r}", field=flag)
        out[key.strip()] = value.strip()
    return out


def resolve(*layers: tuple[str | None, Mapping[str, Any]]) -> AdviseConfig:
    """AdviseConfig from (source, values) layers, later winning; `thresholds.NAME` keys fill `thresholds`.

    `out` defaults to runs/<data file stem>.
    """
    tables: list[tuple[str | None, Mapping[str, Any]]] = []
    for source, values in layers:
        plain = {k: v for k, v in values.items() if not k.startswith("thresholds.")}
        dotted = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("thresholds.")}
        if dotted:
            plain["thresholds"] = {**dict(plain.get("thresholds") or {}), **dotted}
        tables.append((source, plain))
    merged_data = next((v["data"] for _, v in reversed(tables) if v.get("data") is not None), "run")
    merged_out = next((v["out"] for _, v in reversed(tables) if v.get("out")), None)
    if not merged_out:
        stem = Path(str(merged_data)).name.split(".")[0] or "run"
        tables.append((None, {"out": os.path.join("runs", stem)}))
    return build(AdviseConfig, *tables)


def parse_target(text: str) -> tuple[str, float]:
    """`accuracy=0.85` -> ("accuracy", 0.85)."""
    metric, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(f"expected METRIC=VALUE, got {text!r}", field="--target")
    if metric.strip() not in METRICS:
        raise ConfigError(f"{metric.strip()!r} is not one of: {', '.join(METRICS)}", field="--target")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"not a number: {value!r}", field="--target") from None
    if not 0.0 <= number <= 1.0:  # also refuses nan
        raise ConfigError(f"must be between 0 and 1, got {value.strip()!r}", field="--target")
    return metric.strip(), number
