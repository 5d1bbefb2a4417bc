"""Evidence beyond accuracy: tokens, latency, cost at volume, break-even, a learning curve, domain language.

The recipe (`gather_evidence`) measures what it can with the backend it is given and leaves the rest
`None` with a reason: tokens per request for every arm → single-request latency per arm and a fitted
latency model → cost per request, per month and the fine-tuning break-even → the supervised probe's
learning curve (classification) → the model's perplexity on the task's texts against a shipped
general-English reference. The arithmetic lives in pure functions (here, `advisor.measure.cost` and
`advisor.measure.learning`); `evidence_signals` flattens the result into the rules' signals; the
renderings of the "evidence" section are in `advisor.report.render`.

Conventions the rules rely on:

- `latency_over_budget` compares the best few-shot arm's p95 with the budget (the arm a prompting
  deployment would need); without a few-shot arm it uses the best arm's p95.
- `domain_ppl_ratio` is the model's perplexity per whitespace word on the task's texts over the same on
  the reference. Per word, not per token: a text the tokenizer shreds into many small, individually
  predictable pieces (code, jargon) would otherwise look familiar; per-token figures are kept beside it.
  For classification the targets are label names, so the inputs are measured instead (recorded as
  `source`). Whether that ratio counts as a shift is a rule's call (`domain.language_shift` against the
  threshold `domain_shift_ratio` in rules/domain.toml); a declared `--domain` is reported beside it, not
  mixed into it.
- `examples_needed` is the total number of training examples the probe's power law needs to reach the
  quality target; None when not measured or beyond 100× the current data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from advisor import progress
from advisor.backends.base import Backend, GenRequest, LoglikRequest
from advisor.document import DomainMeasure, LatencyModel
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
from advisor.measure.learning import DEFAULT_FRACTIONS, LearningCurve, probe_learning_curve
from advisor.types import Example, Message, TaskKind

__all__ = [
    "ArmEvidence",
    "ArmInput",
    "CostSummary",
    "DomainMeasure",
    "Evidence",
    "LatencyModel",
    "LatencySample",
    "evidence_signals",
    "example_prices_path",
    "fit_latency",
    "gather_evidence",
    "measure_domain",
    "measure_latency",
    "parse_volume",
    "summarize_latency",
]

SIGNAL_NAMES = (
    "volume_per_day",
    "latency_budget_ms",
    "best_arm_p95_ms",
    "few_shot_p95_ms",
    "latency_over_budget",
    "monthly_cost_best_arm",
    "break_even_days",
    "break_even_within_horizon",
    "probe_score",
    "probe_score_low",
    "probe_beats_prompting",
    "examples_needed",
    "domain",
    "domain_ppl_ratio",
    "tokens_per_word",
    "needs_consistent_style",
)
DEFAULT_HORIZON_DAYS = 90.0
REFERENCE_PATH = Path(__file__).parents[1] / "data" / "reference_english.txt"


# ---------------------------------------------------------------- arms and tokens


@dataclass(frozen=True)
class ArmInput:
    """One prompting arm as evidence needs it: its score and its prompts on the eval items."""

    name: str
    kind: str  # "zero_shot" | "system" | "few_shot"
    score: float | None
    messages: tuple[tuple[Message, ...], ...] = ()
    k: int = 0
    mean_prompt_tokens: float | None = None  # when the harness already counted them


def mean_prompt_tokens(backend: Backend, messages: Sequence[Sequence[Message]]) -> float | None:
    """Mean tokens of the rendered prompts (chat template and generation prompt included)."""
    if not messages:
        return None
    counts = backend.count_tokens([backend.render(m) for m in messages])
    return float(np.mean(counts))


def mean_completion_tokens(backend: Backend, task: TaskKind, eval_items: Sequence[Example]) -> float | None:
    """Tokens the model is expected to produce: the label (classification) or the target text."""
    texts = [
        (ex.label if task is TaskKind.CLASSIFY and ex.label is not None else ex.target) for ex in eval_items
    ]
    if not texts:
        return None
    return float(np.mean(backend.count_tokens(texts)))


# ---------------------------------------------------------------- latency


@dataclass(frozen=True)
class LatencySample:
    arm: str
    prompt_tokens: int
    output_tokens: int
    seconds: float


@dataclass(frozen=True)
class ArmLatency:
    arm: str
    n: int
    p50_ms: float
    p95_ms: float
    mean_ms: float


def measure_latency(
    backend: Backend,
    requests_by_arm: Mapping[str, Sequence[GenRequest]],
    n: int = 20,
    *,
    warmup: int = 1,
) -> list[LatencySample]:
    """Time up to `n` single requests per arm, one at a time, as a user of the deployment would see them.

    Arms take turns (request i of every arm, then request i+1), so a machine that slows down midway
    slows every arm alike. Each sample is the backend's own timing of that request (`GenResult.latency_s`),
    so through the response cache a re-run reuses the first run's measurements and makes no calls. The
    first `warmup` requests (of the first arm) are not counted, so one-off start-up costs stay out of the p95.
    """
    samples: list[LatencySample] = []
    queues = {arm: list(requests)[:n] for arm, requests in requests_by_arm.items()}
    first = next((q for q in queues.values() if q), [])
    total = len(first[:warmup]) + sum(len(q) for q in queues.values())
    progress.report("latency samples", 0, total)  # started: the warm-up request belongs to this stage
    for req in first[:warmup]:
        backend.generate([req])
    progress.report("latency samples", len(first[:warmup]), total)
    for i in range(max((len(q) for q in queues.values()), default=0)):
        for arm, queue in queues.items():
            if i < len(queue):
                (result,) = backend.generate([queue[i]])
                samples.append(
                    LatencySample(arm, result.prompt_tokens, result.completion_tokens, result.latency_s)
                )
                progress.report("latency samples", len(first[:warmup]) + len(samples), total)
    return samples


def summarize_latency(samples: Sequence[LatencySample]) -> dict[str, ArmLatency]:
    """p50 / p95 / mean per arm, in milliseconds (linear-interpolated percentiles)."""
    by_arm: dict[str, list[float]] = {}
    for s in samples:
        by_arm.setdefault(s.arm, []).append(s.seconds * 1000.0)
    out = {}
    for arm, ms in by_arm.items():
        arr = np.asarray(ms)
        out[arm] = ArmLatency(
            arm, len(ms), float(np.percentile(arr, 50)), float(np.percentile(arr, 95)), float(arr.mean())
        )
    return out


def fit_latency(samples: Sequence[LatencySample]) -> LatencyModel | None:
    """Least-squares latency model; None without samples."""
    if not samples:
        return None
    y = np.array([s.seconds for s in samples], dtype=float)
    cols: dict[Literal["b", "c"], np.ndarray] = {
        "b": np.array([s.prompt_tokens for s in samples], dtype=float),
        "c": np.array([s.output_tokens for s in samples], dtype=float),
    }
    terms = [t for t, x in cols.items() if np.ptp(x) > 0]
    while True:
        design = np.column_stack([np.ones_like(y)] + [cols[t] for t in terms])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        negative = [t for t, v in zip(terms, coef[1:], strict=True) if v < 0]
        if not negative:
            break
        terms = [t for t in terms if t not in negative]
    values = dict(zip(["a", *terms], (float(v) for v in coef), strict=True))
    residual = y - design @ coef
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual**2)) / total if total > 0 and len(y) > len(coef) else None
    return LatencyModel(
        a=values["a"], b=values.get("b", 0.0), c=values.get("c", 0.0), n=len(y), r2=r2, fitted=["a", *terms]
    )


# ---------------------------------------------------------------- domain language


def load_reference_sentences(path: Path = REFERENCE_PATH) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def reference_chunks(sentences: Sequence[str], words_per_text: float) -> list[str]:
    """Join consecutive reference sentences into texts of about `words_per_text` words.

    Perplexity depends on text length (the first tokens have no context), so the reference is cut
    to the length of the task's texts before the two are compared.
    """
    chunks: list[str] = []
    current: list[str] = []
    words = 0
    for sentence in sentences:
        current.append(sentence)
        words += len(sentence.split())
        if words >= words_per_text:
            chunks.append(" ".join(current))
            current, words = [], 0
    if current:
        chunks.append(" ".join(current))
    return chunks


# One neutral user turn before every scored text: some servers refuse an empty conversation, and the
# same context on both sides keeps the ratio fair.
DOMAIN_CONTEXT = (Message("user", "Write a few sentences."),)


def inexact_scoring(backend: Backend) -> str | None:
    """Why the backend's scores are not whole-text log-probabilities (so perplexity means nothing), or None.

    A server scored with `chat_logprobs` gives only the first token's log-probability, one scored with
    `generate` only whether the greedy reply matched.
    """
    method = getattr(backend, "scoring_method", None)
    if method not in ("chat_logprobs", "generate"):
        return None
    note = getattr(backend, "scoring_note", None)
    return (
        f"scored by {method}"
        + (f": {note}" if note else "")
        + "; perplexity needs whole-text log-probabilities"
    )


DOMAIN_STAGE = "domain perplexity"
DOMAIN_CHUNK = 8  # texts per backend call: small enough for live progress


def perplexity(
    backend: Backend, texts: Sequence[str], progress_offset: int = 0, progress_total: int | None = None
) -> tuple[float, float]:
    """Perplexity of `texts` per token and per whitespace word (each the reply to `DOMAIN_CONTEXT`).

    Progress is reported as `progress_offset` + texts scored of `progress_total` (default: these texts)."""
    total = len(texts) if progress_total is None else progress_total
    results = []
    for start in range(0, len(texts), DOMAIN_CHUNK):
        part = texts[start : start + DOMAIN_CHUNK]
        results += backend.loglikelihood([LoglikRequest(DOMAIN_CONTEXT, continuation=t) for t in part])
        progress.report(DOMAIN_STAGE, progress_offset + start + len(part), total)
    total_lp = sum(r.logprob for r in results)
    total_n = sum(r.n_tokens for r in results)
    total_words = sum(len(t.split()) for t in texts)
    per_token = math.exp(min(700.0, -total_lp / total_n)) if total_n else math.nan
    per_word = math.exp(min(700.0, -total_lp / total_words)) if total_words else math.nan
    return per_token, per_word


def _tokens_per_word(backend: Backend, texts: Sequence[str]) -> float:
    words = sum(len(t.split()) for t in texts)
    return sum(backend.count_tokens(list(texts))) / words if words else math.nan


def measure_domain(
    backend: Backend,
    texts: Sequence[str],
    source: Literal["inputs", "targets"],
    *,
    reference: Sequence[str] | None = None,
    max_texts: int = 32,
    seed: int = 0,
) -> DomainMeasure | None:
    """The model's perplexity on a seeded sample of the task's texts over its perplexity on the reference."""
    texts = [t for t in texts if t.strip()]
    if not texts:
        return None
    if len(texts) > max_texts:
        rng = np.random.default_rng(seed)
        texts = [texts[i] for i in sorted(rng.choice(len(texts), max_texts, replace=False))]
    progress.report(DOMAIN_STAGE, 0, None)  # started: every request below belongs to this stage
    if backend.name == "openai" and getattr(backend, "scoring_method", None) is None:
        # A server's scoring method is found by its first scoring call: one text (cached) decides.
        backend.loglikelihood([LoglikRequest(DOMAIN_CONTEXT, continuation=texts[0])])
    if inexact_scoring(backend) is not None:
        return None
    sentences = list(reference) if reference is not None else load_reference_sentences()
    median_words = float(np.median([len(t.split()) for t in texts]))
    ref = reference_chunks(sentences, median_words)
    both = len(texts) + len(ref)
    task_ppl, task_word_ppl = perplexity(backend, texts, 0, both)
    ref_ppl, ref_word_ppl = perplexity(backend, ref, len(texts), both)
    return DomainMeasure(
        source=source,
        n_texts=len(texts),
        n_reference=len(ref),
        task_ppl=task_ppl,
        reference_ppl=ref_ppl,
        task_word_ppl=task_word_ppl,
        reference_word_ppl=ref_word_ppl,
        ratio=task_word_ppl / ref_word_ppl,
        token_ratio=task_ppl / ref_ppl,
        tokens_per_word=_tokens_per_word(backend, texts),
        reference_tokens_per_word=_tokens_per_word(backend, ref),
    )


# ---------------------------------------------------------------- the evidence document


@dataclass(frozen=True)
class ArmEvidence:
    name: str
    kind: str
    k: int
    score: float | None
    prompt_tokens: float | None  # mean per request
    completion_tokens: float | None  # mean per request
    p50_ms: float | None = None
    p95_ms: float | None = None
    cost_per_request: float | None = None
    monthly_cost: float | None = None


@dataclass(frozen=True)
class CostSummary:
    currency: str
    serving: str  # how the prompted model is served
    finetuned_serving: str  # how the fine-tuned model would be
    price_date: str | None
    source: str | None
    throughput_source: str | None  # self-hosted serving: "config" or "measured single-request"
    finetune_cost: float | None
    train_tokens: float | None
    finetuned_prompt_tokens: float | None
    finetuned_cost_per_request: float | None
    finetuned_monthly_cost: float | None
    saving_per_request: float | None
    monthly_saving: float | None
    break_even_requests: float | None
    break_even_days: float | None
    reason: str | None


@dataclass(frozen=True)
class Evidence:
    """Everything measured beyond accuracy; `None` fields were not measured (see `not_measured`)."""

    task_kind: str
    arms: tuple[ArmEvidence, ...] = ()
    best_arm: str | None = None
    few_shot_arm: str | None = None
    volume_per_day: float | None = None
    latency_budget_ms: float | None = None
    latency_model: LatencyModel | None = None
    finetuned_latency_ms: float | None = None  # projected at a zero-shot-length prompt
    cost: CostSummary | None = None
    horizon_days: float = DEFAULT_HORIZON_DAYS
    learning_curve: LearningCurve | None = None
    domain: str | None = None  # declared
    domain_measure: DomainMeasure | None = None
    needs_consistent_style: bool = False
    not_measured: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (what, why)

    def arm(self, name: str | None) -> ArmEvidence | None:
        return next((a for a in self.arms if a.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """The "evidence" section of decision.json (JSON-safe: non-finite numbers become null)."""
        doc = _jsonable(asdict(self))
        doc["not_measured"] = [{"what": w, "why": y} for w, y in self.not_measured]
        if self.learning_curve is not None:
            doc["learning_curve"]["probe_score"] = self.learning_curve.probe_score
        return doc


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):  # a document section built by the measurement (LatencyModel, ...)
        return _jsonable(value.model_dump(mode="python"))
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------- signals


def evidence_signals(
    evidence: Evidence | None, config: Any = None
) -> dict[str, float | int | bool | str | None]:
    """The Evidence signals of the shared contract; None where not measured.

    `config` may carry `horizon_days` (else the evidence's own is used).
    """
    out: dict[str, float | int | bool | str | None] = dict.fromkeys(SIGNAL_NAMES)
    if evidence is None:
        return out
    horizon = getattr(config, "horizon_days", None) or evidence.horizon_days
    best = evidence.arm(evidence.best_arm)
    few = evidence.arm(evidence.few_shot_arm)
    out["volume_per_day"] = evidence.volume_per_day
    out["latency_budget_ms"] = evidence.latency_budget_ms
    out["best_arm_p95_ms"] = best.p95_ms if best else None
    out["few_shot_p95_ms"] = few.p95_ms if few else None
    deciding = out["few_shot_p95_ms"] if few is not None else out["best_arm_p95_ms"]
    if evidence.latency_budget_ms is not None and isinstance(deciding, float):
        out["latency_over_budget"] = deciding > evidence.latency_budget_ms
    out["monthly_cost_best_arm"] = best.monthly_cost if best else None
    cost = evidence.cost
    if cost is not None:
        out["break_even_days"] = cost.break_even_days
        if cost.break_even_days is not None:
            out["break_even_within_horizon"] = cost.break_even_days <= horizon
        elif cost.saving_per_request is not None and cost.saving_per_request <= 0:
            out["break_even_within_horizon"] = False  # measured: it never pays back
    curve = evidence.learning_curve
    if curve is not None:
        out["probe_score"] = curve.probe_score
        out["probe_score_low"] = curve.points[-1].ci_low
        out["probe_beats_prompting"] = curve.beats(best.score if best else None)
        needed = curve.examples_needed.value
        out["examples_needed"] = int(needed) if needed is not None else None
    out["domain"] = evidence.domain
    dm = evidence.domain_measure
    if dm is not None and dm.ratio is not None and math.isfinite(dm.ratio):
        out["domain_ppl_ratio"] = dm.ratio
        out["tokens_per_word"] = dm.tokens_per_word
    out["needs_consistent_style"] = evidence.needs_consistent_style
    return out


# ---------------------------------------------------------------- cost over the arms


def price_arms(
    arms: Sequence[ArmEvidence],
    best_arm: str | None,
    config: CostConfig,
    volume_per_day: float | None,
    *,
    finetuned_prompt_tokens: float | None,
    completion_tokens: float | None,
    train_tokens: float | None,
    latency_model: LatencyModel | None = None,
) -> tuple[tuple[ArmEvidence, ...], CostSummary]:
    """Cost per request and per month for every arm, the fine-tuned model's, and the break-even.

    Self-hosted serving without a configured throughput falls back to the measured single-request
    speeds (1/b prompt and 1/c output tokens per second from the latency model), which overstates
    what a batched server costs; the summary says which was used.
    """
    throughput_source = None
    if "self_hosted" in (config.mode(), config.mode(finetuned=True)):
        throughput_source = "config"
        if config.prompt_tokens_per_s is None or config.output_tokens_per_s is None:
            # the measured speed is the prompted model's: it prices the fine-tuned one only when that is
            # served the same way (self-hosted too), not a self-hosted B beside an API-served A
            if (
                config.mode() == "self_hosted"
                and latency_model is not None
                and latency_model.b > 0
                and latency_model.c > 0
            ):
                config = replace(
                    config,
                    prompt_tokens_per_s=config.prompt_tokens_per_s or 1.0 / latency_model.b,
                    output_tokens_per_s=config.output_tokens_per_s or 1.0 / latency_model.c,
                )
                throughput_source = "measured single-request"
            else:
                throughput_source = None
    priced = []
    for arm in arms:
        per = (
            cost_per_request(config, arm.prompt_tokens, arm.completion_tokens)
            if arm.prompt_tokens is not None and arm.completion_tokens is not None
            else None
        )
        priced.append(replace(arm, cost_per_request=per, monthly_cost=monthly_cost(per, volume_per_day)))
    best = next((a for a in priced if a.name == best_arm), None)
    ft_per = (
        cost_per_request(config, finetuned_prompt_tokens, completion_tokens, finetuned=True)
        if finetuned_prompt_tokens is not None and completion_tokens is not None
        else None
    )
    one_time = finetune_cost(config, train_tokens)
    be = break_even(best.cost_per_request if best else None, ft_per, one_time, volume_per_day)
    summary = CostSummary(
        currency=config.currency,
        serving=config.serving,
        finetuned_serving=config.mode(finetuned=True),
        price_date=config.price_date,
        source=config.source,
        throughput_source=throughput_source,
        finetune_cost=one_time,
        train_tokens=train_tokens,
        finetuned_prompt_tokens=finetuned_prompt_tokens,
        finetuned_cost_per_request=ft_per,
        finetuned_monthly_cost=monthly_cost(ft_per, volume_per_day),
        saving_per_request=be.saving_per_request,
        monthly_saving=be.monthly_saving,
        break_even_requests=be.requests,
        break_even_days=be.days,
        reason=be.reason,
    )
    return tuple(priced), summary


# ---------------------------------------------------------------- the recipe


@dataclass(frozen=True)
class _Settings:
    """What `gather_evidence` reads from the run's config (any object with these attributes)."""

    volume_per_day: float | None = None
    latency_budget_ms: float | None = None
    domain: str | None = None
    needs_consistent_style: bool = False
    horizon_days: float = DEFAULT_HORIZON_DAYS
    quality_target: float | None = None
    target_metric: str | None = None
    latency_samples: int = 20
    max_gen_tokens: int = 64
    prices: str | None = None
    cost: CostConfig | None = None
    seed: int = 0
    token_items: int = 200
    domain_texts: int = 32
    n_boot: int = 1000


def _settings(config: Any) -> _Settings:
    if config is None:
        return _Settings()
    values = {}
    for name in _Settings.__dataclass_fields__:
        value = config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)
        if value is not None:
            values[name] = value
    return _Settings(**values)


