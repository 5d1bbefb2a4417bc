"""Verification: the fine-tuned model, scored by the advisor's own harness on the same eval items.

Before/after is the best prompting arm (its per-item predictions from `advise`, in predictions/) against
the fine-tuned model prompted as it was trained (the zero-shot rendering: `pipeline.examples.finetune_arm`).
The difference is paired over the same items; flips are counted both ways with a few real items shown.
Fine-tuning is *verified* when the fine-tuned model is honest and better on the run's target metric than
both the best honest (non-degenerate) prompting arm and the majority baseline: the paired 95% intervals of
(fine-tuned − best honest arm) and (fine-tuned − always the commonest label) lie above 0. A fine-tuned model
that collapses onto one label or does not beat the majority baseline is reported as degenerate, never as
verified (the same test as for the prompting arms, advisor.baselines). With no honest prompting arm the
majority baseline is the "before".
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from advisor import evaluate, prompts, stats
from advisor.backends.base import GenRequest
from advisor.backends.hf import HFBackend
from advisor.baselines import judge_degenerate
from advisor.data import with_labels
from advisor.errors import ConfigError
from advisor.evaluate import ArmResult, Comparison, ItemResult, summarise
from advisor.evidence import measure_latency, summarize_latency
from advisor.progress import report
from advisor.rules import load_rules
from advisor.rundir import RunDir
from advisor.types import Example, TaskKind
from pipeline.examples import finetune_arm, load_run_data
from pipeline.export import update_decision, write_model_card

FINETUNED = "fine_tuned"
N_FLIP_EXAMPLES = 3
SIGNAL_NAMES = (
    "finetune_score",
    "finetune_gain",
    "finetune_verified",
    "finetune_degenerate",
    "finetune_beats_majority",
)


# ---------------------------------------------------------------- pure: section, signals, markdown


def _latency_dict(lat: Any) -> dict[str, float] | None:
    if lat is None:
        return None
    return {"n": lat.n, "p50_ms": lat.p50_ms, "p95_ms": lat.p95_ms, "mean_ms": lat.mean_ms}


def _flip_examples(
    lines: Sequence[int], before: Mapping[int, ItemResult], after: Mapping[int, ItemResult]
) -> list:
    out = []
    for line in lines[:N_FLIP_EXAMPLES]:
        b, a = before[line], after[line]
        text = a.input if len(a.input) <= 200 else a.input[:197] + "..."
        out.append(
            {"line": line, "input": text, "target": a.target, "before": b.prediction, "after": a.prediction}
        )
    return out


def build_verification(
    *,
    baseline_name: str,
    baseline_items: Sequence[ItemResult],
    finetuned: ArmResult,
    comparison: Comparison,
    metric: str,
    quality_target: float | None,
    task: TaskKind,
    labels: Sequence[str],
    seed: int,
    latency: Mapping[str, Any],
    adapter_dir: str,
    model_id: str,
    provenance: Mapping[str, Any],
    vs_majority: Comparison | None = None,
    degeneracy: Any = None,
    majority_label: str | None = None,
) -> dict[str, Any]:
    """The `verification` section of decision.json (JSON-ready).

    `vs_majority` (fine-tuned − majority baseline) and `degeneracy` (advisor.baselines.Degeneracy) are
    given for classification; without them only the gain over the baseline arm counts.
    """
    base_scores = summarise(baseline_items, task, labels, seed)
    before = {it.line: it for it in baseline_items}
    after = {it.line: it for it in finetuned.items}
    diff = comparison.diff
    ft_score = finetuned.scores[metric].value
    return {
        "metric": metric,
        "n_eval": finetuned.n,
        "quality_target": quality_target,
        "baseline": {
            "arm": baseline_name,
            "scores": {m: e.to_dict() for m, e in base_scores.items()},
            "mean_prompt_tokens": sum(it.prompt_tokens for it in baseline_items)
            / max(1, len(baseline_items)),
            "latency": _latency_dict(latency.get(baseline_name)),
        },
        "finetuned": {
            "arm": FINETUNED,
            "model_id": model_id,
            "adapter_dir": adapter_dir,
            "scores": {m: e.to_dict() for m, e in finetuned.scores.items()},
            "mean_prompt_tokens": finetuned.mean_prompt_tokens,
            "latency": _latency_dict(latency.get(FINETUNED)),
        },
        "difference": {**diff.to_dict(), "mcnemar_p_value": comparison.mcnemar.p_value},
        "flips": {
            "improved": len(comparison.improved_lines),
            "regressed": len(comparison.regressed_lines),
            "improved_examples": _flip_examples(comparison.improved_lines, before, after),
            "regressed_examples": _flip_examples(comparison.regressed_lines, before, after),
        },
        "majority": None
        if vs_majority is None
        else {
            "label": majority_label,
            "difference": {**vs_majority.diff.to_dict(), "p_value": vs_majority.p_value},
            "beats": vs_majority.diff.low > 0,
        },
        "degeneracy": None if degeneracy is None else degeneracy.to_dict(),
        "meets_target": None if quality_target is None else ft_score >= quality_target,
        "finetune_verified": diff.low > 0
        and (vs_majority is None or vs_majority.diff.low > 0)
        and not (degeneracy is not None and degeneracy.degenerate),
        "provenance": dict(provenance),
    }


def verification_signals(section: Mapping[str, Any] | None) -> dict[str, float | bool | None]:
    """finetune_score, finetune_gain (vs the best prompting arm), finetune_verified; None: not measured."""
    if not section:
        return {name: None for name in SIGNAL_NAMES}
    metric = section["metric"]
    majority, degeneracy = section.get("majority"), section.get("degeneracy")
    return {
        "finetune_score": float(section["finetuned"]["scores"][metric]["value"]),
        "finetune_gain": float(section["difference"]["diff"]),
        "finetune_verified": bool(section["finetune_verified"]),
        "finetune_degenerate": None if degeneracy is None else bool(degeneracy["degenerate"]),
        "finetune_beats_majority": None if majority is None else bool(majority["beats"]),
    }


# ---------------------------------------------------------------- edges: models, files


def _report_verification(arm: str, done: int, total: int) -> None:
    report(f"verification {arm}", done, total)


def adapter_fingerprint(adapter_dir: str | Path) -> str:
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        digest.update((Path(adapter_dir) / name).read_bytes())
    return digest.hexdigest()[:12]


def finetuned_backend(model_dir: str | Path, adapter_dir: str | Path, **kwargs: Any) -> HFBackend:
    """The advisor's HF backend serving base + adapter, merged in memory (same outputs, no LoRA overhead)."""
    from peft import PeftModel

    backend = HFBackend(model_dir, **kwargs)
    merged = PeftModel.from_pretrained(backend.model, str(adapter_dir)).merge_and_unload()
    backend.model = merged.to(backend.device).eval()
    backend.model_id = f"{backend.model_id}+lora:{adapter_fingerprint(adapter_dir)}"
    return backend


