"""Statistics for comparing prompting arms: metrics, bootstrap intervals, paired tests, power, plateau.

Pure functions over numpy arrays and frozen dataclasses; no model, no I/O. Every resampling takes a
seed, so a report is reproducible to the last digit.
"""

from __future__ import annotations

import functools
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from statistics import NormalDist

import numpy as np

from advisor.document import Trend

N_RESAMPLES = 2000
CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8

# --------------------------------------------------------------------------------------------
# Metrics


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> float:
    """Unweighted mean of per-label F1 over `labels` (a label never true nor predicted scores 0)."""
    t = np.asarray(list(y_true), dtype=object)
    p = np.asarray(list(y_pred), dtype=object)
    f1s = []
    for lab in labels:
        tp = float(np.sum((t == lab) & (p == lab)))
        fp = float(np.sum((t != lab) & (p == lab)))
        fn = float(np.sum((t == lab) & (p != lab)))
        denom = 2 * tp + fp + fn
        f1s.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(f1s)) if f1s else 0.0


def exact_match(prediction: str, target: str) -> float:
    return float(prediction.strip() == target.strip())


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def normalized_exact_match(prediction: str, target: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(target))


def token_f1(prediction: str, target: str) -> float:
    """SQuAD-style token F1 on normalised whitespace tokens (both empty: 1, one empty: 0)."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(target).split()
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def chrf(prediction: str, target: str, max_order: int = 6, beta: float = 2.0) -> float:
    """Sentence chrF (Popović 2015) on a 0..1 scale.

    Whitespace is removed; for each character n-gram order n = 1..`max_order` that both strings
    have, precision and recall of clipped n-gram matches are computed; both are averaged over those
    orders and combined as F-beta (beta=2 weighs recall twice as much as precision). Equal strings
    (including both empty) score 1; when no order is shared the score is 0.
    """
    hyp, ref = "".join(prediction.split()), "".join(target.split())
    if hyp == ref:
        return 1.0
    sum_p = sum_r = 0.0
    orders = 0
    for n in range(1, max_order + 1):
        h = Counter(hyp[i : i + n] for i in range(len(hyp) - n + 1))
        r = Counter(ref[i : i + n] for i in range(len(ref) - n + 1))
        if not h or not r:
            continue
        match = sum((h & r).values())
        sum_p += match / sum(h.values())
        sum_r += match / sum(r.values())
        orders += 1
    if orders == 0:
        return 0.0
    p, r_ = sum_p / orders, sum_r / orders
    b2 = beta * beta
    return (1 + b2) * p * r_ / (b2 * p + r_) if (b2 * p + r_) > 0 else 0.0


GENERATION_METRICS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "normalized_exact_match": normalized_exact_match,
    "token_f1": token_f1,
    "chrf": chrf,
}
CLASSIFICATION_METRICS = ("accuracy", "macro_f1")

# --------------------------------------------------------------------------------------------
# Bootstrap intervals and paired tests


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its percentile-bootstrap interval."""

    value: float
    low: float
    high: float
    n: int

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def to_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


@dataclass(frozen=True)
class PairedDiff:
    """Score of `a` minus score of `b` on the same items: paired-bootstrap interval and two-sided p."""

    diff: float
    low: float
    high: float
    p_value: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {"diff": self.diff, "low": self.low, "high": self.high, "p_value": self.p_value, "n": self.n}


CHUNK_ELEMENTS = 1 << 22
"""Resample indices drawn at once (4M int64 = 32 MB): memory stays bounded at any number of items."""


def _index_chunks(n: int, seed: int, n_resamples: int) -> Iterator[np.ndarray]:
    """The `n_resamples` x `n` bootstrap index matrix, a block of whole rows at a time.

    One generator draws the blocks in order, so the rows are the very rows one
    ``integers(0, n, size=(n_resamples, n))`` call would give for the seed (numpy draws the same
    stream whatever the block shape): chunking changes the memory, not the results.
    """
    rng = np.random.default_rng(seed)
    rows = max(1, CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, n_resamples, rows):
        yield rng.integers(0, n, size=(min(rows, n_resamples - start), n))


@functools.lru_cache(maxsize=4)
def _cached_blocks(n: int, seed: int, n_resamples: int) -> tuple[np.ndarray, ...]:
    blocks = tuple(_index_chunks(n, seed, n_resamples))
    for b in blocks:
        b.flags.writeable = False
    return blocks


