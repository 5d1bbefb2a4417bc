"""The examples a run trains on: its train and dev split (never eval), rendered as the fine-tuned model
is prompted, in training and in verification alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor.audit.checks import input_key
from advisor.errors import DataError
from advisor.finetune.prompts import as_finetune_examples
from advisor.intake.data import LoadedData, detect_task, load_examples
from advisor.rundir import RunDir
from advisor.types import Example, TaskKind


@dataclass(frozen=True)
class TrainingSplit:
    train: list[Example]  # rendered with the fine-tuning prompt, label set
    dev: list[Example]
    task: TaskKind
    labels: tuple[str, ...]
    run_info: dict[str, Any]  # config.json and split.json of the advise run, merged


def load_run_data(config: Mapping[str, Any], split: Mapping[str, Any]) -> LoadedData:
    """The advise run's data file, as advise read it; DataError when it changed since (sha256)."""
    data_path = str(split.get("data_path") or config.get("data") or "")
    loaded = load_examples(
        data_path,
        fmt=config.get("fmt"),
        input_col=config.get("input_col"),
        output_col=config.get("output_col"),
        split=config.get("dataset_split"),
    )
    if split.get("data_sha256") and loaded.sha256 != split["data_sha256"]:
        raise DataError(
            "the data file changed since `advise` (its sha256 differs from split.json's); "
            "run `tunegate advise` again",
            file=str(data_path),
        )
    return loaded


def load_split_examples(run_dir: Path) -> tuple[list[Example], list[Example], dict[str, Any]]:
    """The run's train and dev examples (never eval), from the data file named in config.json."""
    run = RunDir(run_dir)
    config, split = run.read_config(), run.read_split()
    data_path = split.get("data_path") or config.get("data")
    loaded = load_run_data(config, split)
    by_line = {ex.line: ex for ex in loaded.examples}
    run.check_held_out(split, {line: input_key(ex) for line, ex in by_line.items()})
    missing = [ln for ln in list(split["train"]) + list(split["dev"]) if ln not in by_line]
    if missing:
        raise DataError(
            f"{len(missing)} line(s) of the split are not in the data any more (first: {missing[0]}); "
            "the file changed since `advise`",
            file=str(data_path),
        )
    return [by_line[ln] for ln in split["train"]], [by_line[ln] for ln in split["dev"]], {**config, **split}


def run_task(run_dir: Path, examples: Sequence[Example]) -> tuple[TaskKind, tuple[str, ...]]:
    """The task and label order the advisor measured (decision.json), else detected from the examples."""
    run = RunDir(run_dir)
    prompting = run.read_report().prompting if run.decision_path.exists() else None
    if prompting is not None:
        return TaskKind(prompting.task), tuple(prompting.labels)
    return detect_task(examples)


def training_split(run_dir: Path) -> TrainingSplit:
    """The run's train and dev examples, rendered with the fine-tuning prompt."""
    train, dev, run_info = load_split_examples(run_dir)
    task, labels = run_task(run_dir, train + dev)
    return TrainingSplit(
        as_finetune_examples(train, task, labels),
        as_finetune_examples(dev, task, labels),
        task,
        labels,
        run_info,
    )
