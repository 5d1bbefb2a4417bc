"""The Python API: `from advisor import advise` (advisor/__init__.py's lazy `advise` calls this module's).

    from advisor import advise

    result = advise("reviews.jsonl", eval_size=100)   # or a pandas DataFrame, a datasets Dataset
    result.verdict                  # "prompt" | "few_shot" | "fine_tune" | "collect_data" | "inconclusive"
    result.report.decision.summary  # the typed report (advisor.document.Report), as in decision.json
    result.arms                     # one row per prompting arm: scores with their 95% intervals
    result.predictions              # one row per (arm, eval item): input, target, prediction, correct

It runs the recipe `tunegate advise` runs (advisor/recipe.py, `recipe.advise`), with the same settings
(the fields of `advisor.config.AdviseConfig`) and the same validation. It writes nothing into the
current directory: without `out` the run folder is a temporary one, read back and deleted before
`advise` returns.

In-memory data (a DataFrame, a `datasets` Dataset or DatasetDict) is written into the run folder as
JSON Lines (advisor/intake/frames.py) and read by the same intake as a file, so the verdict is the one
the same rows give from a file; problems name the DataFrame row and column. `train` and `verify` (the
training half) are in `pipeline.api`; `import tunegate` offers all three.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advisor import recipe
from advisor.config import AdviseConfig
from advisor.document import Report
from advisor.errors import ConfigError, DataError
from advisor.intake import frames
from advisor.rundir import RunDir

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class AdviseResult:
    """What `advise` measured and decided.

    `report`: the typed decision document (what decision.json holds). `arms`: a DataFrame with one row
    per prompting arm (empty for a data-only run). `predictions`: a DataFrame with one row per arm and
    eval item. `run_dir`: the run folder, or None when a temporary one was used (and deleted).
    """

    report: Report
    arms: pd.DataFrame
    predictions: pd.DataFrame
    run_dir: Path | None

    @property
    def verdict(self) -> str:
        """The verdict's name, e.g. "few_shot"."""
        return str(self.report.decision.verdict)

    def __repr__(self) -> str:
        """One line: the verdict, its probability, the best arm's score, the fine-tuned model's."""
        decision, prompting, verification = (
            self.report.decision,
            self.report.prompting,
            self.report.verification,
        )
        parts = [f"verdict={self.verdict}"]
        if decision.confidence is not None:
            parts.append(f"P={decision.confidence:.2f}")
        if prompting is not None:
            metric, best = prompting.target_metric, prompting.plateau.best_arm
            arm = next((a for a in prompting.arms if a.name == best), None)
            if arm is not None and metric in arm.scores:
                parts.append(f"best={best} {metric}={_estimate(arm.scores[metric])}")
            parts.append(f"arms={len(prompting.arms)} eval={prompting.n_eval}")
        if verification is not None:
            score = verification.finetuned.scores[verification.metric]
            ok = "verified" if verification.finetune_verified else "not verified"
            parts.append(f"fine_tuned {verification.metric}={_estimate(score)} ({ok})")
        parts.append(f"run_dir={str(self.run_dir) if self.run_dir is not None else None!r}")
        return f"<AdviseResult {' '.join(parts)}>"


def _estimate(est: Any) -> str:
    return f"{est.value:.3f} [{est.low:.3f}, {est.high:.3f}]"


def advise(
    data: str | os.PathLike[str] | Any,
    *,
    out: str | os.PathLike[str] | None = None,
    backend: Any = None,
    **settings: Any,
) -> AdviseResult:
    """Audit `data`, benchmark prompting on it, and return the verdict with its evidence.

    Returns an `AdviseResult`: `.report` (the typed decision.json), `.arms` and `.predictions` (pandas
    DataFrames), `.verdict`.

    `data`: a data file (JSONL chat/ShareGPT/prompt-completion/alpaca, CSV/TSV/Parquet/JSONL table), a
    `datasets` save_to_disk folder, a Hub dataset id, or the rows in memory: a pandas DataFrame with
    the columns a file would have (named table columns, `messages`, `prompt`/`completion`, ...), a
    `datasets.Dataset`, or a `DatasetDict` (its `dataset_split=` split, else "train", else its only
    split). `out`: a run folder to keep decision.json, the
    reports, split.json and predictions/ in (default: a temporary folder, deleted before returning).
    `backend`: "hf" (default), "openai", "none" (data-only advice), or a model backend object (the
    `advisor.backends.base.Backend` protocol, e.g. a test's fake) to use as it is. `settings`: any other
    `AdviseConfig` field, e.g. `model=`, `eval_size=`, `target_metric=`, `quality_target=`,
    `thresholds={...}`.

    Raises `advisor.errors.TunegateError` (its `.exit_code` is the CLI's) for input the user can fix:
    bad data, an unknown setting, a model that cannot be found.
    """
    if isinstance(backend, str):
        settings["backend"], backend = backend, None
    in_memory = frames.kind(data) is not None
    if in_memory:
        rows = frames.to_jsonl(data, settings.pop("dataset_split", None))
    elif not isinstance(data, str | os.PathLike):
        raise ConfigError(
            f"data must be a file path, a pandas DataFrame or a datasets Dataset; got {type(data).__name__}",
            field="data",
        )
    config = make_config("" if in_memory else data, settings)
    inputs = [p for p in recipe.input_paths(config) if p]  # in-memory rows have no file of the user's
    with run_folder(out) as folder, RunDir(folder).lock(create=True, inputs=inputs):
        if not in_memory:
            report = recipe.advise(config.replace(out=str(folder)), backend=backend)
            return result(report, folder, out)
        path = str(RunDir(folder).create().write_input(IN_MEMORY_FILE, rows.text))
        try:
            report = recipe.advise(config.replace(out=str(folder), data=path), backend=backend)
        except DataError as exc:
            raise DataError(problems=frames.located(exc.problems, path, rows)) from None
        return result(report, folder, out)


