"""The Python API: `from advisor import advise` (advisor/__init__.py's lazy `advise` calls this module's).

    from advisor import advise

    result = advise("reviews.jsonl", eval_size=100)
    result.verdict                  # "prompt" | "few_shot" | "fine_tune" | "collect_data" | "inconclusive"
    result.report.decision.summary  # the typed report (advisor.report.document.Report), as in decision.json
    result.arms                     # one row per prompting arm: scores with their 95% intervals
    result.predictions              # one row per (arm, eval item): input, target, prediction, correct

It runs the recipe `tunegate advise` runs (advisor/recipe.py, `recipe.advise`), with the same settings
(the fields of `advisor.config.AdviseConfig`) and the same validation. It writes nothing into the
current directory: without `out` the run folder is a temporary one, read back and deleted before
`advise` returns.
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
from advisor.errors import ConfigError
from advisor.report.document import Report
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


def advise(
    data: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    backend: Any = None,
    **settings: Any,
) -> AdviseResult:
    """Audit `data`, benchmark prompting on it, and return the verdict with its evidence.

    Returns an `AdviseResult`: `.report` (the typed decision.json), `.arms` and `.predictions` (pandas
    DataFrames), `.verdict`.

    `data`: a data file (JSONL chat/ShareGPT/prompt-completion/alpaca, CSV/TSV/Parquet/JSONL table), a
    `datasets` save_to_disk folder, or a Hub dataset id. `out`: a run folder to keep decision.json, the
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
    config = make_config(data, settings)
    with run_folder(out) as folder, RunDir(folder).lock(create=True, inputs=recipe.input_paths(config)):
        report = recipe.advise(config.replace(out=str(folder)), backend=backend)
        return result(report, folder, out)


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
