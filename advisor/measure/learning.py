"""Would more data help? A cheap supervised probe's learning curve, and a power law fitted to it.

The probe is TF-IDF features + logistic regression (scikit-learn) over the first `MAX_PROBE_CHARS`
characters of each text, trained on nested, seeded,
stratified subsets (10, 25, 50, 100% of the train split by default) and scored on the same eval
items as the prompting arms. A probe that beats the best prompting arm is evidence that supervision
helps on this task; the curve's slope says how fast.

The fit is a pure power law on the error, ``error(n) = a · n^(-b)``, by least squares in log-log
space. There is deliberately no floor term: with four points a three-parameter fit is barely
determined. Without a floor the extrapolation is optimistic (real curves flatten), so the
predicted scores are an upper estimate and "examples needed" a lower estimate. The uncertainty
comes from a paired bootstrap over the eval items: every resample rescores all curve points on the
same items, is refitted, and gives one prediction; the 2.5/97.5 percentiles bound it.

Generation tasks would need short LoRA runs on subsets to draw the curve; that is not measured
here, and the caller records a reason instead of a number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from advisor import progress

DEFAULT_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
MAX_EXTRAPOLATION = 100.0  # beyond this many times the data, "examples needed" is reported as unreachable
LEARNING_STAGE = "learning curve (probe)"
MAX_PROBE_CHARS = 20_000
"""The probe reads at most this many characters of each text (the start). Word and bigram features of
a longer text add little, while one 60 MB text took a minute and GBs of memory in the vectorizer."""


@dataclass(frozen=True)
class PowerLaw:
    """error(n) = a · n^(-b)."""

    a: float
    b: float

    def error(self, n: float) -> float:
        return self.a * n ** (-self.b)

    def examples_for_error(self, error: float) -> float | None:
        """Smallest n with error(n) <= `error`; None when the curve never gets there."""
        if error <= 0 or self.b <= 0:
            return None
        log_n = (math.log(self.a) - math.log(error)) / self.b  # in logs: a nearly flat curve overflows
        return math.exp(log_n) if log_n < 700 else math.inf


def fit_power_law(n: Sequence[float] | np.ndarray, error: Sequence[float] | np.ndarray) -> PowerLaw:
    """Least squares of log(error) = log(a) - b·log(n). Errors are clipped away from 0 first."""
    x = np.log(np.asarray(n, dtype=float))
    y = np.log(np.clip(np.asarray(error, dtype=float), 1e-6, None))
    if len(x) < 2 or np.ptp(x) == 0:
        return PowerLaw(a=float(np.exp(y.mean())) if len(y) else 1.0, b=0.0)
    slope, intercept = np.polyfit(x, y, 1)
    return PowerLaw(a=float(np.exp(intercept)), b=float(-slope))


@dataclass(frozen=True)
class CurvePoint:
    n: int
    score: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Interval:
    value: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class LearningCurve:
    metric: str
    points: tuple[CurvePoint, ...]
    a: float
    b: float
    b_interval: tuple[float, float]
    score_at_2x: Interval
    score_at_4x: Interval
    target: float | None
    examples_needed: Interval  # total train examples to reach the target (None: not reachable)
    n_boot: int

    @property
    def probe_score(self) -> float:
        return self.points[-1].score

    def beats(self, prompting_score: float | None) -> bool | None:
        """True when the full-data probe's CI lower bound exceeds the best prompting arm's score."""
        if prompting_score is None:
            return None
        return self.points[-1].ci_low > prompting_score


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _needed(law: PowerLaw, target: float | None, n_max: float) -> float | None:
    if target is None or target >= 1.0:
        return None
    n = law.examples_for_error(1.0 - target)
    if n is None or n > MAX_EXTRAPOLATION * n_max:
        return None
    return n


def curve_from_scores(
    sizes: Sequence[int],
    scores: np.ndarray,
    boot_scores: np.ndarray,
    metric: str,
    target: float | None,
) -> LearningCurve:
    """Fit and extrapolate. `scores[j]` is point j's score; `boot_scores[r, j]` the same on resample r."""
    sizes_f = [float(s) for s in sizes]
    n_max = max(sizes_f)
    law = fit_power_law(sizes_f, 1.0 - scores)
    points = tuple(
        CurvePoint(
            n=int(n),
            score=float(s),
            ci_low=float(np.percentile(boot_scores[:, j], 2.5)),
            ci_high=float(np.percentile(boot_scores[:, j], 97.5)),
        )
        for j, (n, s) in enumerate(zip(sizes, scores, strict=True))
    )
    laws = [fit_power_law(sizes_f, 1.0 - row) for row in boot_scores]

    def interval(values: list[float | None], point: float | None) -> Interval:
        # Unreachable resamples count as +inf, so the upper bound says "maybe never".
        arr = np.array([math.inf if v is None else v for v in values], dtype=float)
        if not len(arr):
            return Interval(point, None, None)
        # No interpolation between neighbours: one of them may be +inf.
        lo = float(np.percentile(arr, 2.5, method="lower"))
        hi = float(np.percentile(arr, 97.5, method="higher"))
        return Interval(point, _finite(lo), _finite(hi))

    def score_at(law_: PowerLaw, factor: float) -> float:
        return 1.0 - law_.error(factor * n_max)

    def needed_count(law_: PowerLaw) -> float | None:
        n = _needed(law_, target, n_max)
        return None if n is None else float(math.ceil(n))  # whole examples

    needed = needed_count(law)
    bs = [fl.b for fl in laws]
    return LearningCurve(
        metric=metric,
        points=points,
        a=law.a,
        b=law.b,
        b_interval=(float(np.percentile(bs, 2.5)), float(np.percentile(bs, 97.5))) if bs else (law.b, law.b),
        score_at_2x=interval([score_at(fl, 2) for fl in laws], score_at(law, 2)),
        score_at_4x=interval([score_at(fl, 4) for fl in laws], score_at(law, 4)),
        target=target,
        examples_needed=interval([needed_count(fl) for fl in laws], needed)
        if target is not None
        else Interval(None, None, None),
        n_boot=len(laws),
    )


