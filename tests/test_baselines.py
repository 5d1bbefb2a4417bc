"""Honest baselines: the majority predictor, degenerate arms, the metric that follows the labels, and
label-bias calibration estimated without eval labels."""

from __future__ import annotations

import math
import random

import pytest
from fakes import FakeBackend

from advisor.decide.rules import load_rules
from advisor.document import Prompting
from advisor.measure import calibration
from advisor.measure.baselines import choose_metric, compute_baselines, judge_degenerate
from advisor.measure.evaluate import evaluate_arms, majority_items, prompting_signals
from advisor.measure.prompts import build_ladder, format_hint, render_messages, system_instruction
from advisor.report.markdown import prompting_section
from advisor.types import Example, Message, TaskKind

LABELS = ("ham", "spam")
THRESHOLDS = {k: float(v) for k, v in load_rules([]).thresholds.items() if isinstance(v, int | float)}


def test_majority_and_uniform_baselines():
    targets = ["ham"] * 86 + ["spam"] * 14
    b = compute_baselines(targets, LABELS)
    assert b.majority_label == "ham" and b.majority_share == pytest.approx(0.86)
    assert b.majority["accuracy"] == pytest.approx(0.86)
    # always "ham": F1(ham) = 2*86/(86+100), F1(spam) = 0
    assert b.majority["macro_f1"] == pytest.approx((2 * 86 / 186) / 2)
    assert b.uniform["accuracy"] == 0.5
    expected = sum(2 * p * 0.5 / (p + 0.5) for p in (0.86, 0.14)) / 2
    assert b.uniform["macro_f1"] == pytest.approx(expected)


def _judge(preds, targets, diff=0.1, p=0.01, metric="accuracy"):
    shares = compute_baselines(targets, LABELS).label_shares
    return judge_degenerate(
        preds, shares, diff=diff, low=diff - 0.05, high=diff + 0.05, p_value=p, metric=metric, alpha=0.05,
        thresholds=THRESHOLDS,
    )  # fmt: skip


def test_collapsed_arm_is_degenerate_but_a_good_classifier_on_a_skewed_task_is_not():
    targets = ["ham"] * 86 + ["spam"] * 14
    # always ham (the SMS case): collapsed and no better than the constant
    d = _judge(["ham"] * 100, targets, diff=0.0, p=1.0)
    assert d.degenerate and d.collapsed and d.top_share == 1.0 and not d.beats_majority
    # a 97/3 task classified well: 96% of answers are the true majority (share 97%), not collapsed
    skewed = ["ham"] * 97 + ["spam"] * 3
    good = ["ham"] * 96 + ["spam"] * 4
    d = _judge(good, skewed, diff=0.02, p=0.01)
    assert not d.collapsed and not d.degenerate and d.reason is None
    # answering the minority label 96% of the time on an 86/14 task: collapsed
    d = _judge(["spam"] * 96 + ["ham"] * 4, targets, diff=0.05, p=0.01)
    assert d.collapsed and d.degenerate and "96%" in (d.reason or "")
    # diverse answers but no significant gain over the majority: degenerate too
    d = _judge(["ham"] * 70 + ["spam"] * 30, targets, diff=0.03, p=0.2)
    assert not d.collapsed and d.degenerate and not d.beats_majority


