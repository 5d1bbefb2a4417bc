"""Run the prompting arms on the eval items, score them, compare them, and judge the plateau.

Classification: one log-likelihood request per (item, label), the label as the assistant's reply;
the prediction is the label with the highest summed log-probability (plain sum, no length
normalisation: the sum is the probability of the whole label string; ties go to the first label in
label order). Generation: greedy decoding with stop sequences, scored by exact match, normalised
exact match, token F1 and chrF. Every score carries a percentile-bootstrap 95% interval; every
difference between arms is paired over the same items: a paired-bootstrap interval, and as p-value
the exact McNemar test when the metric is accuracy, the paired bootstrap's otherwise.

The same harness scores any other model later (the fine-tuned one): `score_arm` takes a backend and a
render function, `compare` gives the paired before/after result with per-item flips.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from advisor import document
from advisor.backends.base import Backend, GenRequest, LoglikRequest, batch_size
from advisor.document import Degeneracy, RaceRound
from advisor.errors import BudgetError, ConfigError
from advisor.measure import calibration, stats
from advisor.measure.baselines import (
    Baselines,
    compute_baselines,
    judge_degenerate,
    judge_generation,
)
from advisor.measure.calibration import Variant
from advisor.measure.prompts import SELECTIONS, Arm, ArmKind, DemoSelector, few_shot_arm, render_messages
from advisor.measure.stats import AnytimeDiff, Estimate, McNemar, PairedDiff, Plateau
from advisor.rundir import RunDir
from advisor.types import Example, Message, TaskKind

Progress = Callable[[str, int, int], None]  # (arm name, items done, items total)
CHUNK_ITEMS = 32  # items per backend call: large enough to batch, small enough for live progress


@dataclass(frozen=True)
class ItemResult:
    """One eval item under one arm. `correct`: label match (classification) or normalised exact match."""

    line: int
    input: str
    target: str
    prediction: str
    correct: bool
    metrics: Mapping[str, float]
    prompt_tokens: int
    label_logprobs: Mapping[str, float] | None = None
    demo_lines: tuple[int, ...] = ()
    # generation with demonstrations: whether the answer, and the target, equal one of their answers
    copies_demo: bool | None = None
    target_in_demos: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "line": self.line,
            "input": self.input,
            "target": self.target,
            "prediction": self.prediction,
            "correct": self.correct,
            "metrics": dict(self.metrics),
            "prompt_tokens": self.prompt_tokens,
        }
        if self.label_logprobs is not None:
            d["label_logprobs"] = dict(self.label_logprobs)
        if self.demo_lines:
            d["demo_lines"] = list(self.demo_lines)
        if self.copies_demo is not None:
            d["copies_demo"], d["target_in_demos"] = self.copies_demo, self.target_in_demos
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ItemResult:
        lp = d.get("label_logprobs")
        return cls(
            line=int(d["line"]),
            input=str(d["input"]),
            target=str(d["target"]),
            prediction=str(d["prediction"]),
            correct=bool(d["correct"]),
            metrics={str(k): float(v) for k, v in d["metrics"].items()},
            prompt_tokens=int(d["prompt_tokens"]),
            label_logprobs=None if lp is None else {str(k): float(v) for k, v in lp.items()},
            demo_lines=tuple(int(x) for x in d.get("demo_lines", ())),
            copies_demo=None if d.get("copies_demo") is None else bool(d["copies_demo"]),
            target_in_demos=None if d.get("target_in_demos") is None else bool(d["target_in_demos"]),
        )


@dataclass(frozen=True)
class ArmResult:
    name: str
    kind: str  # an ArmKind value, or e.g. "fine_tuned" for a model scored through `score_arm`
    k: int
    selection: str | None
    items: tuple[ItemResult, ...]
    scores: Mapping[str, Estimate]
    mean_prompt_tokens: float
    # the chat turns sent for each item (same order as `items`), for latency and cost measurements
    prompts: tuple[tuple[Message, ...], ...] = ()
    variant: str = Variant.RAW  # the label-bias correction applied to the predictions (chosen on dev)
    offsets: Mapping[str, float] | None = None  # its log-prior per label, subtracted before the argmax
    tried: tuple[Tried, ...] = ()  # every variant scored on the dev split, the chosen one included
    arm: Arm | None = None  # the prompting arm these items were rendered with (None: another model)

    @property
    def n(self) -> int:
        return len(self.items)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "k": self.k,
            "selection": self.selection,
            "n": self.n,
            "mean_prompt_tokens": self.mean_prompt_tokens,
            "scores": {m: e.to_dict() for m, e in self.scores.items()},
            "variant": str(self.variant),
            "calibration": None if self.offsets is None else dict(self.offsets),
            "tried": [t.to_dict() for t in self.tried],
        }


@dataclass(frozen=True)
class Tried:
    """One variant of an arm scored on the dev split: its label-bias correction and demo selection."""

    variant: str
    selection: str | None
    dev_score: float
    n_dev: int
    offsets: Mapping[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": str(self.variant),
            "selection": self.selection,
            "dev_score": self.dev_score,
            "n_dev": self.n_dev,
        }


@dataclass(frozen=True)
class Comparison:
    """`arm` minus `baseline` on the same items: paired difference, McNemar on `correct`, flips."""

    arm: str
    baseline: str
    metric: str
    diff: PairedDiff
    mcnemar: McNemar
    improved_lines: tuple[int, ...]  # baseline wrong, arm right
    regressed_lines: tuple[int, ...]  # baseline right, arm wrong
    anytime: AnytimeDiff | None = None  # valid at any stopping time (see `anytime_comparison`)

    @property
    def fixed_p_value(self) -> float:
        """The fixed-sample p-value: exact McNemar for accuracy, the paired bootstrap otherwise."""
        return self.mcnemar.p_value if self.metric == "accuracy" else self.diff.p_value

    @property
    def p_value(self) -> float:
        """The p-value decisions use: the larger of the fixed-sample one and the anytime-valid one, so a
        difference counts only when it holds at the sample size the run stopped at, whatever made it stop."""
        if self.anytime is None:
            return self.fixed_p_value
        return max(self.fixed_p_value, self.anytime.p_value)

    @property
    def deciding(self) -> PairedDiff:
        """The difference as decisions read it: `p_value`, and the union of the bootstrap interval and the
        anytime-valid confidence sequence (so it covers whenever either does)."""
        if self.anytime is None or self.metric == "macro_f1":  # macro-F1: the guard is on the p-value only
            return replace(self.diff, p_value=self.p_value)
        low, high = min(self.diff.low, self.anytime.low), max(self.diff.high, self.anytime.high)
        return replace(self.diff, low=low, high=high, p_value=self.p_value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "baseline": self.baseline,
            "metric": self.metric,
            "diff": self.diff.diff,
            "low": self.diff.low,
            "high": self.diff.high,
            "n": self.diff.n,
            "p_value": self.p_value,
            "bootstrap_p_value": self.diff.p_value,
            "mcnemar_p_value": self.mcnemar.p_value,
            "anytime": None if self.anytime is None else self.anytime.to_dict(),
            "improved": len(self.improved_lines),
            "regressed": len(self.regressed_lines),
            "improved_lines": list(self.improved_lines),
            "regressed_lines": list(self.regressed_lines),
        }


@dataclass(frozen=True)
class PromptingResult:
    backend: str
    model_id: str
    task: TaskKind
    labels: tuple[str, ...]
    target_metric: str
    quality_target: float
    min_gain: float
    alpha: float
    seed: int
    arms: tuple[ArmResult, ...]  # cheapest first (mean prompt tokens)
    comparisons: tuple[Comparison, ...]
    plateau: Plateau
    baselines: Baselines | None = None  # classification only
    degeneracy: Mapping[str, Degeneracy] = field(default_factory=dict)  # per arm (classification)
    metric_reason: str = ""
    k_max: int | None = None  # the largest k the prompt budget and the train split allow
    # What the analysis was judged with, so a resample of the eval items is judged alike (not reported).
    thresholds: Mapping[str, Any] = field(default_factory=dict, compare=False)
    budget_spent: bool = False
    race: tuple[RaceRound, ...] = ()  # the dev race that chose the arms scored on eval
    raced_out: tuple[str, ...] = ()  # ladder arms the race dropped: not scored on eval

    def arm(self, name: str) -> ArmResult:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The "prompting" section of decision.json (no per-item data: that is in predictions/)."""
        curve = [
            {
                "k": a.k,
                "arm": a.name,
                "selection": a.selection,
                **a.scores[self.target_metric].to_dict(),
                "mean_prompt_tokens": a.mean_prompt_tokens,
            }
            for a in self.arms
            if a.kind in (ArmKind.SYSTEM, ArmKind.FEW_SHOT)
        ]
        return {
            "backend": self.backend,
            "model_id": self.model_id,
            "task": str(self.task),
            "labels": list(self.labels),
            "target_metric": self.target_metric,
            "metric_reason": self.metric_reason,
            "quality_target": self.quality_target,
            "min_gain": self.min_gain,
            "alpha": self.alpha,
            "seed": self.seed,
            "n_eval": self.arms[0].n if self.arms else 0,
            "k_max": self.k_max,
            "budget_spent": self.budget_spent,
            "baselines": None if self.baselines is None else self.baselines.to_dict(),
            "arms": [
                {
                    **a.to_dict(),
                    "degeneracy": d.model_dump(mode="json")
                    if (d := self.degeneracy.get(a.name)) is not None
                    else None,
                }
                for a in self.arms
            ],
            "comparisons": [c.to_dict() for c in self.comparisons],
            "k_curve": sorted(curve, key=lambda r: (r["k"], r["mean_prompt_tokens"])),
            "plateau": self.plateau.to_dict(),
            "race": [r.model_dump(mode="json") for r in self.race],
            "raced_out": list(self.raced_out),
        }


