"""`tunegate train` and the training half of `tunegate run`: gate → load → train → export → verify →
decide again → report.

Under torchrun every rank runs `train_run` (each trains its shard of the micro-batches); rank 0 alone
writes the run folder, verifies, decides again and returns the typed report. The other ranks return None
once training is done, and their command exits 0 printing nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from advisor.backends.model import ModelSource, resolve_model
from advisor.decide import confidence, rules
from advisor.decide import verdict as decide
from advisor.document import GateRecord, Report
from advisor.errors import ConfigError
from advisor.finetune.config import TrainConfig
from advisor.finetune.distributed import launched_rank, shutdown
from advisor.finetune.loop import TrainResult, train
from advisor.measure import evaluate
from advisor.measure.prompt_record import PromptRecord
from advisor.report import render
from advisor.rundir import RunDir
from advisor.types import TaskKind
from pipeline import tracking
from pipeline.examples import training_split
from pipeline.export import export_training
from pipeline.gate import GateResult, check_gate
from pipeline.verify import (
    FINETUNED,
    NO_GATE,
    judge_finetuned,
    run_thresholds,
    verification_signals,
    verify_run,
)


def train_and_verify(
    run_dir: str | Path,
    *,
    force: bool = False,
    resume: bool = False,
    config_file: str | None = None,
    overrides: Sequence[str] = (),
    report_to: str | None = None,
    cfg: TrainConfig | None = None,
) -> Report | None:
    """Train a LoRA adapter for an advise run, verify it with the advisor's harness, re-render the report.

    Returns the updated report document on rank 0, None on the other ranks of a torchrun job. Raises
    GateError (exit 5) when the run's verdict is not fine_tune and `force` is False: nothing is trained.
    `report_to`: an experiment tracker that follows the run (pipeline/tracking.py; rank 0 only). `cfg`:
    the training config itself, instead of `config_file` and `overrides` (the Python API's).
    """
    run_dir = Path(run_dir)
    cfg = cfg or TrainConfig.from_toml(config_file, list(overrides))
    # Rank 0 holds the run folder; the other ranks of a torchrun job only train their shard.
    main = launched_rank() == 0
    with (
        RunDir(run_dir).lock() if main else nullcontext(),
        tracking.session(report_to if main else None, run_dir) as tracker,
    ):
        return _train_and_verify(run_dir, cfg, force=force, resume=resume, tracker=tracker)


def _train_and_verify(
    run_dir: Path, cfg: TrainConfig, *, force: bool, resume: bool, tracker: tracking.Session
) -> Report | None:
    run = RunDir(run_dir)
    if run.read_report().prompting is not None:
        run.read_prompts(
            PromptRecord
        )  # verification needs the record: refuse an old folder before training, not after
    result, _gate = train_run(run_dir, cfg, force=force, resume=resume, tracker=tracker)
    if result.rank != 0:
        return None
    report = verify_and_redecide(run_dir)
    tracker.finish(report)
    return report


def verify_and_redecide(run_dir: str | Path, **verify: Any) -> Report:
    """Verify (the run's adapter, or `verify["candidate"]`), decide again with the verification signals,
    and rewrite decision.json and the reports. Returns the report as written."""
    verify_run(run_dir, **verify)
    run = RunDir(run_dir)
    render.write_report(run, redecide(run.read_report(), run_dir))
    return run.read_report()  # what is on disk is what the caller prints


def train_run(
    run_dir: str | Path,
    cfg: TrainConfig,
    *,
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
    tracker: tracking.Session | None = None,
) -> tuple[TrainResult, GateResult]:
    """Gate, train on the run's train/dev split, export to RUN_DIR/train/adapter (rank 0 writes).

    `tracker` gets the hyperparameters once the gate opens and each step's metrics as they are logged."""
    run_dir = Path(run_dir)
    gate = check_gate(run_dir, force=force)
    split = training_split(run_dir)
    source = training_model(cfg, split.run_info)
    model_dir = str(source.path)
    provenance = GateRecord(
        **gate.provenance,
        data_sha256=split.run_info.get("data_sha256"),
        split_seed=split.run_info.get("seed"),
    )
    run = RunDir(run_dir)
    out = run.train_dir
    if not resume and launched_rank() == 0:
        run.train.clear()  # an earlier run's, unless resuming
        forget_verification(run_dir)  # and its verification, which described the adapter just deleted
    if tracker is not None:
        tracker.start(
            cfg.to_dict(),
            {
                "base_model": source.hub_id or model_dir,
                **provenance.model_dump(exclude_unset=True),
                "n_train": len(split.train),
                "n_dev": len(split.dev),
            },
        )
    result = train(
        model_dir,
        split.train,
        split.dev,
        out,
        cfg,
        provenance=provenance.model_dump(exclude_unset=True),
        resume=resume,
        progress=progress,
        on_step=tracker.step if tracker is not None else None,
    )
    shutdown()
    if result.rank == 0:
        export_training(run_dir, result, cfg, model_dir, provenance, base_model_id=source.hub_id)
        render.write_report(run, run.read_report())  # the reports show the new adapter, not yet verified
    return result, gate


def forget_verification(run_dir: str | Path) -> None:
    """Training replaces the run's adapter, so a verification of it (and the verdict decided with it)
    would describe a model that is gone: drop the section and its signals and decide again without them,
    until `verify` runs. A verification of another model (`verify --model/--adapter/--backend openai`)
    stays: that model still exists."""
    run = RunDir(run_dir)
    report = run.read_report()
    if report.verification is None or report.verification.provenance == NO_GATE:
        return
    signals = {**report.signals, **verification_signals(None)}
    fresh = Report.model_validate({**dict(report), "verification": None, "signals": signals})
    render.write_report(run, redecide(fresh, run_dir))


def training_model(cfg: TrainConfig, run_config: dict[str, Any]) -> ModelSource:
    """The training config's model, else the advise run's fine-tuning candidate (--finetune-model), else
    the model its arms prompted when that is a local one, else the embedded model; resolved the way advise
    resolves it (a folder, a .gguf file or a Hub id[@revision]). A run whose arms prompted a served model
    names no local model: training it without one named is refused (exit 2), never guessed."""
    named = cfg.model or run_config.get("finetune_model")
    if named is None and run_config.get("backend", "hf") == "openai":
        raise ConfigError(NO_CANDIDATE, field="model")
    return resolve_model(named or run_config.get("model") or None)


NO_CANDIDATE = (
    "the run's arms prompted a served model (--backend openai), which cannot be fine-tuned here: name the "
    "local model to fine-tune with --finetune-model ID|DIR|GGUF on advise/run (or --train-set model=...), "
    "e.g. --finetune-model embedded for the embedded SmolLM2-135M-Instruct"
)


def redecide(report: Report, run_dir: str | Path | None = None) -> Report:
    """The decision again, now with the verification signals, under the rules the advise run used.

    Before training the `verification.*` rules were skipped; now they fire: a verified gain adds its
    vote for fine_tune, an unverified one vetoes it, and the verdict says so. When `run_dir` holds the
    per-item predictions of every arm and of the fine-tuned model, P(verdict) is measured again by
    resampling those items (prompting and verification signals recomputed on each resample).
    """
    config = report.provenance.config
    ruleset = rules.load_rules(
        [Path(d) for d in config.get("rules_dirs") or ()], overrides=config.get("thresholds")
    )
    decision = decide.decide(ruleset, report.signals)
    measured = _run_resampler(Path(run_dir), report) if run_dir is not None else None
    if measured is not None:
        resampler, n_items, seed = measured
        decision = decide.with_confidence(
            decision,
            confidence.measure(ruleset, report.signals, decision.verdict, resampler, n_items, seed=seed),
        )
    return Report.model_validate({**dict(report), "decision": decision.to_dict()})


def _run_resampler(run_dir: Path, report: Report) -> tuple[Any, int, int] | None:
    """Prompting and verification signals recomputed on resampled eval items, from the run's predictions
    (prompting alone while nothing is verified).

    None when the run lacks a per-item file (an arm's or the fine-tuned model's): nothing to resample.
    """
    section, verification = report.prompting, report.verification
    run = RunDir(run_dir)
    if section is None:
        return None
    names = [a.name for a in section.arms] + ([FINETUNED] if verification is not None else [])
    if not all(run.has_predictions(name) for name in names):
        return None
    task, labels = TaskKind(section.task), tuple(section.labels)
    metric, seed = str(section.target_metric), section.seed
    arms = []
    for a in section.arms:
        items = evaluate.read_predictions(run, a.name)
        scores = evaluate.summarise(items, task, labels, seed)
        arms.append(evaluate.ArmResult(a.name, a.kind, a.k, a.selection, items, scores, a.mean_prompt_tokens))
    ft_items = evaluate.read_predictions(run, FINETUNED) if verification is not None else None
    lines = [it.line for it in (arms[0].items if ft_items is None else ft_items)]
    if any([it.line for it in arm.items] != lines for arm in arms):
        return None  # not the same eval items in the same order: resampling would unpair them
    thresholds = run_thresholds(report)
    prompting = evaluate.analyse(
        arms,
        backend=section.backend,
        model_id=section.model_id,
        task=task,
        labels=labels,
        seed=seed,
        target_metric=metric,
        quality_target=float(section.quality_target),
        min_gain=float(section.min_gain),
        alpha=float(section.alpha),
        thresholds=thresholds,
        metric_reason=section.metric_reason or "",
        limit=section.k_max,
        budget_spent=section.budget_spent,
    )
    if verification is None or ft_items is None:
        return confidence.prompting_resampler(prompting), len(lines), seed
    finetuned = evaluate.ArmResult(
        FINETUNED,
        FINETUNED,
        0,
        None,
        ft_items,
        evaluate.summarise(ft_items, task, labels, seed),
        sum(it.prompt_tokens for it in ft_items) / max(1, len(ft_items)),
    )

    def signals(idx: Any) -> dict[str, Any]:
        p = confidence.resample_prompting(prompting, idx)
        ft = confidence.resample_arm(finetuned, idx, task, labels, seed, confidence.INNER_RESAMPLES)
        baselines = p.baselines
        if p.plateau.best_arm is not None:
            best_name, best_items = p.plateau.best_arm, p.arm(p.plateau.best_arm).items
        elif baselines is not None:  # no honest arm in this resample: the majority baseline is "before"
            best_name, best_items = "majority", evaluate.majority_items(ft.items, baselines.majority_label)
        else:
            return evaluate.prompting_signals(p)
        resampled = judge_finetuned(
            p,
            best_name,
            best_items,
            ft,
            thresholds=thresholds,
            latency={},
            adapter_dir=verification.finetuned.adapter_dir,
            model_id=verification.finetuned.model_id,
            provenance=verification.provenance,
            n_resamples=confidence.INNER_RESAMPLES,
            prompted_as=verification.finetuned.prompted_as or "finetune",
        )
        return {**evaluate.prompting_signals(p), **verification_signals(resampled)}

    return signals, len(lines), seed