def test_the_metric_follows_the_labels():
    # SMS-like (86/14): macro-F1, with a target that suits macro-F1
    sms = choose_metric(TaskKind.CLASSIFY, {"ham": 86, "spam": 14}, metric=None, quality_target=None,
                        thresholds=THRESHOLDS)  # fmt: skip
    assert sms.metric == "macro_f1" and sms.quality_target == 0.80 and "spam" in sms.reason
    # Rotten Tomatoes-like (58/42): accuracy
    rt = choose_metric(TaskKind.CLASSIFY, {"pos": 58, "neg": 42}, metric=None, quality_target=None,
                       thresholds=THRESHOLDS)  # fmt: skip
    assert rt.metric == "accuracy" and rt.quality_target == 0.90
    # ten balanced labels are balanced, although each has only 10%
    ten = {f"l{i}": 10 for i in range(10)}
    assert choose_metric(TaskKind.CLASSIFY, ten, metric=None, quality_target=None,
                         thresholds=THRESHOLDS).metric == "accuracy"  # fmt: skip
    # --target still overrides; the threshold is overridable
    forced = choose_metric(TaskKind.CLASSIFY, {"ham": 86, "spam": 14}, metric="accuracy", quality_target=0.95,
                           thresholds=THRESHOLDS)  # fmt: skip
    assert (forced.metric, forced.quality_target) == ("accuracy", 0.95) and "--target" in forced.reason
    loose = choose_metric(TaskKind.CLASSIFY, {"ham": 86, "spam": 14}, metric=None, quality_target=None,
                          thresholds=THRESHOLDS | {"imbalanced_relative_share": 0.2})  # fmt: skip
    assert loose.metric == "accuracy"
    assert choose_metric(TaskKind.GENERATE, {}, metric=None, quality_target=None,
                         thresholds=THRESHOLDS).metric == "chrf"  # fmt: skip


def test_thresholds_are_overridable_rules():
    rules = load_rules([], overrides={"degenerate_top_share": "0.9"})
    assert rules.thresholds["degenerate_top_share"] == 0.9
    assert {"degenerate_share_margin", "imbalanced_relative_share"} <= set(rules.thresholds)


def test_calibration_math():
    rows = [{"ham": math.log(0.9), "spam": math.log(0.1)}, {"ham": math.log(0.7), "spam": math.log(0.3)}]
    prior = calibration.prior(rows, LABELS)
    assert math.exp(prior["ham"]) == pytest.approx(0.8) and math.exp(prior["spam"]) == pytest.approx(0.2)
    # p(ham)=0.7 is below the prior 0.8, p(spam)=0.3 above 0.2: the calibrated answer flips to spam
    assert calibration.predict(rows[1], None, LABELS) == "ham"
    assert calibration.predict(rows[1], prior, LABELS) == "spam"
    # unnormalised log-probs (as a backend returns them) give the same answer
    shifted = {k: v - 3.0 for k, v in rows[1].items()}
    assert calibration.predict(shifted, prior, LABELS) == "spam"


def test_format_hint_shuffles_labels_and_system_differs_from_zero_shot():
    labels = tuple(f"label{i}" for i in range(6))
    orders = {format_hint(TaskKind.CLASSIFY, labels, seed) for seed in range(5)}
    assert len(orders) > 1  # the order depends on the seed ...
    assert format_hint(TaskKind.CLASSIFY, labels, 3) == format_hint(TaskKind.CLASSIFY, labels, 3)  # ... only
    assert format_hint(TaskKind.CLASSIFY, labels) == "Answer with exactly one of: " + ", ".join(labels) + "."
    fake = FakeBackend()
    train = [Example(i, (Message("user", f"text {i}"),), lab, lab) for i, lab in enumerate(labels * 3, 1)]
    arms = build_ladder(fake, TaskKind.CLASSIFY, labels, train, k_ladder=()).arms
    zero, system = arms
    query = train[0]
    z, s = render_messages(zero, query), render_messages(system, query)
    assert s[-1] == z[-1]  # the same query and hint ...
    assert s[0].role == "system" and s[0].content == system_instruction(TaskKind.CLASSIFY, labels, seed=0)
    hint_only = format_hint(TaskKind.CLASSIFY, labels, 0).removeprefix("Answer with exactly one of: ")
    assert s[0].content.strip() != hint_only and "do not default" in s[0].content  # ... plus an instruction


# ---------------------------------------------------------------------- the harness on a biased fake


class BiasedFake(FakeBackend):
    """A fake with a strong pull towards `ham` (like SmolLM2 under a chat template), which keyword
    evidence can overcome after calibration."""

    def loglikelihood(self, requests):
        out = super().loglikelihood(requests)
        return [
            type(r)(r.logprob + (12.0 if q.continuation == "ham" else 0.0), r.n_tokens, r.prompt_tokens)
            for r, q in zip(out, requests, strict=True)
        ]


