"""Sentences every renderer shares (console, Markdown, HTML): the confidence line, the majority baseline
and the plateau, worded once from the typed report.

Plain text; `code` and `text` let a renderer mark up names and free text for its medium (Markdown passes
its escaping forms; HTML and the console take the defaults and strip the backticks).
"""

from __future__ import annotations

from collections.abc import Callable

from advisor.document import Decision, EvalGrowth, Prompting
from advisor.report import fmt

NO_PROBE_TREND = (
    "No trend: the probe's score does not rise with more training data, so its power law is not drawn "
    "and its extrapolations are not to be relied on."
)
NO_LATENCY_TREND = (
    "No trend: the latency model has a negative term or explains less than half the variance, so it is "
    "not drawn"
)


def _backticks(text: object) -> str:
    return f"`{text}`"


def confidence_sentence(d: Decision) -> str:
    """One line on P(verdict) from the decision."""
    detail = d.confidence_detail
    if detail is None:
        return "confidence not measured (no per-item results to resample)"
    runner = f"; runner-up {detail.runner_up} {detail.runner_up_share:.2f}" if detail.runner_up else ""
    return (
        f"P(verdict) {detail.probability:.2f} ({d.confidence_label}{runner}; "
        f"{detail.n_resamples} bootstrap resamples of {detail.n_items} eval items)"
    )


def growth_sentence(g: EvalGrowth | None) -> str | None:
    """How many eval items advise scored, in which looks, and why it stopped scoring more."""
    if g is None or not g.steps:
        return None
    sizes = " → ".join(fmt.count(s.n_eval) for s in g.steps)
    looks = "one look" if len(g.steps) == 1 else f"{len(g.steps)} looks"
    return f"Eval items scored in {looks} ({sizes}); scoring stopped: {g.stopped}."


def baseline_sentence(p: Prompting, code: Callable[[object], str] = _backticks) -> str | None:
    """The majority baseline and the uniform-random expectation on the target metric (classification)."""
    b = p.baselines
    if b is None:
        return None
    metric = p.target_metric
    # Classification baselines carry accuracy and macro-F1, the two target metrics of classification.
    majority, uniform = getattr(b.majority, metric, None), getattr(b.uniform, metric, None)
    return (
        f"Baselines on the same eval items: always answering the majority label {code(b.majority_label)} "
        f"({b.majority_share:.1%} of items) scores {fmt.metric_name(metric)} {fmt.score(majority)} "
        f"(accuracy {b.majority.accuracy:.3f}, macro-F1 {b.majority.macro_f1:.3f}); "
        f"guessing uniformly at random is expected to score {fmt.score(uniform)}."
    )


def plateau_sentence(
    p: Prompting, code: Callable[[object], str] = _backticks, text: Callable[[object], str] = str
) -> str:
    """Why prompting did or did not plateau, in one sentence."""
    pl = p.plateau
    if not pl.below_target:
        head = "Prompting meets the target"
    else:
        head = "Prompting has plateaued" if pl.plateaued else "Prompting has not plateaued"
    best = (
        f"at {code(pl.best_arm)} ({fmt.score(pl.best_score)})"
        if pl.best_arm
        else "with no honest arm (every arm is degenerate)"
    )
    return f"{head} {best}: {text(pl.reason)}."


def unverified_adapter_sentence(code: Callable[[object], str] = _backticks) -> str:
    """Why a trained run has no verification section: its adapter has not been verified yet."""
    return (
        f"the run's adapter ({code('train/adapter')}) has not been verified yet; "
        f"{code('tunegate verify RUN')} scores it on the eval items."
    )
