"""The typed report document: what decision.json holds, written from and read back into these models.

One model, many readers: the run folder writes `Report` as decision.json, `tunegate report` and the pipeline
read it back through `Report.model_validate_json`, and the shipped JSON Schema
(advisor/schema/decision.schema.json) is generated from it (`python -m advisor.document > FILE`),
so the schema can never drift from the code. Every model is frozen and forbids unknown keys: a document with a
typo or a missing section fails at the edge with the field's path, not deep inside a renderer.

A measured number that could not be measured is `None`, never a guess.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from advisor.types import TaskKind, Verdict

SCHEMA_VERSION = "1.0"

Metric = Literal["accuracy", "macro_f1", "exact_match", "normalized_exact_match", "token_f1", "chrf"]
Share = Annotated[float, Field(ge=0.0, le=1.0)]
Count = Annotated[int, Field(ge=0)]
Sha256 = Annotated[str, Field(pattern="^[0-9a-f]{64}$")]
SignalValue = float | int | bool | str | None


class Model(BaseModel):
    """Frozen, strict about unknown keys; the base of every section."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- data


class Dataset(Model):
    path: str
    format: str | None = None
    sha256: Sha256
    n_records: int | None = None
    n_examples: Count | None = None
    task_kind: TaskKind
    labels: list[str] | None = None


class TokenStats(Model):
    mean: Annotated[float, Field(ge=0.0)]
    p50: Annotated[float, Field(ge=0.0)]
    p95: Annotated[float, Field(ge=0.0)]
    max: Count


class Audit(Model):
    """The data audit: counts, balance, duplicates, conflicts, empty targets, lengths in tokens."""

    n_examples: Count
    task_kind: TaskKind
    labels: list[str]
    label_counts: dict[str, Count]
    n_labels: Count
    imbalance_ratio: Annotated[float, Field(ge=1.0)] | None
    minority_share: Share | None
    exact_duplicates: Count
    normalised_duplicates: Count
    duplicate_share: Share
    conflict_groups: Count
    conflict_examples: Count
    conflict_share: Share
    conflict_pairs: list[Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=2, max_length=2)]]
    empty_targets: Count
    input_tokens: TokenStats
    target_tokens: TokenStats
    token_method: Literal["tokenizer", "chars/4"]


class EvalStep(Model):
    """One look at the verdict: the eval items scored so far, and the verdict and P(verdict) they gave."""

    n_eval: Count
    added: Count = Field(description="items this step added")
    source: Literal["eval split", "train rows"] = Field(
        description="the eval split's own seeded steps, or training rows no prompt used (beyond it)"
    )
    verdict: Verdict | None
    probability: Share | None
    requests: Count = Field(description="model requests spent by then (the backend's count, else estimated)")
    tokens: Count
    reach: Count | None = Field(
        default=None,
        description="the most eval items the steps and the budget could still reach (None: not asked)",
    )
    predictive_power: Share | None = Field(
        default=None,
        description="the chance that scoring up to `reach` settles a verdict (this one or its runner-up)",
    )


class EvalGrowth(Model):
    """How advise scored the eval split in steps while P(verdict) was low (split.json: the final lines)."""

    initial_eval: Count
    final_eval: Count
    rounds: Count
    added_lines: list[int]
    probabilities: list[float] = []
    stopped: str
    settled_at: Annotated[float, Field(ge=0.0)] | None = Field(
        None, description="the P(verdict) at which scoring stops (above 1: never settled, score all)"
    )
    steps: list[EvalStep] = []
    returned_to_train: Count = Field(0, description="eval-split rows never scored, given back to training")
    method: str = Field("", description="why stopping at a look keeps the deciding tests' level")


class Split(Model):
    """Split sizes; the line numbers themselves are in the run folder's split.json."""

    file: str | None = None
    seed: int
    n_train: Count | None = None
    n_dev: Count | None = None
    n_eval: Count | None = None
    leakage_count: Count | None = None
    eval_growth: EvalGrowth | None = None