# --------------------------------------------------------------------------------------------
# Scoring


def metrics_for(task: TaskKind) -> tuple[str, ...]:
    if task is TaskKind.CLASSIFY:
        return stats.CLASSIFICATION_METRICS
    return tuple(stats.GENERATION_METRICS)


def default_stop(train: Sequence[Example]) -> tuple[str, ...]:
    """Stop at a newline when no train target contains one (single-line answers)."""
    return () if any("\n" in ex.target.strip() for ex in train) else ("\n",)


def _cut(text: str, stop: Sequence[str]) -> str:
    for s in stop:
        i = text.find(s)
        if i >= 0:
            text = text[:i]
    return text.strip()


def _score_items(
    backend: Backend,
    name: str,
    prompts: Sequence[tuple[Message, ...]],
    demos: Sequence[Sequence[Example]],
    eval_items: Sequence[Example],
    *,
    task: TaskKind,
    labels: Sequence[str],
    max_gen_tokens: int,
    stop: Sequence[str],
    progress: Progress | None,
) -> tuple[ItemResult, ...]:
    demo_lines = [tuple(d.line for d in ds) for ds in demos]
    out: list[ItemResult] = []
    total = len(eval_items)
    if progress is not None:
        progress(name, 0, total)  # started: the stage's clock and bar begin here
    step = batch_size(backend, CHUNK_ITEMS)  # a server's concurrency window is kept full
    for start in range(0, total, step):
        chunk = range(start, min(total, start + step))
        if task is TaskKind.CLASSIFY:
            reqs = [LoglikRequest(prompts[i], lab) for i in chunk for lab in labels]
            res = backend.loglikelihood(reqs)
            for j, i in enumerate(chunk):
                ex = eval_items[i]
                row = res[j * len(labels) : (j + 1) * len(labels)]
                lps = [r.logprob for r in row]
                pred = labels[int(np.argmax(lps))]
                gold = ex.label if ex.label is not None else ex.target.strip()
                ok = pred == gold
                out.append(
                    ItemResult(
                        line=ex.line,
                        input=ex.input_text,
                        target=gold,
                        prediction=pred,
                        correct=ok,
                        metrics={"accuracy": float(ok)},
                        prompt_tokens=row[0].prompt_tokens,
                        label_logprobs=dict(zip(labels, lps, strict=True)),
                        demo_lines=demo_lines[i],
                    )
                )
        else:
            gens = backend.generate(
                [GenRequest(prompts[i], max_tokens=max_gen_tokens, stop=tuple(stop)) for i in chunk]
            )
            for g, i in zip(gens, chunk, strict=True):
                ex = eval_items[i]
                pred = _cut(g.text, stop)
                m = {k: f(pred, ex.target) for k, f in stats.GENERATION_METRICS.items()}
                shown = {stats.normalize_answer(d.target) for d in demos[i]}
                out.append(
                    ItemResult(
                        line=ex.line,
                        input=ex.input_text,
                        target=ex.target,
                        prediction=pred,
                        correct=bool(m["normalized_exact_match"]),
                        metrics=m,
                        prompt_tokens=g.prompt_tokens,
                        demo_lines=demo_lines[i],
                        copies_demo=stats.normalize_answer(pred) in shown if shown else None,
                        target_in_demos=stats.normalize_answer(ex.target) in shown if shown else None,
                    )
                )
        if progress is not None:
            progress(name, len(out), total)
    return tuple(out)


