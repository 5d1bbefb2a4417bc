"""The pilot fine-tune inside `advise`: measure the fine-tuning side instead of guessing it.

Three LoRA pilots train with the very loop, recipe and defaults of `tunegate train` (`loop.train`,
`TrainConfig()`), on nested subsets of the train split (a quarter, a half and all of the largest size
the step budget allows; one seeded order, stratified by label, so every prefix keeps the label shares).
Each is scored on the dev split with the arms' harness (`evaluate.score_arm`, prompted as the fine-tuned
model is: `prompts.finetune_arm`); the largest is also scored on the eval items, paired with the arms.
The dev scores are fitted to a saturating power law in the number of examples (`curve`), which predicts
the score at the full train split and the examples needed to beat the best honest prompt or reach the
target.

What was measured is recorded in the run folder (pilot/result.json) under a key of the data, split,
recipe, model and budget, so re-running the same `advise` into the same folder trains nothing again.

`run_pilot` and `score_eval` do the I/O (torch, the run folder); `analyse` and `signals` are pure.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from advisor import document, progress
from advisor.backends.hf import HFBackend
from advisor.finetune import curve as curve_mod
from advisor.finetune.config import TrainConfig
from advisor.finetune.loop import train
from advisor.finetune.prompts import as_finetune_examples, finetune_arm, finetuned_backend
from advisor.measure import evaluate, stats
from advisor.measure.evaluate import ArmResult, ItemResult, PromptingResult
from advisor.measure.prompts import render_messages
from advisor.rundir import RunDir
from advisor.types import Example, TaskKind

FRACTIONS = (0.25, 0.5, 1.0)  # the pilots' sizes as shares of the largest
ARM = "pilot"  # the largest pilot's name among the eval predictions
CANDIDATE_ARM = "candidate_prompted"  # the fine-tuning candidate without an adapter (--finetune-model)
CURVE_RESAMPLES = 1000
FORMAT = 1  # of pilot/result.json
# Trained tokens per second of a LoRA r=8 step on two CPU cores with the 135M model, padding included
# (measured on this project's machines: ENVIRONMENT.md, "~100 trained tokens/s"); the dry run's pilot
# time estimate divides the pilots' tokens by it. A GPU trains far faster: the estimate is then high.
CPU_TRAIN_TOKENS_PER_S = 100.0


# ------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class PilotPlan:
    """The pilots' sizes and optimizer steps under a step budget, with the recipe they train with."""

    sizes: tuple[int, ...]
    steps: tuple[int, ...]
    budget_steps: int
    recipe: TrainConfig

    @property
    def total_steps(self) -> int:
        return sum(self.steps)


def recipe(seed: int) -> TrainConfig:
    """`tunegate train`'s defaults, seeded as the run; no checkpoints (a pilot is never resumed)."""
    return TrainConfig.from_mapping({"seed": seed, "save_every": 0})


def steps_for(n: int, cfg: TrainConfig) -> int:
    """Optimizer steps the loop takes on `n` examples (one process), as `loop.BatchPlan` counts them."""
    if cfg.max_steps:
        return int(cfg.max_steps)
    per_epoch = math.ceil(n / cfg.batch_size)
    return max(1, math.ceil(cfg.epochs * per_epoch / cfg.grad_accum))


def plan_pilot(n_train: int, budget_steps: int, cfg: TrainConfig) -> PilotPlan | str:
    """The largest nested sizes whose steps fit the budget, or why no pilot fits (a sentence)."""
    best: PilotPlan | None = None
    for largest in range(n_train, 0, -1):
        sizes = tuple(max(1, math.floor(largest * f)) for f in FRACTIONS)
        steps = tuple(steps_for(n, cfg) for n in sizes)
        if sum(steps) <= budget_steps:
            best = PilotPlan(sizes, steps, budget_steps, cfg)
            break
    if best is None or best.sizes[0] < cfg.batch_size or len(set(best.sizes)) < len(FRACTIONS):
        return (
            f"no pilot fits: {budget_steps} optimizer steps do not train three nested pilots of at least "
            f"{cfg.batch_size} examples (one batch) each on {n_train} training examples"
        )
    return best


