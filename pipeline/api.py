"""The Python API's training half: `train` and `verify` do what `tunegate train` and `tunegate verify` do,
and return the same result type as `advise` (`advisor.api.AdviseResult`), read from the run folder.

    import tunegate

    advised = tunegate.advise(df, out="runs/tickets")       # a run folder is needed to train from
    trained = tunegate.train("runs/tickets", max_steps=200)  # refused (GateError) unless the verdict is
    trained.report.verification                              # fine_tune, or force=True (recorded)
    tunegate.verify("runs/tickets", adapter="elsewhere/adapter")

They live here, not in advisor/api.py, because the advisor never imports the pipeline.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

from advisor.api import AdviseResult, result
from advisor.backends.model import resolve_model_dir
from advisor.config import build
from advisor.errors import ConfigError
from advisor.finetune.config import TrainConfig
from advisor.rundir import RunDir
from pipeline import tracking
from pipeline.run import train_and_verify, verify_and_redecide
from pipeline.verify import FINETUNE_PROMPTS, adapter_candidate, model_candidate, served_candidate


def train(
    run_dir: str | os.PathLike[str],
    *,
    force: bool = False,
    resume: bool = False,
    config_file: str | os.PathLike[str] | None = None,
    report_to: str | None = None,
    **settings: Any,
) -> AdviseResult:
    """Train a LoRA adapter for the advise run in `run_dir`, verify it against the best prompting arm and
    decide again (what `tunegate train RUN_DIR` does). Returns the run's updated result.

    The gate holds: a `GateError` (exit code 5) when the run's verdict is not fine_tune, unless
    `force=True` (recorded in the report and the model card). `settings`: training settings (the fields of
    `advisor.finetune.config.TrainConfig`, e.g. `max_steps=200, r=16`), over `config_file`'s `[train]` table.
    `report_to`: "mlflow", "tensorboard" or "wandb", followed as the training runs.
    """
    if report_to is not None:
        tracking.check_available(report_to)  # before the work, not after it
    cfg = TrainConfig.from_toml(None if config_file is None else Path(config_file))
    if settings:
        cfg = build(TrainConfig, (None, cfg.to_dict()), ("train()", settings))
    report = train_and_verify(Path(run_dir), force=force, resume=resume, report_to=report_to, cfg=cfg)
    if report is None:  # a rank other than 0 of a torchrun job: rank 0 holds the result
        raise ConfigError("train() returns its result on rank 0 of a torchrun job only", field="rank")
    return result(report, RunDir(run_dir).path, run_dir)


def verify(
    run_dir: str | os.PathLike[str],
    *,
    adapter: str | os.PathLike[str] | None = None,
    model: str | None = None,
    base_url: str | None = None,
    api_key_env: str | None = None,
    prompts: str = FINETUNE_PROMPTS,
    latency_samples: int = 10,
) -> AdviseResult:
    """Score a fine-tuned model against the run's best prompting arm on its eval items, then decide again
    (what `tunegate verify RUN_DIR` does). Returns the run's updated result.

    The model: the run's own adapter (default); `adapter`, a peft adapter on `model` (default: the run's
    base model); `model` alone, a local model as it is; with `base_url`, the model `model` behind an
    OpenAI-compatible server (key in `api_key_env`, default OPENAI_API_KEY). `prompts`: "finetune",
    "best", or an arm's name (its recorded prompts).
    """
    if latency_samples < 0:
        raise ConfigError(f"must be 0 or more, got {latency_samples}", field="latency_samples")
    run = RunDir(run_dir)
    candidate: Any = None  # the run's own adapter
    if base_url is not None:
        if adapter is not None:
            raise ConfigError(
                "adapter= is for a local model; a served adapter is named by model=", field="adapter"
            )
        candidate = partial(served_candidate, base_url, model, api_key_env=api_key_env)
    elif adapter is not None:

        def candidate() -> Any:
            return adapter_candidate(model or _base_model(run), Path(adapter))

    elif model is not None:
        candidate = partial(model_candidate, model)
    with run.lock():
        report = verify_and_redecide(
            run.path, candidate=candidate, prompts_from=prompts, latency_samples=latency_samples
        )
    return result(report, run.path, run_dir)


def _base_model(run: RunDir) -> str:
    """The local model an adapter of this run sits on: the one it trained on, else the one advise ran."""
    report = run.read_report()
    if report.training is not None:
        return str(report.training.base_model)
    config = run.read_config()
    if config.get("backend", "hf") != "hf":
        raise ConfigError(
            "advise ran against a server: name the adapter's local base model folder with model=",
            field="model",
        )
    return str(resolve_model_dir(config.get("model")))


__all__ = ["train", "verify"]