def summarise(
    items: Sequence[ItemResult],
    task: TaskKind,
    labels: Sequence[str],
    seed: int,
    n_resamples: int = stats.N_RESAMPLES,
) -> dict[str, Estimate]:
    """Every metric of the task with its bootstrap interval."""
    r = n_resamples
    if task is TaskKind.CLASSIFY:
        return {
            "accuracy": stats.bootstrap_mean([float(it.correct) for it in items], seed=seed, n_resamples=r),
            "macro_f1": stats.bootstrap_macro_f1(
                [it.target for it in items], [it.prediction for it in items], labels, seed=seed, n_resamples=r
            ),
        }
    return {
        m: stats.bootstrap_mean([it.metrics[m] for it in items], seed=seed, n_resamples=r)
        for m in metrics_for(task)
    }


def _arm_result(
    name: str,
    kind: str,
    k: int,
    selection: str | None,
    items: tuple[ItemResult, ...],
    prompts: Sequence[tuple[Message, ...]],
    task: TaskKind,
    labels: Sequence[str],
    seed: int,
) -> ArmResult:
    mean_tokens = float(np.mean([it.prompt_tokens for it in items])) if items else math.nan
    scores = summarise(items, task, labels, seed)
    return ArmResult(name, kind, k, selection, items, scores, mean_tokens, tuple(prompts))


def score_arm(
    backend: Backend,
    name: str,
    render: Callable[[Example], tuple[Message, ...]],
    eval_items: Sequence[Example],
    *,
    task: TaskKind,
    labels: Sequence[str],
    seed: int,
    kind: str = "custom",
    max_gen_tokens: int = 64,
    stop: Sequence[str] = ("\n",),
    progress: Progress | None = None,
) -> ArmResult:
    """Score any model on the eval items with any prompt rendering (e.g. the fine-tuned model)."""
    prompts = [render(ex) for ex in eval_items]
    items = _score_items(
        backend,
        name,
        prompts,
        [()] * len(eval_items),  # no demonstrations
        eval_items,
        task=task,
        labels=labels,
        max_gen_tokens=max_gen_tokens,
        stop=stop,
        progress=progress,
    )
    return _arm_result(name, kind, 0, None, items, prompts, task, labels, seed)


def evaluate_arm(
    backend: Backend,
    arm: Arm,
    eval_items: Sequence[Example],
    selector: DemoSelector,
    *,
    task: TaskKind,
    labels: Sequence[str],
    seed: int,
    max_gen_tokens: int = 64,
    stop: Sequence[str] = ("\n",),
    progress: Progress | None = None,
) -> ArmResult:
    """Score one prompting arm; demonstrations come from `selector` (built on the train split)."""
    demos = [selector.select(arm, ex) for ex in eval_items]
    prompts = [render_messages(arm, ex, d) for ex, d in zip(eval_items, demos, strict=True)]
    items = _score_items(
        backend,
        arm.name,
        prompts,
        demos,
        eval_items,
        task=task,
        labels=labels,
        max_gen_tokens=max_gen_tokens,
        stop=stop,
        progress=progress,
    )
    selection = arm.selection if arm.kind is ArmKind.FEW_SHOT else None
    result = _arm_result(arm.name, str(arm.kind), arm.k, selection, items, prompts, task, labels, seed)
    return replace(result, arm=arm)


# --------------------------------------------------------------------------------------------
# Comparing


def against_majority(
    items: Sequence[ItemResult],
    baselines: Baselines | document.Baselines,
    *,
    metric: str,
    seed: int,
    labels: Sequence[str],
    alpha: float,
    thresholds: Mapping[str, Any],
    after_name: str = "after",
    n_resamples: int = stats.N_RESAMPLES,
) -> tuple[Comparison, Degeneracy]:
    """A model's items against the majority baseline on the same items, and the arms' degeneracy test on
    them (the pilot and the verified fine-tune are judged as the arms are)."""
    vs = compare(
        majority_items(items, baselines.majority_label),
        items,
        metric=metric,
        seed=seed,
        labels=labels,
        before_name="majority",
        after_name=after_name,
        n_resamples=n_resamples,
    )
    degeneracy = judge_degenerate(
        [it.prediction for it in items],
        baselines.label_shares,
        diff=vs.diff.diff,
        low=vs.diff.low,
        high=vs.diff.high,
        p_value=vs.p_value,
        metric=metric,
        alpha=float(alpha),
        thresholds={k: float(v) for k, v in thresholds.items() if isinstance(v, int | float)},
    )
    return vs, degeneracy


