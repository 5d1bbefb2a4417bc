"""P(verdict) by resampling the eval items: synthetic arms with a known answer, then advise end to end."""

from __future__ import annotations

import json
from dataclasses import replace

import jsonschema
import numpy as np
import pytest

from advisor.decide import confidence
from advisor.decide.rules import load_rules
from advisor.measure.evaluate import ArmResult, ItemResult, PromptingResult, analyse, summarise
from advisor.types import TaskKind, Verdict

LABELS = ("negative", "positive")

RULES = """
[[rule]]
id = "t.meets"
kind = "vote"
verdict = "prompt"
weight = 2
message = "the cheap arm meets the target"
[[rule.when]]
signal = "prompt_meets_target"
op = "eq"
value = true
[[rule.source]]
title = "test"
citation = "a synthetic rule for this test"

[[rule]]
id = "t.misses"
kind = "vote"
verdict = "few_shot"
weight = 1
message = "the cheap arm misses the target"
[[rule.when]]
signal = "prompt_meets_target"
op = "eq"
value = false
[[rule.source]]
title = "test"
citation = "a synthetic rule for this test"
"""


@pytest.fixture
def ruleset(tmp_path):
    (tmp_path / "r.toml").write_text(RULES)
    return load_rules([tmp_path], include_shipped=False)


def _arm(name: str, kind: str, k: int, correct: np.ndarray, tokens: int) -> ArmResult:
    """Balanced items (targets alternate): the majority baseline scores 0.5, arms above it are honest."""
    gold = [LABELS[i % 2] for i in range(len(correct))]
    items = tuple(
        ItemResult(
            line=i + 1,
            input=f"item {i}",
            target=gold[i],
            prediction=gold[i] if ok else LABELS[1 - i % 2],
            correct=bool(ok),
            metrics={"accuracy": float(ok)},
            prompt_tokens=tokens,
        )
        for i, ok in enumerate(correct)
    )
    scores = summarise(items, TaskKind.CLASSIFY, LABELS, seed=0)
    return ArmResult(name, kind, k, None, items, scores, float(tokens))


def _result(zero_correct: np.ndarray, few_correct: np.ndarray, target: float) -> PromptingResult:
    arms = [
        _arm("zero_shot", "zero_shot", 0, zero_correct, 20),
        _arm("few_shot_k4", "few_shot", 4, few_correct, 90),
    ]
    return analyse(
        arms,
        backend="synthetic",
        model_id="none",
        task=TaskKind.CLASSIFY,
        labels=LABELS,
        seed=0,
        target_metric="accuracy",
        quality_target=target,
        min_gain=0.02,
        thresholds=load_rules([]).thresholds,
    )


def _p(ruleset, result: PromptingResult, n_resamples: int = confidence.N_RESAMPLES) -> tuple[Verdict, object]:
    from advisor.decide.verdict import decide
    from advisor.measure.evaluate import prompting_signals

    signals = prompting_signals(result)
    verdict = decide(ruleset, signals).verdict
    return verdict, confidence.of_prompting(ruleset, signals, verdict, result, n_resamples=n_resamples)


def test_a_score_sitting_on_the_target_gives_two_equally_likely_verdicts(ruleset) -> None:
    rng = np.random.default_rng(1)
    zero = rng.permutation(np.arange(400) < 320)  # accuracy exactly 0.800, the target
    verdict, conf = _p(ruleset, _result(zero, zero, target=0.8))
    assert verdict is Verdict.PROMPT  # 0.800 >= 0.800 on the measured items
    assert 0.4 <= conf.probability <= 0.6
    assert conf.runner_up is Verdict.FEW_SHOT
    assert conf.probability + conf.runner_up_share == pytest.approx(1.0)
    assert conf.n_resamples >= 500 and conf.n_items == 400


def test_a_score_far_above_the_target_is_a_near_certain_verdict(ruleset) -> None:
    zero = np.arange(400) < 360  # accuracy 0.90 against a target of 0.70
    verdict, conf = _p(ruleset, _result(zero, zero, target=0.7))
    assert verdict is Verdict.PROMPT
    assert conf.probability >= 0.95
    assert conf.runner_up is None or conf.runner_up_share <= 0.05


def test_the_measurement_is_seeded_and_chunked_without_changing_the_answer(ruleset, monkeypatch) -> None:
    zero = np.random.default_rng(2).permutation(np.arange(300) < 160)
    result = _result(zero, zero, target=0.52)
    _, first = _p(ruleset, result, n_resamples=100)
    monkeypatch.setattr(confidence, "CHUNK_CELLS", 300 * 7)  # 7 resamples per chunk instead of all at once
    _, again = _p(ruleset, result, n_resamples=100)
    assert first.n_resamples == 100
    assert first == again


