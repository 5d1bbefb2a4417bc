"""Confidence as a measured probability: P(verdict) under resampling of the eval items.

The eval items are one sample; another sample of the same size could have given other scores, another
plateau judgement and so another verdict. A paired bootstrap draws the eval items with replacement,
jointly for every arm (draw j is the same item in every arm, so comparisons stay paired), rebuilds the
prompting analysis on the drawn items with the functions a full run uses (`evaluate.analyse`, then
`evaluate.prompting_signals`), merges the signals that do not depend on the eval items (data audit,
evidence, usage), and runs the pure `decide` on each resample. P(verdict) is the share of resamples that
give the reported verdict; the runner-up is the most frequent other verdict.

Pure: arrays and frozen results in, a `Confidence` out. The resamples are drawn in chunks, so memory
stays bounded however large the eval split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from math import sqrt
from statistics import NormalDist

import numpy as np

from advisor import progress
from advisor.decide.rules import RuleSet
from advisor.decide.signals import SignalValue
from advisor.decide.verdict import Confidence, decide
from advisor.measure.evaluate import (
    ArmResult,
    PromptingResult,
    analyse,
    copied_item,
    prompting_signals,
    summarise,
)
from advisor.types import TaskKind, Verdict

# Outer resamples: the share's standard error is at most sqrt(0.25 / 500) = 0.022.
N_RESAMPLES = 500
CONFIDENCE_STAGE = "P(verdict) resampling"
# The bootstrap size of the tests inside each resample (score intervals, paired p-values): small
# enough that 500 resamples take seconds, large enough to resolve p = 0.01.
INNER_RESAMPLES = 200
CHUNK_CELLS = 500_000  # item indices drawn at once (resamples x items), so memory stays bounded
METHOD = "paired bootstrap over the eval items, all arms resampled jointly; decide() on each resample"

Resampler = Callable[[np.ndarray], Mapping[str, SignalValue]]


def measure(
    ruleset: RuleSet,
    signals: Mapping[str, SignalValue],
    verdict: Verdict,
    resampler: Resampler,
    n_items: int,
    *,
    seed: int,
    n_resamples: int = N_RESAMPLES,
) -> Confidence:
    """P(`verdict`): `signals` with `resampler(idx)` merged over them, decided once per resample.

    `idx` holds `n_items` item positions drawn with replacement; `resampler` returns the signals that
    the drawn items give (only those keys replace the measured ones).
    """
    if n_items < 1 or n_resamples < 1:
        raise ValueError("measuring confidence needs at least one item and one resample")
    rng = np.random.default_rng(seed)
    counts: Counter[Verdict] = Counter()
    rows = max(1, CHUNK_CELLS // n_items)
    done = 0
    while done < n_resamples:
        chunk = rng.integers(0, n_items, size=(min(rows, n_resamples - done), n_items))
        for i, idx in enumerate(chunk, start=1):
            counts[decide(ruleset, {**signals, **resampler(idx)}).verdict] += 1
            progress.report(CONFIDENCE_STAGE, done + i, n_resamples)
        done += len(chunk)
    shares = tuple(
        sorted(((v, c / n_resamples) for v, c in counts.items()), key=lambda vs: (-vs[1], str(vs[0])))
    )
    runner_up = next(((v, s) for v, s in shares if v is not verdict), (None, 0.0))
    return Confidence(
        probability=counts[verdict] / n_resamples,
        runner_up=runner_up[0],
        runner_up_share=runner_up[1],
        shares=shares,
        n_resamples=n_resamples,
        n_items=n_items,
        seed=seed,
        method=METHOD,
    )


def resample_arm(
    arm: ArmResult,
    idx: np.ndarray,
    task: TaskKind,
    labels: Sequence[str],
    seed: int,
    n_resamples: int = INNER_RESAMPLES,
) -> ArmResult:
    """The arm on the drawn items, rescored. Lines become draw positions (an item drawn twice counts
    twice, and compare() pairs by line); the arm's cost (mean prompt tokens) is a property of the arm
    and keeps its measured value, so the cost order of the arms does not change. Any other per-arm
    figure derived from the items must be derived here again too (or in `analyse`), or a resample would
    carry the full eval set's value."""
    items = tuple(copied_item(arm.items[int(i)], line=j) for j, i in enumerate(idx))
    return replace(arm, items=items, scores=summarise(items, task, labels, seed, n_resamples), prompts=())