def compare(
    before: Sequence[ItemResult],
    after: Sequence[ItemResult],
    *,
    metric: str,
    seed: int,
    labels: Sequence[str] = (),
    before_name: str = "before",
    after_name: str = "after",
    n_resamples: int = stats.N_RESAMPLES,
) -> Comparison:
    """`after` minus `before` on the same items (matched by line), with flips in both directions.

    `metric` "macro_f1" needs `labels`; any other metric is a per-item mean.
    """
    by_line = {it.line: it for it in before}
    if len(by_line) != len(before) or set(by_line) != {it.line for it in after} or len(after) != len(before):
        raise ValueError("compare needs the same eval items (lines) on both sides")
    b = [by_line[it.line] for it in after]
    if metric == "macro_f1":
        if not labels:
            raise ValueError("compare on macro_f1 needs the label set")
        diff = stats.paired_bootstrap_macro_f1(
            [it.target for it in after],
            [it.prediction for it in after],
            [it.prediction for it in b],
            labels,
            seed=seed,
            n_resamples=n_resamples,
        )
    else:
        diff = stats.paired_bootstrap_mean(
            [it.metrics[metric] for it in after],
            [it.metrics[metric] for it in b],
            seed=seed,
            n_resamples=n_resamples,
        )
    return Comparison(
        arm=after_name,
        baseline=before_name,
        metric=metric,
        diff=diff,
        anytime=anytime_comparison(after, b, metric),
        mcnemar=stats.mcnemar([it.correct for it in after], [it.correct for it in b]),
        improved_lines=tuple(a.line for a, o in zip(after, b, strict=True) if a.correct and not o.correct),
        regressed_lines=tuple(a.line for a, o in zip(after, b, strict=True) if o.correct and not a.correct),
    )


BINARY_METRICS = ("accuracy", "exact_match", "normalized_exact_match")


def anytime_comparison(after: Sequence[ItemResult], before: Sequence[ItemResult], metric: str) -> AnytimeDiff:
    """The anytime-valid side of a paired comparison (items matched by position).

    A 0/1 metric: the sign test over the discordant items (`anytime_mcnemar`) for the p-value, and the
    confidence sequence of the per-item differences for the interval. Token F1 and chrF: the confidence
    sequence of the per-item differences (bounded in [-1, 1]) for both. Macro-F1 is not a mean over
    items: the guard is the sign test on per-item correctness, with the interval on accuracy.
    """
    key = "accuracy" if metric == "macro_f1" else metric
    a = np.fromiter((it.metrics.get(key, float(it.correct)) for it in after), float, len(after))
    b = np.fromiter((it.metrics.get(key, float(it.correct)) for it in before), float, len(before))
    cs = stats.anytime_paired_mean(a, b)
    if key in BINARY_METRICS:
        a_only, b_only = int(np.count_nonzero(a > b)), int(np.count_nonzero(b > a))
        cs = replace(cs, p_value=stats.anytime_mcnemar(a_only, b_only))
    return cs


def _items_needed(a: ArmResult, b: ArmResult, metric: str, min_gain: float, alpha: float) -> int:
    """Eval items needed to detect `min_gain` between two arms (see advisor.measure.stats for formulas).

    Binary per-item metrics (accuracy, exact matches) and macro-F1 use the McNemar formula with the
    observed discordant rate of `correct`; token F1 and chrF use the spread of per-item differences.
    """
    if metric in ("token_f1", "chrf"):
        d = np.array([x.metrics[metric] for x in a.items]) - np.array([y.metrics[metric] for y in b.items])
        sd = float(np.std(d, ddof=1)) if d.size > 1 else 0.0
        if sd > 0:
            return stats.items_needed_paired_mean(min_gain, sd, alpha=alpha)
    disc = sum(x.correct != y.correct for x, y in zip(a.items, b.items, strict=True)) / max(1, a.n)
    return stats.items_needed_paired_proportions(min_gain, disc, alpha=alpha)


def _check(
    task: TaskKind, labels: Sequence[str], target_metric: str, quality_target: float | None, min_gain: float
) -> float:
    """Validate the measurement settings; returns the quality target."""
    if task is TaskKind.CLASSIFY and len(set(labels)) < 2:
        raise ConfigError(f"classification needs at least two labels, got {list(labels)}", field="labels")
    if quality_target is None:
        raise ConfigError(
            "a quality target is needed to judge prompting (e.g. --target accuracy=0.85)",
            field="quality_target",
        )
    if target_metric not in metrics_for(task):
        raise ConfigError(
            f"{target_metric!r} is not a {task} metric; use one of: {', '.join(metrics_for(task))}",
            field="target_metric",
        )
    if not 0.0 <= quality_target <= 1.0:
        raise ConfigError(f"must be between 0 and 1, got {quality_target}", field="quality_target")
    if not 0.0 < min_gain < 1.0:
        raise ConfigError(f"must be between 0 and 1 (exclusive), got {min_gain}", field="min_gain")
    return float(quality_target)


def evaluate_arms(
    backend: Backend,
    arms: Sequence[Arm],
    train: Sequence[Example],
    eval_items: Sequence[Example],
    task: TaskKind,
    labels: Sequence[str],
    *,
    seed: int,
    target_metric: str,
    quality_target: float | None,
    min_gain: float,
    max_gen_tokens: int = 64,
    alpha: float = stats.ALPHA,
    progress: Progress | None = None,
    dev_items: Sequence[Example] = (),
    k_max: int | None = None,
    thresholds: Mapping[str, Any],
    metric_reason: str = "",
) -> PromptingResult:
    """Measure every arm, compare arms, name the degenerate ones, judge the plateau on the whole curve.

    Each arm's variants (label-bias corrections; nearest demonstrations at the top rung) are scored on
    `dev_items` and only the variant chosen there is scored on the eval items. While the best arm is the
    last rung and the ladder's slope interval lies above zero, the ladder grows (k doubles) up to `k_max`
    (default: the train split's size) before the plateau is judged.
    """
    target = _check(task, labels, target_metric, quality_target, min_gain)
    if not arms or not eval_items:
        raise ConfigError("prompting needs at least one arm and one eval item", field="eval_size")
    limit = len(train) if k_max is None else min(k_max, len(train))
    m = _Measurer(
        backend, train, eval_items, dev_items, task, labels, seed, target_metric, max_gen_tokens, progress
    )
    race = m.race(arms, thresholds)
    results = [m.measure(arm, chosen=race.chosen.get(arm.name)) for arm in race.eval_arms]
    budget_spent = False
    while True:
        result = analyse(
            results,
            backend=backend.name,
            model_id=backend.model_id,
            task=task,
            labels=labels,
            seed=seed,
            target_metric=target_metric,
            quality_target=target,
            min_gain=min_gain,
            alpha=alpha,
            thresholds=thresholds,
            metric_reason=metric_reason,
            limit=limit,
            budget_spent=budget_spent,
            race=race.rounds,
            raced_out=race.raced_out,
        )
        if not result.plateau.extend:
            return result
        last = max((r for r in results if r.kind == ArmKind.FEW_SHOT), key=lambda r: r.k)
        template = next(a for a in arms if a.kind is not ArmKind.ZERO_SHOT)
        try:
            # The new rung's variants are scored on the dev items the race's finalists were scored on.
            results.append(m.measure(few_shot_arm(template, 2 * last.k, _base_selection(arms)), top=True))
        except BudgetError:
            budget_spent = True  # the run's token or request budget is spent: the ladder ends here