def test_arms_scored_on_different_items_are_refused(ruleset) -> None:
    result = _result(np.arange(50) < 25, np.arange(50) < 30, target=0.5)
    shifted = result.arms[1].items[1:] + result.arms[1].items[:1]
    broken = replace(result, arms=(result.arms[0], replace(result.arms[1], items=shifted)))
    with pytest.raises(ValueError, match="same eval items"):
        _p(ruleset, broken)


def test_decision_json_carries_the_probability_and_the_vote_margin(ruleset) -> None:
    from advisor.decide.verdict import decide, with_confidence
    from advisor.measure.evaluate import prompting_signals

    result = _result(np.arange(200) < 180, np.arange(200) < 180, target=0.7)
    signals = prompting_signals(result)
    d = decide(ruleset, signals)
    assert d.to_dict()["confidence"] is None and d.to_dict()["confidence_label"] == "not measured"
    doc = with_confidence(d, confidence.of_prompting(ruleset, signals, d.verdict, result)).to_dict()
    assert doc["confidence"] == doc["confidence_detail"]["probability"] >= 0.95
    assert doc["confidence_label"] == "high"
    assert 0.0 <= doc["vote_margin"] <= 1.0
    json.dumps(doc)


# ---------------------------------------------------------------- advise: growing the eval split


def _advise_with_fake(tmp_path, monkeypatch, **settings):
    from fakes import FakeBackend

    from advisor import recipe
    from advisor.config import AdviseConfig
    from advisor.demo import write_demo_data

    fake = FakeBackend({"positive": {"good", "great", "fun"}, "negative": {"bad", "dull", "boring"}})
    data = write_demo_data(str(tmp_path / "data"), n=600)
    config = AdviseConfig(
        data=str(data),
        out=str(tmp_path / "run"),
        eval_size=40,
        dev_size=20,
        k_ladder=(1, 2),
        latency_samples=2,
        **settings,
    )
    doc = recipe.advise(config, backend=fake).as_dict()  # the JSON form, as decision.json holds it
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    return doc, split, fake


@pytest.mark.slow
def test_a_low_probability_grows_the_eval_split_in_seeded_chunks(tmp_path, monkeypatch) -> None:
    doc, split, _ = _advise_with_fake(tmp_path, monkeypatch, thresholds={"min_verdict_probability": 1.01})
    growth = doc["split"]["eval_growth"]
    assert growth["rounds"] == 2 and growth["initial_eval"] == 40 and growth["final_eval"] == 80
    assert "2 growth rounds" in growth["stopped"] and len(growth["probabilities"]) == 3
    added = set(growth["added_lines"])
    assert len(added) == 40 and added <= set(split["eval"]) and not added & set(split["train"])
    assert len(split["eval"]) == 80
    assert doc["prompting"]["n_eval"] == 80 and doc["signals"]["n_eval"] == 80
    assert doc["decision"]["confidence_detail"]["n_items"] == 80
    # no added item was a demonstration in any prompt, and the first 40 items kept their place
    demos = {
        line
        for path in (tmp_path / "run" / "predictions").glob("*.jsonl")
        for row in map(json.loads, path.read_text().splitlines())
        for line in row.get("demo_lines", [])
    }
    assert not demos & added
    from advisor.report.render import schema

    jsonschema.validate(doc, schema())


@pytest.mark.slow
def test_a_sure_verdict_or_a_spent_budget_keeps_the_split(tmp_path, monkeypatch) -> None:
    doc, split, _ = _advise_with_fake(tmp_path, monkeypatch, thresholds={"min_verdict_probability": 0.0})
    growth = doc["split"]["eval_growth"]
    assert growth["rounds"] == 0 and len(split["eval"]) == 40 and "at least" in growth["stopped"]
    assert 0.0 <= doc["decision"]["confidence"] <= 1.0

    # 40 items x 2 labels x 4 arms = 320 requests measured; 20 more items would need 160 more
    doc, split, _ = _advise_with_fake(
        tmp_path, monkeypatch, thresholds={"min_verdict_probability": 1.01}, max_requests=400
    )
    growth = doc["split"]["eval_growth"]
    assert growth["rounds"] == 0 and len(split["eval"]) == 40 and "budget" in growth["stopped"]


# ---------------------------------------------------------------- after verification


