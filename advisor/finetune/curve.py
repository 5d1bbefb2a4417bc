"""The pilot's learning curve: a saturating power law in the number of training examples, fitted with its
bootstrap, and what it predicts (the score at the full train split, the examples needed to reach a level).

score(n) = a - b * n^(-c), the form Zhang et al. (ICLR 2024, "When Scaling Meets LLM Finetuning") fit to
fine-tuning data scaling. Three pilot points cannot pin three free parameters, so the fit is constrained:
b >= 0 (more data never predicted to hurt), a <= 1 (no metric here exceeds 1) and c on a grid in
[C_MIN, C_MAX] (least squares in a and b for each c; the best c kept). When the pilots show no trend (the
largest pilot is not better than the smallest on the dev items, paired, 95%), nothing is extrapolated: the
curve is flat at the largest pilot's score and no example count is predicted.

Pure: numbers in, numbers out; the dev items' bootstrap indices come from the caller's seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

C_GRID = np.round(np.arange(0.1, 1.0001, 0.05), 2)  # exponents tried: flat-ish (0.1) to steep (1.0)
CEILING = 1.0
NOT_REACHED = math.inf  # examples needed for a level at or above the curve's asymptote


@dataclass(frozen=True)
class Curve:
    """a - b * n^(-c); `trend` False: flat at `a` (b = 0), nothing extrapolated."""

    a: float
    b: float
    c: float
    trend: bool

    def score(self, n: float) -> float:
        return self.a - self.b * float(n) ** (-self.c) if self.b > 0 else self.a

    def examples_for(self, level: float) -> float:
        """The smallest n with score(n) >= level (0 when even one example reaches it; inf: never)."""
        if not self.trend or self.b <= 0:
            return 0.0 if level <= self.a else NOT_REACHED
        if level >= self.a:
            return NOT_REACHED
        return float((self.b / (self.a - level)) ** (1.0 / self.c))


def fit(n: Sequence[float], y: Sequence[float], trend: bool = True) -> Curve:
    """The constrained least-squares fit of the points (n_i, y_i); `trend` False gives the flat curve at
    the score of the largest n."""
    ns, ys = np.asarray(n, dtype=float), np.asarray(y, dtype=float)
    if not trend or len(ns) < 2:
        return Curve(float(ys[np.argmax(ns)]), 0.0, 1.0, False)
    best: tuple[float, Curve] | None = None
    for c in C_GRID:
        a, b = _line(ns ** (-float(c)), ys)
        sse = float(np.sum((ys - (a - b * ns ** (-float(c)))) ** 2))
        if best is None or sse < best[0] - 1e-15:
            best = (sse, Curve(a, b, float(c), b > 0))
    assert best is not None
    return best[1]


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """a, b of y = a - b x by least squares, with b >= 0 and a <= CEILING."""
    xm, ym = x.mean(), y.mean()
    sxx = float(np.sum((x - xm) ** 2))
    b = -float(np.sum((x - xm) * (y - ym))) / sxx if sxx > 0 else 0.0
    if b <= 0:
        return float(ym), 0.0
    a = float(ym + b * xm)
    if a > CEILING:  # refit b with a at the ceiling
        a = CEILING
        b = max(0.0, float(np.sum((CEILING - y) * x) / np.sum(x * x)))
    return a, b


@dataclass(frozen=True)
class CurveBootstrap:
    """The point fit and the fits of `n_resamples` bootstrap resamples of the dev items."""

    curve: Curve
    resamples: tuple[Curve, ...]

    def interval(self, value: Callable[[Curve], float], confidence: float = 0.95) -> tuple[float, float]:
        """Percentile interval of `value(curve)` over the resamples (inf allowed)."""
        v = np.array([value(c) for c in self.resamples], dtype=float)
        tail = (1 - confidence) / 2 * 100
        lo, hi = np.percentile(v, [tail, 100 - tail]) if v.size else (math.nan, math.nan)
        return float(lo), float(hi)


def bootstrap_fit(
    n: Sequence[float],
    point_scores: Callable[[np.ndarray], np.ndarray],
    n_items: int,
    *,
    trend: bool,
    seed: int,
    n_resamples: int = 1000,
) -> CurveBootstrap:
    """Fit the point scores of every pilot, then refit on `n_resamples` paired resamples of the dev items.

    `point_scores(idx)` returns, for an index block of shape (rows, n_items), the pilots' scores as an
    array of shape (rows, len(n)): every pilot is scored on the same drawn items (paired).
    """
    full = point_scores(np.arange(n_items)[None, :])[0]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_items, size=(n_resamples, n_items))
    rows = point_scores(idx)
    return CurveBootstrap(fit(n, full, trend), tuple(fit(n, r, trend) for r in rows))