def _base_selection(arms: Sequence[Arm]) -> str:
    return next((a.selection for a in arms if a.kind is ArmKind.FEW_SHOT), "stratified")


class _Measurer:
    """Scores one arm: its variants on dev, the chosen variant on eval."""

    def __init__(
        self,
        backend: Backend,
        train: Sequence[Example],
        eval_items: Sequence[Example],
        dev_items: Sequence[Example],
        task: TaskKind,
        labels: Sequence[str],
        seed: int,
        metric: str,
        max_gen_tokens: int,
        progress: Progress | None,
    ) -> None:
        self.backend, self.eval_items, self.dev_items = backend, eval_items, dev_items
        self.task, self.labels, self.seed, self.metric = task, labels, seed, metric
        self.selector = DemoSelector(train, seed)
        self.stop = default_stop(train) if task is TaskKind.GENERATE else ()
        self.max_gen_tokens, self.progress = max_gen_tokens, progress
        self.race_items: list[Example] = []  # the dev items the race's finalists were scored on

    def _run(self, arm: Arm, items: Sequence[Example], label: str = "") -> ArmResult:
        progress = self.progress
        if progress is not None and label:
            outer = progress

            def progress(name: str, done: int, total: int) -> None:
                outer(f"{name} ({label})", done, total)

        return evaluate_arm(
            self.backend,
            arm,
            items,
            self.selector,
            task=self.task,
            labels=self.labels,
            seed=self.seed,
            max_gen_tokens=self.max_gen_tokens,
            stop=self.stop,
            progress=progress,
        )

    def _dev_score(self, items: Sequence[ItemResult]) -> float:
        if self.metric == "macro_f1":
            return stats.macro_f1([it.target for it in items], [it.prediction for it in items], self.labels)
        return float(np.mean([it.metrics[self.metric] for it in items]))

    def _content_free_prior(self, arm: Arm) -> dict[str, float]:
        rows = []
        for text in calibration.CONTENT_FREE:
            ex = Example(0, (Message("user", text),), "")
            msgs = render_messages(arm, ex, self.selector.select(arm, ex))
            res = self.backend.loglikelihood([LoglikRequest(msgs, lab) for lab in self.labels])
            rows.append({lab: r.logprob for lab, r in zip(self.labels, res, strict=True)})
        return calibration.prior(rows, self.labels)

    def _variants(self, arm: Arm, items: Sequence[ItemResult], selection: str | None) -> list[Tried]:
        """The arm's label-bias corrections on its dev items (no model call but the content-free prompts)."""
        tried = [Tried(Variant.RAW, selection, self._dev_score(items), len(items))]
        if self.task is not TaskKind.CLASSIFY:
            return tried
        priors = {Variant.BATCH: calibration.prior([it.label_logprobs or {} for it in items], self.labels)}
        if (
            arm.selection == "stratified" or arm.kind is not ArmKind.FEW_SHOT
        ):  # content-free: one fixed prompt
            priors[Variant.CONTEXTUAL] = self._content_free_prior(arm)
        for variant in (Variant.CONTEXTUAL, Variant.BATCH):
            if variant in priors:
                fixed = recalibrated(items, priors[variant], self.labels)
                tried.append(Tried(variant, selection, self._dev_score(fixed), len(items), priors[variant]))
        return tried

    def _per_item(self, items: Sequence[ItemResult], chosen: Tried) -> np.ndarray:
        """The chosen variant's per-item values on the dev items: the metric, or correctness for macro-F1."""
        if chosen.offsets is not None:
            items = recalibrated(items, chosen.offsets, self.labels)
        key = "accuracy" if self.metric == "macro_f1" else self.metric
        return np.array([it.metrics.get(key, float(it.correct)) for it in items], dtype=float)

    def race(self, arms: Sequence[Arm], thresholds: Mapping[str, Any]) -> Race:
        """Choose the arms to score on eval by a race on the dev split (see `Race`)."""
        top_k = max((a.k for a in arms if a.kind is ArmKind.FEW_SHOT), default=0)
        candidates: list[tuple[Arm, Arm]] = []  # (ladder arm, the variant arm raced)
        for arm in arms:
            candidates.append((arm, arm))
            if arm.kind is ArmKind.FEW_SHOT and arm.k == top_k:
                candidates += [(arm, few_shot_arm(arm, arm.k, s)) for s in SELECTIONS if s != arm.selection]
        if not self.dev_items:
            return Race(tuple(arms), {}, (), ())
        step = max(1, int(thresholds["race_round_items"]))
        keep_share = float(thresholds["race_keep_share"])
        alive = list(range(len(candidates)))
        items: dict[int, list[ItemResult]] = {i: [] for i in alive}
        tried: dict[int, list[Tried]] = {}
        rounds: list[RaceRound] = []
        finalists = list(alive)
        n_dev = 0
        while n_dev < len(self.dev_items) and (len(alive) > 1 or not rounds):
            chunk = self.dev_items[n_dev : n_dev + step]
            n_dev += len(chunk)
            label = f"dev race round {len(rounds) + 1}"
            for i in alive:
                items[i] += self._run(candidates[i][1], chunk, label).items
            finalists = list(alive)
            for i in alive:
                variant = candidates[i][1]
                tried[i] = self._variants(variant, items[i], variant.selection if variant.k else None)
            best = {i: max(t.dev_score for t in tried[i]) for i in alive}
            leader = max(alive, key=lambda i: best[i])  # max keeps the first (cheaper) of equals
            names = {i: candidates[i][1].name for i in alive}
            dropped = race_drops(
                {names[i]: self._per_item(items[i], max(tried[i], key=lambda t: t.dev_score)) for i in alive},
                {names[i]: best[i] for i in alive},
                keep_share=keep_share,
            )
            rounds.append(
                RaceRound(
                    round=len(rounds) + 1,
                    n_dev=n_dev,
                    scores={names[i]: best[i] for i in alive},
                    leader=names[leader],
                    dropped=dropped,
                )
            )
            alive = [i for i in alive if names[i] not in dropped]
        # Scored on eval: the few-shot finalists (the last round's candidates; of two variants of one arm the
        # better), each with the variants it tried in its last round, and the cheapest arms the verdict
        # always reads (zero-shot and system prompt). Those two choose their label-bias correction on the
        # whole dev split (`measure`), not on the items of the round they left the race in: a correction
        # chosen on 20 items of an imbalanced task can be chosen on one label alone.
        ranked = sorted(finalists, key=lambda i: -max(t.dev_score for t in tried[i]))
        chosen: dict[str, tuple[Arm, list[Tried]]] = {}
        for i in ranked:
            if candidates[i][0].kind is ArmKind.FEW_SHOT and candidates[i][0].name not in chosen:
                chosen[candidates[i][0].name] = (candidates[i][1], tried[i])
        eval_arms = tuple(a for a in arms if a.name in chosen or a.kind is not ArmKind.FEW_SHOT)
        raced_out = tuple(a.name for a in arms if a not in eval_arms)
        self.race_items = list(self.dev_items[:n_dev])
        return Race(eval_arms, chosen, tuple(rounds), raced_out)

    def measure(
        self, arm: Arm, *, top: bool = False, chosen: tuple[Arm, list[Tried]] | None = None
    ) -> ArmResult:
        """The arm's chosen variant on eval: chosen in the dev race (`chosen`), or its variants scored now on
        the race's dev items (a rung the ladder adds later; `top`: with the other demonstration
        selections), or on the whole dev split (the zero-shot and system arms)."""
        if chosen is None:
            selections = [arm.selection]
            if top and arm.kind is ArmKind.FEW_SHOT:
                selections += [s for s in SELECTIONS if s != arm.selection]
            options: list[tuple[Arm, Tried]] = []
            for sel in selections if self.dev_items else ():
                variant_arm = arm if sel == arm.selection else few_shot_arm(arm, arm.k, sel)
                race_items = self.race_items if arm.kind is ArmKind.FEW_SHOT else []
                dev = self._run(variant_arm, race_items or self.dev_items, "dev")
                selection = sel if arm.kind is ArmKind.FEW_SHOT else None
                options += [(variant_arm, t) for t in self._variants(variant_arm, dev.items, selection)]
        else:
            options = [(chosen[0], t) for t in chosen[1]]
        # The best dev score; max keeps the first of equals (raw first, the configured selection first).
        chosen_arm, best = max(options, key=lambda t: t[1].dev_score) if options else (arm, None)
        result = self._run(chosen_arm, self.eval_items)
        if best is None:
            return result
        if best.offsets is not None:
            items = recalibrated(result.items, best.offsets, self.labels)
            result = replace(result, items=items, scores=summarise(items, self.task, self.labels, self.seed))
        return replace(result, variant=best.variant, offsets=best.offsets, tried=tuple(t for _, t in options))


