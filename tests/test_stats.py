"""Metrics, bootstrap intervals, paired tests, power and the plateau rule, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from advisor.measure import stats
from advisor.measure.stats import CurvePoint, PairedDiff


def test_chrf_hand_computed():
    # "ab" vs "abc": orders 1..2 shared; P = (1 + 1)/2, R = (2/3 + 1/2)/2 = 7/12; F2 = 5PR/(4P+R) = 7/11
    assert stats.chrf("ab", "abc") == pytest.approx(7 / 11)
    # "abcd" vs "abxd": P = R = (3/4 + 1/3 + 0 + 0)/4 = 13/48, so F = 13/48
    assert stats.chrf("abcd", "abxd") == pytest.approx(13 / 48)
    assert stats.chrf("a b", "ab") == 1.0  # whitespace is ignored
    assert stats.chrf("", "") == 1.0
    assert stats.chrf("", "abc") == 0.0
    assert stats.chrf("xyz", "abc") == 0.0
    # beta=2 weighs recall over precision: missing half the reference costs more than doubling it
    assert stats.chrf("abcd", "abcdefgh") < stats.chrf("abcdefgh", "abcd")


def test_token_f1_and_exact_matches():
    # normalised: "cat sat on mat" vs "cat on mat": P = 3/4, R = 1, F1 = 6/7
    assert stats.token_f1("The cat sat on the mat.", "a cat on a mat") == pytest.approx(6 / 7)
    assert stats.token_f1("", "") == 1.0
    assert stats.token_f1("cat", "") == 0.0
    assert stats.token_f1("dog", "cat") == 0.0
    assert stats.token_f1("cat cat", "cat") == pytest.approx(2 * 0.5 * 1 / 1.5)  # clipped counts
    assert stats.exact_match(" cat\n", "cat") == 1.0
    assert stats.exact_match("Cat", "cat") == 0.0
    assert stats.normalized_exact_match("The Cat!", "cat") == 1.0


def test_macro_f1_hand_computed():
    # a: tp 1, fp 0, fn 1 -> 2/3; b: tp 2, fp 1, fn 0 -> 4/5; mean 11/15
    y, p = ["a", "a", "b", "b"], ["a", "b", "b", "b"]
    assert stats.macro_f1(y, p, ["a", "b"]) == pytest.approx(11 / 15)
    est = stats.bootstrap_macro_f1(y, p, ["a", "b"], seed=0, n_resamples=200)
    assert est.value == pytest.approx(11 / 15) and est.low <= est.value <= est.high
    # a prediction outside the label set is wrong for every label
    y, p = ["a", "b", "a"], ["zzz", "b", "a"]
    # a: tp 1, fn 1 -> 2/3; b: tp 1 -> 1; mean 5/6
    assert stats.macro_f1(y, p, ["a", "b"]) == pytest.approx(5 / 6)
    assert stats.bootstrap_macro_f1(y, p, ["a", "b"], seed=0).value == pytest.approx(5 / 6)


def test_bootstrap_mean_coverage_on_bernoulli():
    rng = np.random.default_rng(123)
    p, n, sims = 0.7, 100, 200
    covered = 0
    for s in range(sims):
        est = stats.bootstrap_mean(rng.random(n) < p, seed=s, n_resamples=500)
        covered += est.low <= p <= est.high
    assert 0.88 <= covered / sims <= 0.99
    # seeded: the same seed gives the same interval
    x = rng.random(50) < 0.5
    assert stats.bootstrap_mean(x, seed=1) == stats.bootstrap_mean(x, seed=1)
    assert math.isnan(stats.bootstrap_mean([], seed=0).value)


def test_paired_bootstrap():
    rng = np.random.default_rng(7)
    a = (rng.random(300) < 0.6).astype(float)
    same = stats.paired_bootstrap_mean(a, a, seed=0)
    assert same.diff == 0 and same.p_value == 1.0 and same.low == same.high == 0
    better = np.where(rng.random(300) < 0.3, 1.0, a)  # flips ~12% of items to correct
    d = stats.paired_bootstrap_mean(better, a, seed=0)
    assert d.diff > 0 and d.low > 0 and d.p_value < 0.01
    # under the null (two independent arms with the same rate) it rejects about alpha of the time
    rejections = sum(
        stats.paired_bootstrap_mean(
            rng.random(100) < 0.7, rng.random(100) < 0.7, seed=s, n_resamples=400
        ).p_value
        < 0.05
        for s in range(100)
    )
    assert rejections <= 12
    # macro-F1 version: identical predictions differ by exactly zero
    y = ["a", "b"] * 20
    pred = ["a"] * 40
    m = stats.paired_bootstrap_macro_f1(y, y, pred, ["a", "b"], seed=0, n_resamples=300)
    assert m.diff == pytest.approx(1 - stats.macro_f1(y, pred, ["a", "b"])) and m.low > 0


def test_mcnemar_known_tables():
    # 1 vs 6 discordant pairs: P(X <= 1 | n=7, 1/2) = 8/128, two-sided 0.125
    assert stats.mcnemar_exact(1, 6) == pytest.approx(0.125)
    assert stats.mcnemar_exact(6, 1) == pytest.approx(0.125)
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(5, 5) == 1.0
    # 0 vs 10: 2 / 1024
    assert stats.mcnemar_exact(0, 10) == pytest.approx(2 / 1024)
    r = stats.mcnemar([True, True, False, False, True], [True, False, True, True, True])
    assert (r.a_only, r.b_only) == (1, 2)


def test_power_known_values_and_monotone():
    # Connor: (1.959964*sqrt(.2) + 0.841621*sqrt(.2 - .0025))^2 / .0025 = 625.55 -> 626
    assert stats.items_needed_paired_proportions(0.05, 0.2) == 626
    gains = [stats.items_needed_paired_proportions(g, 0.2) for g in (0.02, 0.05, 0.1, 0.15)]
    assert gains == sorted(gains, reverse=True)
    rates = [stats.items_needed_paired_proportions(0.05, r) for r in (0.05, 0.1, 0.2, 0.4)]
    assert rates == sorted(rates)
    # an observed discordant rate below the gain is raised to the gain
    assert stats.items_needed_paired_proportions(0.05, 0.0) == stats.items_needed_paired_proportions(
        0.05, 0.05
    )
    # ((1.959964 + 0.841621) * 0.5 / 0.1)^2 = 196.2 -> 197
    assert stats.items_needed_paired_mean(0.1, 0.5) == 197
    with pytest.raises(ValueError):
        stats.items_needed_paired_proportions(0.0, 0.2)


def _curve(*scores: float) -> list[CurvePoint]:
    return [CurvePoint(f"arm{i}", cost=10.0 * (i + 1), score=s) for i, s in enumerate(scores)]


def _diff(d: float, p: float) -> PairedDiff:
    return PairedDiff(d, d - 0.05, d + 0.05, p, 200)


def test_plateau_cases():
    pts = _curve(0.70, 0.74, 0.75)
    ladder = ["arm0", "arm1", "arm2"]
    prev = {"arm1": _diff(0.04, 0.01), "arm2": _diff(0.01, 0.4)}
    flat = stats.Trend(ks=[0, 1, 3], slope=0.02, low=-0.01, high=0.05, intercept=0.7, n=200)
    rising = stats.Trend(ks=[0, 1, 3], slope=0.03, low=0.01, high=0.05, intercept=0.7, n=200)
    args = {"quality_target": 0.9, "min_gain": 0.02, "ladder": ladder}
    # best is the last rung, the slope interval reaches zero: a flat trend, plateaued
    pl = stats.detect_plateau(pts, prev, trend=flat, next_rung_fits=True, **args)
    assert pl.plateaued and pl.case is stats.PlateauCase.FLAT_TREND and not pl.extend
    assert pl.best_arm == "arm2" and pl.previous_arm == "arm1" and pl.gain == 0.01 and pl.p_value == 0.4
    # best is the last rung and the slope interval lies above zero: still improving, extend the ladder
    pl = stats.detect_plateau(pts, prev, trend=rising, next_rung_fits=True, **args)
    assert not pl.plateaued and pl.case is stats.PlateauCase.STILL_IMPROVING and pl.extend
    assert "above zero" in pl.reason
    # ... but the next rung does not fit, still rising: prompting not exhausted within the budget (no
    # plateau; the pilot decides)
    pl = stats.detect_plateau(pts, prev, trend=rising, next_rung_fits=False, **args)
    assert not pl.plateaued and pl.ladder_exhausted and pl.case is stats.PlateauCase.LADDER_EXHAUSTED
    assert not pl.extend and pl.best_arm == "arm2" and "not exhausted within the budget" in pl.reason
    # ... and with a flat trend: the ladder is exhausted, a plateau at the best
    pl = stats.detect_plateau(pts, prev, trend=flat, next_rung_fits=False, **args)
    assert pl.plateaued and pl.ladder_exhausted and pl.case is stats.PlateauCase.LADDER_EXHAUSTED
    # rising but the target is met: nothing to extend, no plateau below target
    pl = stats.detect_plateau(
        pts, prev, trend=rising, next_rung_fits=True, **(args | {"quality_target": 0.7})
    )
    assert not pl.plateaued and not pl.below_target and not pl.extend
    # one arm: no curve, no plateau claim
    pl = stats.detect_plateau(_curve(0.5), {}, quality_target=0.9, min_gain=0.02)
    assert not pl.plateaued and pl.case is stats.PlateauCase.SINGLE_ARM


def test_plateau_sms_case_costlier_arms_not_better_and_degenerate_arms_excluded():
    # zero_shot 0.86 by always answering the majority (degenerate); k1 honest at 0.70; costlier k2..k8 worse
    pts = _curve(0.86, 0.60, 0.70, 0.55, 0.50, 0.40)
    names = [p.arm for p in pts]
    honest = dict.fromkeys(names, True) | {"arm0": False}
    vs_best = {"arm3": _diff(-0.15, 0.001), "arm4": _diff(-0.2, 0.001), "arm5": _diff(-0.3, 0.001)}
    pl = stats.detect_plateau(
        pts, {"arm2": _diff(0.10, 0.01)}, quality_target=0.9, min_gain=0.02, honest=honest, vs_best=vs_best,
        ladder=names[1:],
        trend=stats.Trend(ks=[0, 1, 2, 4, 8], slope=-0.05, low=-0.08, high=-0.02, intercept=0.6, n=200),
        next_rung_fits=True,
    )  # fmt: skip
    assert pl.best_arm == "arm2" and pl.best_score == 0.70  # the degenerate 0.86 is not the best
    assert pl.plateaued and pl.case is stats.PlateauCase.COSTLIER_NOT_BETTER
    assert [a for a, _ in pl.costlier] == ["arm3", "arm4", "arm5"] and "none beats arm2" in pl.reason
    # a costlier arm that beats the best significantly means still improving
    pl = stats.detect_plateau(
        pts, {}, quality_target=0.9, min_gain=0.02, honest=honest,
        vs_best=vs_best | {"arm4": PairedDiff(0.05, 0.02, 0.08, 0.001, 200)}, ladder=names[1:],
    )  # fmt: skip
    assert not pl.plateaued and pl.case is stats.PlateauCase.COSTLIER_BETTER
    # every arm degenerate: no best arm; judged on the ladder's trend alone
    pl = stats.detect_plateau(
        pts, {}, quality_target=0.9, min_gain=0.02, honest=dict.fromkeys(names, False), ladder=names[1:],
        trend=stats.Trend(ks=[0, 1, 2, 4, 8], slope=0.0, low=-0.02, high=0.02, intercept=0.5, n=200),
        next_rung_fits=False,
    )  # fmt: skip
    assert pl.best_arm is None and pl.best_score is None and pl.plateaued and pl.ladder_exhausted


def test_ladder_trend_slope_and_paired_interval():
    rng = np.random.default_rng(0)
    n = 300
    ks = (0, 1, 2, 4, 8)
    # per-item correctness rising with log2(k+1): p = 0.5 + 0.05 * log2(k+1)
    rungs = [(rng.random(n) < 0.5 + 0.05 * np.log2(k + 1)).astype(float) for k in ks]
    t = stats.ladder_trend(
        ks, [lambda idx, v=v: v[idx].mean(axis=-1) for v in rungs], n, seed=0, n_resamples=500
    )
    assert t is not None and t.ks == list(ks) and t.low <= t.slope <= t.high
    assert 0.02 < t.slope < 0.08 and t.rising
    assert t.at(0) == pytest.approx(t.intercept)
    flat = [(rng.random(n) < 0.6).astype(float) for _ in ks]
    f = stats.ladder_trend(
        ks, [lambda idx, v=v: v[idx].mean(axis=-1) for v in flat], n, seed=0, n_resamples=500
    )
    assert f is not None and f.low < 0 < f.high and not f.rising
    assert stats.ladder_trend((4,), [lambda idx: 0.5], n, seed=0) is None  # one rung: no slope


def test_ladder_trend_is_the_percentile_interval_of_per_resample_least_squares_slopes():
    rng = np.random.default_rng(1)
    n, ks, labels = 97, (0, 1, 2, 4), ("a", "b", "c")
    gold = [str(x) for x in rng.choice(labels, size=n)]
    preds = []
    for k in ks:  # right more often as k grows; some answers are not a label at all
        wrong = [str(x) for x in rng.choice([*labels, "?"], size=n)]
        preds.append(
            [g if r < 0.4 + 0.1 * k else w for g, w, r in zip(gold, wrong, rng.random(n), strict=True)]
        )
    idx = np.concatenate(list(stats._index_chunks(n, 3, 300)))  # the run's resamples for this seed
    x = np.log2(np.asarray(ks) + 1.0)
    for metric in ("accuracy", "macro_f1"):
        if metric == "accuracy":
            statistics = [
                stats.mean_rows([float(p == g) for p, g in zip(pr, gold, strict=True)]) for pr in preds
            ]
            score = [lambda row, pr=pr: np.mean([pr[i] == gold[i] for i in row]) for pr in preds]
        else:
            statistics = [stats.macro_f1_rows(gold, pr, labels) for pr in preds]
            score = [
                lambda row, pr=pr: stats.macro_f1([gold[i] for i in row], [pr[i] for i in row], labels)
                for pr in preds
            ]
        slopes = [np.polyfit(x, [f(row) for f in score], 1)[0] for row in idx]
        t = stats.ladder_trend(ks, statistics, n, seed=3, n_resamples=300)
        assert t is not None
        assert t.slope == pytest.approx(np.polyfit(x, [f(np.arange(n)) for f in score], 1)[0])
        assert (t.low, t.high) == pytest.approx(tuple(np.percentile(slopes, [2.5, 97.5])), abs=1e-9)


def test_best_point_ties():
    # ties go to the cheaper arm; order is by cost, not by list order
    pts = [CurvePoint("b", 20.0, 0.8), CurvePoint("a", 10.0, 0.8)]
    assert stats.best_point(pts).arm == "a"


# ---------------------------------------------------------------- anytime-valid tests


def _paired_paths(n_paths: int, n_items: int, p_a_only: float, p_b_only: float, seed: int) -> np.ndarray:
    """Per-item paired differences (+1 only a right, -1 only b right, 0 agree), one row per path."""
    u = np.random.default_rng(seed).random((n_paths, n_items))
    return (u < p_a_only).astype(float) - ((u >= p_a_only) & (u < p_a_only + p_b_only)).astype(float)


def _sign_test_p(d: np.ndarray) -> np.ndarray:
    """The anytime McNemar p-value after every item of every path (vectorised `anytime_mcnemar`)."""
    s, v = np.cumsum(d, axis=1), np.cumsum(d != 0, axis=1)
    rho = stats.mixture_rho()
    log_m = 0.5 * np.log(rho / (v + rho)) + s * s / (2 * (v + rho))
    return np.minimum(1.0, np.exp(-log_m))


def test_mixture_rho_puts_the_tightest_boundary_where_it_was_tuned():
    rho = stats.mixture_rho(100.0)
    at = stats.mixture_radius(100.0, rho=rho)
    assert at < stats.mixture_radius(100.0, rho=rho * 1.5) and at < stats.mixture_radius(100.0, rho=rho / 1.5)
    # the vectorised p-value used below is the scalar one
    d = _paired_paths(1, 60, 0.3, 0.1, seed=1)[0]
    a_only, b_only = int((d > 0).sum()), int((d < 0).sum())
    assert _sign_test_p(d[None, :])[0, -1] == pytest.approx(stats.anytime_mcnemar(a_only, b_only))


def test_the_anytime_p_value_and_interval_agree_at_zero():
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(5, 300))
        a, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
        cs = stats.anytime_paired_mean(a, b)
        excludes_zero = cs.low > 0 or cs.high < 0
        assert excludes_zero == (cs.p_value <= stats.ALPHA + 1e-12)
        assert cs.low <= cs.diff <= cs.high and cs.n == n


def test_peeking_after_every_item_keeps_the_anytime_tests_level_and_breaks_the_fixed_one():
    # Two equally accurate arms (each right alone on 15% of items), looked at after every item up to 400,
    # stopping at the first look that rejects: the anytime tests reject at most alpha of the paths, the
    # exact McNemar test read at every look rejects far more often (the reason for anytime validity).
    d = _paired_paths(2000, 400, 0.15, 0.15, seed=7)
    anytime_rejects = (_sign_test_p(d) <= stats.ALPHA).any(axis=1).mean()
    s, n = np.cumsum(d, axis=1), np.arange(1, d.shape[1] + 1)
    rho = stats.mixture_rho()
    bound = np.sqrt((n + rho) * np.log((n + rho) / (rho * stats.ALPHA**2)))  # anytime_paired_mean's boundary
    cs_rejects = (np.abs(s) >= bound).any(axis=1).mean()
    looks = range(10, 400, 10)
    naive = np.zeros(d.shape[0], dtype=bool)
    for t in looks:
        a_only, b_only = (d[:, :t] > 0).sum(axis=1), (d[:, :t] < 0).sum(axis=1)
        naive |= np.array(
            [stats.mcnemar_exact(int(x), int(y)) <= stats.ALPHA for x, y in zip(a_only, b_only, strict=True)]
        )
    se = math.sqrt(stats.ALPHA * (1 - stats.ALPHA) / d.shape[0])
    assert anytime_rejects <= stats.ALPHA + 2 * se
    assert cs_rejects <= stats.ALPHA + 2 * se
    assert naive.mean() > 2 * stats.ALPHA


def test_the_confidence_sequence_covers_a_true_difference_at_every_look():
    # arm a is better by 0.10 (right alone on 25% of items, b on 15%): the sequence must hold the true
    # difference after every item on at least 1 - alpha of the paths, and find the gain on most of them
    d = _paired_paths(2000, 400, 0.25, 0.15, seed=11)
    s, n = np.cumsum(d, axis=1), np.arange(1, d.shape[1] + 1)
    half = np.array([stats.mixture_radius(float(t)) for t in n]) / n
    mean = s / n
    missed = ((mean - half > 0.10) | (mean + half < 0.10)).any(axis=1).mean()
    assert missed <= stats.ALPHA + 2 * math.sqrt(stats.ALPHA * (1 - stats.ALPHA) / d.shape[0])
    found = (_sign_test_p(d) <= stats.ALPHA).any(axis=1).mean()
    assert found > 0.5
    # one path, through the public function, at its last look
    a = (d[0] > 0).astype(float)
    b = (d[0] < 0).astype(float)
    cs = stats.anytime_paired_mean(a, b)
    assert cs.diff == pytest.approx(mean[0, -1]) and cs.high - cs.low == pytest.approx(2 * half[-1])