# --------------------------------------------------------------------------- prompting


class Estimate(Model):
    """A score with its 95% percentile-bootstrap interval over `n` items."""

    value: float
    low: float
    high: float
    n: Count


Variant = Literal["raw", "contextual", "batch"]
Selection = Literal["stratified", "nearest"] | None


class Tried(Model):
    """One variant of an arm scored on the dev split (the best dev score is then scored on eval)."""

    variant: Variant
    selection: Selection
    dev_score: float
    n_dev: Count


class PairedGap(Model):
    diff: float
    low: float
    high: float
    p_value: Share


class Degeneracy(Model):
    """Whether predictions collapse onto one label, or do no better than always answering the majority
    (classification); whether generated answers collapse onto one answer or copy the item's own
    demonstrations' answers (generation: no majority baseline, the copy fields instead)."""

    top_label: str
    top_share: Share
    top_true_share: Share
    collapsed: bool
    vs_majority: PairedGap | None = None
    beats_majority: bool | None = None
    copied_demo_share: Share | None = Field(
        default=None, description="generation: share of answers equal to one of the item's demonstrations'"
    )
    copied_demo_expected: Share | None = Field(
        default=None, description="generation: share of items whose own target is one of those answers"
    )
    copies_demos: bool | None = None
    degenerate: bool
    reason: str | None


class ArmScores(Model):
    name: Annotated[str, Field(min_length=1)]
    kind: str = Field(description="zero_shot | system | few_shot (another scored model: its own kind)")
    k: Count
    selection: Literal["stratified", "nearest"] | None
    n: Count
    mean_prompt_tokens: float
    scores: dict[Metric, Estimate]
    variant: Variant = "raw"
    calibration: dict[str, float] | None = Field(
        None, description="log-prior per label subtracted before the argmax"
    )
    tried: list[Tried] = []
    degeneracy: Degeneracy | None = None


class Comparison(Model):
    arm: str
    baseline: str
    metric: Metric
    diff: float
    low: float
    high: float
    n: Count
    p_value: Share = Field(
        description="the larger of the fixed-sample p (exact McNemar for accuracy, paired bootstrap "
        "otherwise) and the anytime-valid p"
    )
    bootstrap_p_value: Share
    mcnemar_p_value: Share
    improved: Count
    regressed: Count
    improved_lines: list[int]
    regressed_lines: list[int]
    anytime: AnytimeGap | None = Field(
        None, description="the anytime-valid confidence sequence and p-value (valid at any stopping time)"
    )


class AnytimeGap(Model):
    """A paired difference's anytime-valid confidence sequence and p-value at `n` items (measure.stats)."""

    diff: float
    low: float
    high: float
    p_value: Share
    n: Count


class RaceRound(Model):
    """One round of the dev race: the candidates still in it, scored paired on the same dev items."""

    round: Annotated[int, Field(ge=1)]
    n_dev: Count
    scores: dict[str, float] = Field(description="each candidate's best-variant dev score on these items")
    leader: str
    dropped: dict[str, str] = Field(description="candidate -> why it left the race after this round")


class CurvePoint(Model):
    k: Count
    arm: str
    selection: Literal["stratified", "nearest"] | None
    value: float
    low: float
    high: float
    n: Count
    mean_prompt_tokens: float


class Trend(Model):
    """Score against log2(k + 1) over the ladder, with a paired-bootstrap interval on the slope."""

    ks: list[int]
    slope: float
    low: float
    high: float
    intercept: float
    n: Count

    @property
    def rising(self) -> bool:
        """The whole slope interval lies above zero: more demonstrations still help."""
        return self.low > 0

    def at(self, k: int) -> float:
        """The fitted score at k demonstrations."""
        return self.intercept + self.slope * math.log2(k + 1)


