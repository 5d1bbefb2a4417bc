"""Evidence beyond accuracy: volume, cost and break-even arithmetic, latency, domain, signals, report."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from advisor.backends.base import GenRequest, GenResult, LoglikRequest, LoglikResult
from advisor.decide.rules import load_rules as _load_rules
from advisor.document import Evidence as EvidenceSection
from advisor.errors import ConfigError
from advisor.measure.cost import (
    CostConfig,
    break_even,
    cost_per_request,
    example_prices_path,
    finetune_cost,
    load_cost_config,
    monthly_cost,
    parse_volume,
)
from advisor.measure.evidence import (
    SIGNAL_NAMES,
    ArmEvidence,
    ArmInput,
    CostSummary,
    DomainMeasure,
    Evidence,
    LatencySample,
    evidence_signals,
    fit_latency,
    gather_evidence,
    load_reference_sentences,
    measure_domain,
    measure_latency,
    price_arms,
    reference_chunks,
    summarize_latency,
)
from advisor.report.markdown import evidence_section
from advisor.types import Example, Message, TaskKind

SHIPPED_THRESHOLDS = _load_rules([]).thresholds

# ---------------------------------------------------------------- a small fake backend


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeBackend:
    """Words are tokens. Generation advances a fake clock by a + b·prompt + c·output seconds.

    Log-likelihood: a word in `known` costs 1 nat, any other word 4 nats.
    """

    name = "fake"
    model_id = "fake-1"

    def __init__(self, known: set[str] | None = None, a: float = 0.05, b: float = 0.002, c: float = 0.03):
        self.known = known or set()
        self.clock = FakeClock()
        self.a, self.b, self.c = a, b, c
        self.generated: list[GenRequest] = []

    def render(self, messages: Sequence[Message]) -> str:
        return " ".join(f"{m.role}: {m.content}" for m in messages) + " assistant:"

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        out = []
        for r in requests:
            self.generated.append(r)
            p = self.count_tokens([self.render(r.messages)])[0]
            seconds = self.a + self.b * p + self.c * r.max_tokens
            self.clock.now += seconds
            out.append(GenResult("x " * r.max_tokens, p, r.max_tokens, seconds))
        return out

    def loglikelihood(self, requests: Sequence[LoglikRequest]) -> list[LoglikResult]:
        out = []
        for r in requests:
            words = r.continuation.lower().split()
            lp = -sum(1.0 if w.strip(".,;:!?'\"") in self.known else 4.0 for w in words)
            out.append(LoglikResult(lp, len(words), 1))
        return out


# ---------------------------------------------------------------- volume


@pytest.mark.parametrize(
    ("text", "per_day"),
    [
        ("20000/day", 20000.0),
        ("20k/day", 20000.0),
        ("20K / days", 20000.0),
        ("1.5M/month", 50000.0),
        ("500/hour", 12000.0),
        ("500/h", 12000.0),
        ("3.5k/week", 500.0),
        ("50/day", 50.0),
        ("30/month", 1.0),
    ],
)
def test_parse_volume(text: str, per_day: float) -> None:
    assert parse_volume(text) == pytest.approx(per_day)


@pytest.mark.parametrize(
    "text", ["", "20000", "lots/day", "20000/fortnight", "0/day", "-5/day", "5/day/hour", "1e3/day"]
)
def test_parse_volume_errors_name_the_field(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_volume(text)
    assert info.value.problems[0].field == "volume"
    assert info.value.exit_code == 2


# ---------------------------------------------------------------- cost arithmetic


API = CostConfig(input_per_million=0.5, output_per_million=1.5)


def test_cost_per_request_api_and_finetuned_prices() -> None:
    assert cost_per_request(API, 1000, 10) == pytest.approx((1000 * 0.5 + 10 * 1.5) / 1e6)
    ft = replace(API, finetuned_input_per_million=1.0, finetuned_output_per_million=3.0)
    assert cost_per_request(ft, 100, 10, finetuned=True) == pytest.approx((100 * 1.0 + 10 * 3.0) / 1e6)
    assert cost_per_request(API, 100, 10, finetuned=True) == cost_per_request(
        API, 100, 10
    )  # defaults to base
    assert cost_per_request(CostConfig(), 100, 10) is None


def test_cost_per_request_self_hosted() -> None:
    cfg = CostConfig(serving="self_hosted", gpu_hour=3.6, prompt_tokens_per_s=1000, output_tokens_per_s=100)
    # 500/1000 s + 20/100 s = 0.7 s of a 3.6/hour GPU = 0.0007
    assert cost_per_request(cfg, 500, 20) == pytest.approx(0.0007)
    assert cost_per_request(replace(cfg, output_tokens_per_s=None), 500, 20) is None


def test_the_prompted_model_by_api_and_the_fine_tuned_one_self_hosted(tmp_path: Path) -> None:
    """Prompt a served model A or fine-tune a small model B we host: each priced its own way, and the
    break-even weighs A's API price against B's hosting cost."""
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[meta]\nserving = "api"\nfinetuned_serving = "self_hosted"\n'
        "[api]\ninput_per_million = 5.0\noutput_per_million = 15.0\n"
        "[self_hosted]\ngpu_hour = 3.6\nprompt_tokens_per_s = 10000\noutput_tokens_per_s = 1000\n"
        "[finetune]\ncost = 50.0\n"
    )
    cfg = load_cost_config(prices)
    assert (cfg.mode(), cfg.mode(finetuned=True)) == ("api", "self_hosted")
    a = cost_per_request(cfg, 600, 2)  # A, few-shot: 600 prompt tokens at 5/M + 2 at 15/M
    b = cost_per_request(cfg, 60, 2, finetuned=True)  # B, zero-shot length: 0.006 s + 0.002 s of GPU
    assert a == pytest.approx((600 * 5 + 2 * 15) / 1e6)
    assert b == pytest.approx((60 / 10000 + 2 / 1000) * 3.6 / 3600)
    arms = [ArmEvidence("few", "few_shot", 4, 0.8, 600.0, 2.0)]
    priced, summary = price_arms(
        arms, "few", cfg, 10_000.0, finetuned_prompt_tokens=60.0, completion_tokens=2.0, train_tokens=None
    )
    assert (summary.serving, summary.finetuned_serving, summary.throughput_source) == (
        "api", "self_hosted", "config"
    )  # fmt: skip
    assert priced[0].cost_per_request == pytest.approx(a)
    assert summary.finetuned_cost_per_request == pytest.approx(b)
    assert summary.break_even_requests == pytest.approx(50.0 / (a - b))
    # without a configured throughput, the prompted model's measured speed (an API's latency here) does
    # not price the self-hosted fine-tuned model: it stays unpriced, and says why
    model = fit_latency(
        [
            LatencySample("a", p, o, 0.01 + 0.001 * p + 0.02 * o)
            for p, o in [(10, 1), (100, 3), (300, 2), (50, 5)]
        ]
    )
    bare = replace(cfg, prompt_tokens_per_s=None, output_tokens_per_s=None)
    _, unpriced = price_arms(
        arms, "few", bare, 10_000.0, finetuned_prompt_tokens=60.0, completion_tokens=2.0, train_tokens=None,
        latency_model=model,
    )  # fmt: skip
    assert unpriced.finetuned_cost_per_request is None and unpriced.throughput_source is None
    # the same file without the line prices both by the API, as before
    prices.write_text(prices.read_text().replace('finetuned_serving = "self_hosted"\n', ""))
    assert load_cost_config(prices).mode(finetuned=True) == "api"
    with pytest.raises(ConfigError, match="finetuned_serving"):
        CostConfig(finetuned_serving="on-prem")


def test_monthly_cost_counts_thirty_days() -> None:
    assert monthly_cost(0.001, 20000) == pytest.approx(600.0)
    assert monthly_cost(None, 20000) is None
    assert monthly_cost(0.001, None) is None


def test_finetune_cost_estimate_and_user_figure() -> None:
    cfg = CostConfig(gpu_hour=2.0, train_tokens_per_s=1000.0, epochs=3)
    # 1.2M tokens × 3 epochs / 1000 tok/s = 3600 s = 1 GPU-hour = 2.0
    assert finetune_cost(cfg, 1_200_000) == pytest.approx(2.0)
    assert finetune_cost(replace(cfg, finetune_cost=25.0), 1_200_000) == 25.0
    assert finetune_cost(replace(cfg, train_tokens_per_s=None), 1_200_000) is None
    assert finetune_cost(cfg, None) is None
    assert finetune_cost(replace(cfg, overhead=100.0), 1_200_000) == pytest.approx(102.0)


def test_break_even() -> None:
    be = break_even(0.0010, 0.0002, 40.0, 1000.0)
    assert be.saving_per_request == pytest.approx(0.0008)
    assert be.monthly_saving == pytest.approx(0.0008 * 1000 * 30)
    assert be.requests == pytest.approx(50_000)
    assert be.days == pytest.approx(50.0)
    assert be.reason is None
    never = break_even(0.0002, 0.0004, 40.0, 1000.0)
    assert never.requests is None and never.days is None and "saves nothing" in (never.reason or "")
    no_volume = break_even(0.0010, 0.0002, 40.0, None)
    assert no_volume.requests == pytest.approx(50_000) and no_volume.days is None
    assert break_even(None, 0.0002, 40.0, 1000.0).reason == "no prices for serving"
    assert break_even(0.001, 0.0002, None, 1000.0).days is None


def test_cost_config_validation() -> None:
    with pytest.raises(ConfigError) as info:
        CostConfig(input_per_million=-1.0)
    assert info.value.problems[0].field == "input_per_million"
    with pytest.raises(ConfigError):
        CostConfig(serving="cloud")
    with pytest.raises(ConfigError):
        CostConfig(train_tokens_per_s=0.0)
    with pytest.raises(ConfigError):
        CostConfig(gpu_hour=math.inf)
    with pytest.raises(ConfigError) as info:
        CostConfig(epochs=0)
    assert info.value.problems[0].field == "epochs"
    with pytest.raises(ConfigError):
        CostConfig(output_per_million=True)  # type: ignore[arg-type]


def test_example_price_file_is_dated_and_marked_as_example() -> None:
    path = example_prices_path()
    text = path.read_text(encoding="utf-8")
    assert "EXAMPLES, NOT VENDOR FACTS" in text
    cfg = load_cost_config(path)
    assert cfg.price_date and cfg.price_date[:4].isdigit()
    assert cfg.serving == "api"
    assert cfg.input_per_million is not None and cfg.output_per_million is not None
    assert cfg.gpu_hour is not None and cfg.train_tokens_per_s is not None and cfg.overhead is not None
    assert cfg.source == str(path)
    assert load_cost_config(path, {"input_per_million": 9.0}).input_per_million == 9.0


def test_price_file_errors_are_reported_together(tmp_path: Path) -> None:
    bad = tmp_path / "prices.toml"
    bad.write_text('[api]\ninput_per_million = "cheap"\nbogus = 1\n[extra]\nx = 1\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_cost_config(bad)
    message = str(info.value)
    assert (
        str(bad) in message and "input_per_million" in message and "bogus" in message and "[extra]" in message
    )
    broken = tmp_path / "broken.toml"
    broken.write_text("[api\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="TOML"):
        load_cost_config(broken)
    with pytest.raises(ConfigError, match="cannot read"):
        load_cost_config(tmp_path / "missing.toml")
    negative = tmp_path / "neg.toml"
    negative.write_text("[self_hosted]\ngpu_hour = -2\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_cost_config(negative)
    assert info.value.problems[0].file == str(negative) and info.value.problems[0].field == "gpu_hour"
    hosted = tmp_path / "hosted.toml"
    hosted.write_text("[self_hosted]\ngpu_hour = 2\n", encoding="utf-8")
    assert load_cost_config(hosted).serving == "self_hosted"


# ---------------------------------------------------------------- latency


def test_fit_latency_recovers_known_coefficients() -> None:
    rng = np.random.default_rng(5)
    a, b, c = 0.08, 0.0015, 0.025
    samples = []
    for _ in range(200):
        p, o = int(rng.integers(20, 1500)), int(rng.integers(1, 60))
        samples.append(LatencySample("arm", p, o, a + b * p + c * o + rng.normal(0, 0.005)))
    model = fit_latency(samples)
    assert model is not None
    assert model.a == pytest.approx(a, rel=0.1)
    assert model.b == pytest.approx(b, rel=0.05)
    assert model.c == pytest.approx(c, rel=0.05)
    assert model.r2 is not None and model.r2 > 0.99
    assert model.fitted == ["a", "b", "c"]
    assert model.project(1000, 10) == pytest.approx(a + b * 1000 + c * 10, rel=0.02)


def test_fit_latency_degenerate_cases() -> None:
    assert fit_latency([]) is None
    one = fit_latency([LatencySample("x", 100, 3, 0.4)])
    assert one is not None and one.a == pytest.approx(0.4) and one.b == 0 and one.c == 0 and one.r2 is None
    # Output length never varies (classification): c cannot be told from the intercept.
    fixed_out = [LatencySample("x", p, 2, 0.1 + 0.001 * p) for p in (50, 100, 400, 800)]
    model = fit_latency(fixed_out)
    assert model is not None and model.fitted == ["a", "b"] and model.c == 0.0
    assert model.b == pytest.approx(0.001) and model.a == pytest.approx(0.1)
    # A slope that comes out negative (noise) is dropped rather than projected.
    noisy = [
        LatencySample("x", p, o, t) for p, o, t in [(10, 1, 0.5), (20, 5, 0.4), (30, 2, 0.6), (40, 8, 0.3)]
    ]
    model = fit_latency(noisy)
    assert model is not None and model.b >= 0 and model.c >= 0


def test_measure_latency_times_single_requests_per_arm() -> None:
    be = FakeBackend(a=0.05, b=0.002, c=0.03)
    msgs_short = [(Message("user", "w " * 10),)] * 5
    msgs_long = [(Message("user", "w " * 200),)] * 5
    requests = {
        "zero_shot": [GenRequest(m, max_tokens=2) for m in msgs_short],
        "few_shot_k8": [GenRequest(m, max_tokens=2) for m in msgs_long],
    }
    samples = measure_latency(be, requests, n=3)
    assert len(samples) == 6 and len(be.generated) == 7  # one untimed warm-up
    summary = summarize_latency(samples)
    short_s = 0.05 + 0.002 * (10 + 2) + 0.03 * 2  # "user:" and "assistant:" are tokens too
    long_s = 0.05 + 0.002 * (200 + 2) + 0.03 * 2
    assert summary["zero_shot"].p50_ms == pytest.approx(short_s * 1000)
    assert summary["few_shot_k8"].p95_ms == pytest.approx(long_s * 1000)
    assert summary["few_shot_k8"].n == 3


def test_summarize_latency_percentiles() -> None:
    samples = [LatencySample("a", 1, 1, s / 1000) for s in range(1, 101)]
    summary = summarize_latency(samples)["a"]
    assert summary.p50_ms == pytest.approx(50.5)
    assert summary.p95_ms == pytest.approx(95.05)
    assert summary.mean_ms == pytest.approx(50.5)


# ---------------------------------------------------------------- domain language


def test_reference_text_is_plain_and_sized() -> None:
    sentences = load_reference_sentences()
    assert 60 <= len(sentences) <= 100
    assert all(not s.startswith("#") and len(s.split()) >= 6 for s in sentences)
    assert len(set(sentences)) == len(sentences)


def test_reference_chunks_match_task_length() -> None:
    sentences = ["one two three", "four five six", "seven eight", "nine"]
    assert reference_chunks(sentences, 5) == ["one two three four five six", "seven eight nine"]
    assert reference_chunks(sentences, 1) == sentences


def test_measure_domain_ratio_and_tokens_per_word() -> None:
    reference = load_reference_sentences()
    known = {w.strip(".,;:!?'\"").lower() for s in reference for w in s.split()}
    be = FakeBackend(known=known)
    jargon = ["the plaintiff's estoppel claim fails under res judicata"] * 10
    dm = measure_domain(be, jargon, "inputs")
    assert dm is not None
    assert dm.reference_ppl == pytest.approx(math.e)  # every reference word is known: 1 nat per token
    assert dm.ratio > 5
    assert dm.tokens_per_word == pytest.approx(1.0)
    assert dm.source == "inputs" and dm.n_texts == 10
    everyday = measure_domain(be, reference[:20], "targets")
    assert everyday is not None and everyday.ratio == pytest.approx(1.0)
    assert measure_domain(be, ["  "], "inputs") is None
    sampled = measure_domain(be, reference, "inputs", max_texts=7)
    assert sampled is not None and sampled.n_texts == 7


# ---------------------------------------------------------------- signals, document, markdown


def _evidence(**changes: object) -> Evidence:
    arms = (
        ArmEvidence("zero_shot", "zero_shot", 0, 0.70, 40.0, 2.0, 300.0, 400.0, 0.00002, 12.0),
        ArmEvidence("few_shot_k8", "few_shot", 8, 0.80, 400.0, 2.0, 900.0, 1200.0, 0.0002, 120.0),
        ArmEvidence("few_shot_k4", "few_shot", 4, 0.78, 200.0, 2.0, 600.0, 800.0, 0.0001, 60.0),
    )
    cost = CostSummary(
        "USD", "api", "api", "2026-11-28", "prices.toml", None, 10.0, 1e6, 40.0, 0.00004, 24.0,
        0.00016, 96.0, 62_500.0, 3.125, None,
    )  # fmt: skip
    from advisor.measure.learning import curve_from_scores

    scores = np.array([0.6, 0.7, 0.76, 0.82])
    curve = curve_from_scores([80, 200, 400, 800], scores, scores + np.zeros((10, 4)), "accuracy", 0.9)
    base = Evidence(
        task_kind="classify",
        arms=arms,
        best_arm="few_shot_k8",
        few_shot_arm="few_shot_k8",
        volume_per_day=20000.0,
        latency_budget_ms=1000.0,
        cost=cost,
        learning_curve=curve,
        domain="legal",
        domain_measure=DomainMeasure(
            source="inputs",
            n_texts=40,
            n_reference=30,
            task_ppl=30.0,
            reference_ppl=12.0,
            task_word_ppl=900.0,
            reference_word_ppl=36.0,
            ratio=25.0,
            token_ratio=2.5,
            tokens_per_word=1.4,
            reference_tokens_per_word=1.2,
        ),
        needs_consistent_style=True,
        not_measured=(("examples", "why not"),),
    )
    return replace(base, **changes)


def test_evidence_signals() -> None:
    ev = _evidence()
    sig = evidence_signals(ev)
    assert set(sig) == set(SIGNAL_NAMES)
    assert sig["volume_per_day"] == 20000.0
    assert sig["best_arm_p95_ms"] == 1200.0 and sig["few_shot_p95_ms"] == 1200.0
    assert sig["latency_over_budget"] is True
    assert sig["monthly_cost_best_arm"] == 120.0
    assert sig["break_even_days"] == 3.125 and sig["break_even_within_horizon"] is True
    assert sig["probe_score"] == pytest.approx(0.82)
    assert sig["probe_beats_prompting"] is True
    assert isinstance(sig["examples_needed"], int) and sig["examples_needed"] > 800
    assert sig["domain"] == "legal" and sig["domain_ppl_ratio"] == 25.0
    assert sig["tokens_per_word"] == 1.4 and sig["needs_consistent_style"] is True
    assert evidence_signals(replace(ev, latency_budget_ms=1500.0))["latency_over_budget"] is False
    assert evidence_signals(replace(ev, latency_budget_ms=None))["latency_over_budget"] is None

    class Cfg:
        horizon_days = 2.0

    assert evidence_signals(ev, Cfg())["break_even_within_horizon"] is False


def test_evidence_signals_not_measured_and_never_pays_back() -> None:
    empty = evidence_signals(None)
    assert set(empty) == set(SIGNAL_NAMES) and all(v is None for v in empty.values())
    bare = evidence_signals(Evidence(task_kind="generate"))
    assert bare["needs_consistent_style"] is False
    assert all(v is None for k, v in bare.items() if k != "needs_consistent_style")
    ev = _evidence()
    never = replace(ev.cost, saving_per_request=-0.0001, break_even_days=None, break_even_requests=None)
    assert evidence_signals(replace(ev, cost=never))["break_even_within_horizon"] is False
    # the few-shot arm decides latency even when a cheaper arm is the best
    best_zero = replace(ev, best_arm="zero_shot", latency_budget_ms=1000.0)
    sig = evidence_signals(best_zero)
    assert sig["best_arm_p95_ms"] == 400.0 and sig["latency_over_budget"] is True


def test_to_dict_is_json_and_markdown_shows_the_evidence() -> None:
    ev = _evidence(
        latency_model=fit_latency([LatencySample("a", p, 2, 0.1 + 0.001 * p) for p in (10, 50, 90)])
    )
    doc = ev.to_dict()
    text = json.dumps(doc, allow_nan=False)
    assert json.loads(text)["learning_curve"]["probe_score"] == pytest.approx(0.82)
    assert doc["not_measured"] == [{"what": "examples", "why": "why not"}]
    md = evidence_section(EvidenceSection.model_validate_json(text))
    assert "| few_shot_k8 (best) | 0.800 | 400.0 |" in md
    assert "1,200" in md  # p95
    assert "Break-even after 62,500 requests: 3.1 days" in md and "within the 90-day horizon" in md
    assert "Learning curve" in md and "| 800 | 0.820 |" in md
    assert "Examples needed for 0.9" in md
    assert "ratio 25.00" in md and "Declared domain: legal." in md
    assert "- examples: why not" in md
    assert evidence_section(None).strip().endswith("Not measured.")
    assert json.dumps(Evidence(task_kind="classify", cost=None).to_dict(), allow_nan=False)
    nan = replace(
        ev,
        domain_measure=DomainMeasure(
            source="inputs",
            n_texts=1,
            n_reference=1,
            task_ppl=math.nan,
            reference_ppl=1.0,
            task_word_ppl=math.nan,
            reference_word_ppl=1.0,
            ratio=math.nan,
            token_ratio=math.nan,
            tokens_per_word=1.0,
            reference_tokens_per_word=1.0,
        ),
    )
    assert nan.to_dict()["domain_measure"]["ratio"] is None


def test_price_arms_self_hosted_falls_back_to_measured_speed() -> None:
    arms = [
        ArmEvidence("zero_shot", "zero_shot", 0, 0.7, 100.0, 2.0),
        ArmEvidence("few", "few_shot", 4, 0.8, 500.0, 2.0),
    ]
    model = fit_latency(
        [
            LatencySample("a", p, o, 0.01 + 0.001 * p + 0.02 * o)
            for p, o in [(10, 1), (100, 3), (300, 2), (50, 5)]
        ]
    )
    cfg = CostConfig(serving="self_hosted", gpu_hour=3.6, train_tokens_per_s=100.0, epochs=1)
    priced, summary = price_arms(
        arms, "few", cfg, 1000.0, finetuned_prompt_tokens=100.0, completion_tokens=2.0, train_tokens=36_000.0,
        latency_model=model,
    )  # fmt: skip
    assert summary.throughput_source == "measured single-request"
    # 500 tokens at 1 ms + 2 tokens at 20 ms = 0.54 s of a 3.6/hour GPU
    assert priced[1].cost_per_request == pytest.approx(0.00054, rel=1e-6)
    assert priced[1].monthly_cost == pytest.approx(0.00054 * 1000 * 30, rel=1e-6)
    assert summary.finetune_cost == pytest.approx(0.36)  # 360 s of GPU
    assert summary.saving_per_request == pytest.approx(0.0004, rel=1e-6)
    assert summary.break_even_requests == pytest.approx(900.0, rel=1e-6)
    assert summary.break_even_days == pytest.approx(0.9, rel=1e-6)


# ---------------------------------------------------------------- the recipe, with the fake backend


def _examples(rows: list[tuple[str, str]], start: int) -> list[Example]:
    return [Example(start + i, (Message("user", t),), c, c) for i, (t, c) in enumerate(rows)]


def test_gather_evidence_end_to_end_with_a_fake_backend(tmp_path: Path) -> None:
    from test_learning_curve import _rotten_tomatoes

    rows = _rotten_tomatoes(500, seed=2)
    train, evals = _examples(rows[:400], 1), _examples(rows[400:], 401)
    demos = [(Message("user", ex.input_text), Message("assistant", ex.target)) for ex in train[:4]]
    arms = [
        ArmInput("zero_shot", "zero_shot", 0.70, tuple((Message("user", ex.input_text),) for ex in evals)),
        ArmInput(
            "few_shot_k4",
            "few_shot",
            0.74,
            tuple(tuple(m for d in demos for m in d) + (Message("user", ex.input_text),) for ex in evals),
            k=4,
        ),
    ]
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[meta]\ndate = "2026-11-28"\n[api]\ninput_per_million = 1.0\noutput_per_million = 2.0\n'
        "[self_hosted]\ngpu_hour = 2.0\n[finetune]\ntrain_tokens_per_s = 100.0\nepochs = 2\n",
        encoding="utf-8",
    )
    config = {
        "volume_per_day": 20000.0,
        "latency_budget_ms": 500.0,
        "prices": str(prices),
        "quality_target": 0.8,
        "target_metric": "accuracy",
        "latency_samples": 5,
        "n_boot": 100,
        "domain": "film",
    }
    be = FakeBackend(known={w.lower() for s in load_reference_sentences() for w in s.split()})
    be_clocked = FakeBackend()
    ev = gather_evidence(
        be, arms, train, evals, TaskKind.CLASSIFY, ("fresh", "rotten"), config,
        latency_backend=be_clocked,
    )  # fmt: skip
    assert ev.best_arm == "few_shot_k4" and ev.few_shot_arm == "few_shot_k4"
    zero, few = ev.arms
    assert (
        zero.prompt_tokens is not None
        and few.prompt_tokens is not None
        and few.prompt_tokens > zero.prompt_tokens
    )
    assert zero.completion_tokens == 1.0  # "fresh"/"rotten": one word each
    assert few.p95_ms is not None and zero.p95_ms is not None and few.p95_ms > zero.p95_ms
    assert all(r.max_tokens == 1 for r in be_clocked.generated)  # the label's length
    assert ev.latency_model is not None and ev.latency_model.b == pytest.approx(0.002, rel=1e-6)
    assert ev.cost is not None and ev.cost.price_date == "2026-11-28"
    assert few.monthly_cost == pytest.approx((few.prompt_tokens * 1.0 + 2.0) / 1e6 * 20000 * 30)
    assert ev.cost.break_even_days is not None and ev.cost.break_even_days > 0
    assert ev.learning_curve is not None and [p.n for p in ev.learning_curve.points][-1] == 400
    assert ev.domain_measure is not None and ev.domain_measure.source == "inputs"
    sig = evidence_signals(ev)
    assert sig["latency_over_budget"] is (few.p95_ms > 500.0)
    assert sig["domain"] == "film" and isinstance(sig["domain_ppl_ratio"], float)
    assert json.dumps(ev.to_dict(), allow_nan=False)
    assert "few_shot_k4 (best)" in evidence_section(EvidenceSection.model_validate(ev.to_dict()))


def test_gather_evidence_without_a_backend_leaves_the_rest_unmeasured() -> None:
    from test_learning_curve import _rotten_tomatoes

    rows = _rotten_tomatoes(200, seed=4)
    train, evals = _examples(rows[:150], 1), _examples(rows[150:], 151)
    ev = gather_evidence(None, None, train, evals, TaskKind.CLASSIFY, ("fresh", "rotten"), {"n_boot": 50})
    assert ev.arms == () and ev.latency_model is None and ev.cost is None and ev.domain_measure is None
    assert ev.learning_curve is not None  # the probe needs no model
    what = {w for w, _ in ev.not_measured}
    assert {"arms", "latency", "cost", "domain perplexity", "examples needed"} <= what
    gen = [Example(i, (Message("user", f"q{i}"),), f"answer {i}") for i in range(1, 6)]
    ev_gen = gather_evidence(None, None, gen, gen, TaskKind.GENERATE, (), None)
    assert ev_gen.learning_curve is None
    assert any(w == "learning curve" and "LoRA" in y for w, y in ev_gen.not_measured)
    assert evidence_signals(ev_gen)["probe_score"] is None


def test_gather_evidence_reads_the_harness_result() -> None:
    from fakes import FakeBackend as HarnessFake
    from fakes import rotten_tomatoes

    from advisor.measure.evaluate import evaluate_arms
    from advisor.measure.prompts import build_arms

    rows = rotten_tomatoes(140, seed=5)
    train, evals = rows[:100], rows[100:]
    labels = ("negative", "positive")
    fake = HarnessFake({"positive": {"good", "great", "fun"}, "negative": {"bad", "dull", "boring"}})
    arms = build_arms(fake, TaskKind.CLASSIFY, labels, train, max_context_tokens=100_000, k_ladder=(1, 4))
    result = evaluate_arms(
        fake, arms, train, evals, TaskKind.CLASSIFY, labels,
        seed=0, thresholds=SHIPPED_THRESHOLDS, target_metric="accuracy", quality_target=0.9, min_gain=0.02,
    )  # fmt: skip
    config = {"volume_per_day": 50.0, "latency_samples": 3, "n_boot": 50, "cost": API}
    ev = gather_evidence(fake, result, train, evals, TaskKind.CLASSIFY, labels, config)
    assert [a.name for a in ev.arms] == [a.name for a in result.arms]
    for mine, theirs in zip(ev.arms, result.arms, strict=True):
        assert mine.score == theirs.scores["accuracy"].value
        assert mine.prompt_tokens == theirs.mean_prompt_tokens
        assert mine.p95_ms is not None
    assert ev.best_arm == result.plateau.best_arm
    assert ev.learning_curve is not None and ev.learning_curve.target == 0.9  # from the harness
    assert (
        ev.cost is not None and ev.cost.finetuned_prompt_tokens == result.arm("zero_shot").mean_prompt_tokens
    )
    assert len(fake.gen_requests) == 1 + 3 * len(result.arms)  # warm-up + timed requests
    sig = evidence_signals(ev)
    assert sig["volume_per_day"] == 50.0
    # an arm is costed as "best" only when it is honest (the fake is close to a coin on real snippets)
    assert (sig["monthly_cost_best_arm"] is None) == (result.plateau.best_arm is None)
    assert sig["domain_ppl_ratio"] is not None


def _evidence_schema() -> dict:
    path = Path(__file__).resolve().parents[1] / "advisor" / "schema" / "decision.schema.json"
    full = json.loads(path.read_text(encoding="utf-8"))
    return {"$defs": full["$defs"], **full["properties"]["evidence"]}


def test_evidence_document_matches_the_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(_evidence_schema())
    model = fit_latency([LatencySample("a", p, 2, 0.1 + 0.001 * p) for p in (10, 50, 90)])
    for ev in (_evidence(latency_model=model), _evidence(), Evidence(task_kind="generate")):
        doc = json.loads(json.dumps(ev.to_dict(), allow_nan=False))
        errors = sorted(validator.iter_errors(doc), key=str)
        assert not errors, errors[0].message
    validator.validate(None)  # not gathered