def _blocks(n: int, seed: int, n_resamples: int) -> Iterable[np.ndarray]:
    """The index blocks; small matrices (one block) are cached, since every interval of a run and every
    P(verdict) resample asks for the same ones thousands of times. Large ones are drawn as they are used."""
    if n * n_resamples <= CHUNK_ELEMENTS:
        return _cached_blocks(n, seed, n_resamples)
    return _index_chunks(n, seed, n_resamples)


def _resampled_means(v: np.ndarray, seed: int, n_resamples: int) -> np.ndarray:
    return np.concatenate([v[idx].mean(axis=1) for idx in _blocks(v.size, seed, n_resamples)])


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """The two-sided percentile interval: `np.percentile(samples, [tail, 100 - tail])` (its default linear
    method, the same lerp), written out because numpy's general machinery costs ~0.2 ms a call and P(verdict)
    asks for tens of thousands of small intervals."""
    x = np.sort(np.asarray(samples, dtype=float).ravel())
    if x.size == 0 or np.isnan(x[-1]):
        return math.nan, math.nan
    tail = (1 - confidence) / 2
    return _lerp_at(x, tail), _lerp_at(x, 1 - tail)


def _lerp_at(x: np.ndarray, q: float) -> float:
    h = (x.size - 1) * q
    i = min(int(math.floor(h)), x.size - 1)
    j = min(i + 1, x.size - 1)
    t = h - i
    a, b = float(x[i]), float(x[j])
    d = b - a
    return b - d * (1 - t) if t >= 0.5 else a + d * t


def bootstrap_statistic(
    n: int,
    statistic: Callable[[np.ndarray], float],
    *,
    seed: int,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> Estimate:
    """Percentile bootstrap of any statistic of the items; `statistic(idx)` scores the items at `idx`."""
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    point = statistic(np.arange(n))
    samples = np.array([statistic(idx) for block in _blocks(n, seed, n_resamples) for idx in block])
    lo, hi = _percentiles(samples, confidence)
    return Estimate(float(point), lo, hi, n)


def bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    *,
    seed: int,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> Estimate:
    """Mean of a per-item metric (accuracy = mean of 0/1) with a percentile-bootstrap interval."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    samples = _resampled_means(v, seed, n_resamples)
    lo, hi = _percentiles(samples, confidence)
    return Estimate(float(v.mean()), lo, hi, int(v.size))


def _encode(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> tuple[np.ndarray, ...]:
    index = {lab: i for i, lab in enumerate(labels)}
    other = len(labels)  # a prediction outside the label set counts against every label
    t = np.array([index.get(y, other) for y in y_true], dtype=int)
    p = np.array([index.get(y, other) for y in y_pred], dtype=int)
    return t, p


def bootstrap_macro_f1(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    labels: Sequence[str],
    *,
    seed: int,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> Estimate:
    t, p = _encode(y_true, y_pred, labels)
    if t.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    n_labels = len(labels)
    samples = np.concatenate(
        [_macro_f1_rows(t, p, idx, n_labels) for idx in _blocks(t.size, seed, n_resamples)]
    )
    lo, hi = _percentiles(samples, confidence)
    return Estimate(_macro_f1_codes_over(t, p, n_labels), lo, hi, int(t.size))


def mean_rows(values: Sequence[float] | np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The mean of a per-item metric over the items at each row of an index block."""
    v = np.asarray(values, dtype=float)
    return lambda idx: v[idx].mean(axis=1)


def macro_f1_rows(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]
) -> Callable[[np.ndarray], np.ndarray]:
    """Macro-F1 over the items at each row of an index block."""
    t, p = _encode(y_true, y_pred, labels)
    return lambda idx: _macro_f1_rows(t, p, idx, len(labels))


def _macro_f1_codes_over(t: np.ndarray, p: np.ndarray, n_labels: int) -> float:
    return float(_macro_f1_rows(t, p, np.arange(t.size)[None, :], n_labels)[0])


