"""The pilot fine-tune: the verdict read from two measured curves (pure, synthetic curves), and the
pilot's mechanics on the tiny random Llama (the `train` loop, nested subsets, reuse, the arms' harness)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from advisor.decide import rules
from advisor.decide.verdict import EVIDENCE_GUARD_ID, decide
from advisor.finetune import curve as curve_mod
from advisor.finetune import pilot
from advisor.finetune.config import TrainConfig
from advisor.measure import evaluate
from advisor.measure.evaluate import ArmResult, ItemResult
from advisor.types import Example, Message, TaskKind, Verdict

LABELS = ("neg", "pos")
N_EVAL, N_DEV = 400, 300
N_TRAIN, N_EXAMPLES = 1000, 1700  # the full train split; all examples (train + dev + eval)
SIZES = (100, 200, 400)  # the pilots: budget-limited below the full train split


def _items(accuracy: float, n: int, seed: int, tokens: int = 20) -> tuple[ItemResult, ...]:
    """`n` balanced items, exactly round(accuracy * n) of them right, in a seeded order."""
    rng = np.random.default_rng(seed)
    right = np.zeros(n, dtype=bool)
    right[rng.permutation(n)[: round(accuracy * n)]] = True
    out = []
    for i in range(n):
        target = LABELS[i % 2]
        pred = target if right[i] else LABELS[1 - i % 2]
        out.append(
            ItemResult(i, f"text {i}", target, pred, bool(right[i]), {"accuracy": float(right[i])}, tokens)
        )
    return tuple(out)


def _arm(name: str, kind: str, k: int, accuracy: float, seed: int, tokens: int) -> ArmResult:
    items = _items(accuracy, N_EVAL, seed, tokens)
    scores = evaluate.summarise(items, TaskKind.CLASSIFY, LABELS, 0)
    return ArmResult(name, kind, k, "stratified" if k else None, items, scores, float(tokens))


def _prompting(ruleset: rules.RuleSet) -> evaluate.PromptingResult:
    """Zero-shot 0.60, k=1 0.70, k=2 0.70: the few-shot arm is best, the costlier one no better (plateau)."""
    arms = [
        _arm("zero_shot", "zero_shot", 0, 0.60, 1, 20),
        _arm("few_shot_k1", "few_shot", 1, 0.70, 2, 60),
        _arm("few_shot_k2", "few_shot", 2, 0.70, 2, 100),
    ]
    return evaluate.analyse(
        arms,
        backend="fake",
        model_id="fake",
        task=TaskKind.CLASSIFY,
        labels=LABELS,
        seed=0,
        target_metric="accuracy",
        quality_target=0.95,
        min_gain=0.05,
        thresholds=ruleset.thresholds,
        limit=2,
    )


def _pilot_run(dev: tuple[float, float, float], eval_accuracy: float) -> pilot.PilotRun:
    cfg = TrainConfig()
    plan = pilot.PilotPlan(SIZES, tuple(pilot.steps_for(n, cfg) for n in SIZES), 200, cfg)
    dev_items = tuple(_items(a, N_DEV, 10 + i) for i, a in enumerate(dev))
    eval_items = {it.line: it for it in _items(eval_accuracy, N_EVAL, 7)}
    return pilot.PilotRun("k", "tiny", plan, dev_items, (1.0, 2.0, 3.0), eval_items)


def _signals(prompting: evaluate.PromptingResult, section) -> dict:
    signals = {
        "n_examples": N_EXAMPLES,
        "n_train": N_TRAIN,
        "n_eval": N_EVAL,
        "task_kind": "classify",
        "finetune_measured": False,
        **evaluate.prompting_signals(prompting),
    }
    signals.update(pilot.signals(section, N_EXAMPLES, N_TRAIN))
    return signals


@pytest.fixture(scope="module")
def ruleset() -> rules.RuleSet:
    return rules.load_rules([])


def test_a_pilot_that_beats_the_prompt_gives_fine_tune(ruleset) -> None:
    prompting = _prompting(ruleset)
    assert prompting.plateau.plateaued and prompting.plateau.best_arm == "few_shot_k1"
    section = pilot.analyse(_pilot_run((0.70, 0.78, 0.84), 0.85), prompting, N_TRAIN)
    assert section.gain is not None and section.gain.low > 0  # 0.85 vs 0.70 on the same 400 items
    decision = decide(ruleset, _signals(prompting, section))
    assert decision.verdict is Verdict.FINE_TUNE
    assert decision.deciding_rules == ("pilot.beats_prompt",)


def test_a_curve_crossing_the_prompt_only_beyond_the_data_gives_collect_data_with_the_count(ruleset) -> None:
    prompting = _prompting(ruleset)
    dev = (0.50, 0.58, 0.63)
    section = pilot.analyse(_pilot_run(dev, 0.63), prompting, N_TRAIN)
    assert section.curve is not None and section.curve.trend
    assert section.full_gain is not None and section.full_gain.diff < 0  # still below at the full split
    signals = _signals(prompting, section)
    # The count: where the fitted curve rises by the pilot's shortfall on the eval items (0.70 - 0.63),
    # in training examples, plus the held-out items (the unit of n_examples).
    fitted = curve_mod.fit(SIZES, dev)
    expected = math.ceil(fitted.examples_for(fitted.score(SIZES[-1]) + 0.07)) + N_EXAMPLES - N_TRAIN
    assert signals["pilot_examples_to_beat_prompt"] == expected
    assert N_EXAMPLES < expected <= 10 * N_EXAMPLES
    decision = decide(ruleset, signals)
    assert decision.verdict is Verdict.COLLECT_DATA
    assert decision.deciding_rules == ("pilot.crosses_beyond_data",)
    assert section.to_beat_prompt is not None and section.to_beat_prompt.low is not None


def test_a_pilot_below_the_prompt_without_a_trend_gives_few_shot(ruleset) -> None:
    prompting = _prompting(ruleset)
    section = pilot.analyse(_pilot_run((0.55, 0.56, 0.55), 0.56), prompting, N_TRAIN)
    assert section.curve is not None and not section.curve.trend  # no trend: nothing extrapolated
    assert section.curve.at_full.value == pytest.approx(0.55)
    assert section.to_beat_prompt is not None and section.to_beat_prompt.value is None  # never
    signals = _signals(prompting, section)
    decision = decide(ruleset, signals)
    assert decision.verdict is Verdict.FEW_SHOT
    assert decision.deciding_rules == ("pilot.few_shot_as_good",)


def test_with_a_pilot_measured_proxy_votes_alone_never_make_fine_tune(ruleset) -> None:
    """Plateau, probe and economics votes for fine_tune are vetoed when the pilot shows no advantage."""
    prompting = _prompting(ruleset)
    section = pilot.analyse(_pilot_run((0.66, 0.69, 0.72), 0.70), prompting, N_TRAIN)
    signals = _signals(prompting, section)
    signals.update(probe_beats_prompting=True, volume_per_day=50_000, latency_over_budget=True)
    assert signals["pilot_gain_low"] < 0 and signals["pilot_gain_low"] < -0.02  # not non-inferior
    decision = decide(ruleset, signals)
    assert decision.verdict is not Verdict.FINE_TUNE
    assert any(v.rule_id == EVIDENCE_GUARD_ID for v in decision.vetoes)
    fired = {o.rule.id for o in decision.fired}
    assert {"prompting.probe_beats_prompting", "economics.latency_over_budget"} <= fired  # shown beside


def test_no_pilot_says_the_fine_tuning_side_was_not_measured() -> None:
    section = pilot.unmeasured("not measured: --no-pilot")
    signals = pilot.signals(section, 1000, 700)
    assert signals["pilot_measured"] is False
    assert all(signals[name] is None for name in pilot.SIGNAL_NAMES if name != "pilot_measured")
    assert "examples_needed" not in signals  # the probe's curve stays the cheap signal


def test_the_curve_fit_is_constrained_and_honest_about_no_trend() -> None:
    rising = curve_mod.fit([25, 50, 100], [0.60, 0.68, 0.74])
    assert rising.trend and rising.b > 0 and rising.a <= 1.0
    assert rising.score(700) > 0.74 and rising.examples_for(0.70) < 100
    assert rising.examples_for(rising.a + 0.01) == math.inf
    falling = curve_mod.fit([25, 50, 100], [0.70, 0.65, 0.60])  # more data never predicted to hurt
    assert not falling.trend and falling.b == 0
    flat = curve_mod.fit([25, 50, 100], [0.6, 0.7, 0.8], trend=False)
    assert flat.score(10_000) == 0.8 and flat.examples_for(0.81) == math.inf


def test_the_plan_fits_the_step_budget_with_nested_sizes() -> None:
    cfg = TrainConfig()
    plan = pilot.plan_pilot(700, 60, cfg)
    assert isinstance(plan, pilot.PilotPlan)
    assert plan.total_steps <= 60 and plan.sizes[0] < plan.sizes[1] < plan.sizes[2] <= 700
    bigger = pilot.plan_pilot(700, 61 + plan.total_steps, cfg)
    assert isinstance(bigger, pilot.PilotPlan) and bigger.sizes[-1] > plan.sizes[-1]
    assert isinstance(pilot.plan_pilot(20, 60, cfg), str)  # 5 examples do not fill a batch of 8
    assert pilot.plan_pilot(10_000, 5, cfg) == pilot.plan_pilot(10_000, 5, cfg)


def test_the_nested_order_keeps_label_shares_in_every_prefix() -> None:
    train = [
        Example(i, (Message("user", f"t{i}"),), lab, lab) for i, lab in enumerate(["a"] * 300 + ["b"] * 100)
    ]
    order = pilot.nested_order(train, seed=3)
    assert sorted(ex.line for ex in order) == list(range(400))
    for n in (20, 100, 200):
        share = sum(ex.label == "b" for ex in order[:n]) / n
        assert abs(share - 0.25) <= 1.5 / n + 0.01
    assert order == pilot.nested_order(train, seed=3) and order != pilot.nested_order(train, seed=4)


# ------------------------------------------------------------------ mechanics on the tiny model

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from tiny import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("tiny"))


def test_pilots_train_with_the_train_loop_score_dev_and_eval_and_are_reused(
    model_dir, tmp_path, monkeypatch
) -> None:
    from tiny import rotten_tomatoes_examples

    from advisor.finetune import loop
    from advisor.rundir import RunDir

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        examples = rotten_tomatoes_examples(70, seed=3)
        train, dev, eval_items = examples[:40], examples[40:55], examples[55:]
        job = pilot.PilotTask(model_dir, "tiny", TaskKind.CLASSIFY, ("fresh", "rotten"), tuple(train),
                              tuple(dev), seed=0, max_gen_tokens=4, device="cpu")  # fmt: skip
        plan = pilot.plan_pilot(len(train), 30, pilot.recipe(0))
        assert isinstance(plan, pilot.PilotPlan) and plan.sizes == (10, 20, 40)
        calls: list[int] = []
        real_train = loop.train

        def counting_train(model, subset, *args, **kwargs):
            calls.append(len(subset))
            return real_train(model, subset, *args, **kwargs)

        monkeypatch.setattr(pilot, "train", counting_train)
        run_dir = RunDir(tmp_path / "run").create()
        run = pilot.run_pilot(run_dir, job, plan, "key-1")
        assert calls == [10, 20, 40]  # the one training loop, on nested subsets
        assert [len(d) for d in run.dev] == [15, 15, 15] and not run.reused
        assert (tmp_path / "run" / "pilot" / "n-40" / "adapter" / "adapter_config.json").is_file()
        run = pilot.score_eval(run_dir, job, run, eval_items)
        assert sorted(run.eval_items) == sorted(ex.line for ex in eval_items)
        assert all(it.prediction in ("fresh", "rotten") for it in run.eval_items.values())

        again = pilot.run_pilot(run_dir, job, plan, "key-1")  # the same advise again: nothing trained
        assert calls == [10, 20, 40] and again.reused
        assert again.dev == run.dev and again.eval_items == run.eval_items
        pilot.run_pilot(run_dir, job, plan, "key-2")  # another recipe, data or model: trained again
        assert calls == [10, 20, 40] * 2
    finally:
        torch.set_num_threads(threads)


def test_p_verdict_resamples_the_pilot_with_the_arms(ruleset, tmp_path) -> None:
    """The pilot's eval predictions are drawn with the arms' (paired): a clear win stays fine_tune on most
    draws, and a pilot level with the prompt moves the pilot signals from draw to draw."""
    from advisor.decide import confidence
    from advisor.rundir import RunDir

    prompting = _prompting(ruleset)

    def p_verdict(dev: tuple[float, float, float], eval_accuracy: float) -> tuple[float, set]:
        run = _pilot_run(dev, eval_accuracy)
        step = pilot.PilotStep(RunDir(tmp_path), N_TRAIN, N_EXAMPLES, job=None, run=run)
        step.fitted = pilot.fit_curve(run, prompting, N_TRAIN)
        extra = step.resampler(prompting)
        assert extra is not None
        section = pilot.with_eval(
            step.fitted, prompting, [run.eval_items[it.line] for it in prompting.arms[0].items]
        )
        signals = _signals(prompting, section)
        verdict = decide(ruleset, signals).verdict
        conf = confidence.of_prompting(ruleset, signals, verdict, prompting, n_resamples=40, extra=extra)
        idx = np.random.default_rng(1).integers(0, N_EVAL, size=(3, N_EVAL))
        gains = {round(extra(confidence.resample_prompting(prompting, i), i)["pilot_gain"], 4) for i in idx}
        return conf.probability, gains

    sure, gains = p_verdict((0.70, 0.78, 0.84), 0.85)
    assert sure >= 0.9 and len(gains) > 1  # the resampled pilot gain varies with the draw


def test_no_pilot_flag_turns_the_pilot_off_and_the_default_keeps_it_on(tmp_path) -> None:
    from advisor.cli import _advise_config, build_parser

    data = tmp_path / "d.jsonl"
    data.write_text("")
    on = _advise_config(build_parser().parse_args(["advise", str(data)]))
    off = _advise_config(build_parser().parse_args(["advise", str(data), "--no-pilot"]))
    assert on.pilot is True and off.pilot is False and on.pilot_steps == off.pilot_steps == 60
