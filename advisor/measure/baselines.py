"""Baselines nobody can game, the test that names a degenerate arm, and the metric that fits the labels.

Pure functions over label lists and numbers (no model, no I/O):

- the **majority baseline**: a constant predictor answering the commonest eval label, scored on the
  eval items (the strongest constant predictor, so "beats the majority baseline" is the strict bar);
- the **uniform-random expectation**: accuracy 1/L; macro-F1 sum_l 2 p_l (1/L) / (p_l + 1/L) / L, the
  large-sample expectation when every label is guessed with probability 1/L (p_l: the label's true share);
- an arm is **degenerate** when its predictions collapse onto one label (share >= `degenerate_top_share`
  and at least `degenerate_share_margin` above that label's true share, so a good classifier on a 97/3
  task is not flagged) or when it is not significantly better than the majority baseline on the target
  metric (paired over the same items: exact McNemar for accuracy, paired bootstrap for macro-F1);
- the default **metric**: macro-F1 when the rarest label's share is below `imbalanced_relative_share`
  times the balanced share 1/L (accuracy rewards a constant answer there), accuracy otherwise.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from advisor.document import Degeneracy, PairedGap
from advisor.measure.stats import macro_f1, normalize_answer
from advisor.types import TaskKind

# Threshold names in rules/prompting.toml (overridable with --threshold NAME=VALUE).
TOP_SHARE = "degenerate_top_share"
SHARE_MARGIN = "degenerate_share_margin"
IMBALANCED = "imbalanced_relative_share"

# The quality target when the user declares none (documented in docs/statistics.md): a demanding bar, since
# "prompting is enough" should mean enough for production, not merely better than chance. Macro-F1
# averages the rare labels' F1 in, which sits well below accuracy on the same predictions.
DEFAULT_TARGETS = {"accuracy": 0.90, "macro_f1": 0.80, "chrf": 0.60}


@dataclass(frozen=True)
class Baselines:
    """The two predictors any arm must beat, scored on the eval items (classification only)."""

    majority_label: str
    label_shares: Mapping[str, float]  # true share of each label among the eval items
    majority: Mapping[str, float]  # metric -> score of always answering `majority_label`
    uniform: Mapping[str, float]  # metric -> expected score of guessing uniformly at random

    @property
    def majority_share(self) -> float:
        return self.label_shares[self.majority_label]

    def to_dict(self) -> dict[str, object]:
        return {
            "majority_label": self.majority_label,
            "majority_share": self.majority_share,
            "label_shares": dict(self.label_shares),
            "majority": dict(self.majority),
            "uniform": dict(self.uniform),
        }


def majority_label(targets: Sequence[str], labels: Sequence[str]) -> str:
    """The commonest target; ties go to the first label in label order."""
    counts = Counter(targets)
    return max(labels, key=lambda lab: (counts[lab], -list(labels).index(lab)))


def compute_baselines(targets: Sequence[str], labels: Sequence[str]) -> Baselines:
    n, k = len(targets), len(labels)
    counts = Counter(targets)
    shares = {lab: counts[lab] / n if n else 0.0 for lab in labels}
    top = majority_label(targets, labels)
    u = 1.0 / k
    uniform_f1 = sum(2 * p * u / (p + u) for p in shares.values()) / k
    return Baselines(
        majority_label=top,
        label_shares=shares,
        majority={"accuracy": shares[top], "macro_f1": macro_f1(targets, [top] * n, labels)},
        uniform={"accuracy": u, "macro_f1": uniform_f1},
    )


def top_prediction(predictions: Sequence[str]) -> tuple[str, float]:
    """The most predicted label and its share (ties: the first seen)."""
    if not predictions:
        return "", 0.0
    label, count = Counter(predictions).most_common(1)[0]
    return label, count / len(predictions)


def judge_degenerate(
    predictions: Sequence[str],
    shares: Mapping[str, float],
    *,
    diff: float,
    low: float,
    high: float,
    p_value: float,
    metric: str,
    alpha: float,
    thresholds: Mapping[str, float],
) -> Degeneracy:
    """Collapsed onto one label, or not significantly better than the majority baseline: degenerate."""
    top, share = top_prediction(predictions)
    true_share = shares.get(top, 0.0)
    collapsed = share >= thresholds[TOP_SHARE] and share - true_share >= thresholds[SHARE_MARGIN]
    beats = diff > 0 and p_value < alpha
    reasons = []
    if collapsed:
        reasons.append(f"answers {top!r} for {share:.0%} of items (true share {true_share:.0%})")
    if not beats:
        reasons.append(
            f"not significantly better than the majority baseline on {metric} ({diff:+.3f}, p={p_value:.3g})"
        )
    return Degeneracy(
        top_label=top,
        top_share=share,
        top_true_share=true_share,
        collapsed=collapsed,
        vs_majority=PairedGap(diff=diff, low=low, high=high, p_value=p_value),
        beats_majority=beats,
        degenerate=bool(reasons),
        reason="; ".join(reasons) or None,
    )


ANSWER_SHARE = "degenerate_answer_share"
COPY_SHARE = "degenerate_copy_share"


def judge_generation(items: Sequence[Any], thresholds: Mapping[str, Any]) -> Degeneracy:
    """Generated text collapsed onto one answer, or copying the item's own demonstrations' answers, each
    by a margin above what the targets themselves do (answers compared after `normalize_answer`)."""
    n = max(1, len(items))
    top, share = top_prediction([normalize_answer(it.prediction) for it in items])
    true_share = sum(normalize_answer(it.target) == top for it in items) / n
    top = next((it.prediction for it in items if normalize_answer(it.prediction) == top), top)  # as given
    margin = float(thresholds[SHARE_MARGIN])
    collapsed = share >= float(thresholds[ANSWER_SHARE]) and share - true_share >= margin
    shown = [it for it in items if it.copies_demo is not None]
    copied = sum(bool(it.copies_demo) for it in shown) / len(shown) if shown else None
    expected = sum(bool(it.target_in_demos) for it in shown) / len(shown) if shown else None
    least = float(thresholds[COPY_SHARE])
    copies = copied is not None and copied >= least and copied - (expected or 0.0) >= margin
    reasons = []
    if collapsed:
        reasons.append(
            f"gives one answer ({top[:60]!r}) for {share:.0%} of items (the targets: {true_share:.0%})"
        )
    if copies:
        reasons.append(
            f"repeats one of its demonstrations' answers on {copied:.0%} of items "
            f"(the targets are one of them on {expected or 0.0:.0%})"
        )
    return Degeneracy(
        top_label=top,
        top_share=share,
        top_true_share=true_share,
        collapsed=collapsed,
        copied_demo_share=copied,
        copied_demo_expected=expected,
        copies_demos=copies if copied is not None else None,
        degenerate=bool(reasons),
        reason="; ".join(reasons) or None,
    )


@dataclass(frozen=True)
class MetricChoice:
    metric: str
    quality_target: float | None
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {"metric": self.metric, "quality_target": self.quality_target, "reason": self.reason}


def choose_metric(
    task: TaskKind,
    label_counts: Mapping[str, int],
    *,
    metric: str | None,
    quality_target: float | None,
    thresholds: Mapping[str, float],
) -> MetricChoice:
    """The target metric and quality target: the user's when given, else what the label balance calls for."""
    if metric is not None:
        target = quality_target if quality_target is not None else DEFAULT_TARGETS.get(metric)
        return MetricChoice(metric, target, f"{metric} was set by --target")
    if task is TaskKind.GENERATE:
        return MetricChoice("chrf", _target("chrf", quality_target), "chrF is the default for generation")
    total = sum(label_counts.values())
    k = len(label_counts)
    rarest = min(label_counts, key=lambda lab: (label_counts[lab], lab)) if label_counts else ""
    share = label_counts.get(rarest, 0) / total if total else 0.0
    bar = thresholds[IMBALANCED] / k if k else 0.0
    if k and share < bar:
        why = (
            f"macro-F1, because the rarest label {rarest!r} has {share:.1%} of the examples, below "
            f"{IMBALANCED} × 1/{k} = {bar:.1%}: accuracy would reward always answering the commonest label"
        )
        return MetricChoice("macro_f1", _target("macro_f1", quality_target), why)
    why = f"accuracy, because the labels are balanced enough (rarest {rarest!r}: {share:.1%} ≥ {bar:.1%})"
    return MetricChoice("accuracy", _target("accuracy", quality_target), why)


def _target(metric: str, given: float | None) -> float:
    return given if given is not None else DEFAULT_TARGETS[metric]