class CostlierArm(Model):
    arm: str
    diff: float
    low: float
    high: float
    p_value: Share
    n: Count


class Plateau(Model):
    plateaued: bool
    best_arm: str | None  # None: every arm is degenerate
    previous_arm: str | None
    best_score: float | None
    gain: float
    p_value: Share
    significant: bool
    below_target: bool
    items_needed: Annotated[int, Field(ge=1)] | None
    reason: str
    case: Literal[
        "single_arm",
        "costlier_not_better",
        "costlier_better",
        "ladder_exhausted",
        "flat_trend",
        "still_improving",
    ]
    extend: bool
    ladder_exhausted: bool
    trend: Trend | None
    costlier: list[CostlierArm]


class MetricPair(Model):
    accuracy: float
    macro_f1: float


class Baselines(Model):
    """What a model that ignores the input scores on the same eval items."""

    majority_label: str
    majority_share: Share
    label_shares: dict[str, Share]
    majority: MetricPair
    uniform: MetricPair


class Prompting(Model):
    """Prompting baselines on the eval split (per-item predictions are in predictions/)."""

    backend: str
    model_id: str
    task: TaskKind
    labels: list[str]
    target_metric: Metric
    quality_target: Share
    min_gain: Annotated[float, Field(gt=0.0, lt=1.0)]
    alpha: Annotated[float, Field(gt=0.0, lt=1.0)]
    seed: int
    n_eval: Annotated[int, Field(ge=1)]
    arms: Annotated[list[ArmScores], Field(min_length=1)]
    comparisons: list[Comparison]
    k_curve: list[CurvePoint]
    plateau: Plateau
    metric_reason: str
    k_max: int | None
    budget_spent: bool = Field(
        False, description="the run's request or token budget ended the ladder's extension"
    )
    baselines: Baselines | None
    race: list[RaceRound] = Field([], description="the dev race that chose the arms scored on eval")
    raced_out: list[str] = Field([], description="arms dropped in the dev race, not scored on eval")


# --------------------------------------------------------------------------- evidence


class ArmEvidence(Model):
    name: str
    kind: str
    k: Count
    score: float | None
    prompt_tokens: float | None
    completion_tokens: float | None
    p50_ms: float | None
    p95_ms: float | None
    cost_per_request: float | None
    monthly_cost: float | None


class LatencyModel(Model):
    """latency_s = a + b*prompt_tokens + c*output_tokens (least squares on timed requests)."""

    a: float
    b: float
    c: float
    n: int
    r2: float | None
    fitted: list[Literal["a", "b", "c"]] = Field(
        description="the terms estimated: a term whose tokens never varied, or whose slope came out negative "
        "(noise: more tokens never make a request faster), is dropped and the rest refitted; dropped "
        "slopes are 0"
    )

    def project(self, prompt_tokens: float, output_tokens: float) -> float:
        """Predicted seconds for one request of this shape."""
        return self.a + self.b * prompt_tokens + self.c * output_tokens


class Cost(Model):
    """Prices are the user's (example file or flags); a month is 30 days."""

    currency: str
    serving: Literal["api", "self_hosted"] = Field(description="how the prompted model is served and priced")
    finetuned_serving: Literal["api", "self_hosted"] | None = Field(
        default=None,
        description="how the fine-tuned model would be served and priced (absent in documents before it "
        "could differ: then as `serving`)",
    )
    price_date: str | None
    source: str | None
    throughput_source: str | None
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


class LearningPoint(Model):
    n: int
    score: float
    ci_low: float
    ci_high: float


class Interval(Model):
    value: float | None
    low: float | None
    high: float | None


class LearningCurve(Model):
    """TF-IDF + logistic-regression probe on nested train subsets; error = a*n^-b."""

    metric: str
    points: list[LearningPoint]
    a: float
    b: float
    b_interval: Annotated[list[float], Field(min_length=2, max_length=2)]
    score_at_2x: Interval
    score_at_4x: Interval
    target: float | None
    examples_needed: Interval
    n_boot: int
    probe_score: float