def _verified_run(tmp_path, ft_correct: np.ndarray):
    from report_docs import run_decision

    from advisor.document import Report
    from advisor.measure.evaluate import compare, prompting_signals, write_arm_predictions, write_predictions
    from pipeline.verify import FINETUNED, NO_GATE, build_verification, verification_signals

    n = len(ft_correct)
    result = _result(np.arange(n) < 7 * n // 10, np.arange(n) < 3 * n // 4, target=0.9)  # honest arms
    write_predictions(tmp_path, result)
    ft = _arm(FINETUNED, FINETUNED, 0, ft_correct, 10)
    write_arm_predictions(tmp_path, ft)
    best = result.arm(result.plateau.best_arm)
    cmp = compare(best.items, ft.items, metric="accuracy", seed=0, labels=LABELS)
    section = build_verification(
        baseline_name=best.name,
        baseline_items=best.items,
        finetuned=ft,
        comparison=cmp,
        metric="accuracy",
        quality_target=0.9,
        task=TaskKind.CLASSIFY,
        labels=LABELS,
        seed=0,
        latency={},
        adapter_dir="adapter",
        model_id="synthetic+lora",
        provenance=NO_GATE,
    )
    signals = {
        "n_examples": 5000,
        "prompting_measured": True,
        **prompting_signals(result),
        **verification_signals(section),
    }
    # A real run's document (its own folder) carrying these measurements and signals.
    doc = run_decision(tmp_path, "fine_tune")
    return Report.model_validate(
        {**doc, "signals": signals, "prompting": result.to_dict(), "verification": section}
    )


@pytest.mark.slow
def test_redecide_measures_p_verdict_on_the_verified_items(tmp_path) -> None:
    from pipeline.run import redecide

    report = _verified_run(tmp_path, np.arange(200) < 190)  # fine-tuned 0.95 against 0.75
    assert report.signals["finetune_verified"] is True
    without = redecide(report).decision
    assert without.confidence is None
    d = redecide(report, tmp_path).decision
    assert d.verdict == without.verdict
    detail = d.confidence_detail
    assert detail is not None and detail.n_items == 200 and detail.n_resamples >= 500
    assert sum(detail.shares.values()) == pytest.approx(1.0)
    assert d.confidence == detail.shares[d.verdict] >= 0.9  # a 40-point gain is no accident

    (tmp_path / "predictions" / "fine_tuned.jsonl").unlink()
    assert redecide(report, tmp_path).decision.confidence is None  # nothing to resample


# ---------------------------------------------------------------- futility: is more evaluation worth it?


def test_predictive_power_of_a_verdict_tends_to_its_share_and_falls_with_less_room() -> None:
    power = confidence.predictive_power
    # all the room in the world: the chance the margin is on this verdict's side, P(verdict) itself
    assert power(0.7, 100, 10**9, 0.9) == pytest.approx(0.7, abs=0.001)
    # a coin flip with four times the items: settles on this side about once in five, and less with less room
    assert power(0.5, 100, 400, 0.9) == pytest.approx(0.2296, abs=0.001)  # Phi(-1.2816 * 10 / sqrt(300))
    assert power(0.5, 100, 400, 0.9) > power(0.5, 100, 200, 0.9) > power(0.5, 100, 110, 0.9)
    # a verdict near the settled level with room to grow usually settles
    assert power(0.85, 200, 400, 0.9) > 0.5
    # nothing left to score: settled already or never
    assert power(0.95, 100, 100, 0.9) == 1.0 and power(0.6, 100, 100, 0.9) == 0.0


def _growth(n: int, reach_total: int, p: float, runner_up: float) -> tuple[object, object]:
    from advisor import recipe
    from advisor.decide.verdict import Confidence
    from advisor.document import EvalStep

    conf = Confidence(
        probability=p,
        runner_up=Verdict.FINE_TUNE,
        runner_up_share=runner_up,
        shares=((Verdict.COLLECT_DATA, p), (Verdict.FINE_TUNE, runner_up)),
        n_resamples=500,
        n_items=n,
        seed=0,
        method=confidence.METHOD,
    )
    growth = recipe.EvalSteps(
        held_out=tuple(range(1, reach_total + 1)), pending=[], lines=tuple(range(1, n + 1)), settled_at=0.9
    )
    growth.steps.append(
        EvalStep(
            n_eval=n,
            added=n,
            source="eval split",
            verdict="collect_data",
            probability=p,
            requests=1,
            tokens=1,
        )
    )
    return conf, growth


def test_growth_stops_when_the_items_within_reach_cannot_settle_the_verdict() -> None:
    from advisor import recipe

    # two verdicts at 50/50 after 300 items, 100 more within reach: settling is a long shot
    decision, growth = _growth(300, 400, 0.5, 0.5)
    assert not recipe.worth_growing(decision, growth, 400, 0.2)
    assert "futility" in growth.stopped and "400 eval items" in growth.stopped
    step = growth.steps[-1]
    assert step.reach == 400 and step.predictive_power is not None and step.predictive_power < 0.2
    # the same split after 50 items, with 400 within reach: worth scoring more
    decision, growth = _growth(50, 400, 0.5, 0.5)
    assert recipe.worth_growing(decision, growth, 400, 0.2) and growth.steps[-1].predictive_power >= 0.2
    # told to score everything (settled level above 1): never stopped for futility
    decision, growth = _growth(300, 400, 0.5, 0.5)
    growth.settled_at = 1.01
    assert recipe.worth_growing(decision, growth, 400, 0.2) and growth.steps[-1].reach is None