def _sms(n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for i in range(1, n + 1):
        spam = rng.random() < 0.14
        words = ("win", "prize", "free", "cash", "claim") if spam else ("lunch", "home", "later", "mum", "ok")
        text = " ".join(rng.choice(words) for _ in range(5)) + f" n{i}"
        lab = "spam" if spam else "ham"
        out.append(Example(i, (Message("user", text),), lab, lab))
    return out


def _harness(evals=None, **kw):
    data = _sms(520, seed=1)
    train, dev, ev = data[:300], data[300:400], evals or data[400:520]
    fake = BiasedFake({"spam": {"win", "prize", "free", "cash", "claim"}})
    ladder = build_ladder(fake, TaskKind.CLASSIFY, LABELS, train, k_ladder=(), max_context_tokens=100_000)
    args = dict(seed=0, target_metric="macro_f1", quality_target=0.99, min_gain=0.02, dev_items=dev,
                k_max=ladder.k_max, thresholds=THRESHOLDS)  # fmt: skip
    return (
        evaluate_arms(
            fake,
            ladder.arms,
            train,
            ev,
            TaskKind.CLASSIFY,
            LABELS,
            **(args | kw),
        ),
        fake,
        ev,
    )


def test_calibration_is_chosen_on_dev_and_never_sees_eval_labels():
    result, fake, ev = _harness()
    zero = result.arm("zero_shot")
    tried = {t.variant: t for t in zero.tried}
    assert set(tried) == {"raw", "contextual", "batch"} and all(t.n_dev == 100 for t in tried.values())
    # the raw arm collapses onto ham; a correction wins on dev and is what eval reports
    assert tried["raw"].dev_score < max(t.dev_score for t in tried.values())
    assert zero.variant != "raw" and zero.offsets == tried[zero.variant].offsets
    assert {it.prediction for it in zero.items} == set(LABELS)
    # content-free inputs were sent with the arm's own prompt
    cf = [
        r for r in fake.loglik_requests if r.messages[-1].content.split("\n\n")[0] in calibration.CONTENT_FREE
    ]
    assert len(cf) >= len(calibration.CONTENT_FREE) * len(LABELS)
    # flipping every eval label changes neither the correction nor the predictions
    flipped = [
        Example(e.line, e.messages, other, other)
        for e in ev
        for other in [next(lab for lab in LABELS if lab != e.label)]
    ]
    again, _, _ = _harness(evals=flipped)
    assert again.arm("zero_shot").offsets == zero.offsets
    assert [it.prediction for it in again.arm("zero_shot").items] == [it.prediction for it in zero.items]


def test_degenerate_arms_are_named_and_never_best():
    # without a dev split no correction is tried: both arms answer ham for every item
    result, _, _ = _harness(dev_items=())
    assert result.baselines is not None and result.baselines.majority_label == "ham"
    for arm in result.arms:
        d = result.degeneracy[arm.name]
        assert d.top_label == "ham" and d.top_share == 1.0 and d.degenerate
    assert result.plateau.best_arm is None
    doc = result.to_dict()
    sig = prompting_signals(doc)
    assert (
        sig["best_arm"] is None and sig["n_degenerate_arms"] == 2 and sig["prompting_beats_majority"] is False
    )
    # a degenerate arm never meets the target, however low the target is
    low = prompting_signals(doc | {"quality_target": 0.1})
    assert not low["prompt_meets_target"] and not low["few_shot_meets_target"]
    md = prompting_section(Prompting.model_validate(doc))
    assert "majority label `ham`" in md and "**degenerate**" in md and "every arm is degenerate" in md


def test_majority_items_are_a_constant_predictor():
    result, _, _ = _harness()
    const = majority_items(result.arm("zero_shot").items, "ham")
    assert {it.prediction for it in const} == {"ham"}
    assert [it.correct for it in const] == [it.target == "ham" for it in const]


def test_a_degenerate_fine_tuned_model_is_never_verified():
    """The 3-label case from the field: prompting answers mostly a minority label, the fine-tuned model
    the majority label 189 of 200 times. A big gain over prompting, no gain over the constant."""
    from advisor.measure.evaluate import ArmResult, ItemResult, compare, summarise
    from pipeline.verify import NO_GATE, build_verification, verification_signals

    labels = ("a", "b", "c")
    targets = ["a"] * 130 + ["b"] * 40 + ["c"] * 30

    def items(preds):
        return tuple(
            ItemResult(i, "x", t, p, t == p, {"accuracy": float(t == p)}, 5)
            for i, (t, p) in enumerate(zip(targets, preds, strict=True), 1)
        )

    prompt = items(["b"] * 150 + ["c"] * 50)
    ft_preds = ["a"] * 189 + ["b"] * 11
    ft_items = items(ft_preds)
    ft = ArmResult(
        "fine_tuned", "fine_tuned", 0, None, ft_items, summarise(ft_items, TaskKind.CLASSIFY, labels, 0), 5.0
    )
    cmp = compare(prompt, ft_items, metric="accuracy", seed=0, labels=labels)
    const = majority_items(ft_items, "a")
    vs_majority = compare(const, ft_items, metric="accuracy", seed=0, labels=labels)
    degeneracy = judge_degenerate(
        ft_preds, compute_baselines(targets, labels).label_shares, diff=vs_majority.diff.diff,
        low=vs_majority.diff.low, high=vs_majority.diff.high, p_value=vs_majority.p_value, metric="accuracy",
        alpha=0.05, thresholds=THRESHOLDS,
    )  # fmt: skip
    section = build_verification(
        baseline_name="few_shot_k8", baseline_items=prompt, finetuned=ft, comparison=cmp, metric="accuracy",
        quality_target=0.9, task=TaskKind.CLASSIFY, labels=labels, seed=0, latency={}, adapter_dir="x",
        model_id="m", provenance=NO_GATE, vs_majority=vs_majority, degeneracy=degeneracy, majority_label="a",
    )  # fmt: skip
    assert cmp.diff.low > 0.2  # the naive comparison calls this a large gain
    assert section.degeneracy is not None and section.degeneracy.degenerate
    assert section.majority is not None and not section.majority.beats
    assert section.finetune_verified is False
    sig = verification_signals(section)
    assert sig["finetune_degenerate"] is True and sig["finetune_verified"] is False
    assert sig["finetune_beats_majority"] is False


# ---------------------------------------------------------------- generated text


def _gen_item(pred: str, target: str, copies: bool | None = None, in_demos: bool | None = None):
    from advisor.measure.evaluate import ItemResult

    return ItemResult(
        0, "x", target, pred, pred == target, {}, 10, copies_demo=copies, target_in_demos=in_demos
    )


def test_generated_text_collapsed_onto_one_answer_is_degenerate_unless_the_targets_are_too():
    from advisor.measure.baselines import judge_generation

    varied = [_gen_item("I don't know." if i < 6 else f"answer {i}", f"target {i}") for i in range(10)]
    d = judge_generation(varied, THRESHOLDS)
    assert d.collapsed and d.degenerate and d.top_share == 0.6 and d.top_true_share == 0.0
    assert "i don't know" in (d.reason or "").lower() and d.vs_majority is None and d.beats_majority is None
    # targets that repeat themselves: answering "yes" where the target is "yes" is no collapse
    repeated = [_gen_item("yes" if i < 7 else "no", "yes" if i < 7 else "no") for i in range(10)]
    assert not judge_generation(repeated, THRESHOLDS).degenerate


def test_an_arm_repeating_its_demonstrations_answers_is_degenerate_beyond_chance():
    from advisor.measure.baselines import judge_generation

    # WordNet, k = 2: a demonstration's definition repeated on a quarter of the items
    copying = [_gen_item(f"a {i}", f"t {i}", copies=i < 3, in_demos=False) for i in range(12)]
    d = judge_generation(copying, THRESHOLDS)
    assert d.copies_demos and d.degenerate and d.copied_demo_share == 0.25 and d.copied_demo_expected == 0.0
    assert "repeats one of its demonstrations' answers on 25% of items" in (d.reason or "")
    # where the targets are as often a demonstration's answer (duplicated rows), copying is no evidence
    chance = [_gen_item(f"a {i}", f"t {i}", copies=i < 3, in_demos=i < 3) for i in range(12)]
    assert not judge_generation(chance, THRESHOLDS).degenerate
    doc = d.model_dump(mode="json")
    assert doc["vs_majority"] is None and doc["copies_demos"] is True and doc["copied_demo_share"] == 0.25


def test_few_shot_arms_copying_demonstrations_are_named_and_never_best_on_generation():
    """The stand-in model answers a few-shot prompt with its nearest demonstration's answer (a copier) and
    a zero-shot prompt with the input itself: the few-shot arms are degenerate, the zero-shot arm is not."""
    rng = random.Random(3)
    words = ["river", "stone", "cloud", "bread", "glass", "horse", "paper", "light", "music", "garden"]
    rows = [
        Example(i, (Message("user", f"define {w} {i}"),), f"a kind of {rng.choice(words)} number {i}")
        for i, w in enumerate(words * 12)
    ]
    train, dev, ev = rows[:60], rows[60:80], rows[80:120]
    fake = FakeBackend()
    ladder = build_ladder(fake, TaskKind.GENERATE, (), train, k_ladder=(1, 2), max_context_tokens=100_000)
    result = evaluate_arms(
        fake, ladder.arms, train, ev, TaskKind.GENERATE, (), seed=0, target_metric="chrf",
        quality_target=0.6, min_gain=0.02, dev_items=dev, thresholds=THRESHOLDS,
    )  # fmt: skip
    few = [a for a in result.arms if a.k > 0]
    assert few and all(result.degeneracy[a.name].copies_demos for a in few)
    assert all(it.copies_demo is True for a in few for it in a.items)
    assert not result.degeneracy["zero_shot"].degenerate
    assert result.plateau.best_arm is not None and result.arm(result.plateau.best_arm).k == 0
    doc = result.to_dict()
    assert prompting_signals(doc)["n_degenerate_arms"] == len(few)
    section = Prompting.model_validate(doc)
    assert "repeats one of its demonstrations' answers" in prompting_section(section)


def test_a_copying_arm_is_named_in_every_output_of_a_generation_run(tmp_path):
    """The same copier through `advise`: report.md, report.html and the console name the arm and why."""
    import io
    import json

    from rich.console import Console

    from advisor.api import advise
    from advisor.report.console import print_summary

    rng = random.Random(3)
    words = ["river", "stone", "cloud", "bread", "glass", "horse", "paper", "light", "music", "garden"]
    data = tmp_path / "defs.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {"prompt": f"define {w} {i}", "completion": f"a kind of {rng.choice(words)} number {i}"}
            )
            + "\n"
            for i, w in enumerate(words * 60)
        )
    )
    out = tmp_path / "run"
    result = advise(
        data, out=out, backend=FakeBackend(), task="generate", target_metric="chrf", quality_target=0.6,
        k_ladder=(1,), eval_size=40, dev_size=20, pilot=False, latency_samples=1,
    )  # fmt: skip
    copier = next(a for a in result.report.prompting.arms if a.k == 1)
    assert copier.degeneracy is not None and copier.degeneracy.copies_demos is True
    reason = "repeats one of its demonstrations"  # (the HTML escapes the apostrophe that follows)
    assert reason in (out / "report.md").read_text() and reason in (out / "report.html").read_text()
    buf = io.StringIO()
    print_summary(result.report, Console(file=buf, width=100, color_system=None))
    assert f"DEGENERATE {copier.name}" in buf.getvalue()