def gather_evidence(
    backend: Backend | None,
    prompting: Any,
    train: Sequence[Example],
    eval_items: Sequence[Example],
    task: TaskKind,
    labels: Sequence[str] | None,
    config: Any = None,
    *,
    latency_backend: Backend | None = None,
) -> Evidence:
    """Measure what can be measured; everything else stays None with a reason in `not_measured`.

    `prompting` is the harness's `PromptingResult` or a sequence of `ArmInput` (see `arm_inputs`);
    its quality target and metric are used when `config` has none.
    `config` is any object (or mapping) with the `_Settings` attribute names, e.g. `AdviseConfig`;
    `prices` is a price-file path, `cost` a ready `CostConfig`. Latency is timed on
    `latency_backend` when given, else on `backend` (through the response cache's `.inner`).
    """
    s = _settings(config)
    if s.quality_target is None and getattr(prompting, "quality_target", None) is not None:
        s = replace(s, quality_target=prompting.quality_target)
    if s.target_metric is None and getattr(prompting, "target_metric", None) is not None:
        s = replace(s, target_metric=prompting.target_metric)
    missing: list[tuple[str, str]] = []
    arms = arm_inputs(prompting)
    is_classify = task is TaskKind.CLASSIFY

    # tokens
    completion = mean_completion_tokens(backend, task, eval_items) if backend is not None else None
    rows = []
    for arm in arms:
        tokens = arm.mean_prompt_tokens
        if tokens is None and backend is not None:
            tokens = mean_prompt_tokens(backend, arm.messages[: s.token_items])
        rows.append(ArmEvidence(arm.name, arm.kind, arm.k, arm.score, tokens, completion))
    if not arms:
        missing.append(("arms", "prompting was not measured (no backend or no arms)"))
    scored = [a for a in rows if a.score is not None]
    # The harness's own choice when it made one, so report and signals name the same arm (None when every
    # arm is degenerate: no arm to cost); else the highest score, the cheapest (first) of equals.
    plateau = getattr(prompting, "plateau", None)
    best = getattr(plateau, "best_arm", None)
    if plateau is None and best not in {a.name for a in scored}:
        best = max(scored, key=lambda a: a.score or 0.0).name if scored else None
    degeneracy = getattr(prompting, "degeneracy", None) or {}
    few = [
        a for a in scored if a.kind == "few_shot" and not getattr(degeneracy.get(a.name), "degenerate", False)
    ]
    few_name = max(few, key=lambda a: a.score or 0.0).name if few else None
    zero = next((a for a in rows if a.kind == "zero_shot"), None) or (
        min(rows, key=lambda a: a.prompt_tokens or math.inf) if rows else None
    )
    ft_prompt = zero.prompt_tokens if zero is not None else None

    # latency
    # Through the response cache: each sample is the request's own measured time, stored with its
    # response, so a re-run reports the first run's timings without calling the model again.
    timer = latency_backend or backend
    latency_model = None
    if timer is not None and arms and s.latency_samples > 0:
        gen_tokens = _gen_tokens(timer, task, labels, eval_items, s.max_gen_tokens)
        requests = {
            a.name: [GenRequest(m, max_tokens=gen_tokens) for m in a.messages] for a in arms if a.messages
        }
        samples = measure_latency(timer, requests, n=s.latency_samples)
        summary = summarize_latency(samples)
        rows = [
            replace(r, p50_ms=summary[r.name].p50_ms, p95_ms=summary[r.name].p95_ms)
            if r.name in summary
            else r
            for r in rows
        ]
        latency_model = fit_latency(samples)
    else:
        why = "latency_samples is 0" if timer is not None and arms else "no backend or no arms to time"
        missing.append(("latency", why))
    ft_latency = (
        latency_model.project(ft_prompt, completion) * 1000.0
        if latency_model is not None and ft_prompt is not None and completion is not None
        else None
    )

    # cost
    cost_config = s.cost
    if cost_config is None and s.prices:
        cost_config = load_cost_config(Path(s.prices))
    cost_summary = None
    if cost_config is None:
        missing.append(("cost", "no prices given (--prices FILE; see advisor/data/prices.example.toml)"))
    elif rows:
        train_tokens = len(train) * (ft_prompt + completion) if ft_prompt is not None and completion else None
        rows_t, cost_summary = price_arms(
            rows,
            best,
            cost_config,
            s.volume_per_day,
            finetuned_prompt_tokens=ft_prompt,
            completion_tokens=completion,
            train_tokens=float(train_tokens) if train_tokens is not None else None,
            latency_model=latency_model,
        )
        rows = list(rows_t)
        if s.volume_per_day is None:
            missing.append(("monthly cost", "no volume declared (--volume N/day)"))
    else:
        missing.append(("cost", "no arms with token counts to price"))

    # learning curve
    curve = None
    if not is_classify:
        missing.append(
            ("learning curve", "generation tasks need short LoRA runs on subsets (opt-in); not measured")
        )
    elif len({ex.label for ex in train}) < 2 or not eval_items:
        missing.append(("learning curve", "needs at least two labels in the train split and eval items"))
    else:
        metric = s.target_metric if s.target_metric in ("accuracy", "macro_f1") else "accuracy"
        curve = probe_learning_curve(
            [ex.input_text for ex in train],
            [str(ex.label) for ex in train],
            [ex.input_text for ex in eval_items],
            [str(ex.label) for ex in eval_items],
            target=s.quality_target,
            metric=metric,
            fractions=DEFAULT_FRACTIONS,
            seed=s.seed,
            n_boot=s.n_boot,
        )
        if s.quality_target is None:
            missing.append(("examples needed", "no quality target given (--target METRIC=VALUE)"))

    # domain language
    domain_measure = None
    if backend is not None:
        pool = list(train) or list(eval_items)
        texts = [ex.input_text for ex in pool] if is_classify else [ex.target for ex in pool]
        domain_measure = measure_domain(
            backend, texts, "inputs" if is_classify else "targets", max_texts=s.domain_texts, seed=s.seed
        )
        inexact = inexact_scoring(backend)
        if domain_measure is None and inexact is not None:
            missing.append(("domain perplexity", inexact))
    else:
        missing.append(("domain perplexity", "no model backend"))

    return Evidence(
        task_kind=task.value,
        arms=tuple(rows),
        best_arm=best,
        few_shot_arm=few_name,
        volume_per_day=s.volume_per_day,
        latency_budget_ms=s.latency_budget_ms,
        latency_model=latency_model,
        finetuned_latency_ms=ft_latency,
        cost=cost_summary,
        horizon_days=s.horizon_days,
        learning_curve=curve,
        domain=s.domain,
        domain_measure=domain_measure,
        needs_consistent_style=bool(s.needs_consistent_style),
        not_measured=tuple(missing),
    )