class DomainMeasure(Model):
    source: Literal["inputs", "targets"]
    n_texts: int
    n_reference: int
    task_ppl: float | None
    reference_ppl: float | None
    task_word_ppl: float | None
    reference_word_ppl: float | None
    ratio: float | None
    token_ratio: float | None
    tokens_per_word: float | None
    reference_tokens_per_word: float | None


class NotMeasured(Model):
    what: str
    why: str


class Evidence(Model):
    task_kind: TaskKind
    arms: list[ArmEvidence] = Field(description="Per arm: mean tokens, latency, cost.")
    best_arm: str | None
    few_shot_arm: str | None
    volume_per_day: float | None
    latency_budget_ms: float | None
    latency_model: LatencyModel | None
    finetuned_latency_ms: float | None
    cost: Cost | None
    horizon_days: float
    learning_curve: LearningCurve | None
    domain: str | None
    domain_measure: DomainMeasure | None
    needs_consistent_style: bool
    not_measured: list[NotMeasured]


# --------------------------------------------------------------------------- training and verification


class TrainMetrics(Model):
    steps: int
    total_steps: int
    best_step: int | None
    best_dev_loss: float | None
    final_train_loss: float | None = None
    stopped_early: bool | None = None
    trained_tokens: int
    tokens_per_s: float
    world_size: int
    n_train: int
    n_dev: int
    adapter_dir: str | None = None
    elapsed_s: float | None = None
    cpu_s: float | None = None
    peak_memory_bytes: int | None = None
    resumed_from: int | None = None
    n_truncated: int | None = None


class GateRecord(Model):
    gate_verdict: str | None
    forced: bool
    gate_checked_at: str | None = None
    data_sha256: str | None = None
    split_seed: int | None = None


class Training(Model):
    """LoRA training: what was trained, how, and how it went."""

    method: Literal["lora", "qlora"]
    base_model: str = Field(description="the local model folder trained on")
    base_model_id: str | None = Field(
        None, description="the Hugging Face Hub id of the base model's weights, when known"
    )
    adapter_dir: str
    merged_dir: str | None = None
    config: dict[str, Any]
    metrics: TrainMetrics
    provenance: GateRecord
    curve: list[dict[str, SignalValue]] | None = Field(
        None, description="per-step training loss and dev records from train/metrics.jsonl (thinned)"
    )


class Latency(Model):
    n: int
    p50_ms: float
    p95_ms: float
    mean_ms: float


class ScoredModel(Model):
    arm: str
    model_id: str | None = None
    adapter_dir: str | None = None
    prompted_as: str | None = Field(
        None,
        description="the fine-tuned model's prompts: 'finetune' (as tunegate trains) or the name of the "
        "best prompting arm whose recorded prompts it was given",
    )
    scores: dict[str, Estimate]
    mean_prompt_tokens: float
    latency: Latency | None


class Difference(Model):
    diff: float
    low: float
    high: float
    p_value: float
    n: int
    mcnemar_p_value: float | None = None


class Flip(Model):
    line: int
    input: str
    target: str
    before: str
    after: str


class Flips(Model):
    improved: int
    regressed: int
    improved_examples: list[Flip]
    regressed_examples: list[Flip]


class MajorityGap(Model):
    label: str | None
    difference: Difference
    beats: bool


class Verification(Model):
    """The fine-tuned model against the best prompting arm on the same eval items."""

    metric: str
    n_eval: int
    quality_target: float | None = None
    baseline: ScoredModel
    finetuned: ScoredModel
    difference: Difference
    flips: Flips
    meets_target: bool | None = None
    finetune_verified: bool
    provenance: GateRecord
    majority: MajorityGap | None = None
    degeneracy: Degeneracy | None = None


# --------------------------------------------------------------------------- decision


class RuleSource(Model):
    title: str
    url: str | None = None
    citation: str | None = None


