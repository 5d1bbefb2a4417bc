"""The verdict: a table of signal sets reaching every verdict with the shipped rules, and the guarantees."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest

from advisor.decide.rules import load_rules
from advisor.decide.verdict import GUARD_ID, decide
from advisor.types import Verdict

# Signals of a measured classification run where nothing argues yet; each case adds its facts.
MEASURED: dict[str, Any] = {
    "n_examples": 2400,
    "n_train": 2100,
    "n_dev": 100,
    "n_eval": 200,
    "task_kind": "classify",
    "minority_share": 0.42,
    "conflict_share": 0.004,
    "leakage_count": 0,
    "prompting_measured": True,
    "prompt_meets_target": False,
    "few_shot_meets_target": False,
    "target_within_ci": False,
    "prompting_plateaued": True,
    "eval_items_needed": 150,
    "volume_per_day": 2000.0,
    "break_even_within_horizon": None,
    "probe_beats_prompting": False,
    "examples_needed": 1500,
}

CASES: list[tuple[str, dict[str, Any], Verdict, str, tuple[str, ...]]] = [
    # (name, signals, verdict, decided_by, rules that must have decided)
    (
        "zero-shot meets the target",
        {**MEASURED, "prompt_meets_target": True, "prompting_plateaued": False},
        Verdict.PROMPT,
        "stop",
        ("prompting.meets_target",),
    ),
    (
        "prompt meets the target even with too little data",
        {"n_examples": 120, "prompting_measured": True, "prompt_meets_target": True},
        Verdict.PROMPT,
        "stop",
        ("prompting.meets_target",),
    ),
    (
        "few-shot meets the target",
        {**MEASURED, "few_shot_meets_target": True, "prompting_plateaued": False},
        Verdict.FEW_SHOT,
        "votes",
        ("prompting.few_shot_meets_target", "prompting.still_improving"),
    ),
    (
        "rare task: fine-tuning is overkill",
        {**MEASURED, "volume_per_day": 20.0, "prompting_plateaued": False},
        Verdict.FEW_SHOT,
        "votes",
        ("economics.low_volume_overkill", "prompting.still_improving"),
    ),
    (
        "plateau below target, high volume, latency over budget",
        {**MEASURED, "volume_per_day": 50_000.0, "latency_over_budget": True},
        Verdict.FINE_TUNE,
        "votes",
        (
            "prompting.plateau_below_target",
            "economics.high_volume_narrow_task",
            "economics.latency_over_budget",
        ),
    ),
    (
        "legal language, consistent style, probe beats prompting",
        {
            **MEASURED,
            "task_kind": "generate",
            "minority_share": None,
            "domain": "legal",
            "needs_consistent_style": True,
            "probe_beats_prompting": True,
        },
        Verdict.FINE_TUNE,
        "votes",
        (
            "prompting.plateau_below_target",
            "prompting.probe_beats_prompting",
            "domain.specialist_language",
            "domain.consistent_style",
        ),
    ),
    (
        "below the 500-example floor (data only)",
        {"n_examples": 120, "task_kind": "classify", "prompting_measured": False},
        Verdict.COLLECT_DATA,
        "stop",
        ("data.min_examples",),
    ),
    (
        "learning curve and conflicting targets outweigh the plateau",
        {**MEASURED, "n_examples": 900, "examples_needed": 4000, "conflict_share": 0.12},
        Verdict.COLLECT_DATA,
        "votes",
        ("data.learning_curve_short", "data.conflicting_targets"),
    ),
    (
        "data-only run with enough data: nothing to decide on",
        {
            "n_examples": 11_711,
            "task_kind": "classify",
            "minority_share": 0.42,
            "conflict_share": 0.001,
            "leakage_count": 0,
            "prompting_measured": False,
        },
        Verdict.INCONCLUSIVE,
        "no_votes",
        (),
    ),
    (
        "target inside the confidence interval, eval set too small",
        {**MEASURED, "prompting_plateaued": None, "target_within_ci": True, "eval_items_needed": 900},
        Verdict.INCONCLUSIVE,
        "votes",
        ("prompting.target_within_ci", "prompting.eval_too_small"),
    ),
    (
        "no arm beats the majority and the fine-tune failed verification: no prompt to recommend either",
        {
            **MEASURED,
            "n_examples": 800,  # small: data.small_for_fine_tuning votes few_shot
            "examples_needed": None,
            "prompting_beats_majority": False,
            "finetune_verified": False,
        },
        Verdict.INCONCLUSIVE,
        "no_votes",
        (),
    ),
    (
        "no arm beats the majority and prompting still improves: neither prompting nor fine-tuning",
        {
            **MEASURED,
            "examples_needed": None,
            "prompting_plateaued": False,
            "prompting_beats_majority": False,
        },
        Verdict.INCONCLUSIVE,
        "no_votes",
        (),
    ),
    (
        "a tie at the top",
        {**MEASURED, "prompting_plateaued": None, "target_within_ci": True, "conflict_share": 0.2},
        Verdict.INCONCLUSIVE,
        "tie",
        (),
    ),
]


@pytest.fixture(scope="module")
def ruleset():
    return load_rules()


@pytest.mark.parametrize(
    ("name", "signals", "verdict", "decided_by", "deciding"), CASES, ids=[c[0] for c in CASES]
)
def test_verdict_table(ruleset, name, signals, verdict, decided_by, deciding) -> None:
    d = decide(ruleset, signals)
    assert d.verdict is verdict, d.summary
    assert d.decided_by == decided_by
    assert set(d.deciding_rules) == set(deciding)
    assert 0.0 <= d.vote_margin <= 1.0
    assert d.confidence is None and d.confidence_label == "not measured"  # P(verdict) needs resampling
    assert d.summary
    json.dumps(d.to_dict())  # the JSON form is plain data


def test_every_verdict_is_reached() -> None:
    assert {c[2] for c in CASES} == set(Verdict)


def test_floor_names_the_shortfall(ruleset) -> None:
    d = decide(ruleset, {"n_examples": 120, "task_kind": "classify"})
    assert d.what_would_change[0] == "at least 380 more examples (n_examples 120, floor 500)"
    fired = {o.rule.id: o for o in d.fired}
    assert fired["data.min_examples"].evidence() == {
        "signals": {"n_examples": 120},
        "thresholds": {"min_examples": 500},
    }
    # an override moves the floor and the advice with it
    lowered = decide(
        load_rules(overrides={"min_examples": 100}), {"n_examples": 120, "task_kind": "classify"}
    )
    assert lowered.verdict is not Verdict.COLLECT_DATA
    assert "data.min_examples" in lowered.not_fired


def test_learning_curve_shortfall_is_named(ruleset) -> None:
    d = decide(ruleset, {**MEASURED, "n_examples": 900, "examples_needed": 4000, "conflict_share": 0.12})
    assert "at least 3100 more examples (n_examples 900, examples_needed 4000)" in " ".join(
        d.what_would_change
    )


def test_skipped_rules_are_listed_with_their_missing_signals(ruleset) -> None:
    d = decide(ruleset, {"n_examples": 120, "task_kind": "classify"})
    skipped = {o.rule.id: o.missing for o in d.skipped}
    assert skipped["prompting.meets_target"] == ("prompt_meets_target",)
    assert skipped["economics.latency_over_budget"] == ("latency_over_budget",)
    # nothing unmeasured is guessed: no skipped rule is also fired or not-fired
    assert not set(skipped) & ({o.rule.id for o in d.fired} | set(d.not_fired))
    assert len(d.fired) + len(d.skipped) + len(d.not_fired) == len(ruleset.rules)
    as_dict = d.to_dict()
    assert {"id": "prompting.meets_target", "missing": ["prompt_meets_target"]}.items() <= next(
        s for s in as_dict["skipped"] if s["id"] == "prompting.meets_target"
    ).items()
    assert any(c.startswith("measuring ") for c in d.what_would_change)


def test_never_fine_tune_unless_prompting_measured_and_plateaued(ruleset) -> None:
    """Every combination of the fine-tuning arguments, with prompting not exhausted: never fine_tune."""
    rng = random.Random(0)
    pro_fine_tune = {
        "volume_per_day": 80_000.0,
        "latency_over_budget": True,
        "break_even_within_horizon": True,
        "probe_beats_prompting": True,
        "domain": "medical",
        "domain_ppl_ratio": 250.0,
        "needs_consistent_style": True,
    }
    for measured, plateaued in itertools.product((True, False, None), repeat=2):
        if measured is True and plateaued is True:
            continue
        for _ in range(20):
            chosen = {k: v for k, v in pro_fine_tune.items() if rng.random() < 0.7}
            signals = {**MEASURED, **chosen, "prompting_measured": measured, "prompting_plateaued": plateaued}
            d = decide(ruleset, signals)
            assert d.verdict is not Verdict.FINE_TUNE
            assert Verdict.FINE_TUNE in d.vetoed
    # and the same arguments with prompting exhausted do give fine_tune
    assert decide(ruleset, {**MEASURED, **pro_fine_tune}).verdict is Verdict.FINE_TUNE


def test_guard_holds_even_without_the_veto_rules(tmp_path: Path) -> None:
    """A user rule set with a fine_tune stop rule and no vetoes still cannot skip prompting."""
    (tmp_path / "r.toml").write_text(
        """