def race_schedule(n_candidates: int, n_dev: int, round_items: int, keep_share: float) -> list[int]:
    """Candidates in each round of a dev race in which none is clearly worse (the most it scores): every
    round adds `round_items` dev items, and the better `keep_share` go on, until one is left or the dev
    split is used up. The last entry is the number of finalists."""
    out: list[int] = []
    alive, used = n_candidates, 0
    while used < n_dev and (alive > 1 or not out):
        out.append(alive)
        used += round_items
        alive = max(1, math.ceil(alive * keep_share))
    return out


def race_candidates(arms: Sequence[Arm]) -> int:
    """How many candidates race: every arm, and the top rung's other demonstration selections."""
    return len(arms) + (len(SELECTIONS) - 1 if any(a.kind is ArmKind.FEW_SHOT for a in arms) else 0)


@dataclass(frozen=True)
class Race:
    """The dev race's outcome: which arms are scored on eval, each with the variants it tried on dev.

    Candidates are the ladder's arms and the top rung's other demonstration selections, scored paired on
    the same dev items in rounds of `race_round_items`. After each round a candidate leaves when its
    anytime-valid confidence sequence against the leader lies below zero (a Hoeffding race, Maron and
    Moore 1994), and only the better `race_keep_share` of the rest go on (successive halving, Karnin,
    Koren and Somekh 2013): a budget rule, not a test. The finalists (the last round's candidates) and
    the zero-shot and system arms are scored on eval; the others are `raced_out`.
    """

    eval_arms: tuple[Arm, ...]
    chosen: Mapping[str, tuple[Arm, list[Tried]]]
    rounds: tuple[RaceRound, ...]
    raced_out: tuple[str, ...]


def race_drops(
    values: Mapping[str, np.ndarray],
    scores: Mapping[str, float],
    *,
    keep_share: float,
    alpha: float = stats.ALPHA,
) -> dict[str, str]:
    """The candidates that leave the race after a round, each with why (pure).

    `values[c]`: candidate c's per-item values on the dev items every candidate was scored on (paired);
    `scores[c]`: its dev score (the order of `scores` breaks ties: the earlier, cheaper candidate stays).
    Clearly worse (the anytime-valid sequence for c minus the leader lies below zero) leaves at once; of
    the rest, the better `keep_share` (at least one) go on.
    """
    names = list(scores)
    leader = max(names, key=lambda c: scores[c])
    out: dict[str, str] = {}
    for c in names:
        if c == leader:
            continue
        cs = stats.anytime_paired_mean(values[c], values[leader], alpha=alpha)
        if cs.high < 0:
            out[c] = (
                f"clearly worse than {leader} on {cs.n} dev items: {cs.diff:+.3f}, anytime-valid interval "
                f"[{cs.low:+.3f}, {cs.high:+.3f}]"
            )
    rest = [c for c in names if c not in out]
    keep = max(1, math.ceil(len(rest) * keep_share))
    ranked = sorted(rest, key=lambda c: -scores[c])  # stable: equals keep their order
    for c in ranked[keep:]:
        out[c] = (
            f"not in the better {keep_share:.0%} after this round (successive halving): dev score "
            f"{scores[c]:.3f}, leader {leader} {scores[leader]:.3f}"
        )
    return out


