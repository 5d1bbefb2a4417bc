"""The first screen of the report, worded once for Markdown and HTML: the decision, the options side by side,
the facts the verdict rests on and what would change it, in plain words read from the typed document.

No rule id and no signal name appears here: those belong to the engineer's part of the report. Every
function returns plain text; a renderer escapes it for its medium.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from advisor.document import ArmEvidence, Decision, Estimate, Evidence, Report
from advisor.report import fmt

MAX_FACTS = 3
HEADER = ("option", "how it was measured", "quality [95% interval]", "cost per month", "p95 latency")


@dataclass(frozen=True)
class Option:
    """One row of the options table, as plain text."""

    name: str
    how: str
    quality: str
    cost: str
    latency: str


BEST_PROMPT_PHRASES = (
    "the best honest prompting arm and the majority baseline",
    "the best honest prompting arm",
    "the best honest prompt",
    "the best prompting arm",
    "the best prompt",
)
"""How the rules' messages name the prompt a fine-tune is held against (rules/*.toml)."""


def plain(text: str, report: Report) -> str:
    """A rule's message as the reader should take it: where no prompting arm beats the majority baseline,
    "the best honest prompt" it speaks of is that baseline (always answering the commonest label), and a
    reader would otherwise picture a real prompt."""
    p = report.prompting
    if p is None or p.plateau.best_arm is not None or p.baselines is None:
        return text
    who = f"the majority baseline, always answering \u201c{p.baselines.majority_label}\u201d"
    phrases = "|".join(map(re.escape, BEST_PROMPT_PHRASES))  # longest first: alternatives try in order
    # the apposition is closed by a comma where the sentence goes on with a word
    return re.sub(f"(?:{phrases})( (?=\\w))?", lambda m: who + (", " if m.group(1) else ""), text)


def headline(report: Report) -> str:
    """The decision's one-sentence summary (it opens with the verdict in words)."""
    return plain(report.decision.summary, report)


def sureness(d: Decision) -> str:
    """How sure the verdict is, in words that match P(verdict), never contradicting the verdict word."""
    detail = d.confidence_detail
    if detail is None or d.confidence is None:
        return "How sure: not measured (no per-item results to resample)."
    share = f"{detail.probability:.0%} of {fmt.count(detail.n_resamples)} resamples of the "
    share += f"{fmt.count(detail.n_items)} eval items give this verdict"
    if d.verdict == "inconclusive":
        if d.confidence_label == "high":
            return f"How sure: inconclusive, and that is a firm finding ({share}): these data cannot decide."
        return f"How sure: inconclusive, and even that is unsettled ({share})."
    runner = f"; otherwise {fmt.verdict_name(detail.runner_up).lower()}" if detail.runner_up else ""
    return f"How sure: {d.confidence_label} ({share}{runner})."


# --------------------------------------------------------------------------- the options


def _estimate(e: Estimate | None) -> str:
    return fmt.DASH if e is None else fmt.estimate(e.value, e.low, e.high)


def _latency(p95: float | None, budget: float | None) -> str:
    if p95 is None:
        return "not measured"
    if budget is None:
        return fmt.ms(p95)
    return f"{fmt.ms(p95)}, {'within' if p95 <= budget else 'over'} the {fmt.ms(budget)} budget"


def _best_prompt(report: Report) -> ArmEvidence | None:
    e = report.evidence
    return next((a for a in e.arms if a.name == e.best_arm), None) if e is not None else None


def no_prompt_to_price(report: Report) -> str | None:
    """Why there is no prompt to price or time, when prompting was measured but no arm is honest."""
    p = report.prompting
    if p is None or p.plateau.best_arm is not None:
        return None
    if p.baselines is None:  # generated text: no majority baseline
        return "every prompting arm is degenerate, so there is no prompt to price or time"
    return "no prompting arm beats the majority baseline, so there is no prompt to price or time"


def _not_priced(report: Report) -> str:
    e = report.evidence
    if e is None:
        return "not priced: no cost evidence in this run"
    if e.cost is None:
        return "not priced: no price file or prices given"
    if e.volume_per_day is None:
        return "not priced: no volume declared"
    return f"not priced: {e.cost.reason or 'no price for this model'}"