IN_MEMORY_FILE = "rows.jsonl"
"""The name in-memory rows are written under in the run folder (kept with `out`, so `train` finds them)."""


def make_config(data: str | os.PathLike[str], settings: dict[str, Any]) -> AdviseConfig:
    """The run's config from the API's keywords (an unknown one is a ConfigError, as on the CLI)."""
    try:
        return AdviseConfig(data=str(data), **settings)
    except TypeError as exc:  # an unknown keyword
        raise ConfigError(f"{exc}; the settings are AdviseConfig's fields", field="settings") from None


def result(report: Report, folder: Path, out: str | os.PathLike[str] | None) -> AdviseResult:
    """The API's result from the run's report and folder (read before a temporary folder goes)."""
    return AdviseResult(
        report=report,
        arms=arms_frame(report),
        predictions=predictions_frame(folder, report),
        run_dir=Path(out) if out is not None else None,
    )


@contextmanager
def run_folder(out: str | os.PathLike[str] | None) -> Iterator[Path]:
    """`out`, else a temporary folder deleted on exit: the API never writes into the current directory."""
    if out is not None:
        yield Path(out)
        return
    with tempfile.TemporaryDirectory(prefix="tunegate-") as tmp:
        yield Path(tmp) / "run"


def arms_frame(report: Report) -> pd.DataFrame:
    """One row per prompting arm: name, kind, k, selection, variant, n, mean_prompt_tokens, degenerate,
    best (the best honest arm), and each metric with its interval (`accuracy`, `accuracy_low`, ...)."""
    import pandas as pd

    prompting = report.prompting
    if prompting is None:
        return pd.DataFrame(columns=["name", "kind", "k", "n"])
    rows = []
    for arm in prompting.arms:
        row: dict[str, Any] = {
            "name": arm.name,
            "kind": arm.kind,
            "k": arm.k,
            "selection": arm.selection,
            "variant": arm.variant,
            "n": arm.n,
            "mean_prompt_tokens": arm.mean_prompt_tokens,
            "degenerate": arm.degeneracy.degenerate if arm.degeneracy is not None else None,
            "best": arm.name == prompting.plateau.best_arm,
        }
        for metric, est in arm.scores.items():
            row.update({metric: est.value, f"{metric}_low": est.low, f"{metric}_high": est.high})
        rows.append(row)
    return pd.DataFrame(rows)


def predictions_frame(run_dir: str | os.PathLike[str], report: Report) -> pd.DataFrame:
    """One row per (arm, eval item) from the run folder's predictions/: arm, line, input, target,
    prediction, correct, prompt_tokens, each per-item metric, and label_logprobs (classification)."""
    import pandas as pd

    prompting = report.prompting
    if prompting is None:
        return pd.DataFrame(columns=["arm", "line", "input", "target", "prediction", "correct"])
    run = RunDir(run_dir)
    rows = []
    for arm in prompting.arms:
        for item in run.read_predictions(arm.name):
            metrics = item.get("metrics") or {}
            rows.append(
                {
                    "arm": arm.name,
                    "line": item["line"],
                    "input": item["input"],
                    "target": item["target"],
                    "prediction": item["prediction"],
                    "correct": item["correct"],
                    "prompt_tokens": item["prompt_tokens"],
                    **metrics,
                    "label_logprobs": item.get("label_logprobs"),
                }
            )
    return pd.DataFrame(rows)