def recalibrated(
    items: Sequence[ItemResult], offsets: Mapping[str, float], labels: Sequence[str]
) -> tuple[ItemResult, ...]:
    """The items' predictions again from their label log-probabilities, less a label-bias correction."""
    out = []
    for it in items:
        pred = calibration.predict(it.label_logprobs or {}, offsets, labels)
        ok = pred == it.target
        out.append(replace(it, prediction=pred, correct=ok, metrics={**it.metrics, "accuracy": float(ok)}))
    return tuple(out)


def majority_items(items: Sequence[ItemResult], label: str) -> tuple[ItemResult, ...]:
    """The constant predictor answering `label`, on the same items (the majority baseline)."""
    return tuple(
        copied_item(
            it,
            prediction=label,
            correct=it.target == label,
            metrics={"accuracy": float(it.target == label)},
            label_logprobs=None,
            demo_lines=(),
        )
        for it in items
    )


def copied_item(item: ItemResult, **changes: Any) -> ItemResult:
    """`item` with `changes`, field for field: `dataclasses.replace` re-runs `__init__` and costs ten times
    as much, and P(verdict) builds the majority baseline items x resamples times."""
    new = object.__new__(ItemResult)
    new.__dict__.update(item.__dict__, **changes)
    return new


def _rung_statistic(arm: ArmResult, metric: str, labels: Sequence[str]) -> Callable[[np.ndarray], np.ndarray]:
    """The arm's score on the items at each row of an index block (for the ladder's bootstrap)."""
    if metric == "macro_f1":
        return stats.macro_f1_rows(
            [it.target for it in arm.items], [it.prediction for it in arm.items], labels
        )
    return stats.mean_rows([it.metrics[metric] for it in arm.items])


def analyse(
    results: Sequence[ArmResult],
    *,
    backend: str,
    model_id: str,
    task: TaskKind,
    labels: Sequence[str],
    seed: int,
    target_metric: str,
    quality_target: float,
    min_gain: float,
    thresholds: Mapping[str, Any],
    alpha: float = stats.ALPHA,
    metric_reason: str = "",
    limit: int | None = None,
    budget_spent: bool = False,
    n_resamples: int = stats.N_RESAMPLES,
    race: Sequence[RaceRound] = (),
    raced_out: Sequence[str] = (),
) -> PromptingResult:
    """Baselines, degeneracy, paired comparisons, the ladder's trend and the plateau of the arms measured.

    Pure over the arms' per-item results, so the same analysis runs on a bootstrap resample of the eval
    items (advisor.decide.confidence); `n_resamples` sets the inner tests' bootstrap size.
    """
    ordered = sorted(results, key=lambda r: r.mean_prompt_tokens)  # stable: ties keep arm order

    def cmp(arm: ArmResult, base: ArmResult) -> Comparison:
        return compare(
            base.items,
            arm.items,
            metric=target_metric,
            seed=seed,
            labels=labels,
            before_name=base.name,
            after_name=arm.name,
            n_resamples=n_resamples,
        )

    baselines = None
    degeneracy: dict[str, Degeneracy] = {}
    if task is TaskKind.CLASSIFY:
        baselines = compute_baselines([it.target for it in ordered[0].items], labels)
        constant = ArmResult(
            "majority",
            "baseline",
            0,
            None,
            majority_items(ordered[0].items, baselines.majority_label),
            {},
            0.0,
        )
        for r in ordered:
            c = cmp(r, constant)
            gap = c.deciding
            degeneracy[r.name] = judge_degenerate(
                [it.prediction for it in r.items],
                baselines.label_shares,
                diff=gap.diff,
                low=gap.low,
                high=gap.high,
                p_value=gap.p_value,
                metric=target_metric,
                alpha=alpha,
                thresholds={k: float(v) for k, v in thresholds.items() if isinstance(v, int | float)},
            )
    else:  # generation: one repeated answer, or the demonstrations' answers copied
        for r in ordered:
            degeneracy[r.name] = judge_generation(r.items, thresholds)
    honest = {r.name: not (d.degenerate if (d := degeneracy.get(r.name)) else False) for r in ordered}

    comparisons: list[Comparison] = []
    vs_previous: dict[str, PairedDiff] = {}
    zero = next((r for r in ordered if r.kind == ArmKind.ZERO_SHOT), None)
    for i in range(1, len(ordered)):
        c = cmp(ordered[i], ordered[i - 1])
        comparisons.append(c)
        vs_previous[ordered[i].name] = c.deciding
        if zero is not None and ordered[i - 1] is not zero and ordered[i] is not zero:
            comparisons.append(cmp(ordered[i], zero))

    points = [stats.CurvePoint(r.name, r.mean_prompt_tokens, r.scores[target_metric].value) for r in ordered]
    fair = [p for p in points if honest[p.arm]]
    best = stats.best_point(fair) if fair else None
    vs_best: dict[str, PairedDiff] = {}
    needed = None
    if best is not None:
        pos = [r.name for r in ordered].index(best.arm)
        for r in ordered[pos + 1 :]:
            c = cmp(r, ordered[pos])
            vs_best[r.name] = c.deciding
        if len(ordered) > 1:
            a, b = (ordered[pos], ordered[pos - 1]) if pos > 0 else (ordered[1], ordered[0])
            needed = _items_needed(a, b, target_metric, min_gain, alpha)

    ladder = sorted((r for r in ordered if r.kind in (ArmKind.SYSTEM, ArmKind.FEW_SHOT)), key=lambda r: r.k)
    trend = stats.ladder_trend(
        [r.k for r in ladder],
        [_rung_statistic(r, target_metric, labels) for r in ladder],
        len(ordered[0].items),
        seed=seed,
        n_resamples=n_resamples,
    )
    few = [r.k for r in ladder if r.kind == ArmKind.FEW_SHOT]
    plateau = stats.detect_plateau(
        points,
        vs_previous,
        quality_target=quality_target,
        min_gain=min_gain,
        alpha=alpha,
        items_needed=needed,
        honest=honest,
        vs_best=vs_best,
        ladder=[r.name for r in ladder],
        trend=trend,
        next_rung_fits=bool(few) and limit is not None and 2 * few[-1] <= limit and not budget_spent,
        raced_out=[a for a in raced_out if _rung_k(a) > (few[-1] if few else 0)],
    )
    return PromptingResult(
        backend=backend,
        model_id=model_id,
        task=task,
        labels=tuple(labels),
        target_metric=target_metric,
        quality_target=quality_target,
        min_gain=min_gain,
        alpha=alpha,
        seed=seed,
        arms=tuple(ordered),
        comparisons=tuple(comparisons),
        plateau=plateau,
        baselines=baselines,
        degeneracy=degeneracy,
        metric_reason=metric_reason,
        k_max=limit,
        thresholds=thresholds,
        budget_spent=budget_spent,
        race=tuple(race),
        raced_out=tuple(raced_out),
    )