def _prompt_option(report: Report) -> Option:
    p = report.prompting
    if p is None:
        return Option("best prompt", "not measured: no model was run", fmt.DASH, fmt.DASH, fmt.DASH)
    metric = p.target_metric
    e = report.evidence
    budget = e.latency_budget_ms if e is not None else None
    arm = next((a for a in p.arms if a.name == p.plateau.best_arm), None)
    if arm is None and p.baselines is None:  # generated text, every arm degenerate
        return Option(
            "no usable prompt",
            "every prompting arm is degenerate (one answer repeated, or its demonstrations' answers copied)",
            fmt.DASH,
            "not priced: no usable prompt to price",
            "not measured: no usable prompt to time",
        )
    if arm is None:
        b = p.baselines
        score = getattr(b.majority, metric, None) if b is not None else None
        label = f" ({b.majority_label!r} for every item)" if b is not None else ""
        return Option(
            f"majority baseline{label}",
            "no prompt beats always answering the commonest label",
            fmt.score(score),
            "not priced: no honest prompt to price",
            "not measured: no honest prompt to time",
        )
    ev = _best_prompt(report)
    cur = e.cost.currency if e is not None and e.cost is not None else ""
    cost = fmt.money(ev.monthly_cost, cur) if ev is not None and ev.monthly_cost is not None else None
    return Option(
        f"best prompt ({arm.name})",
        f"measured on {fmt.count(arm.scores[metric].n)} eval items",
        _estimate(arm.scores.get(metric)),
        cost or _not_priced(report),
        _latency(ev.p95_ms if ev is not None else None, budget),
    )


def _finetune_cost(e: Evidence | None, report: Report) -> str:
    c = e.cost if e is not None else None
    if c is None or c.finetuned_monthly_cost is None:
        return _not_priced(report)
    once = (
        f" (+ {fmt.money(c.finetune_cost, c.currency)} once, to train)" if c.finetune_cost is not None else ""
    )
    hosted = (
        f", {fmt.serving(c.finetuned_serving, None)}"
        if c.finetuned_serving is not None and c.finetuned_serving != c.serving
        else ""
    )
    return f"{fmt.money(c.finetuned_monthly_cost, c.currency)}{hosted}{once}"


def _finetune_options(report: Report) -> list[Option]:
    e, v, pilot = report.evidence, report.verification, report.pilot
    budget = e.latency_budget_ms if e is not None else None
    cost = _finetune_cost(e, report)
    if v is not None:
        lat = v.finetuned.latency
        return [
            Option(
                "fine-tuned model (LoRA)",
                f"measured: verified on the same {fmt.count(v.n_eval)} eval items",
                _estimate(v.finetuned.scores.get(v.metric)),
                cost,
                _latency(lat.p95_ms if lat is not None else None, budget),
            )
        ]
    if pilot is None or not pilot.measured:
        why = pilot.reason if pilot is not None else "no pilot fine-tune in this run"
        return [Option("fine-tuned model (LoRA)", f"not measured: {why}", fmt.DASH, fmt.DASH, fmt.DASH)]
    out = []
    projected = fmt.ms(e.finetuned_latency_ms) if e is not None else fmt.DASH
    latency = f"about {projected} (projected)" if projected != fmt.DASH else "not measured"
    if pilot.eval_score is not None and pilot.points:
        n = pilot.points[-1].n_train
        out.append(
            Option(
                f"fine-tuned pilot ({fmt.count(n)} training examples)",
                f"measured on {fmt.count(pilot.eval_score.n)} eval items",
                _estimate(pilot.eval_score),
                cost,
                latency,
            )
        )
    if pilot.curve is not None and pilot.curve.trend:
        c = pilot.curve
        out.append(
            Option(
                f"fine-tuned on the full train split ({fmt.count(c.n_full)} examples)",
                "predicted from the pilots' curve (dev items)",
                _estimate(c.at_full),
                cost,
                latency,
            )
        )
    return out or [Option("fine-tuned model (LoRA)", "not measured", fmt.DASH, fmt.DASH, fmt.DASH)]


def _two_models(report: Report) -> tuple[str, str] | None:
    """(the arms' model A, the fine-tuning candidate B) when they differ (--finetune-model), else None."""
    pilot = report.pilot
    if pilot is None or pilot.arms_model_id is None or pilot.model_id is None:
        return None
    return pilot.arms_model_id, pilot.model_id


def _candidate_option(report: Report) -> list[Option]:
    """The candidate B prompted, without fine-tuning: what the change of model alone gives."""
    pilot, models = report.pilot, _two_models(report)
    if models is None or pilot is None or pilot.candidate_prompted is None:
        return []
    change = pilot.model_change
    against = (
        f"; {fmt.difference(change.diff, change.low, change.high)} against the prompt on {models[0]}"
        if change is not None
        else ""
    )
    return [
        Option(
            f"{models[1]} prompted, not fine-tuned",
            f"measured on {fmt.count(pilot.candidate_prompted.n)} eval items{against}",
            _estimate(pilot.candidate_prompted),
            fmt.DASH,
            "not measured",
        )
    ]