def _gen_tokens(
    backend: Backend, task: TaskKind, labels: Sequence[str] | None, eval_items: Sequence[Example], cap: int
) -> int:
    """Tokens to generate when timing: the longest label, or the mean target length (capped)."""
    if task is TaskKind.CLASSIFY and labels:
        return max(1, max(backend.count_tokens(list(labels))))
    counts = backend.count_tokens([ex.target for ex in eval_items]) if eval_items else [cap]
    return max(1, min(cap, int(math.ceil(float(np.mean(counts))))))


def arm_inputs(prompting: Any, metric: str | None = None) -> list[ArmInput]:
    """The arms as evidence needs them: a sequence of `ArmInput`, or the harness's `PromptingResult`.

    From a `PromptingResult` each arm's score is its `metric` (default: the result's target metric)
    and its prompts and mean prompt tokens are the ones the harness sent and counted.
    """
    if prompting is None:
        return []
    if isinstance(prompting, Sequence) and all(isinstance(a, ArmInput) for a in prompting):
        return list(prompting)
    metric = metric or getattr(prompting, "target_metric", None)
    out = []
    for arm in getattr(prompting, "arms", ()):
        estimate = arm.scores.get(metric) if metric else None
        out.append(
            ArmInput(
                name=arm.name,
                kind=str(arm.kind),
                score=None if estimate is None else float(estimate.value),
                messages=tuple(arm.prompts),
                k=int(arm.k),
                mean_prompt_tokens=float(arm.mean_prompt_tokens)
                if arm.prompts or arm.mean_prompt_tokens
                else None,
            )
        )
    return out
