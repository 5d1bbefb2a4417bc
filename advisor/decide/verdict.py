"""The verdict: pure functions from (rules, signals) to a `Decision`.

How the verdict is reached:
1. Every rule is evaluated (`advisor.decide.rules.evaluate`); rules whose signals were not measured are
   skipped and listed, never guessed.
2. Vetoes: a fired veto rule forbids its verdict. When a pilot fine-tune was measured (and no fine-tuned
   model verified yet), `fine_tune` is also forbidden unless a stop rule argues for it (the pilot's
   measured comparisons in rules/pilot.toml): votes from proxies never recommend it then
   (guard.measured_fine_tune). Independently of the rule files, `fine_tune` is
   always forbidden unless `prompting_measured` and `prompting_plateaued` are both True (the
   guard below, listed as a veto when no veto rule already forbids fine_tune), so no rule edit
   can make the tool recommend fine-tuning before prompting and few-shot options are exhausted.
3. Stop rules: if any fired stop rule argues for a verdict that is not vetoed, the one with the
   highest weight decides (ties: the first in load order).
4. Otherwise weighted votes: each fired vote rule adds its weight to its verdict; vetoed verdicts
   are dropped. No votes, or a tie at the top, gives `inconclusive`.

Confidence is a measured probability, not computed here: `advisor.decide.confidence` resamples the eval
items, recomputes the signals and runs `decide` on each resample; the share of resamples that give the
verdict is P(verdict) (`Confidence`, attached with `with_confidence`). Without per-item measurements
there is nothing to resample and the confidence is `None` ("not measured").

The vote margin (0-1) is the rules' own strength figure, kept for transparency, documented so a reader
can recompute it from decision.json:
    coverage = 1 - skipped / counted                    share of the counted rules that could be checked;
                                                        counted = the stop rules when a stop decided
                                                        (another stop could have overridden it),
                                                        otherwise all vote and stop rules
    base     = 0.9                                      decided by a stop rule
             = 0.4 + 0.5 * (top - runner_up) / total    decided by votes (total = all non-vetoed votes)
             = 0.4                                      tie at the top
             = 0.0                                      no votes at all
    vote_margin = base * (0.5 + 0.5 * coverage)
Confidence labels (of P(verdict)): high >= 0.75, medium >= 0.5, low otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from advisor.decide.rules import (
    NUMERIC_OPS,
    Condition,
    Op,
    RuleKind,
    RuleOutcome,
    RuleSet,
    Status,
    ThresholdValue,
    evaluate,
)
from advisor.decide.signals import CATALOGUE, SignalValue
from advisor.report import fmt
from advisor.types import Verdict

GUARD_ID = "guard.prompting_exhausted"
GUARD_MESSAGE = (
    "Fine-tuning is never recommended before prompting baselines are measured and have plateaued "
    "(prompting_measured must be true, and prompting_plateaued or ladder_exhausted)."
)
EVIDENCE_GUARD_ID = "guard.measured_fine_tune"
EVIDENCE_GUARD_MESSAGE = (
    "The pilot fine-tune neither beats the best honest prompt (measured, or by its learning curve at the "
    "full train split) nor matches it where the economics favour it; plateau, probe, domain and economics "
    "votes alone do not recommend fine-tuning."
)
NOT_MEASURED_NOTE = (
    " The fine-tuning side was not measured (no pilot fine-tune ran): any case for fine-tuning here rests "
    "on proxies."
)
HEADLINES = {
    Verdict.PROMPT: "Prompting is enough",
    Verdict.FEW_SHOT: "Use few-shot prompting",
    Verdict.FINE_TUNE: "Fine-tune",
    Verdict.COLLECT_DATA: "Collect more data first",
    Verdict.INCONCLUSIVE: "Inconclusive",
}
STOP_BASE = 0.9
VOTE_BASE = 0.4
VOTE_MARGIN_GAIN = 0.5
MAX_CHANGES = 8


@dataclass(frozen=True)
class Veto:
    verdict: Verdict
    rule_id: str
    message: str


@dataclass(frozen=True)
class Confidence:
    """P(verdict): the share of bootstrap resamples of the eval items on which `decide` gives the verdict.

    `shares` holds every verdict seen, most frequent first; the runner-up is the most frequent other one.
    """

    probability: float
    runner_up: Verdict | None
    runner_up_share: float
    shares: tuple[tuple[Verdict, float], ...]
    n_resamples: int
    n_items: int
    seed: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "probability": self.probability,
            "runner_up": None if self.runner_up is None else str(self.runner_up),
            "runner_up_share": self.runner_up_share,
            "shares": {str(v): s for v, s in self.shares},
            "n_resamples": self.n_resamples,
            "n_items": self.n_items,
            "seed": self.seed,
            "method": self.method,
        }


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    vote_margin: float  # the rules' weight-based strength (see the module doc), not a probability
    summary: str
    decided_by: str  # "stop" | "votes" | "tie" | "no_votes"
    deciding_rules: tuple[str, ...]
    scores: tuple[tuple[Verdict, float], ...]  # weighted votes per verdict, vetoed ones excluded
    fired: tuple[RuleOutcome, ...]
    skipped: tuple[RuleOutcome, ...]
    not_fired: tuple[str, ...]
    vetoes: tuple[Veto, ...]
    what_would_change: tuple[str, ...]
    confidence: Confidence | None = None  # None: not measured (no per-item results to resample)

    @property
    def confidence_label(self) -> str:
        return "not measured" if self.confidence is None else confidence_label(self.confidence.probability)

    @property
    def vetoed(self) -> tuple[Verdict, ...]:
        return tuple(dict.fromkeys(v.verdict for v in self.vetoes))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored under `decision` in decision.json."""
        return {
            "verdict": str(self.verdict),
            "confidence": None if self.confidence is None else self.confidence.probability,
            "confidence_label": self.confidence_label,
            "confidence_detail": None if self.confidence is None else self.confidence.to_dict(),
            "vote_margin": self.vote_margin,
            "summary": self.summary,
            "decided_by": self.decided_by,
            "deciding_rules": list(self.deciding_rules),
            "scores": {str(v): s for v, s in self.scores},
            "fired": [_outcome_dict(o) for o in self.fired],
            "skipped": [
                {
                    "id": o.rule.id,
                    "kind": str(o.rule.kind),
                    "verdict": str(o.rule.verdict or o.rule.vetoes),
                    "missing": list(o.missing),
                    "message": o.rule.message,
                }
                for o in self.skipped
            ],
            "not_fired": list(self.not_fired),
            "vetoed": [
                {"verdict": str(v.verdict), "rule_id": v.rule_id, "message": v.message} for v in self.vetoes
            ],
            "what_would_change": list(self.what_would_change),
        }