def _macro_f1_rows(t: np.ndarray, p: np.ndarray, idx: np.ndarray, n_labels: int) -> np.ndarray:
    """Macro-F1 of the items at each row of `idx` (one resample per row), all rows at once.

    The extra "outside the label set" code takes part in counting but not in the average.
    """
    tt, pp = t[idx], p[idx]
    f1 = np.zeros((idx.shape[0], n_labels))
    for lab in range(n_labels):
        is_t, is_p = tt == lab, pp == lab
        tp = np.sum(is_t & is_p, axis=1).astype(float)
        denom = np.sum(is_t, axis=1) + np.sum(is_p, axis=1)
        f1[:, lab] = np.divide(2 * tp, denom, out=np.zeros(idx.shape[0]), where=denom > 0)
    return f1.mean(axis=1) if n_labels else np.zeros(idx.shape[0])


def _paired_p(samples: np.ndarray) -> float:
    """Two-sided bootstrap p-value for "no difference": twice the smaller tail mass at zero."""
    b = samples.size
    le = (np.sum(samples <= 0) + 1) / (b + 1)
    ge = (np.sum(samples >= 0) + 1) / (b + 1)
    return float(min(1.0, 2 * min(le, ge)))


def paired_bootstrap(
    n: int,
    statistic_a: Callable[[np.ndarray], float],
    statistic_b: Callable[[np.ndarray], float],
    *,
    seed: int,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> PairedDiff:
    """Paired bootstrap of statistic_a - statistic_b: both resampled with the same item indices."""
    if n == 0:
        return PairedDiff(math.nan, math.nan, math.nan, math.nan, 0)
    all_idx = np.arange(n)
    point = statistic_a(all_idx) - statistic_b(all_idx)
    samples = np.array(
        [statistic_a(i) - statistic_b(i) for block in _blocks(n, seed, n_resamples) for i in block]
    )
    lo, hi = _percentiles(samples, confidence)
    return PairedDiff(float(point), lo, hi, _paired_p(samples), n)


def paired_bootstrap_mean(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    seed: int,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> PairedDiff:
    """Paired bootstrap of mean(a) - mean(b) for per-item metrics on the same items."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.size == 0:
        return PairedDiff(math.nan, math.nan, math.nan, math.nan, 0)
    samples = _resampled_means(d, seed, n_resamples)
    lo, hi = _percentiles(samples, confidence)
    return PairedDiff(float(d.mean()), lo, hi, _paired_p(samples), int(d.size))


def paired_bootstrap_macro_f1(
    y_true: Sequence[str],
    pred_a: Sequence[str],
    pred_b: Sequence[str],
    labels: Sequence[str],
    *,
    seed: int,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> PairedDiff:
    t, pa = _encode(y_true, pred_a, labels)
    _, pb = _encode(y_true, pred_b, labels)
    if t.size == 0:
        return PairedDiff(math.nan, math.nan, math.nan, math.nan, 0)
    n_labels = len(labels)
    samples = np.concatenate(
        [
            _macro_f1_rows(t, pa, idx, n_labels) - _macro_f1_rows(t, pb, idx, n_labels)
            for idx in _blocks(t.size, seed, n_resamples)
        ]
    )
    lo, hi = _percentiles(samples, confidence)
    point = _macro_f1_codes_over(t, pa, n_labels) - _macro_f1_codes_over(t, pb, n_labels)
    return PairedDiff(float(point), lo, hi, _paired_p(samples), int(t.size))


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test on paired correctness. `a_only`: items only `a` got right; `b_only`: only `b`."""

    a_only: int
    b_only: int
    p_value: float

    def to_dict(self) -> dict[str, float | int]:
        return {"a_only": self.a_only, "b_only": self.b_only, "p_value": self.p_value}


@functools.lru_cache(maxsize=4096)  # P(verdict) asks for the same few counts thousands of times
def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: discordant pairs ~ Binomial(a_only + b_only, 1/2) under H0."""
    m = a_only + b_only
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(a_only, b_only) + 1)) / 2**m
    return min(1.0, 2 * tail)


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> McNemar:
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    return McNemar(a_only, b_only, mcnemar_exact(a_only, b_only))


# --------------------------------------------------------------------------------------------
# Power


def items_needed_paired_proportions(
    min_gain: float, discordant_rate: float, *, alpha: float = ALPHA, power: float = POWER
) -> int:
    """Paired items needed for McNemar's test to detect an accuracy gain of `min_gain`.

    Connor (1987), Biometrics 43:207-211, for two-sided level `alpha`:

        n = (z_{1-alpha/2} * sqrt(psi) + z_{power} * sqrt(psi - delta^2))^2 / delta^2

    with delta = `min_gain` (the difference in accuracy) and psi = the discordant-pair rate (share of
    items exactly one arm gets right). A gain of delta needs psi >= delta, so psi is raised to delta
    when the observed rate is lower (e.g. two arms that never disagree on a small sample).
    """
    if not 0 < min_gain < 1:
        raise ValueError(f"min_gain must be in (0, 1), got {min_gain}")
    z_a = NormalDist().inv_cdf(1 - alpha / 2)
    z_b = NormalDist().inv_cdf(power)
    psi = min(1.0, max(discordant_rate, min_gain))
    n = (z_a * math.sqrt(psi) + z_b * math.sqrt(max(0.0, psi - min_gain**2))) ** 2 / min_gain**2
    return math.ceil(n - 1e-9)


def items_needed_paired_mean(
    min_gain: float, sd_diff: float, *, alpha: float = ALPHA, power: float = POWER
) -> int:
    """Paired items needed to detect a mean per-item gain of `min_gain` (normal approximation).

    n = ((z_{1-alpha/2} + z_{power}) * sd_diff / min_gain)^2, sd_diff the standard deviation of the
    per-item differences between the two arms.
    """
    if min_gain <= 0:
        raise ValueError(f"min_gain must be > 0, got {min_gain}")
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return max(1, math.ceil((z * sd_diff / min_gain) ** 2 - 1e-9))


# --------------------------------------------------------------------------------------------
# Plateau


@dataclass(frozen=True)
class CurvePoint:
    """One arm on the cost curve: cost is the mean prompt tokens per request."""

    arm: str
    cost: float
    score: float


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    xc = x - x.mean()
    slope = float(np.dot(xc, y - y.mean()) / np.dot(xc, xc))
    return slope, float(y.mean() - slope * x.mean())


def ladder_trend(
    ks: Sequence[int],
    statistics: Sequence[Callable[[np.ndarray], np.ndarray]],
    n: int,
    *,
    seed: int,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> Trend | None:
    """Slope of score vs log2(k + 1); `statistics[i](idx)` scores rung `ks[i]` on the items at each row of
    the index block `idx` (`mean_rows`, `macro_f1_rows`).

    The items are resampled jointly across rungs (the rungs were measured on the same items), with the
    index blocks every other interval of the run uses. None with fewer than two distinct k.
    """
    if len(set(ks)) < 2 or n == 0 or len(ks) != len(statistics):
        return None
    x = np.log2(np.asarray(ks, dtype=float) + 1)
    every_item = np.arange(n)[None, :]
    slope, intercept = _fit(x, np.array([s(every_item)[0] for s in statistics], dtype=float))
    xc = x - x.mean()
    samples = np.concatenate(
        [
            (y - y.mean(axis=1, keepdims=True)) @ xc / np.dot(xc, xc)
            for y in (
                np.stack([s(block) for s in statistics], axis=1)  # resamples x rungs
                for block in _blocks(n, seed, n_resamples)
            )
        ]
    )
    lo, hi = _percentiles(samples, confidence)
    return Trend(ks=[int(k) for k in ks], slope=slope, low=lo, high=hi, intercept=intercept, n=n)


class PlateauCase(StrEnum):
    """Why the curve was judged as it was (one sentence each in `Plateau.reason`)."""

    SINGLE_ARM = "single_arm"
    COSTLIER_NOT_BETTER = "costlier_not_better"  # costlier arms exist, none beats the best significantly
    COSTLIER_BETTER = "costlier_better"  # a costlier arm beats the best significantly
    LADDER_EXHAUSTED = "ladder_exhausted"  # the best is the last rung and the next one does not fit
    FLAT_TREND = "flat_trend"  # the best is the last rung, the slope interval reaches zero
    STILL_IMPROVING = "still_improving"  # the best is the last rung, the slope interval is above zero


@dataclass(frozen=True)
class Plateau:
    plateaued: bool
    best_arm: str | None  # the best honest (non-degenerate) arm; None when every arm is degenerate
    previous_arm: str | None  # the next cheaper arm the best is compared with
    best_score: float | None
    gain: float  # best - previous (0 when the best is the cheapest arm)
    p_value: float
    significant: bool  # gain >= min_gain and p < alpha
    below_target: bool
    items_needed: int | None
    reason: str
    case: PlateauCase = PlateauCase.SINGLE_ARM
    extend: bool = False  # still improving and the next rung fits: measure it before deciding
    ladder_exhausted: bool = False
    trend: Trend | None = None
    costlier: tuple[tuple[str, PairedDiff], ...] = ()  # each costlier arm minus the best

    def to_dict(self) -> dict[str, object]:
        return {
            "plateaued": self.plateaued,
            "best_arm": self.best_arm,
            "previous_arm": self.previous_arm,
            "best_score": self.best_score,
            "gain": self.gain,
            "p_value": self.p_value,
            "significant": self.significant,
            "below_target": self.below_target,
            "items_needed": self.items_needed,
            "reason": self.reason,
            "case": str(self.case),
            "extend": self.extend,
            "ladder_exhausted": self.ladder_exhausted,
            "trend": None if self.trend is None else self.trend.model_dump(mode="json"),
            "costlier": [{"arm": a, **d.to_dict()} for a, d in self.costlier],
        }


def order_by_cost(points: Sequence[CurvePoint]) -> list[CurvePoint]:
    """Cheapest first; equal costs keep their given order."""
    return sorted(points, key=lambda p: p.cost)


def best_point(points: Sequence[CurvePoint]) -> CurvePoint:
    """Highest score; a tie goes to the cheaper arm."""
    ordered = order_by_cost(points)
    return max(ordered, key=lambda p: (p.score, -ordered.index(p)))


def detect_plateau(
    points: Sequence[CurvePoint],
    vs_previous: Mapping[str, PairedDiff],
    *,
    quality_target: float,
    min_gain: float,
    alpha: float = ALPHA,
    items_needed: int | None = None,
    honest: Mapping[str, bool] | None = None,
    vs_best: Mapping[str, PairedDiff] | None = None,
    ladder: Sequence[str] = (),
    trend: Trend | None = None,
    next_rung_fits: bool = False,
    raced_out: Sequence[str] = (),
) -> Plateau:
    """Has prompting plateaued below the target? Judged on the whole cost curve.

    The best arm is the highest-scoring honest arm (`honest[arm]` False marks a degenerate arm, which
    can neither be the best nor anchor a plateau). `vs_previous[arm]`: `arm` minus its next cheaper arm
    (reported as the best arm's gain); `vs_best[arm]`: a costlier arm minus the best. `ladder`: the
    k-ladder's arms in k order, `trend` the fit of score against log2(k+1) over them, and
    `next_rung_fits` whether one more rung fits the prompt budget and the train split; `raced_out` the
    rungs above the last one measured that lost the dev race (so were not scored on eval).

    - costlier arms than the best exist and none beats it significantly (gain >= min_gain, p < alpha):
      plateaued at the best;
    - the best (or, with no honest arm, nothing) sits at the last rung and the next rung does not fit:
      the ladder is exhausted, a plateau at the best unless the slope interval lies above zero (then
      prompting is not exhausted within the budget: no plateau, `ladder_exhausted` says the budget ended it);
    - the best is the last rung: the slope interval above zero means still improving (`extend`: measure
      the next rung before deciding); an interval that reaches zero is a flat trend, a plateau.
    Plateaued is only claimed below the quality target; one arm alone is no curve.
    """
    if not points:
        raise ValueError("detect_plateau needs at least one arm")
    ordered = order_by_cost(points)
    ok = honest or {}
    fair = [p for p in ordered if ok.get(p.arm, True)]
    best = best_point(fair) if fair else None
    below = best is None or best.score < quality_target
    gain, p, previous, significant = 0.0, 1.0, None, False
    if best is not None and ordered.index(best) > 0:
        previous = ordered[ordered.index(best) - 1].arm
        d = vs_previous.get(best.arm)
        if d is not None:
            gain, p = d.diff, d.p_value
            significant = gain >= min_gain and p < alpha
    name = best.arm if best is not None else "no honest arm"

    def result(case: PlateauCase, plateau: bool, why: str, **extra: object) -> Plateau:
        if best is None:
            why += "; no arm is significantly better than the majority baseline"
        elif below:
            why += f"; best score {best.score:.3f} is below the target {quality_target:.3f}"
        else:
            why += f"; best score {best.score:.3f} meets the target {quality_target:.3f}"
        return Plateau(
            plateaued=below and plateau,
            best_arm=None if best is None else best.arm,
            previous_arm=previous,
            best_score=None if best is None else best.score,
            gain=gain,
            p_value=p,
            significant=significant,
            below_target=below,
            items_needed=items_needed,
            reason=why,
            case=case,
            trend=trend,
            costlier=costlier,
            **extra,  # type: ignore[arg-type]
        )

    at = ordered.index(best) if best is not None else -1
    costlier = tuple((q.arm, (vs_best or {})[q.arm]) for q in ordered[at + 1 :] if q.arm in (vs_best or {}))
    if len(ordered) < 2:
        return result(PlateauCase.SINGLE_ARM, False, "only one arm was measured: no curve to judge")
    last = ladder[-1] if ladder else None
    if best is not None and best.arm != last and at < len(ordered) - 1:
        winners = [a for a, d in costlier if d.diff >= min_gain and d.p_value < alpha and d.low > 0]
        if winners:
            why = f"{winners[0]} costs more and beats {name} significantly: still improving"
            return result(PlateauCase.COSTLIER_BETTER, False, why)
        n_more = len(ordered) - 1 - at
        arms = f"{n_more} costlier arms exist" if n_more > 1 else "1 costlier arm exists"
        why = f"{arms} and none beats {name} significantly"
        return result(PlateauCase.COSTLIER_NOT_BETTER, True, why)
    slope = (
        f"slope {trend.slope:+.3f} per doubling of k+1 [{trend.low:+.3f}, {trend.high:+.3f}]"
        if trend is not None
        else "no trend (fewer than two rungs)"
    )
    where = f"{name} is the last rung ({last})" if best is not None else f"the last rung is {last}"
    if raced_out:
        why = (
            f"{where} scored on eval; the costlier {', '.join(raced_out)} left the dev race before it "
            "(not scored on eval)"
        )
        return result(PlateauCase.COSTLIER_NOT_BETTER, True, why)
    if not next_rung_fits:
        if trend is not None and trend.rising:  # the budget ran out, not the gains: no plateau
            why = (
                f"{where} and the next rung does not fit, while the {slope} lies above zero: prompting "
                "not exhausted within the budget"
            )
            return result(PlateauCase.LADDER_EXHAUSTED, False, why, ladder_exhausted=True)
        why = f"{where} and the next rung does not fit: the ladder is exhausted ({slope})"
        return result(PlateauCase.LADDER_EXHAUSTED, True, why, ladder_exhausted=True)
    if trend is not None and trend.rising:
        why = f"{where} and the {slope} lies above zero: still improving"
        return result(PlateauCase.STILL_IMPROVING, False, why, extend=below)
    why = f"{where} but the {slope} reaches zero: the trend is flat"
    return result(PlateauCase.FLAT_TREND, True, why)


# --------------------------------------------------------------------------------------------
# Anytime-valid tests: valid however often the data are looked at and whenever the looking stops
#
# advise grows the eval split only while the verdict is unsettled, so it looks at its comparisons after
# every growth step and stops when they look settled. A fixed-sample test read that way rejects a true
# null far more often than its alpha ("peeking"). The intervals and p-values below hold at every sample
# size at once: a confidence sequence from a normal-mixture supermartingale (Robbins 1970; Howard, Ramdas,
# McAuliffe and Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence sequences", Annals of
# Statistics 49(2), 2021, https://doi.org/10.1214/20-AOS1991). For increments X_i with mean mu that are
# sigma-sub-Gaussian (bounded in [mu - sigma, mu + sigma] suffices, Hoeffding), S_t = sum(X_i - mu) and
# V_t = sigma^2 t, the mixture of exp(lambda S_t - lambda^2 V_t / 2) over lambda ~ N(0, 1/rho),
#
#     M_t = sqrt(rho / (V_t + rho)) * exp(S_t^2 / (2 (V_t + rho))),
#
# is a nonnegative supermartingale with M_0 = 1, so by Ville's inequality P(exists t: M_t >= 1/alpha)
# <= alpha. Hence |S_t| < sqrt((V_t + rho) log((V_t + rho) / (rho alpha^2))) for every t at once with
# probability 1 - alpha (a two-sided boundary: the mixture is symmetric in lambda), and p_t = min(1, 1/M_t)
# is a p-value that stays valid at any stopping time. rho sets the sample size where the boundary is
# tightest; it is fixed before any data are seen.

ANYTIME_METHOD = (
    "normal-mixture confidence sequences (Howard, Ramdas, McAuliffe and Sekhon, Ann. Statist. 2021): "
    "a paired "
    "difference decides only when both its fixed-sample test and its anytime-valid test reject"
)
ANYTIME_TUNED_AT = 100.0
"""Intrinsic time (variance units) at which the mixture boundary is tightest: 100 items of per-item
differences bounded by 1, or 100 discordant pairs for the sign test. Chosen before any data; the
boundary stays valid at every other size, only a little wider (Howard et al. 2021, section 3.5)."""


@dataclass(frozen=True)
class AnytimeDiff:
    """An anytime-valid confidence sequence for a paired mean difference, at the current sample size."""

    diff: float
    low: float
    high: float
    p_value: float  # anytime-valid p-value for "no difference"
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {"diff": self.diff, "low": self.low, "high": self.high, "p_value": self.p_value, "n": self.n}


@functools.lru_cache(maxsize=64)  # a pure function of two settings, asked for by every comparison
def mixture_rho(v_opt: float = ANYTIME_TUNED_AT, alpha: float = ALPHA) -> float:
    """The mixture precision rho whose boundary is tightest at intrinsic time `v_opt` for level `alpha`.

    d/drho of (v + rho) log((v + rho) / (rho alpha^2)) is zero where x = v / rho solves
    x = 2 log(1/alpha) + log(1 + x); the fixed point is found by iteration (a contraction for x > 0).
    """
    if v_opt <= 0 or not 0 < alpha < 1:
        raise ValueError(f"need v_opt > 0 and 0 < alpha < 1, got {v_opt}, {alpha}")
    x = 2 * math.log(1 / alpha)
    for _ in range(100):
        x = 2 * math.log(1 / alpha) + math.log1p(x)
    return v_opt / x


def mixture_radius(v: float, alpha: float = ALPHA, rho: float | None = None) -> float:
    """The two-sided normal-mixture boundary on |S_t| at intrinsic time `v` (see the section comment)."""
    r = mixture_rho(alpha=alpha) if rho is None else rho
    return math.sqrt((v + r) * math.log((v + r) / (r * alpha * alpha)))


def mixture_p_value(s: float, v: float, rho: float | None = None) -> float:
    """The anytime-valid p-value min(1, 1/M_t) of the mixture at sum `s` and intrinsic time `v`."""
    r = mixture_rho() if rho is None else rho
    log_m = 0.5 * math.log(r / (v + r)) + s * s / (2 * (v + r))
    return 1.0 if log_m <= 0 else math.exp(-log_m)


def anytime_paired_mean(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    alpha: float = ALPHA,
    bound: float = 1.0,
    rho: float | None = None,
) -> AnytimeDiff:
    """Confidence sequence for mean(a - b), per-item values in [0, `bound`] (differences in [-bound, bound]).

    Hoeffding's lemma makes each difference `bound`-sub-Gaussian about its mean, so V_t = bound^2 t; the
    sequence covers the true mean difference at every t simultaneously with probability 1 - alpha,
    whatever rule decides when to stop adding items.
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = int(d.size)
    if n == 0:
        return AnytimeDiff(math.nan, math.nan, math.nan, math.nan, 0)
    v = bound * bound * n
    r = mixture_rho(alpha=alpha) * bound * bound if rho is None else rho
    half = mixture_radius(v, alpha, r) / n
    mean = float(d.mean())
    return AnytimeDiff(mean, mean - half, mean + half, mixture_p_value(float(d.sum()), v, r), n)


def anytime_mcnemar(a_only: int, b_only: int, rho: float | None = None) -> float:
    """Anytime-valid McNemar test: the mixture p-value over the discordant pairs.

    Under "both arms are equally accurate" each discordant pair is +1 (only `a` right) or -1 (only `b`
    right) with probability 1/2, whatever came before: a fair +-1 sequence, 1-sub-Gaussian, so
    S = a_only - b_only and V = a_only + b_only (the concordant items carry no information and do not
    advance time). Like the exact McNemar test, but valid at any stopping time.
    """
    return mixture_p_value(float(a_only - b_only), float(a_only + b_only), rho)
