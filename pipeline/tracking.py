"""`--report-to mlflow|tensorboard|wandb`: the run's training metrics, verdict and scores, sent to an
experiment tracker when the run ends. Off by default; the tracker's library is the user's to install.

What is sent is decided once, in `tracked_values` (pure, over the report document and the training log):
every training step's loss and every dev evaluation as step metrics, each arm's score on the target
metric, the fine-tuned model's score and gain, P(verdict), and the verdict itself as a tag/text. Each
`_Writer` only maps that onto its library's calls.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from advisor.errors import ConfigError
from advisor.report.document import Report
from advisor.rundir import RunDir
from pipeline.metrics import training_curve

TRACKERS = ("mlflow", "tensorboard", "wandb")
# the module each tracker is used through, and the package that provides it
_MODULES = {"mlflow": "mlflow", "tensorboard": "tensorboard", "wandb": "wandb"}


@dataclass(frozen=True)
class Tracked:
    steps: tuple[tuple[int, dict[str, float]], ...] = ()  # (training step, metrics at that step)
    summary: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def check_available(tracker: str) -> None:
    """Fail before any work when the tracker's library is missing (exit 2, naming the package)."""
    if tracker not in TRACKERS:
        raise ConfigError(f"unknown tracker {tracker!r}; allowed: {', '.join(TRACKERS)}", field="report_to")
    module = _MODULES[tracker]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"--report-to {tracker} needs the `{module}` package, which is not installed: "
            f"pip install {module}",
            field="report_to",
        )


def tracked_values(report: Report, run_dir: str | Path) -> Tracked:
    """What a tracker receives for this run: training curve, scores, the verdict."""
    steps: dict[int, dict[str, float]] = {}
    for rec in training_curve(RunDir(run_dir).train.read_metrics(), max_train=10**9):
        values = steps.setdefault(int(rec["step"]), {})
        prefix = "train" if rec["event"] == "train" else "dev"
        for key, value in rec.items():
            if (
                key not in ("event", "step")
                and isinstance(value, int | float)
                and not isinstance(value, bool)
            ):
                values[f"{prefix}/{key}"] = float(value)
    summary: dict[str, float] = {}
    prompting = report.prompting
    metric = prompting.target_metric if prompting is not None else None
    for arm in prompting.arms if prompting is not None else ():
        score = arm.scores.get(metric) if metric is not None else None
        if score is not None:
            summary[f"score/{arm.name}"] = float(score.value)
    verification = report.verification
    if verification is not None:
        finetuned = verification.finetuned
        summary[f"score/{finetuned.arm}"] = float(finetuned.scores[verification.metric].value)
        summary["finetune_gain"] = float(verification.difference.diff)
        summary["finetune_verified"] = float(bool(verification.finetune_verified))
    decision = report.decision
    if decision.confidence is not None:
        summary["verdict_probability"] = float(decision.confidence)
    tags = {"verdict": str(decision.verdict)}
    if metric:
        tags["target_metric"] = str(metric)
    return Tracked(tuple(sorted(steps.items())), summary, tags)


def report_to(tracker: str, report: Report, run_dir: str | Path) -> None:
    """Send the run's values to `tracker` (its library must be installed: see `check_available`)."""
    check_available(tracker)
    values = tracked_values(report, run_dir)
    run = RunDir(run_dir)
    name = run.path.resolve().name
    if tracker == "mlflow":
        _mlflow(values, run.tracker_dir(tracker), name)
    elif tracker == "tensorboard":
        _tensorboard(values, run.tracker_dir(tracker))
    else:
        _wandb(values, run.tracker_dir(tracker), name)


def _mlflow(values: Tracked, folder: Path, name: str) -> None:
    mlflow = importlib.import_module("mlflow")
    if not os.environ.get("MLFLOW_TRACKING_URI"):  # never a ./mlruns in the caller's folder
        mlflow.set_tracking_uri(folder.resolve().as_uri())
    with mlflow.start_run(run_name=name):
        for step, metrics in values.steps:
            mlflow.log_metrics(_safe_keys(metrics), step=step)
        mlflow.log_metrics(_safe_keys(values.summary))
        mlflow.set_tags(values.tags)


def _tensorboard(values: Tracked, folder: Path) -> None:
    writer = importlib.import_module("torch.utils.tensorboard").SummaryWriter(log_dir=str(folder))
    try:
        for step, metrics in values.steps:
            for key, value in metrics.items():
                writer.add_scalar(key, value, step)
        for key, value in values.summary.items():
            writer.add_scalar(key, value, 0)
        for key, text in values.tags.items():
            writer.add_text(key, text, 0)
    finally:
        writer.close()


def _wandb(values: Tracked, folder: Path, name: str) -> None:
    wandb = importlib.import_module("wandb")
    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT", "tunegate"), name=name, dir=str(folder), config=values.tags
    )
    try:
        for step, metrics in values.steps:
            run.log(metrics, step=step)
        run.summary.update({**values.summary, **values.tags})
    finally:
        run.finish()


def _safe_keys(metrics: Mapping[str, float]) -> dict[str, float]:
    # MLflow metric names allow letters, digits, _ - . space / only.
    return {"".join(c if c.isalnum() or c in "_-. /" else "_" for c in k): v for k, v in metrics.items()}