def resample_prompting(
    result: PromptingResult, idx: np.ndarray, n_resamples: int = INNER_RESAMPLES
) -> PromptingResult:
    """The whole prompting analysis (comparisons, plateau) again on the drawn eval items."""
    arms = [resample_arm(a, idx, result.task, result.labels, result.seed, n_resamples) for a in result.arms]
    return analyse(
        arms,
        backend=result.backend,
        model_id=result.model_id,
        task=result.task,
        labels=result.labels,
        seed=result.seed,
        target_metric=result.target_metric,
        quality_target=result.quality_target,
        min_gain=result.min_gain,
        alpha=result.alpha,
        thresholds=result.thresholds,
        metric_reason=result.metric_reason,
        limit=result.k_max,
        budget_spent=result.budget_spent,
        n_resamples=n_resamples,
        race=result.race,
        raced_out=result.raced_out,
    )


Extra = Callable[[PromptingResult, np.ndarray], Mapping[str, SignalValue]]
"""More signals of the same resample: given the resampled prompting analysis and the drawn positions (the
pilot's eval predictions, drawn with the arms' so the comparison stays paired)."""


def prompting_resampler(
    result: PromptingResult, n_resamples: int = INNER_RESAMPLES, extra: Extra | None = None
) -> Resampler:
    """The prompting signals of a resample, from the one signal function a full run uses, with `extra`'s."""

    def signals(idx: np.ndarray) -> Mapping[str, SignalValue]:
        resampled = resample_prompting(result, idx, n_resamples)
        out = dict(prompting_signals(resampled))
        if extra is not None:
            out.update(extra(resampled, idx))
        return out

    return signals


def of_prompting(
    ruleset: RuleSet,
    signals: Mapping[str, SignalValue],
    verdict: Verdict,
    result: PromptingResult,
    *,
    n_resamples: int = N_RESAMPLES,
    extra: Extra | None = None,
) -> Confidence:
    """P(verdict) for an advise run whose prompting arms were measured on the eval items (`extra`: the
    signals of other measurements on the same items, resampled with them)."""
    n_items = result.arms[0].n
    if any(
        a.n != n_items or [it.line for it in a.items] != [it.line for it in result.arms[0].items]
        for a in result.arms
    ):
        raise ValueError("every arm must be scored on the same eval items, in the same order")
    return measure(
        ruleset,
        signals,
        verdict,
        prompting_resampler(result, extra=extra),
        n_items,
        seed=result.seed,
        n_resamples=n_resamples,
    )


def predictive_power(share: float, n_items: int, reach: int, settled_at: float) -> float:
    """The chance that a verdict found in `share` of the resamples of `n_items` eval items is found in at
    least `settled_at` of them once `reach` items are scored (the `n_items` among them).

    A normal approximation on the verdict's margin d: P(verdict) = Phi(d sqrt(n) / s) for the per-item
    spread s, so the margin measured so far is z_n s / sqrt(n) with z_n = Phi^-1(share). Under a flat prior
    (the predictive power of Spiegelhalter, Freedman and Blackburn, "Monitoring clinical trials:
    conditional or predictive power?", Controlled Clinical Trials 7:8-17, 1986) the margin measured on
    `reach` = m items is normal around it with variance s^2 (m - n) / (m n), and the verdict settles when
    that margin reaches z_s s / sqrt(m), z_s = Phi^-1(settled_at): a chance of
    Phi((z_n sqrt(m) - z_s sqrt(n)) / sqrt(m - n)). With no limit on m it tends to `share` itself.
    """
    z = NormalDist()

    def inv(p: float) -> float:
        return z.inv_cdf(min(max(p, 1e-6), 1 - 1e-6))

    if reach <= n_items:
        return 1.0 if share >= settled_at else 0.0
    m, n = reach, n_items
    return z.cdf((inv(share) * sqrt(m) - inv(settled_at) * sqrt(n)) / sqrt(m - n))