def estimate(
    plan: PilotPlan, train: Sequence[Example], tokens: Callable[[Example], int], n_dev: int, n_eval: int
) -> dict[str, Any]:
    """What the pilots will cost, for `--dry-run`: steps, trained tokens and training seconds, and the
    scoring items (every pilot on dev, the largest on eval; scored like an arm, at the arms' rate)."""
    order = nested_order(train, plan.recipe.seed)
    trained = 0.0
    mean = 0.0
    for n, steps in zip(plan.sizes, plan.steps, strict=True):
        mean = sum(tokens(ex) for ex in order[:n]) / n
        trained += steps * plan.recipe.batch_size * plan.recipe.grad_accum * mean
    return {
        "tokens_per_example": mean,  # over the largest pilot's examples (a stratified sample of train)
        "sizes": list(plan.sizes),
        "steps": plan.total_steps,
        "budget_steps": plan.budget_steps,
        "trained_tokens": round(trained),
        "train_seconds": trained / CPU_TRAIN_TOKENS_PER_S,
        "scored_items": len(plan.sizes) * n_dev + n_eval,
    }


def nested_order(train: Sequence[Example], seed: int) -> list[Example]:
    """The train split in one seeded order whose every prefix keeps the label shares (stratified).

    Each label's examples are shuffled and spread evenly over [0, 1) (position (i + u) / count); sorting
    by position interleaves the labels in proportion. Generation examples have one group."""
    rng = random.Random(seed)
    groups: dict[str | None, list[Example]] = {}
    for ex in train:
        groups.setdefault(ex.label, []).append(ex)
    placed: list[tuple[float, int, Example]] = []
    for members in groups.values():
        rng.shuffle(members)
        for i, ex in enumerate(members):
            placed.append(((i + rng.random()) / len(members), ex.line, ex))
    return [ex for _, _, ex in sorted(placed, key=lambda t: (t[0], t[1]))]


# ------------------------------------------------------------------------------------------- run


@dataclass(frozen=True)
class PilotRun:
    """What the pilots measured: per-item dev results per size, the largest pilot's eval results."""

    key: str
    model_id: str
    plan: PilotPlan
    dev: tuple[tuple[ItemResult, ...], ...]
    train_s: tuple[float, ...]
    eval_items: Mapping[int, ItemResult] = field(default_factory=dict)
    wall_s: float = 0.0
    reused: bool = False
    base_items: Mapping[int, ItemResult] = field(default_factory=dict)  # the candidate prompted, on eval

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "key": self.key,
            "model_id": self.model_id,
            "sizes": list(self.plan.sizes),
            "steps": list(self.plan.steps),
            "train_s": list(self.train_s),
            "dev": [[it.to_dict() for it in items] for items in self.dev],
            "eval": [it.to_dict() for it in self.eval_items.values()],
            "base_eval": [it.to_dict() for it in self.base_items.values()],
            "wall_s": self.wall_s,
        }