def nested_stratified_subsets(
    labels: Sequence[str], fractions: Sequence[float], seed: int
) -> list[np.ndarray]:
    """Index sets, one per fraction, each containing the previous one, each label kept in proportion.

    Every label keeps at least one example so the probe always sees every class.
    """
    rng = np.random.default_rng(seed)
    by_label: dict[str, np.ndarray] = {}
    for lab in sorted(set(labels)):
        idx = np.array([i for i, x in enumerate(labels) if x == lab])
        by_label[lab] = rng.permutation(idx)
    subsets = []
    for f in fractions:
        parts = [perm[: max(1, int(round(f * len(perm))))] for perm in by_label.values()]
        subsets.append(np.sort(np.concatenate(parts)))
    return subsets


def _score(metric: str, y_true: np.ndarray, y_pred: np.ndarray, classes: np.ndarray) -> float:
    if metric != "macro_f1":
        return float(np.mean(y_true == y_pred))
    f1s = []
    for c in classes:
        tp = float(np.sum((y_true == c) & (y_pred == c)))
        wrong = float(np.sum((y_true == c) != (y_pred == c)))  # false positives + false negatives
        f1s.append(2 * tp / (2 * tp + wrong) if tp + wrong > 0 else 0.0)
    return float(np.mean(f1s))


def probe_learning_curve(
    train_texts: Sequence[str],
    train_labels: Sequence[str],
    eval_texts: Sequence[str],
    eval_labels: Sequence[str],
    *,
    target: float | None,
    metric: str = "accuracy",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    n_boot: int = 1000,
) -> LearningCurve:
    """Train the TF-IDF + logistic-regression probe on each subset; score, bootstrap, fit."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    if metric not in ("accuracy", "macro_f1"):
        metric = "accuracy"
    train_texts = [t[:MAX_PROBE_CHARS] for t in train_texts]
    eval_texts = [t[:MAX_PROBE_CHARS] for t in eval_texts]
    y_eval = np.asarray(eval_labels, dtype=object)
    classes = np.array(sorted(set(train_labels) | set(eval_labels)), dtype=object)
    subsets = nested_stratified_subsets(train_labels, fractions, seed)
    predictions = []
    sizes = []
    steps = len(subsets) + 1  # each probe fit, then the bootstrap
    progress.report(LEARNING_STAGE, 0, steps)
    for idx in subsets:
        texts = [train_texts[i] for i in idx]
        labs = [train_labels[i] for i in idx]
        if len(set(labs)) < 2:
            pred = np.array([labs[0]] * len(eval_texts), dtype=object)
        else:
            model = make_pipeline(
                TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True),
                # Weak regularisation and balanced class weights: with default settings a few hundred
                # short texts give a majority-class predictor at every size, i.e. a flat, useless curve.
                LogisticRegression(C=10.0, class_weight="balanced", max_iter=1000, random_state=seed),
            )
            model.fit(texts, labs)
            pred = np.asarray(model.predict(list(eval_texts)), dtype=object)
        predictions.append(pred)
        sizes.append(len(idx))
        progress.report(LEARNING_STAGE, len(sizes), steps)
    scores = np.array([_score(metric, y_eval, p, classes) for p in predictions])
    rng = np.random.default_rng(seed + 1)
    m = len(y_eval)
    boot = np.empty((n_boot, len(predictions)))
    for r in range(n_boot):
        sample = rng.integers(0, m, m)
        for j, p in enumerate(predictions):
            boot[r, j] = _score(metric, y_eval[sample], p[sample], classes)
    progress.report(LEARNING_STAGE, steps, steps)
    return curve_from_scores(sizes, scores, boot, metric, target)