def _rung_k(name: str) -> int:
    """The k of a few-shot arm's name (`few_shot_k8`, `few_shot_k8_nearest`); 0 for any other arm."""
    head = name.removeprefix("few_shot_k").split("_")[0]
    return int(head) if name.startswith("few_shot_k") and head.isdigit() else 0


# --------------------------------------------------------------------------------------------
# Files


def write_arm_predictions(run_dir: RunDir | str | Path, arm: ArmResult) -> Path:
    """predictions/<arm>.jsonl: one JSON object per eval item, written atomically."""
    return RunDir.of(run_dir).write_predictions(arm.name, [it.to_dict() for it in arm.items])


def write_predictions(run_dir: RunDir | str | Path, result: PromptingResult) -> list[Path]:
    return [write_arm_predictions(run_dir, a) for a in result.arms]


def read_predictions(run_dir: RunDir | str | Path, arm: str) -> tuple[ItemResult, ...]:
    """An arm's per-item results from the run folder's predictions/<arm>.jsonl."""
    return tuple(ItemResult.from_dict(row) for row in RunDir.of(run_dir).read_predictions(arm))


# --------------------------------------------------------------------------------------------
# Signals and report section

SIGNAL_NAMES = (
    "prompting_measured",
    "target_metric",
    "quality_target",
    "zero_shot_score",
    "system_score",
    "best_few_shot_score",
    "best_few_shot_k",
    "best_prompt_score",
    "best_arm",
    "prompt_meets_target",
    "few_shot_meets_target",
    "target_within_ci",
    "prompting_plateaued",
    "plateau_gain",
    "plateau_p_value",
    "eval_items_needed",
    "majority_baseline_score",
    "chance_score",
    "n_degenerate_arms",
    "prompting_beats_majority",
    "ladder_exhausted",
    "ladder_slope_low",
)


def _chance_score(baselines: Mapping[str, Any] | None, metric: str) -> float | None:
    """What guessing scores: the better of always answering the commonest label and answering uniformly
    at random (for macro-F1 on many labels the random guess is the higher one)."""
    if baselines is None:
        return None
    scores = [float(baselines[b][metric]) for b in ("majority", "uniform") if metric in baselines.get(b, {})]
    return max(scores) if scores else None


def prompting_signals(
    section: PromptingResult | Mapping[str, Any] | None,
) -> dict[str, float | int | bool | str | None]:
    """The Prompting signals from a result or its decision.json section (None: not measured).

    Degenerate arms (see advisor.measure.baselines) count for nothing here: they are never the best arm and
    never meet the target.
    """
    if section is None:
        unmeasured: dict[str, float | int | bool | str | None] = dict.fromkeys(SIGNAL_NAMES)
        unmeasured["prompting_measured"] = False
        return unmeasured
    s = section.to_dict() if isinstance(section, PromptingResult) else section
    metric, target = s["target_metric"], float(s["quality_target"])

    def score(a: Mapping[str, Any]) -> float:
        return float(a["scores"][metric]["value"])

    def honest(a: Mapping[str, Any]) -> bool:
        return not (a.get("degeneracy") or {}).get("degenerate", False)

    arms = list(s["arms"])  # cheapest first
    fair = [a for a in arms if honest(a)]
    zero = next((a for a in arms if a["kind"] == ArmKind.ZERO_SHOT), None)
    system = next((a for a in arms if a["kind"] == ArmKind.SYSTEM), None)
    few = [a for a in fair if a["kind"] == ArmKind.FEW_SHOT]
    best_few = max(few, key=score, default=None)  # max keeps the first (cheapest) of equals
    plateau = s["plateau"]
    best = next((a for a in arms if a["name"] == plateau["best_arm"]), None)
    cheap = [score(a) for a in (zero, system) if a is not None and honest(a)]
    prompt_meets = bool(cheap) and max(cheap) >= target
    ci = best["scores"][metric] if best is not None else None
    base = s.get("baselines")
    trend = plateau.get("trend")
    return {
        "prompting_measured": True,
        "target_metric": metric,
        "quality_target": target,
        "zero_shot_score": None if zero is None else score(zero),
        "system_score": None if system is None else score(system),
        "best_few_shot_score": None if best_few is None else score(best_few),
        "best_few_shot_k": None if best_few is None else int(best_few["k"]),
        "best_prompt_score": None if best is None else score(best),
        "best_arm": None if best is None else best["name"],
        "prompt_meets_target": prompt_meets,
        "few_shot_meets_target": (not prompt_meets) and best_few is not None and score(best_few) >= target,
        "target_within_ci": None if ci is None else float(ci["low"]) <= target <= float(ci["high"]),
        "prompting_plateaued": bool(plateau["plateaued"]),
        "plateau_gain": float(plateau["gain"]),
        "plateau_p_value": float(plateau["p_value"]),
        "eval_items_needed": plateau["items_needed"],
        "majority_baseline_score": None if base is None else float(base["majority"][metric]),
        "chance_score": _chance_score(base, metric),
        "n_degenerate_arms": len(arms) - len(fair),
        "prompting_beats_majority": None if base is None else bool(fair),
        "ladder_exhausted": bool(plateau.get("ladder_exhausted", False)),
        "ladder_slope_low": None if not trend else float(trend["low"]),
    }
