"""The pilot fine-tune section, worded once for every renderer (console, Markdown, HTML): a few sentences
and the table of pilot points. Reads the typed document only."""

from __future__ import annotations

from advisor.document import ExamplesNeeded, Pilot
from advisor.report import fmt

HEADER = ("training examples", "optimizer steps", "dev score [95% CI]", "training time")


def rows(p: Pilot) -> list[tuple[str, str, str, str]]:
    """One row per pilot, then the curve's prediction at the full train split."""
    out = [
        (fmt.count(pt.n_train), fmt.count(pt.steps), fmt.estimate(pt.dev.value, pt.dev.low, pt.dev.high),
         f"{pt.train_s:.0f} s")
        for pt in p.points
    ]  # fmt: skip
    if p.curve is not None:
        f = p.curve.at_full
        what = "predicted" if p.curve.trend else "no trend: flat"
        out.append(
            (f"{fmt.count(p.curve.n_full)} (full split)", what, fmt.estimate(f.value, f.low, f.high), "")
        )
    return out


def _needed(n: ExamplesNeeded | None, what: str, have: int) -> str | None:
    if n is None:
        return None
    if n.value is None:
        return f"The curve never reaches {what} (its asymptote lies below)."
    if n.value <= have:
        return f"The curve reaches {what} at about {fmt.count(n.value)} training examples."
    span = f" (95% interval {fmt.count(n.low)} to {fmt.count(n.high) if n.high is not None else 'never'})"
    return (
        f"The curve reaches {what} at about {fmt.count(n.value)} training examples, "
        f"{fmt.count(n.value - have)} more than the {fmt.count(have)} there are{span}."
    )


def sentences(p: Pilot, metric: str) -> list[str]:
    """What the pilot measured and what its curve predicts, in plain sentences."""
    if not p.measured:
        return [f"The fine-tuning side was {p.reason}."]
    out = [p.reason[0].upper() + p.reason[1:] + "."]
    c = p.curve
    if c is not None:
        form = (
            f"Fitted {fmt.metric_name(metric)}(n) = {c.a:.3f} - {c.b:.3f}·n^(-{c.c:.2f})"
            if c.trend
            else "No trend: the largest pilot is not better than the smallest on the dev items "
            f"({fmt.difference(c.trend_gain.diff, c.trend_gain.low, c.trend_gain.high)}), so nothing is "
            "extrapolated"
        )
        out.append(
            f"{form}; at the full train split ({fmt.count(c.n_full)} examples): "
            f"{fmt.estimate(c.at_full.value, c.at_full.low, c.at_full.high)} on dev."
        )
    if p.eval_score is not None and p.gain is not None and p.baseline_arm is not None:
        e, g = p.eval_score, p.gain
        out.append(
            f"The largest pilot scores {fmt.estimate(e.value, e.low, e.high)} on the eval items: "
            f"{fmt.difference(g.diff, g.low, g.high)} against {_baseline(p)} "
            f"(paired, p {fmt.p_value(g.p_value)})."
        )
    if p.full_gain is not None:
        f = p.full_gain
        out.append(
            f"Predicted gain over {'that baseline' if p.baseline_kind == 'majority' else 'that prompt'} "
            "at the full train split: "
            f"{fmt.difference(f.diff, f.low, f.high)}."
        )
    have = c.n_full if c is not None else 0
    for n, what in ((p.to_beat_prompt, "the best prompt"), (p.to_target, "the quality target")):
        text = _needed(n, what, have)
        if text is not None:
            out.append(text)
    if p.degenerate:
        out.append("The pilot is degenerate (collapses onto one label, or is no better than the majority).")
    out.extend(_two_models(p))
    return out


def _baseline(p: Pilot) -> str:
    if p.baseline_kind == "majority":
        return "the majority baseline (no prompting arm beats it)"
    return f"the best honest prompt {p.baseline_arm}"


def _two_models(p: Pilot) -> list[str]:
    """The model change apart from the fine-tuning, when the candidate is not the arms' model."""
    if p.arms_model_id is None or p.candidate_prompted is None:
        return []
    c = p.candidate_prompted
    out = [
        f"Two models: the arms prompt {p.arms_model_id}; the pilots fine-tune {p.model_id}, which scores "
        f"{fmt.estimate(c.value, c.low, c.high)} on the eval items prompted as it would be fine-tuned "
        "(zero-shot, no adapter)."
    ]
    if p.model_change is not None and p.finetune_adds is not None:
        m, a = p.model_change, p.finetune_adds
        out.append(
            f"Changing the model alone: {fmt.difference(m.diff, m.low, m.high)} against the best honest "
            f"prompt on {p.arms_model_id}; fine-tuning then adds {fmt.difference(a.diff, a.low, a.high)} "
            f"on {p.model_id} (both paired on the eval items)."
        )
    return out