[[rule]]
id = "team.always_tune"
kind = "stop"
verdict = "fine_tune"
weight = 100
message = "We always fine-tune high-volume tasks."

[[rule.when]]
signal = "volume_per_day"
op = "gt"
value = 1000

[rule.source]
title = "Team policy"
citation = "Internal, 2026"
""",
        encoding="utf-8",
    )
    rs = load_rules([tmp_path], include_shipped=False)
    d = decide(rs, {"volume_per_day": 5000.0})
    assert d.verdict is Verdict.INCONCLUSIVE
    assert [v.rule_id for v in d.vetoes] == [GUARD_ID]
    assert "fine_tune stays ruled out until prompting is measured and has plateaued" in d.what_would_change
    exhausted = decide(
        rs, {"volume_per_day": 5000.0, "prompting_measured": True, "prompting_plateaued": True}
    )
    assert exhausted.verdict is Verdict.FINE_TUNE and exhausted.decided_by == "stop"


def test_decision_is_frozen_and_pure(ruleset) -> None:
    signals = {**MEASURED, "volume_per_day": 50_000.0}
    before = dict(signals)
    a, b = decide(ruleset, signals), decide(ruleset, signals)
    assert signals == before
    assert a.to_dict() == b.to_dict()
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.verdict = Verdict.PROMPT  # type: ignore[misc]


def test_vote_margin_grows_with_coverage_and_margin(ruleset) -> None:
    sparse = decide(ruleset, {"n_examples": 120})
    full = decide(ruleset, {**MEASURED, "n_examples": 120, "prompt_meets_target": False})
    assert sparse.verdict is full.verdict is Verdict.COLLECT_DATA
    assert full.vote_margin > sparse.vote_margin
    base = {**MEASURED, "n_examples": 900, "examples_needed": 4000, "conflict_share": 0.3}
    narrow = decide(ruleset, base)  # collect_data 5 against fine_tune 3
    wide = decide(ruleset, {**base, "leakage_count": 2})  # collect_data 6.5 against 3
    assert narrow.verdict is wide.verdict is Verdict.COLLECT_DATA
    assert wide.vote_margin > narrow.vote_margin


@pytest.mark.parametrize(("volume", "verdict"), [(20000.0, Verdict.FINE_TUNE), (50.0, Verdict.FEW_SHOT)])
def test_volume_alone_moves_a_plateaued_task(ruleset, volume: float, verdict: Verdict) -> None:
    # The signals of the Rotten Tomatoes demo: prompting plateaued far below the target, a probe beats
    # it, the few-shot prompt misses the latency budget. Only the declared volume differs.
    signals = {
        **MEASURED,
        "probe_beats_prompting": True,
        "latency_over_budget": True,
        "volume_per_day": volume,
        "break_even_within_horizon": volume > 1000,
    }
    d = decide(ruleset, signals)
    assert d.verdict is verdict, d.summary
    fired = {o["id"] for o in d.to_dict()["fired"]}
    assert ("economics.low_volume_overkill" in fired) == (volume < 100)


def test_domain_shift_is_a_rule_threshold_the_user_can_override() -> None:
    signals = {**MEASURED, "domain_ppl_ratio": 25.0}
    fired = {o.rule.id for o in decide(load_rules(), signals).fired}
    assert "domain.language_shift" in fired
    stricter = load_rules(overrides={"domain_shift_ratio": "30"})
    assert "domain.language_shift" not in {o.rule.id for o in decide(stricter, signals).fired}


# A run like the moral-foundations row of the decision-quality panel: every arm below guessing, prompting
# plateaued, and the word/bigram probe no better than guessing either.
AT_CHANCE: dict[str, Any] = {
    **MEASURED,
    "examples_needed": None,
    "prompting_beats_majority": False,
    "chance_score": 0.10,
    "probe_score_low": 0.07,
    "finetune_measured": False,
    "pilot_measured": False,  # --no-pilot: the probe is the cheap signal
}


def test_a_probe_at_chance_vetoes_recommending_fine_tuning(ruleset) -> None:
    d = decide(ruleset, AT_CHANCE)
    assert d.verdict is Verdict.INCONCLUSIVE, d.summary
    assert "prompting.probe_at_chance_blocks_fine_tune" in {v.rule_id for v in d.vetoes}
    # the same run with a probe clearly above guessing: fine-tuning is back on the table
    learnable = decide(ruleset, {**AT_CHANCE, "probe_score_low": 0.35})
    assert learnable.verdict is Verdict.FINE_TUNE, learnable.summary
    assert "prompting.probe_at_chance_blocks_fine_tune" not in {v.rule_id for v in learnable.vetoes}


def test_a_verified_fine_tune_lifts_the_probe_veto(ruleset) -> None:
    verified = {**AT_CHANCE, "finetune_measured": True, "finetune_verified": True}
    d = decide(ruleset, verified)
    assert d.verdict is Verdict.FINE_TUNE, d.summary
    assert "verification.verified" in d.deciding_rules
    failed = decide(ruleset, {**verified, "finetune_verified": False})
    assert failed.verdict is not Verdict.FINE_TUNE
    assert {v.rule_id for v in failed.vetoes} >= {"verification.not_verified_blocks_fine_tune"}