class RuleEvidence(Model):
    signals: dict[str, SignalValue]
    thresholds: dict[str, Any]


class FiredRule(Model):
    id: str
    kind: Literal["vote", "stop", "veto"]
    verdict: Verdict | None
    vetoes: Verdict | None
    weight: Annotated[float, Field(ge=0.0)]
    message: str
    note: str | None = None
    conditions: list[str]
    evidence: RuleEvidence
    sources: Annotated[list[RuleSource], Field(min_length=1)]
    file: str | None = None


class SkippedRule(Model):
    id: str
    kind: Literal["vote", "stop", "veto"]
    verdict: Verdict
    missing: Annotated[list[str], Field(min_length=1)]
    message: str


class Vetoed(Model):
    verdict: Verdict
    rule_id: str
    message: str


class ConfidenceDetail(Model):
    """P(verdict) from a paired bootstrap over the eval items, `decide()` run on every resample."""

    probability: Share
    runner_up: Verdict | None
    runner_up_share: Share
    shares: dict[Verdict, Share]
    n_resamples: Annotated[int, Field(ge=1)]
    n_items: Annotated[int, Field(ge=1)]
    seed: int
    method: str


class Decision(Model):
    verdict: Verdict
    confidence: Share | None = Field(
        description="P(verdict): the share of bootstrap resamples of the eval items whose signals give "
        "this verdict; null when nothing was measured per item."
    )
    confidence_label: Literal["low", "medium", "high", "not measured"]
    confidence_detail: ConfidenceDetail | None
    vote_margin: Share = Field(
        description="the rules' weight-based strength of the verdict; not a probability"
    )
    summary: Annotated[str, Field(min_length=1)]
    decided_by: Literal["stop", "votes", "tie", "no_votes"]
    deciding_rules: list[str]
    scores: dict[Verdict, float]
    fired: list[FiredRule]
    skipped: list[SkippedRule]
    not_fired: list[str]
    vetoed: list[Vetoed]
    what_would_change: list[str]


class Provenance(Model):
    tool_version: str
    dataset_sha256: Sha256
    rules_sha256: Sha256
    rules_files: Annotated[list[str], Field(min_length=1)]
    thresholds: dict[str, Any]
    threshold_overrides: dict[str, Any]
    config: dict[str, Any]
    seeds: dict[str, int]
    backend: dict[str, Any] | None = None
    python: str
    platform: str
    libraries: dict[str, str | None]


class ModelSection(Model):
    """The local model advise measured: what the user named, the folder loaded, and its Hub origin."""

    source: Literal["embedded", "folder", "gguf", "hub"] = Field(
        description="embedded: the bundled SmolLM2-135M-Instruct (a Q4_1 GGUF, dequantised); folder: a "
        "local Hugging Face folder; gguf: a converted .gguf file; hub: a Hugging Face Hub id"
    )
    name: str | None = Field(description="the model as the user named it (--model); null: the default")
    hub_id: str | None = Field(description="the Hugging Face Hub id the weights are from, when known")
    revision: str | None = Field(description="the Hub revision asked for (id@revision), if any")
    path: str = Field(description="the local folder transformers loaded")


# --------------------------------------------------------------------------- the document


# --------------------------------------------------------------------------- pilot fine-tune


class PilotPoint(Model):
    """One pilot: LoRA trained on the first `n_train` examples of a seeded, stratified order of the train
    split (the pilots are nested), scored on the dev split with the arms' harness."""

    n_train: Count
    steps: Count
    dev: Estimate
    train_s: float


class PilotCurve(Model):
    """score(n) = a - b * n^(-c) fitted to the pilots' dev scores (b >= 0, a <= 1, c on a grid).

    `trend` False: the largest pilot is not better than the smallest on the dev items (paired, 95%), so the
    curve is flat at the largest pilot's score and nothing is extrapolated."""

    a: float
    b: float
    c: float
    trend: bool
    trend_gain: Difference = Field(description="largest pilot minus smallest on the dev items, paired")
    n_full: Count = Field(description="training examples in the full train split")
    at_full: Estimate = Field(description="the curve's dev score at n_full, bootstrap over the dev items")