def prompting_exhausted(signals: Mapping[str, SignalValue]) -> bool:
    """The precondition for ever recommending fine-tuning: prompting measured, and plateaued or its ladder
    exhausted within the budget (then nothing more can be measured on the prompting side)."""
    return signals.get("prompting_measured") is True and (
        signals.get("prompting_plateaued") is True or signals.get("ladder_exhausted") is True
    )


def needs_measured_evidence(signals: Mapping[str, SignalValue]) -> bool:
    """A pilot fine-tune was measured and no fine-tuned model verified yet: then only a stop rule (the
    pilot's measured comparisons, rules/pilot.toml) can recommend fine-tuning, never proxy votes."""
    return signals.get("pilot_measured") is True and signals.get("finetune_measured") is not True


def with_confidence(decision: Decision, confidence: Confidence | None) -> Decision:
    return replace(decision, confidence=confidence)


def confidence_label(confidence: float) -> str:
    if confidence >= 0.75:
        return "high"
    if confidence >= 0.5:
        return "medium"
    return "low"


def decide(ruleset: RuleSet, signals: Mapping[str, SignalValue]) -> Decision:
    outcomes = evaluate(ruleset, signals)
    fired = [o for o in outcomes if o.status is Status.FIRED]
    skipped = [o for o in outcomes if o.status is Status.SKIPPED]
    not_fired = [o for o in outcomes if o.status is Status.NOT_FIRED]

    vetoes = [
        Veto(o.rule.argues_for, o.rule.id, o.rule.message) for o in fired if o.rule.kind is RuleKind.VETO
    ]
    if not prompting_exhausted(signals) and Verdict.FINE_TUNE not in {v.verdict for v in vetoes}:
        vetoes.append(Veto(Verdict.FINE_TUNE, GUARD_ID, GUARD_MESSAGE))
    evidence = [o for o in fired if o.rule.kind is RuleKind.STOP and o.rule.verdict is Verdict.FINE_TUNE]
    unvetoed = Verdict.FINE_TUNE not in {v.verdict for v in vetoes}
    if needs_measured_evidence(signals) and not evidence and unvetoed:
        vetoes.append(Veto(Verdict.FINE_TUNE, EVIDENCE_GUARD_ID, EVIDENCE_GUARD_MESSAGE))
    vetoed = {v.verdict for v in vetoes}

    arguing = [o for o in outcomes if o.rule.kind is not RuleKind.VETO]
    stop_rules = [o for o in arguing if o.rule.kind is RuleKind.STOP]

    scores: dict[Verdict, float] = {}
    for o in fired:
        if o.rule.kind is RuleKind.VOTE and o.rule.argues_for not in vetoed:
            scores[o.rule.argues_for] = scores.get(o.rule.argues_for, 0.0) + o.rule.weight
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])

    stops = [o for o in fired if o.rule.kind is RuleKind.STOP and o.rule.verdict not in vetoed]
    winner_stop = max(stops, key=lambda o: o.rule.weight) if stops else None  # max keeps the first on ties
    verdict: Verdict
    deciding: tuple[str, ...]
    if winner_stop is not None:
        verdict = winner_stop.rule.argues_for
        decided_by = "stop"
        deciding = (winner_stop.rule.id,)
        base = STOP_BASE
        summary = f"{HEADLINES[verdict]}: {winner_stop.rule.message}"  # type: ignore[index]
    elif not ranked:
        verdict = Verdict.INCONCLUSIVE
        decided_by = "no_votes"
        deciding = ()
        base = 0.0
        blocked = [o for o in fired if o.rule.kind is not RuleKind.VETO]
        if blocked:
            argued = list(dict.fromkeys(o.rule.verdict for o in blocked))
            reasons = [f"{v} ({next(x.message for x in vetoes if x.verdict is v)})" for v in argued]
            summary = (
                f"{HEADLINES[verdict]}: the only rules that fired argue for "
                f"{' and '.join(str(v) for v in argued)}, and each is ruled out: {'; '.join(reasons)}"
            )
        else:
            summary = (
                f"{HEADLINES[verdict]}: no rule argued for a verdict with the signals measured; "
                f"{len(skipped)} of {len(outcomes)} rules were skipped because their signals "
                "were not measured."
            )
    elif len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        verdict = Verdict.INCONCLUSIVE
        decided_by = "tie"
        deciding = ()
        base = VOTE_BASE
        summary = (
            f"{HEADLINES[verdict]}: {ranked[0][0]} and {ranked[1][0]} tie at {fmt.value(ranked[0][1])} "
            "in weighted votes."
        )
    else:
        verdict, top = ranked[0]
        runner_up = ranked[1][1] if len(ranked) > 1 else 0.0
        total = sum(scores.values())
        decided_by = "votes"
        voters = sorted(
            (o for o in fired if o.rule.kind is RuleKind.VOTE and o.rule.verdict is verdict),
            key=lambda o: -o.rule.weight,
        )
        deciding = tuple(o.rule.id for o in voters)
        base = VOTE_BASE + VOTE_MARGIN_GAIN * (top - runner_up) / total
        summary = (
            f"{HEADLINES[verdict]} (weighted votes {fmt.value(top)} against {fmt.value(runner_up)}): "  # type: ignore[index]
            f"{voters[0].rule.message}"
        )

    if signals.get("pilot_measured") is False and signals.get("finetune_measured") is not True:
        summary += NOT_MEASURED_NOTE
    if verdict is Verdict.FINE_TUNE and not prompting_exhausted(signals):
        raise RuntimeError("internal error: fine_tune chosen although prompting is not exhausted")

    counted = stop_rules if decided_by == "stop" else arguing
    coverage = 1.0 - sum(o.status is Status.SKIPPED for o in counted) / len(counted) if counted else 0.0
    vote_margin = round(base * (0.5 + 0.5 * coverage), 3)
    changes = _what_would_change(
        verdict,  # type: ignore[arg-type]
        decided_by,
        winner_stop,
        outcomes,
        vetoes,
        dict(ranked),  # best first
        signals,
        ruleset.thresholds,
    )
    return Decision(
        verdict=verdict,  # type: ignore[arg-type]
        vote_margin=vote_margin,
        summary=summary,
        decided_by=decided_by,
        deciding_rules=deciding,
        scores=tuple(ranked),
        fired=tuple(fired),
        skipped=tuple(skipped),
        not_fired=tuple(o.rule.id for o in not_fired),
        vetoes=tuple(vetoes),
        what_would_change=changes,
    )


