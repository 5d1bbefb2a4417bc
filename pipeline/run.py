"""`tunegate train` and the training half of `tunegate run`: gate → load → train → verify → report.

Each step lives in its own module; this is the recipe. Only rank 0 verifies and writes the report
when the training ran under torchrun.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from advisor.types import TaskKind
from pipeline.config import TrainConfig


def train_and_verify(
    run_dir: str | Path,
    *,
    force: bool = False,
    resume: bool = False,
    config_file: str | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Train a LoRA adapter for an advise run, verify it with the advisor's harness, re-render the report.

    Returns the updated report document. Raises GateError (exit 5) when the run's verdict is not
    fine_tune and `force` is False: nothing is trained then.
    """
    from advisor import report
    from pipeline.train import train_run
    from pipeline.verify import verify_run

    run_dir = Path(run_dir)
    cfg = TrainConfig.from_toml(config_file, list(overrides))
    result, _gate = train_run(run_dir, cfg, force=force, resume=resume)  # gate, load, train, export
    if result.rank != 0:
        return {}
    verify_run(run_dir)
    doc = redecide(report.read_report(run_dir), run_dir)
    report.write_json(run_dir / report.DECISION_FILE, doc)
    report.rerender_doc(run_dir, doc, ("md", "html"))
    return doc


def redecide(doc: dict[str, Any], run_dir: str | Path | None = None) -> dict[str, Any]:
    """The decision again, now with the verification signals, under the rules the advise run used.

    Before training the `verification.*` rules were skipped; now they fire: a verified gain adds its
    vote for fine_tune, an unverified one vetoes it, and the verdict says so. When `run_dir` holds the
    per-item predictions of every arm and of the fine-tuned model, P(verdict) is measured again by
    resampling those items (prompting and verification signals recomputed on each resample).
    """
    from advisor import confidence, decide, rules

    config = doc["provenance"]["config"]
    ruleset = rules.load_rules(
        [Path(d) for d in config.get("rules_dirs") or ()], overrides=config.get("thresholds")
    )
    doc = dict(doc)
    decision = decide.decide(ruleset, doc["signals"])
    measured = _verification_resampler(Path(run_dir), doc) if run_dir is not None else None
    if measured is not None:
        resampler, n_items, seed = measured
        decision = decide.with_confidence(
            decision,
            confidence.measure(ruleset, doc["signals"], decision.verdict, resampler, n_items, seed=seed),
        )
    doc["decision"] = decision.to_dict()
    return doc


def _verification_resampler(run_dir: Path, doc: Mapping[str, Any]) -> tuple[Any, int, int] | None:
    """Prompting and verification signals recomputed on resampled eval items, from the run's predictions.

    None when the run lacks a per-item file (an arm's or the fine-tuned model's): nothing to resample.
    """
    from advisor import confidence, evaluate
    from pipeline.verify import FINETUNED, build_verification, verification_signals

    section = doc.get("prompting")
    folder = run_dir / "predictions"
    if not section or not doc.get("verification"):
        return None
    names = [a["name"] for a in section["arms"]] + [FINETUNED]
    if not all((folder / f"{name}.jsonl").is_file() for name in names):
        return None
    task, labels = TaskKind(section["task"]), tuple(section.get("labels") or ())
    metric, seed = section["target_metric"], int(section.get("seed", 0))
    arms = []
    for a in section["arms"]:
        items = evaluate.read_predictions(folder / f"{a['name']}.jsonl")
        scores = evaluate.summarise(items, task, labels, seed)
        arms.append(
            evaluate.ArmResult(
                a["name"], a["kind"], a["k"], a.get("selection"), items, scores, a["mean_prompt_tokens"]
            )
        )
    ft_items = evaluate.read_predictions(folder / f"{FINETUNED}.jsonl")
    lines = [it.line for it in ft_items]
    if any([it.line for it in arm.items] != lines for arm in arms):
        return None  # not the same eval items in the same order: resampling would unpair them
    finetuned = evaluate.ArmResult(
        FINETUNED,
        FINETUNED,
        0,
        None,
        ft_items,
        evaluate.summarise(ft_items, task, labels, seed),
        sum(it.prompt_tokens for it in ft_items) / max(1, len(ft_items)),
    )
    prompting = evaluate.analyse(
        arms,
        backend=section["backend"],
        model_id=section["model_id"],
        task=task,
        labels=labels,
        seed=seed,
        target_metric=metric,
        quality_target=float(section["quality_target"]),
        min_gain=float(section["min_gain"]),
        alpha=float(section["alpha"]),
    )
    verification = doc["verification"]

    def signals(idx: Any) -> dict[str, Any]:
        p = confidence.resample_prompting(prompting, idx)
        ft = confidence.resample_arm(finetuned, idx, task, labels, seed, confidence.INNER_RESAMPLES)
        best = p.arm(p.plateau.best_arm)
        cmp = evaluate.compare(
            best.items,
            ft.items,
            metric=metric,
            seed=seed,
            labels=labels,
            before_name=best.name,
            after_name=FINETUNED,
            n_resamples=confidence.INNER_RESAMPLES,
        )
        resampled = build_verification(
            baseline_name=best.name,
            baseline_items=best.items,
            finetuned=ft,
            comparison=cmp,
            metric=metric,
            quality_target=verification.get("quality_target"),
            task=task,
            labels=labels,
            seed=seed,
            latency={},
            adapter_dir=verification["finetuned"]["adapter_dir"],
            model_id=verification["finetuned"]["model_id"],
            provenance=verification.get("provenance") or {},
        )
        return {**evaluate.prompting_signals(p), **verification_signals(resampled)}

    return signals, len(lines), seed