def pilot_key(
    data_sha256: str, split: Mapping[str, Sequence[int]], plan: PilotPlan, model_id: str, task: TaskKind
) -> str:
    """What a pilot's result depends on: the data, the split, the recipe and sizes, and the model."""
    doc = {
        "data": data_sha256,
        "train": list(split["train"]),
        "dev": list(split["dev"]),
        "recipe": plan.recipe.to_dict(),
        "sizes": list(plan.sizes),
        "model": model_id,
        "task": str(task),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class PilotTask:
    """What the pilots train and are scored on (rendered with the fine-tuning prompt)."""

    model_dir: Path
    model_id: str
    task: TaskKind
    labels: tuple[str, ...]
    train: tuple[Example, ...]  # the train split, raw
    dev: tuple[Example, ...]
    seed: int
    max_gen_tokens: int
    device: str | None = None
    # Set when the candidate is not the model the arms prompted (--finetune-model): the candidate is then
    # also scored prompted, without an adapter, to tell what fine-tuning adds from what the model change does.
    arms_model_id: str | None = None

    def render(self, ex: Example) -> Any:
        return render_messages(finetune_arm(self.task, self.labels), ex)

    def stop(self) -> tuple[str, ...]:
        return evaluate.default_stop(self.train) if self.task is TaskKind.GENERATE else ()


def run_pilot(run_dir: RunDir, job: PilotTask, plan: PilotPlan, key: str) -> PilotRun:
    """Train and score the pilots, or reuse what the run folder recorded under the same key."""
    recorded = _read(run_dir, key, plan)
    if recorded is not None:
        return recorded
    t0 = time.perf_counter()
    order = nested_order(job.train, job.seed)
    dev_ft = as_finetune_examples(job.dev, job.task, job.labels)
    dev_scores: list[tuple[ItemResult, ...]] = []
    train_s: list[float] = []
    for i, n in enumerate(plan.sizes):
        progress.report("pilot fine-tunes", i, len(plan.sizes), f"{n} examples")
        out = run_dir.pilot_train(n)
        out.clear()
        subset = as_finetune_examples(order[:n], job.task, job.labels)
        result = train(job.model_dir, subset, dev_ft, out.path, plan.recipe, progress=True, alone=True)
        train_s.append(result.elapsed_s)
        dev_scores.append(_score(job, result.adapter_dir, job.dev, f"pilot n={n} on dev"))
    progress.report("pilot fine-tunes", len(plan.sizes), len(plan.sizes))
    run = PilotRun(key, job.model_id, plan, tuple(dev_scores), tuple(train_s), {}, time.perf_counter() - t0)
    run_dir.write_pilot(run.to_dict())
    return run


def score_eval(run_dir: RunDir, job: PilotTask, run: PilotRun, eval_items: Sequence[Example]) -> PilotRun:
    """The largest pilot on the eval items it has not been scored on yet (all of them the first time; the
    new ones after the eval split grows); recorded in the run folder."""
    missing = [ex for ex in eval_items if ex.line not in run.eval_items]
    base_missing = [ex for ex in eval_items if ex.line not in run.base_items] if job.arms_model_id else []
    if not missing and not base_missing:
        return run
    adapter = run_dir.pilot_train(run.plan.sizes[-1]).adapter
    t0 = time.perf_counter()
    scored = _score(job, adapter, missing, "pilot on eval") if missing else ()
    base = _score(job, None, base_missing, "candidate prompted on eval") if base_missing else ()
    run = replace(
        run,
        eval_items={**run.eval_items, **{it.line: it for it in scored}},
        base_items={**run.base_items, **{it.line: it for it in base}},
        wall_s=run.wall_s + time.perf_counter() - t0,
    )
    run_dir.write_pilot(run.to_dict())
    return run


def _score(
    job: PilotTask, adapter: Path | None, items: Sequence[Example], stage: str
) -> tuple[ItemResult, ...]:
    """The pilot's `adapter` on `items` with the fine-tuning prompt (None: the candidate itself, prompted)."""
    backend = (
        finetuned_backend(job.model_dir, adapter, device=job.device)
        if adapter is not None
        else HFBackend(job.model_dir, device=job.device)
    )
    arm = evaluate.score_arm(
        backend,
        ARM,
        job.render,
        list(items),
        task=job.task,
        labels=job.labels,
        seed=job.seed,
        kind=ARM,
        max_gen_tokens=job.max_gen_tokens,
        stop=job.stop(),
        progress=lambda _arm, done, total: progress.report(stage, done, total),
    )
    return arm.items


def _read(run_dir: RunDir, key: str, plan: PilotPlan) -> PilotRun | None:
    doc = run_dir.read_pilot()
    if doc is None or doc.get("key") != key or doc.get("format") != FORMAT:
        return None
    # The eval items' results are kept only while the largest adapter is there to score new ones.
    adapter_there = run_dir.pilot_train(plan.sizes[-1]).adapter.is_dir()
    return PilotRun(
        key=key,
        model_id=str(doc["model_id"]),
        plan=plan,
        dev=tuple(tuple(ItemResult.from_dict(r) for r in items) for items in doc["dev"]),
        train_s=tuple(float(s) for s in doc["train_s"]),
        eval_items={int(r["line"]): ItemResult.from_dict(r) for r in doc["eval"]} if adapter_there else {},
        wall_s=float(doc.get("wall_s", 0.0)),
        reused=True,
        base_items={int(r["line"]): ItemResult.from_dict(r) for r in doc.get("base_eval", [])},
    )


def eval_arm(
    run: PilotRun, eval_lines: Sequence[int], task: TaskKind, labels: Sequence[str], seed: int
) -> ArmResult:
    """The largest pilot as an arm on the eval items, in the arms' item order (for pairing and files)."""
    items = tuple(run.eval_items[ln] for ln in eval_lines)
    return ArmResult(ARM, ARM, 0, None, items, evaluate.summarise(items, task, labels, seed), 0.0)


# ------------------------------------------------------------------------------------------- analyse


def unmeasured(reason: str) -> document.Pilot:
    return document.Pilot(measured=False, reason=reason)


def _rows(
    items: Sequence[ItemResult], metric: str, labels: Sequence[str]
) -> Callable[[np.ndarray], np.ndarray]:
    if metric == "macro_f1":
        return stats.macro_f1_rows([it.target for it in items], [it.prediction for it in items], labels)
    return stats.mean_rows([it.metrics[metric] for it in items])


def _gain_samples(
    before: Sequence[ItemResult],
    after: Sequence[ItemResult],
    metric: str,
    labels: Sequence[str],
    idx: np.ndarray,
) -> np.ndarray:
    """`after` minus `before` on the items at each row of `idx` (same order on both sides: paired)."""
    return _rows(after, metric, labels)(idx) - _rows(before, metric, labels)(idx)


def _interval(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return float(lo), float(hi)


def _needed(
    boot: curve_mod.CurveBootstrap, n_largest: int, gap: float, gaps: np.ndarray | None = None
) -> document.ExamplesNeeded:
    """Examples at which the curve rises `gap` above its score at the largest pilot (`gaps`: the gap in
    each resample, drawn with it; None: the same gap in every resample)."""

    never = 1e300  # "never" kept finite, so percentiles interpolate without NaN

    def count(x: float) -> int | None:
        return None if not math.isfinite(x) or x >= never / 10 else max(1, math.ceil(x))

    level = boot.curve.score(n_largest) + gap
    g = np.full(len(boot.resamples), gap) if gaps is None else gaps
    values = np.array(
        [c.examples_for(c.score(n_largest) + d) for c, d in zip(boot.resamples, g, strict=False)]
    )
    values = np.minimum(values, never)
    lo, hi = np.percentile(values, [2.5, 97.5]) if values.size else (math.nan, math.nan)
    return document.ExamplesNeeded(
        level=level, value=count(boot.curve.examples_for(level)), low=count(float(lo)), high=count(float(hi))
    )


@dataclass(frozen=True)
class Fitted:
    """The curve side of the analysis, which depends on the dev items only (fixed under eval resampling)."""

    section: document.Pilot
    boot: curve_mod.CurveBootstrap
    rise: np.ndarray  # per curve resample: score(n_full) - score(largest pilot)
    n_largest: int


def fit_curve(run: PilotRun, prompting: PromptingResult, n_full: int) -> Fitted:
    """The points and the fitted curve with its bootstrap over the dev items. Pure."""
    task, labels, metric, seed = prompting.task, prompting.labels, prompting.target_metric, prompting.seed
    sizes = run.plan.sizes
    points = [
        document.PilotPoint(
            n_train=n,
            steps=s,
            dev=_estimate(evaluate.summarise(items, task, labels, seed)[metric]),
            train_s=t,
        )
        for n, s, items, t in zip(sizes, run.plan.steps, run.dev, run.train_s, strict=True)
    ]
    n_dev = len(run.dev[0])
    trend_cmp = evaluate.compare(run.dev[0], run.dev[-1], metric=metric, seed=seed, labels=labels)
    trend = trend_cmp.diff.low > 0
    rows = [_rows(items, metric, labels) for items in run.dev]
    boot = curve_mod.bootstrap_fit(
        sizes,
        lambda idx: np.stack([r(idx) for r in rows], axis=1),
        n_dev,
        trend=trend,
        seed=seed,
        n_resamples=CURVE_RESAMPLES,
    )
    lo, hi = boot.interval(lambda c: c.score(n_full))
    curve = document.PilotCurve(
        a=boot.curve.a,
        b=boot.curve.b,
        c=boot.curve.c,
        trend=boot.curve.trend,
        trend_gain=_difference(trend_cmp),
        n_full=n_full,
        at_full=document.Estimate(value=boot.curve.score(n_full), low=lo, high=hi, n=n_dev),
    )
    section = document.Pilot(
        measured=True,
        reason=_summary(sizes, run, trend),
        model_id=run.model_id,
        recipe=run.plan.recipe.to_dict(),
        budget_steps=run.plan.budget_steps,
        points=points,
        curve=curve,
        wall_s=run.wall_s,
        reused=run.reused,
    )
    rise = np.array([c.score(n_full) - c.score(sizes[-1]) for c in boot.resamples])
    return Fitted(section, boot, rise, sizes[-1])


def with_eval(
    fitted: Fitted,
    prompting: PromptingResult,
    ft_items: Sequence[ItemResult],
    *,
    n_resamples: int = CURVE_RESAMPLES,
    degeneracy: bool = True,
    candidate: Candidate | None = None,
) -> document.Pilot:
    """The eval side: the largest pilot paired with the best honest arm (items in the arms' order), the
    gain carried along the curve to the full train split, and the examples needed; with `candidate`
    (another model than the arms'), that model prompted, against the arm and under the pilot. Pure;
    P(verdict) runs it on each resample of the eval items."""
    task, labels, metric, seed = prompting.task, prompting.labels, prompting.target_metric, prompting.seed
    best = prompting.plateau.best_arm
    if best is not None:
        base = prompting.arm(best)
    elif prompting.baselines is not None:  # no honest arm: the constant answer is what to beat
        best = "majority"
        constant = evaluate.majority_items(prompting.arms[0].items, prompting.baselines.majority_label)
        base = ArmResult(best, "majority", 0, None, constant, {}, 0.0)
    else:
        return fitted.section
    items = tuple(ft_items)
    n_eval = len(items)
    k = min(len(fitted.rise), n_resamples)
    idx = np.random.default_rng(seed + 1).integers(0, n_eval, size=(k, n_eval))
    gains = _gain_samples(base.items, items, metric, labels, idx)
    cmp = evaluate.compare(
        base.items, items, metric=metric, seed=seed, labels=labels, n_resamples=n_resamples
    )
    full = gains + fitted.rise[:k]  # the eval gain carried along the curve to n_full (independent resamples)
    n_full = fitted.section.curve.n_full if fitted.section.curve is not None else fitted.n_largest
    point_rise = fitted.boot.curve.score(n_full) - fitted.boot.curve.score(fitted.n_largest)
    f_lo, f_hi = _interval(full)
    eval_score = evaluate.summarise(items, task, labels, seed, n_resamples)[metric]
    ft = ArmResult(ARM, ARM, 0, None, items, {metric: eval_score}, 0.0)
    return fitted.section.model_copy(
        update={
            "baseline_arm": best,
            "baseline_kind": str(base.kind),
            "eval_score": _estimate(eval_score),
            "gain": _difference(cmp),
            "full_gain": document.Difference(
                diff=cmp.diff.diff + point_rise, low=f_lo, high=f_hi, p_value=_p(full), n=n_eval
            ),
            # The curve must rise by what the pilot lacks on the eval items (dev scale).
            "to_beat_prompt": _needed(fitted.boot, fitted.n_largest, -cmp.diff.diff, -gains),
            "to_target": _needed(fitted.boot, fitted.n_largest, prompting.quality_target - eval_score.value),
            "degenerate": _degenerate(prompting, ft) if degeneracy else None,
            **(_model_change(candidate, base, items, prompting) if candidate is not None else {}),
        }
    )


@dataclass(frozen=True)
class Candidate:
    """The fine-tuning candidate prompted (no adapter) on the eval items, in the arms' order."""

    arms_model_id: str
    items: tuple[ItemResult, ...]


def _model_change(
    candidate: Candidate, arm: ArmResult, pilot_items: Sequence[ItemResult], prompting: PromptingResult
) -> dict[str, Any]:
    """What changing the model does (the candidate prompted against the arms' baseline arm) and what
    fine-tuning adds on it (the largest pilot against the candidate prompted); both paired on the items."""
    task, labels, metric, seed = prompting.task, prompting.labels, prompting.target_metric, prompting.seed
    prompted = candidate.items
    score = evaluate.summarise(prompted, task, labels, seed)[metric]
    change = evaluate.compare(arm.items, prompted, metric=metric, seed=seed, labels=labels)
    adds = evaluate.compare(prompted, pilot_items, metric=metric, seed=seed, labels=labels)
    return {
        "arms_model_id": candidate.arms_model_id,
        "candidate_prompted": _estimate(score),
        "model_change": _difference(change),
        "finetune_adds": _difference(adds),
    }


def analyse(run: PilotRun, prompting: PromptingResult, n_full: int) -> document.Pilot:
    """The pilot section on the eval items the arms were measured on (the curve alone when the largest
    pilot has not been scored on all of them, or no arm is honest). Pure."""
    fitted = fit_curve(run, prompting, n_full)
    eval_lines = [it.line for it in prompting.arms[0].items]
    if any(ln not in run.eval_items for ln in eval_lines):
        return fitted.section
    return with_eval(fitted, prompting, [run.eval_items[ln] for ln in eval_lines])


def _p(samples: np.ndarray) -> float:
    b = samples.size
    return float(
        min(1.0, 2 * min((np.sum(samples <= 0) + 1) / (b + 1), (np.sum(samples >= 0) + 1) / (b + 1)))
    )


def _degenerate(prompting: PromptingResult, ft: ArmResult) -> bool | None:
    """The arms' degeneracy test on the pilot (classification: collapsed, or not above the majority)."""
    base = prompting.baselines
    if base is None:
        return None
    _, judged = evaluate.against_majority(
        ft.items,
        base,
        metric=prompting.target_metric,
        seed=prompting.seed,
        labels=prompting.labels,
        alpha=prompting.alpha,
        thresholds=prompting.thresholds,
    )
    return judged.degenerate


def _summary(sizes: Sequence[int], run: PilotRun, trend: bool) -> str:
    shape = "rising" if trend else "no trend (nothing extrapolated)"
    again = "; reused from the run folder" if run.reused else ""
    return (
        f"LoRA pilots on {', '.join(str(n) for n in sizes)} training examples "
        f"({sum(run.plan.steps)} optimizer steps), scored on the dev split: {shape}{again}"
    )


def _estimate(e: stats.Estimate) -> document.Estimate:
    return document.Estimate(value=e.value, low=e.low, high=e.high, n=e.n)


def _difference(c: evaluate.Comparison) -> document.Difference:
    return document.Difference(
        diff=c.diff.diff,
        low=c.diff.low,
        high=c.diff.high,
        p_value=c.p_value,
        n=c.diff.n,
        mcnemar_p_value=c.mcnemar.p_value,
    )


# ------------------------------------------------------------------------------------------- signals

SIGNAL_NAMES = (
    "pilot_measured",
    "pilot_score",
    "pilot_gain",
    "pilot_gain_low",
    "pilot_gain_high",
    "pilot_full_gain",
    "pilot_full_gain_low",
    "pilot_full_gain_high",
    "pilot_trend",
    "pilot_examples_to_beat_prompt",
    "pilot_examples_to_target",
    "pilot_data_multiple",
    "pilot_baseline_kind",
    "pilot_degenerate",
)


def signals(section: document.Pilot | None, n_examples: int | None, n_train: int | None) -> dict[str, Any]:
    """The pilot's signals (None: not measured). The example counts are in total examples (the held-out
    splits added to the training examples the curve needs), the unit of `n_examples`."""
    out: dict[str, Any] = dict.fromkeys(SIGNAL_NAMES)
    out["pilot_measured"] = bool(section is not None and section.measured and section.gain is not None)
    if section is None or not out["pilot_measured"]:
        return out
    held_out = (n_examples or 0) - (n_train or 0)

    def total(needed: document.ExamplesNeeded | None) -> int | None:
        return None if needed is None or needed.value is None else needed.value + held_out

    g, f = section.gain, section.full_gain
    assert g is not None and f is not None and section.eval_score is not None and section.curve is not None
    out.update(
        pilot_score=section.eval_score.value,
        pilot_gain=g.diff,
        pilot_gain_low=g.low,
        pilot_gain_high=g.high,
        pilot_full_gain=f.diff,
        pilot_full_gain_low=f.low,
        pilot_full_gain_high=f.high,
        pilot_trend=section.curve.trend,
        pilot_examples_to_beat_prompt=total(section.to_beat_prompt),
        pilot_examples_to_target=total(section.to_target),
        pilot_baseline_kind=section.baseline_kind,
        pilot_degenerate=section.degenerate,
    )
    beat = out["pilot_examples_to_beat_prompt"]
    out["pilot_data_multiple"] = None if beat is None or not n_examples else beat / n_examples
    # The pilot's curve replaces the TF-IDF probe's for the examples needed to reach the target.
    out["examples_needed"] = out["pilot_examples_to_target"]
    return out


# ------------------------------------------------------------------------------------------- the step


@dataclass
class PilotStep:
    """The pilot as `advise` runs it: trained once at the start, scored on whatever eval items the arms
    are measured on, analysed against the arms each time the verdict is taken."""

    run_dir: RunDir
    n_full: int  # the train split's examples
    n_examples: int  # all usable examples (the unit of the example-count signals)
    not_measured: document.Pilot | None = None  # why there is no pilot
    job: PilotTask | None = None
    run: PilotRun | None = None
    fitted: Fitted | None = None

    def measure(self, prompting: PromptingResult | None, eval_items: Sequence[Example]) -> document.Pilot:
        """The pilot section on the arms' eval items (scoring the largest pilot on the new ones)."""
        if self.run is None or self.job is None or prompting is None:
            return self.not_measured or unmeasured("not measured: no prompting arms to compare with")
        self.run = score_eval(self.run_dir, self.job, self.run, eval_items)
        self.fitted = fit_curve(self.run, prompting, self.n_full)
        lines = [it.line for it in prompting.arms[0].items]
        evaluate.write_arm_predictions(
            self.run_dir, eval_arm(self.run, lines, prompting.task, prompting.labels, prompting.seed)
        )
        candidate = None
        if self.job.arms_model_id is not None:
            candidate = Candidate(self.job.arms_model_id, tuple(self.run.base_items[ln] for ln in lines))
            evaluate.write_arm_predictions(
                self.run_dir,
                ArmResult(
                    CANDIDATE_ARM,
                    CANDIDATE_ARM,
                    0,
                    None,
                    candidate.items,
                    evaluate.summarise(candidate.items, prompting.task, prompting.labels, prompting.seed),
                    0.0,
                ),
            )
        return with_eval(
            self.fitted, prompting, [self.run.eval_items[ln] for ln in lines], candidate=candidate
        )

    def trained_lines(self) -> frozenset[int]:
        """The train-split lines the pilots trained on (kept out of any later eval growth)."""
        if self.run is None or self.job is None:
            return frozenset()
        order = nested_order(self.job.train, self.job.seed)
        return frozenset(ex.line for ex in order[: self.run.plan.sizes[-1]])

    def resampler(
        self, prompting: PromptingResult
    ) -> Callable[[PromptingResult, np.ndarray], dict[str, Any]] | None:
        """The pilot's signals on a resample of the eval items (drawn with the arms': paired)."""
        if self.fitted is None or self.run is None:
            return None
        fitted, run = self.fitted, self.run
        items = [run.eval_items[it.line] for it in prompting.arms[0].items]
        n_examples, n_train = self.n_examples, self.n_full

        def pilot_signals(resampled: PromptingResult, idx: np.ndarray) -> dict[str, Any]:
            drawn = [replace(items[int(i)], line=j) for j, i in enumerate(idx)]
            section = with_eval(fitted, resampled, drawn, n_resamples=200)
            return signals(section, n_examples, n_train)

        return pilot_signals


def start(
    run_dir: RunDir,
    settings: Any,
    job: PilotTask | None,
    split: Mapping[str, Sequence[int]],
    data_sha256: str,
    n_examples: int,
) -> PilotStep:
    """Train the pilots (or reuse them), or say plainly why the fine-tuning side is not measured.

    `settings`: the advise config (`pilot`, `pilot_steps`, `seed`); `job`: None when there is no local
    trainable model (a server backend, or a backend handed in by the caller)."""
    n_full = len(split["train"])
    step = PilotStep(run_dir, n_full, n_examples)
    if not settings.pilot:
        step.not_measured = unmeasured(
            "not measured: --no-pilot; the fine-tuning side rests on proxies (plateau, probe), not on a "
            "fine-tuned model"
        )
        return step
    if job is None:
        step.not_measured = unmeasured(
            "not measured: no local trainable model (the pilot trains the hf backend's model); the "
            "fine-tuning side rests on proxies (plateau, probe), not on a fine-tuned model"
        )
        return step
    plan = plan_pilot(n_full, settings.pilot_steps, recipe(settings.seed))
    if isinstance(plan, str):
        step.not_measured = unmeasured(f"not measured: {plan}")
        return step
    step.job = job
    step.run = run_pilot(run_dir, job, plan, pilot_key(data_sha256, split, plan, job.model_id, job.task))
    return step