# --------------------------------------------------------------------------- what would change

_NEGATE = {Op.LT: Op.GE, Op.LE: Op.GT, Op.GT: Op.LE, Op.GE: Op.LT, Op.EQ: Op.NE, Op.NE: Op.EQ}


def _what_would_change(
    verdict: Verdict,
    decided_by: str,
    winner_stop: RuleOutcome | None,
    outcomes: list[RuleOutcome],
    vetoes: list[Veto],
    scores: Mapping[Verdict, float],
    signals: Mapping[str, SignalValue],
    thresholds: Mapping[str, ThresholdValue],
) -> tuple[str, ...]:
    out: list[str] = []
    # 1. Undo what decided: the fired stop rule (any one of its conditions turning false suffices),
    #    or the fired votes for the verdict.
    if winner_stop is not None:
        for c in winner_stop.rule.when:
            text = change_text(c, signals, thresholds, to_fire=False)
            if text:
                out.append(text)
    elif decided_by == "votes":
        # Any one condition turning false drops a vote; name the measurable (numeric) ones, and the
        # flag of a single-condition rule.
        for o in outcomes:
            if o.fired and o.rule.kind is RuleKind.VOTE and o.rule.verdict is verdict:
                for c in o.rule.when:
                    if c.op in NUMERIC_OPS or len(o.rule.when) == 1:
                        text = change_text(c, signals, thresholds, to_fire=False)
                        if text:
                            out.append(f"{text}: drops the vote of {o.rule.id}")
        # ... and the numeric facts behind the runner-up's votes (e.g. the learning curve's shortfall).
        runner_up = next((v for v in scores if v is not verdict and scores[v] > 0), None)
        if runner_up is not None:
            for o in outcomes:
                if o.fired and o.rule.kind is RuleKind.VOTE and o.rule.verdict is runner_up:
                    for c in o.rule.when:
                        if c.op in NUMERIC_OPS:
                            text = change_text(c, signals, thresholds, to_fire=False)
                            if text:
                                out.append(f"{text}: removes the vote of {o.rule.id} for {runner_up}")
    # 2. Rules for another verdict that are one condition short of firing, strongest first.
    vetoed = {v.verdict for v in vetoes}
    near = []
    for o in outcomes:
        r = o.rule
        if o.status is not Status.NOT_FIRED or r.kind is RuleKind.VETO or r.verdict is verdict:
            continue
        if r.verdict in vetoed:
            continue
        failing = [c for c in r.when if not c.holds(thresholds, signals)]
        if len(failing) == 1:
            text = change_text(failing[0], signals, thresholds, to_fire=True)
            if text and text not in out:  # the same change may already be listed for the decisive rule
                effect = "would decide" if r.kind is RuleKind.STOP else "would vote for"
                near.append((r.kind is RuleKind.STOP, r.weight, f"{text}: {r.id} {effect} {r.verdict}"))
    out.extend(t for _, _, t in sorted(near, key=lambda x: (not x[0], -x[1])))
    # 3. A veto that removed votes.
    for v in vetoes:
        if not any(
            o.fired and o.rule.kind is not RuleKind.VETO and o.rule.verdict is v.verdict for o in outcomes
        ):
            continue
        if v.rule_id != GUARD_ID:
            out.append(f"{v.verdict} stays ruled out while {v.rule_id} fires: {v.message}")
        else:
            out.append(f"{v.verdict} stays ruled out until prompting is measured and has plateaued")
    # 4. Unmeasured signals.
    missing: dict[str, int] = {}
    n_skipped = 0
    for o in outcomes:
        if o.status is Status.SKIPPED:
            n_skipped += 1
            for name in o.missing:
                missing[name] = missing.get(name, 0) + 1
    if missing:
        names = sorted(missing, key=lambda n: -missing[n])
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        out.append(f"measuring {shown} would let {n_skipped} skipped rules apply")
    return tuple(dict.fromkeys(out))[:MAX_CHANGES]