def _latency(backend: Any, name: str, prompts: Sequence[tuple[Any, ...]], max_tokens: int, n: int) -> Any:
    if n <= 0 or not prompts:
        return None
    reqs = [GenRequest(p, max_tokens=max_tokens) for p in prompts[:n]]
    return summarize_latency(measure_latency(backend, {name: reqs}, n=n)).get(name)


def verify_run(
    run_dir: str | Path,
    *,
    latency_samples: int = 10,
    device: str | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Score the run's adapter on the eval split, compare with the best prompting arm, update decision.json.

    Writes predictions/fine_tuned.jsonl, the `verification` section and the finetune_* signals, and
    adds the comparison to the adapter's model card. Returns the section.
    """
    run = RunDir(run_dir)
    run_dir = run.path
    doc = run.read_report().as_dict()
    prompting, training = _measured_sections(doc)
    task, labels = TaskKind(prompting["task"]), tuple(prompting.get("labels") or ())
    seed = int(prompting.get("seed", 0))
    best = prompting["plateau"]["best_arm"]  # the best honest arm; None when every arm is degenerate

    config, split = run.read_config(), run.read_split()
    train_ex, _dev, eval_ex = _split_examples(config, split, task, labels)

    any_arm = prompting["arms"][0]["name"]
    recorded = evaluate.read_predictions(run.predictions_path(best or any_arm))
    base_info = prompting.get("baselines")
    majority_label = base_info["majority_label"] if base_info else None
    if best is None:  # no honest prompting arm: the constant predictor is the "before"
        best = "majority"
        baseline_items = evaluate.majority_items(recorded, str(majority_label))
    else:
        baseline_items = recorded
    model_dir = training["base_model"]
    adapter_dir = run.inside(training["adapter_dir"], field="training.adapter_dir")
    ft_backend = finetuned_backend(model_dir, adapter_dir, device=device)
    arm = finetune_arm(task, labels)
    max_gen = int(config.get("max_gen_tokens") or 64)
    stop = evaluate.default_stop(train_ex) if task is TaskKind.GENERATE else ()
    ft = evaluate.score_arm(
        ft_backend,
        FINETUNED,
        lambda ex: prompts.render_messages(arm, ex),
        eval_ex,
        task=task,
        labels=labels,
        seed=seed,
        kind=FINETUNED,
        max_gen_tokens=max_gen,
        stop=stop,
        progress=progress or _report_verification,
    )
    evaluate.write_arm_predictions(run_dir, ft)

    # Latency per request, both measured now on this machine with the local model: the best arm's own
    # prompts (demonstrations included) on the base model, the fine-tuned model's short prompts on it.
    answer_tokens = max(ft_backend.count_tokens(list(labels)), default=1) + 1 if labels else max_gen
    ft_prompts = [prompts.render_messages(arm, ex) for ex in eval_ex]
    latency = {FINETUNED: _latency(ft_backend, FINETUNED, ft_prompts, answer_tokens, latency_samples)}
    del ft_backend
    arm_entry = next((a for a in prompting["arms"] if a["name"] == best), None)
    if latency_samples > 0 and arm_entry is not None:
        base = HFBackend(model_dir, device=device)
        best_prompts = _best_arm_prompts(
            arm_entry, baseline_items, config, task, labels, train_ex, eval_ex, seed
        )
        latency[best] = _latency(base, best, best_prompts, answer_tokens, latency_samples)

    section = judge_finetuned(
        prompting,
        best,
        baseline_items,
        ft,
        thresholds=run_thresholds(doc),
        latency=latency,
        adapter_dir=str(adapter_dir),
        model_id=f"{Path(model_dir).name}+lora:{adapter_fingerprint(adapter_dir)}",
        provenance=training.get("provenance", {}),
    )
    update_decision(run_dir, {"verification": section}, signals=verification_signals(section))
    write_model_card(adapter_dir, training, section)
    return section


def _measured_sections(doc: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `prompting` and `training` sections of the run's decision.json; both must be there."""
    prompting, training = doc.get("prompting"), doc.get("training")
    if not prompting:
        raise ConfigError(
            "the run has no prompting measurements to compare with (advise ran without a model)"
        )
    if not training:
        raise ConfigError("the run has no trained adapter: run `tunegate train` first")
    return prompting, training


def _split_examples(
    config: Mapping[str, Any], split: Mapping[str, Any], task: TaskKind, labels: Sequence[str]
) -> tuple[list[Example], list[Example], list[Example]]:
    """Train, dev and eval examples (eval is read here, in verification, never in training)."""
    loaded = load_run_data(config, split)
    examples = with_labels(loaded.examples, labels) if task is TaskKind.CLASSIFY else loaded.examples
    by_line = {ex.line: ex for ex in examples}
    train, dev, eval_items = ([by_line[i] for i in split[k]] for k in ("train", "dev", "eval"))
    return train, dev, eval_items


def run_thresholds(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """The thresholds the advise run decided with (a run folder older than a threshold: the shipped one)."""
    recorded = (doc.get("provenance") or {}).get("thresholds") or {}
    return {**load_rules([]).thresholds, **recorded}


def judge_finetuned(
    prompting: Mapping[str, Any],
    baseline_name: str,
    baseline_items: Sequence[ItemResult],
    ft: ArmResult,
    *,
    thresholds: Mapping[str, Any],
    latency: Mapping[str, Any],
    adapter_dir: str,
    model_id: str,
    provenance: Mapping[str, Any],
    n_resamples: int = stats.N_RESAMPLES,
) -> dict[str, Any]:
    """The verification section: the fine-tuned model against the baseline arm and, for classification,
    against the majority baseline, with the prompting arms' degeneracy test. One judgment, used by
    `verify_run` on the eval items and by P(verdict) on each resample of them."""
    task, labels = TaskKind(prompting["task"]), tuple(prompting.get("labels") or ())
    metric, seed = prompting["target_metric"], int(prompting.get("seed", 0))
    cmp = evaluate.compare(
        baseline_items,
        ft.items,
        metric=metric,
        seed=seed,
        labels=labels,
        before_name=baseline_name,
        after_name=FINETUNED,
        n_resamples=n_resamples,
    )
    base_info = prompting.get("baselines")
    majority_label = base_info["majority_label"] if base_info else None
    vs_majority = degeneracy = None
    if base_info:
        vs_majority = evaluate.compare(
            evaluate.majority_items(ft.items, majority_label),
            ft.items,
            metric=metric,
            seed=seed,
            labels=labels,
            before_name="majority",
            after_name=FINETUNED,
            n_resamples=n_resamples,
        )
        degeneracy = judge_degenerate(
            [it.prediction for it in ft.items],
            base_info["label_shares"],
            diff=vs_majority.diff.diff,
            low=vs_majority.diff.low,
            high=vs_majority.diff.high,
            p_value=vs_majority.p_value,
            metric=metric,
            alpha=float(prompting.get("alpha", 0.05)),
            thresholds={k: float(v) for k, v in thresholds.items() if isinstance(v, int | float)},
        )
    return build_verification(
        baseline_name=baseline_name,
        baseline_items=baseline_items,
        finetuned=ft,
        comparison=cmp,
        metric=metric,
        quality_target=prompting.get("quality_target"),
        task=task,
        labels=labels,
        seed=seed,
        latency=latency,
        adapter_dir=adapter_dir,
        model_id=model_id,
        provenance=provenance,
        vs_majority=vs_majority,
        degeneracy=degeneracy,
        majority_label=majority_label,
    )


def _best_arm_prompts(
    arm_entry: Mapping[str, Any],
    recorded: Sequence[ItemResult],
    config: Mapping[str, Any],
    task: TaskKind,
    labels: Sequence[str],
    train: Sequence[Example],
    eval_items: Sequence[Example],
    seed: int,
) -> list[tuple[Any, ...]]:
    """The best arm's chat turns for the eval items: its recorded kind, k and selection, and the
    demonstrations `advise` recorded per item (predictions/<arm>.jsonl), never re-selected."""
    file_text = None
    if config.get("system_prompt_file"):
        file_text = Path(config["system_prompt_file"]).read_text(encoding="utf-8")
    hint = prompts.format_hint(task, labels, seed)
    text = prompts.system_instruction(task, labels, config.get("task_description"), file_text, seed)
    kind = prompts.ArmKind(arm_entry["kind"])
    if kind is prompts.ArmKind.ZERO_SHOT:
        arm = prompts.Arm(arm_entry["name"], kind, format_hint=hint)
    else:
        system = prompts.Arm("system", prompts.ArmKind.SYSTEM, instruction=text, format_hint=hint)
        k = int(arm_entry["k"])
        arm = prompts.few_shot_arm(system, k, arm_entry.get("selection") or "stratified") if k else system
    train_by_line = {ex.line: ex for ex in train}
    demos = {it.line: tuple(train_by_line[d] for d in it.demo_lines) for it in recorded}
    return [prompts.render_messages(arm, ex, demos.get(ex.line, ())) for ex in eval_items]