def options(report: Report) -> list[Option]:
    """The prompt (or the majority baseline) against the fine-tuned model, measured or predicted; with two
    models (--finetune-model) every row names its model, and the candidate prompted has its own row."""
    rows = [_prompt_option(report), *_candidate_option(report), *_finetune_options(report)]
    models = _two_models(report)
    if models is None:
        return rows
    first = (
        replace(rows[0], how=f"no prompt on {models[0]} beats always answering the commonest label")
        if rows[0].name.startswith("majority baseline")
        else replace(rows[0], name=f"{rows[0].name} on {models[0]}")
    )
    named = [
        r if r.name.startswith(models[1]) else replace(r, name=f"{r.name} of {models[1]}") for r in rows[1:]
    ]
    return [first, *named]


def target_line(report: Report) -> str:
    """What the options are held against: the quality target, the latency budget, the volume."""
    parts = []
    p, e = report.prompting, report.evidence
    if p is not None:
        parts.append(f"target {fmt.metric_name(p.target_metric)} at least {fmt.score(p.quality_target)}")
    if e is not None and e.latency_budget_ms is not None:
        parts.append(f"p95 latency budget {fmt.ms(e.latency_budget_ms)}")
    if e is not None and e.volume_per_day is not None:
        parts.append(f"{fmt.count(e.volume_per_day)} requests a day")
    return ("Held against: " + "; ".join(parts) + ".") if parts else ""


# --------------------------------------------------------------------------- why, and what would change


def facts(report: Report) -> list[str]:
    """The two or three facts the verdict rests on: the messages of the rules that decided it, then of
    the rules that voted for it, then of the rules that ruled other verdicts out."""
    d = report.decision
    deciding = [r for r in d.fired if r.id in d.deciding_rules]
    voting = sorted(
        (r for r in d.fired if r.verdict == d.verdict and r.id not in d.deciding_rules),
        key=lambda r: (r.kind != "stop", -r.weight),
    )
    vetoes = [r for r in d.fired if r.kind == "veto"]
    out = list(dict.fromkeys(plain(r.message, report) for r in deciding + voting + vetoes))
    return out[:MAX_FACTS] or ["No rule fired: nothing measured argues for any verdict."]


def changes(report: Report) -> list[str]:
    """What would change the verdict, in plain words, from the measured numbers."""
    d, p, pilot, v = report.decision, report.prompting, report.pilot, report.verification
    out = []
    if d.verdict == "fine_tune":
        if v is not None:
            g, against = v.difference, f"the {_against(v.baseline.arm)}"
        elif pilot is not None and pilot.gain is not None:
            g, against = pilot.gain, f"the {_against(pilot.baseline_arm)}"
        else:
            g = None
        if g is not None:
            out.append(
                f"More eval items showing the fine-tuned model no better than {against} "
                f"(its gain now {fmt.difference(g.diff, g.low, g.high)})."
            )
    elif d.verdict in ("prompt", "few_shot") and p is not None and p.plateau.best_score is not None:
        out.append(
            f"The best prompt falling short of the target {fmt.score(p.quality_target)} on more eval items "
            f"(now {fmt.score(p.plateau.best_score)})."
        )
        if pilot is not None and pilot.gain is not None:
            g = pilot.gain
            out.append(
                "A fine-tune that beats the prompt on the same items (the pilot's gain now "
                f"{fmt.difference(g.diff, g.low, g.high)})."
            )
    if p is not None and p.plateau.items_needed is not None and p.plateau.items_needed > p.n_eval:
        out.append(
            f"About {fmt.count(p.plateau.items_needed)} eval items (now {fmt.count(p.n_eval)}) to detect a "
            f"gain of {fmt.score(p.min_gain)} between prompts."
        )
    need = pilot.to_target if pilot is not None else None
    curve = pilot.curve if pilot is not None else None
    if d.verdict in ("collect_data", "fine_tune") and need is not None and need.value is not None:
        have = f" (the train split has {fmt.count(curve.n_full)})" if curve is not None else ""
        out.append(
            f"About {fmt.count(need.value)} training examples would reach the target, by the pilots' "
            f"curve{have}."
        )
    missing = no_prompt_to_price(report)
    if missing is not None:
        out.append(f"A prompt that beats the majority baseline: today {missing}.")
    if d.skipped:
        out.append(
            f"{len(d.skipped)} checks could not run because something they need was not measured "
            "(listed in the engineer's detail)."
        )
    return out or ["Nothing short of different measurements."]


def _against(arm: str | None) -> str:
    return "majority baseline" if arm in (None, "majority") else f"best prompt ({arm})"