class ExamplesNeeded(Model):
    """Training examples at which the curve reaches a level; None: never (at or above its asymptote)."""

    level: float
    value: int | None
    low: int | None
    high: int | None


class Pilot(Model):
    """The pilot fine-tune advise ran: the same trainer, recipe and defaults as `tunegate train`."""

    measured: bool
    reason: str = Field(description="what was measured, or why the fine-tuning side was not measured")
    model_id: str | None = None
    recipe: dict[str, Any] | None = Field(default=None, description="the TrainConfig the pilots trained with")
    budget_steps: Count | None = None
    points: list[PilotPoint] = Field(default_factory=list)
    curve: PilotCurve | None = None
    baseline_arm: str | None = Field(
        default=None, description="the best honest prompting arm it is paired with ('majority': none is)"
    )
    baseline_kind: str | None = Field(
        default=None, description="that arm's kind: zero_shot, system, few_shot or majority"
    )
    eval_score: Estimate | None = Field(default=None, description="the largest pilot on the eval items")
    gain: Difference | None = Field(
        default=None, description="largest pilot minus the baseline arm, eval items, paired"
    )
    full_gain: Difference | None = Field(
        default=None,
        description="predicted gain at the full train split: the paired eval gain plus the curve's rise "
        "from the largest pilot to n_full (eval and dev resampled independently)",
    )
    to_beat_prompt: ExamplesNeeded | None = None
    to_target: ExamplesNeeded | None = None
    degenerate: bool | None = None
    arms_model_id: str | None = Field(
        default=None,
        description="the model the prompting arms were measured with, when the fine-tuning candidate "
        "(model_id, --finetune-model) is another model; null: the candidate is the arms' model",
    )
    candidate_prompted: Estimate | None = Field(
        default=None,
        description="the candidate prompted as it would be fine-tuned (the zero-shot prompt, no adapter) "
        "on the eval items; measured only when it is not the arms' model",
    )
    model_change: Difference | None = Field(
        default=None,
        description="the candidate prompted minus the baseline arm of the arms' model, eval items, paired: "
        "what changing the model gives or costs before any fine-tuning",
    )
    finetune_adds: Difference | None = Field(
        default=None,
        description="the largest pilot minus the candidate prompted, eval items, paired: what fine-tuning "
        "adds on the candidate",
    )
    wall_s: float | None = None
    reused: bool = False


class Report(Model):
    """decision.json: the verdict, the rules behind it, and every measurement it rests on."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        title="tunegate decision document (decision.json)",
        json_schema_extra={"$id": "https://tunegate.dev/schema/decision.schema.json"},
    )

    schema_version: Literal["1.0"]
    tool_version: str
    created_at: str
    dataset: Dataset
    audit: Audit
    split: Split | None
    signals: dict[str, SignalValue]
    decision: Decision
    provenance: Provenance
    model: ModelSection | None = Field(
        None, description="the local model measured (hf backend); null for a server or a data-only run"
    )
    prompting: Prompting | None
    evidence: Evidence | None
    training: Training | None
    verification: Verification | None
    pilot: Pilot | None = None

    def to_json(self) -> str:
        """The decision.json text (non-finite floats become null, as JSON has none)."""
        return self.model_dump_json(indent=2) + "\n"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form as plain data (for renderers that still read the document as a mapping)."""
        data: dict[str, Any] = json.loads(self.to_json())
        return data


def json_schema() -> dict[str, Any]:
    """The JSON Schema of decision.json, generated from `Report`."""
    schema = Report.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


if __name__ == "__main__":  # regenerate the shipped schema: python -m advisor.document > FILE
    print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