def change_text(
    cond: Condition,
    signals: Mapping[str, SignalValue],
    thresholds: Mapping[str, ThresholdValue],
    *,
    to_fire: bool,
) -> str | None:
    """What has to change in one measured signal so that `cond` becomes true (to_fire) or false.

    Example: `n_examples lt min_examples` with n_examples=120, min_examples=500, to_fire=False
    gives "at least 380 more examples (n_examples 120, floor 500)".
    """
    left = signals.get(cond.signal)
    right = cond.operand(thresholds, signals)
    if left is None or right is None:
        return None
    op = cond.op if to_fire else _NEGATE.get(cond.op)
    spec = CATALOGUE[cond.signal]
    name = cond.signal

    if cond.op is Op.IN:
        options = ", ".join(fmt.value(x) for x in right)  # type: ignore[union-attr]
        return f"{name} one of {options} (now {fmt.value(left)})" if to_fire else f"{name} outside {options}"
    if op in NUMERIC_OPS:
        raise_ = op in (Op.GE, Op.GT)
        if spec.direction == ("down" if raise_ else "up"):
            return None  # e.g. "collect fewer examples" is never advice
        if cond.than_signal is not None:
            return _than_text(cond, left, right, op)  # type: ignore[arg-type]
        bound = "floor" if raise_ else "ceiling"
        if spec.type == "int" and spec.noun and isinstance(right, int | float):
            if raise_:  # the smallest acceptable count, then how far below it we are
                need = math.ceil(right if op is Op.GE else math.floor(right) + 1) - left  # type: ignore[operator]
                word = "more"
            else:
                need = left - math.floor(right if op is Op.LE else math.ceil(right) - 1)  # type: ignore[operator]
                word = "fewer"
            if need <= 0:
                return None
            return (
                f"at least {need} {word} {spec.noun} ({name} {fmt.value(left)}, {bound} {fmt.value(right)})"
            )
        rel = {Op.GE: "at least", Op.GT: "above", Op.LE: "at most", Op.LT: "below"}[op]  # type: ignore[index]
        return f"{name} {rel} {fmt.value(right)} (now {fmt.value(left)})"
    if op is Op.EQ:
        return f"{name} {fmt.value(right)} (now {fmt.value(left)})"
    if op is Op.NE:
        if isinstance(right, bool):
            return f"{name} {fmt.value(not right)} (now {fmt.value(left)})"
        return f"{name} other than {fmt.value(right)}"
    return None


def _than_text(cond: Condition, left: Any, right: Any, op: Op) -> str:
    """Signal-against-signal, e.g. examples_needed > n_examples: say how much the other side must move."""
    other = CATALOGUE[cond.than_signal]  # type: ignore[index]
    # op holds when `left op right`; moving the right-hand signal is what the user controls.
    if op in (Op.LE, Op.LT) and other.noun:  # right must rise to (at least) left
        need = left - right + (1 if op is Op.LT else 0)
        if need > 0:
            return (
                f"at least {fmt.value(need)} more {other.noun} "
                f"({cond.than_signal} {fmt.value(right)}, {cond.signal} {fmt.value(left)})"
            )
    sym = {Op.LT: "<", Op.LE: "<=", Op.GT: ">", Op.GE: ">="}[op]
    return f"{cond.signal} {sym} {cond.than_signal} (now {fmt.value(left)} vs {fmt.value(right)})"


def _outcome_dict(o: RuleOutcome) -> dict[str, Any]:
    r = o.rule
    return {
        "id": r.id,
        "kind": str(r.kind),
        "verdict": str(r.verdict) if r.verdict else None,
        "vetoes": str(r.vetoes) if r.vetoes else None,
        "weight": r.weight,
        "message": r.message,
        "note": r.note,
        "conditions": [c.describe() for c in r.when],
        "evidence": o.evidence(),
        "sources": [s.to_dict() for s in r.sources],
        "file": r.file,
    }
