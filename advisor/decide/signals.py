"""The catalogue of signals: the named, measured facts the rules read.

A signal is one flat value (number, flag or short text). `None` means "not measured": rules that
need it are skipped, never guessed. The catalogue is the single list of names the rule loader
accepts, so a typo in a rule file is caught when the rules are loaded, not silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

SignalValue = float | int | bool | str | None
Signals = Mapping[str, SignalValue]
SignalType = Literal["int", "float", "bool", "str"]


@dataclass(frozen=True)
class SignalSpec:
    """What one signal means.

    `noun` names the unit in "what would change the verdict" sentences ("380 more examples");
    it is empty for flags, texts and ratios, which have no countable unit. `direction` is the way
    a user can sensibly move the signal ("up": collect more; "down": clean up; "": either), so
    that advice never reads "collect fewer examples".
    """

    name: str
    type: SignalType
    description: str
    noun: str = ""
    direction: Literal["up", "down", ""] = ""

    @property
    def numeric(self) -> bool:
        return self.type in ("int", "float")


def _spec(
    name: str, type_: SignalType, description: str, noun: str = "", direction: Literal["up", "down", ""] = ""
) -> tuple[str, SignalSpec]:
    return name, SignalSpec(name, type_, description, noun, direction)


CATALOGUE: Mapping[str, SignalSpec] = dict(
    [
        # Data and audit
        _spec("n_examples", "int", "usable examples in the dataset", "examples", "up"),
        _spec("n_train", "int", "examples in the training split", "training examples", "up"),
        _spec("n_dev", "int", "examples in the dev split", "dev examples", "up"),
        _spec("n_eval", "int", "held-out evaluation items", "eval items", "up"),
        _spec("task_kind", "str", "'classify' or 'generate'"),
        _spec("n_labels", "int", "distinct labels (classification)", "labels"),
        _spec("minority_share", "float", "share of the rarest label (classification)", "", "up"),
        _spec("imbalance_ratio", "float", "count of the commonest label over the rarest", "", "down"),
        _spec(
            "duplicate_share", "float", "share of examples that duplicate another (normalised)", "", "down"
        ),
        _spec(
            "conflict_share", "float", "share of examples whose input appears with another target", "", "down"
        ),
        _spec("empty_target_count", "int", "examples whose target text is empty", "empty targets", "down"),
        _spec(
            "leakage_count",
            "int",
            "eval/dev items whose input also appears in training",
            "leaked items",
            "down",
        ),
        _spec("mean_input_tokens", "float", "mean input length in tokens", "tokens"),
        _spec("p95_input_tokens", "float", "95th percentile input length in tokens", "tokens"),
        _spec("mean_target_tokens", "float", "mean target length in tokens", "tokens"),
        # Prompting baselines
        _spec("prompting_measured", "bool", "prompting baselines were run on the eval split"),
        _spec("target_metric", "str", "name of the quality metric the target refers to"),
        _spec("quality_target", "float", "quality the task must reach, in target_metric units"),
        _spec("zero_shot_score", "float", "zero-shot score on the eval split"),
        _spec("system_score", "float", "score with a system prompt on the eval split"),
        _spec("best_few_shot_score", "float", "best k-shot score on the eval split"),
        _spec("best_few_shot_k", "int", "k of the best few-shot arm", "shots"),
        _spec("best_prompt_score", "float", "best score among all prompting arms"),
        _spec("best_arm", "str", "name of the best prompting arm"),
        _spec("prompt_meets_target", "bool", "zero-shot or system-prompt point estimate reaches the target"),
        _spec("few_shot_meets_target", "bool", "a few-shot arm reaches the target, zero-shot/system do not"),
        _spec("target_within_ci", "bool", "the best arm's 95% CI contains the target (too close to call)"),
        _spec("prompting_plateaued", "bool", "more shots no longer improve the score significantly"),
        _spec("plateau_gain", "float", "score gain of the last step on the shots curve"),
        _spec("plateau_p_value", "float", "p-value of the paired test on the last step of the curve"),
        _spec("eval_items_needed", "int", "eval items needed to detect the minimum gain", "eval items"),
        _spec("majority_baseline_score", "float", "score of always answering the commonest eval label"),
        _spec(
            "chance_score",
            "float",
            "the better of the majority baseline and the uniform-random expectation, on the target metric",
        ),
        _spec(
            "n_degenerate_arms",
            "int",
            "prompting arms that collapse onto one label or fail to beat the majority",
        ),
        _spec(
            "prompting_beats_majority",
            "bool",
            "at least one prompting arm beats the majority baseline significantly",
        ),
        _spec("ladder_exhausted", "bool", "the best arm is the last rung and the next rung does not fit"),
        _spec(
            "ladder_slope_low", "float", "lower 95% bound of the k-ladder's slope (score per doubling of k+1)"
        ),
        # Evidence: usage, latency, cost, probe, domain
        _spec("volume_per_day", "float", "expected requests per day", "requests per day"),
        _spec("latency_budget_ms", "float", "p95 latency budget in milliseconds", "ms"),
        _spec("best_arm_p95_ms", "float", "p95 latency of the best prompting arm", "ms"),
        _spec("few_shot_p95_ms", "float", "p95 latency of the best few-shot arm", "ms"),
        _spec("latency_over_budget", "bool", "the arm that meets quality is slower than the budget"),
        _spec("monthly_cost_best_arm", "float", "monthly serving cost of the best arm", "USD per month"),
        _spec("break_even_days", "float", "days until fine-tuning pays for itself", "days"),
        _spec("break_even_within_horizon", "bool", "fine-tuning pays for itself within the horizon"),
        _spec("probe_score", "float", "score of a small trained probe on the eval split"),
        _spec(
            "probe_score_low",
            "float",
            "lower 95% bound of the full-data probe's score (bootstrap over the eval items)",
        ),
        _spec("probe_beats_prompting", "bool", "the probe beats the best prompting arm significantly"),
        _spec(
            "examples_needed",
            "int",
            "total examples needed to reach the target per the learning curve",
            "examples",
        ),
        _spec("domain", "str", "declared domain of the task (e.g. legal, medical, code)"),
        _spec("domain_ppl_ratio", "float", "data perplexity over general-text perplexity"),
        _spec("tokens_per_word", "float", "tokenizer tokens per whitespace word"),
        _spec("needs_consistent_style", "bool", "outputs must follow one fixed style or format"),
        # The pilot fine-tune (advise's short LoRA runs with the `train` recipe)
        _spec("pilot_measured", "bool", "pilot fine-tunes were trained and scored on the eval items"),
        _spec("pilot_score", "float", "the largest pilot's score on the eval items"),
        _spec(
            "pilot_gain", "float", "largest pilot minus the best honest prompting arm (eval items, paired)"
        ),
        _spec("pilot_gain_low", "float", "lower 95% bound of pilot_gain"),
        _spec("pilot_gain_high", "float", "upper 95% bound of pilot_gain"),
        _spec(
            "pilot_full_gain", "float", "predicted gain over the best honest prompt at the full train split"
        ),
        _spec("pilot_full_gain_low", "float", "lower 95% bound of pilot_full_gain"),
        _spec("pilot_full_gain_high", "float", "upper 95% bound of pilot_full_gain"),
        _spec("pilot_trend", "bool", "the largest pilot beats the smallest on the dev items (paired, 95%)"),
        _spec(
            "pilot_examples_to_beat_prompt",
            "int",
            "total examples at which the pilot curve reaches the best honest prompt",
            "examples",
            "up",
        ),
        _spec(
            "pilot_examples_to_target",
            "int",
            "total examples at which the pilot curve reaches the quality target",
            "examples",
            "up",
        ),
        _spec(
            "pilot_data_multiple",
            "float",
            "pilot_examples_to_beat_prompt over the examples there are",
        ),
        _spec(
            "pilot_baseline_kind",
            "str",
            "kind of the arm the pilot is paired with: the best honest one, else majority",
        ),
        _spec(
            "pilot_degenerate",
            "bool",
            "the largest pilot collapses onto one label or fails to beat the majority (the arms' test)",
        ),
        # Training and verification
        _spec("finetune_measured", "bool", "a fine-tuned model was verified on the eval split"),
        _spec("finetune_score", "float", "fine-tuned model's score on the eval split"),
        _spec("finetune_gain", "float", "fine-tuned score minus the best prompting score"),
        _spec("finetune_verified", "bool", "the fine-tuned model's gain passed verification"),
        _spec(
            "finetune_degenerate",
            "bool",
            "the fine-tuned model collapses onto one label or fails to beat the majority",
        ),
        _spec(
            "finetune_beats_majority",
            "bool",
            "the fine-tuned model beats the majority baseline significantly",
        ),
    ]
)


def value_matches(spec: SignalSpec, value: object) -> bool:
    """Whether `value` has the Python type a signal of this spec carries (bool is not a number)."""
    if isinstance(value, bool):
        return spec.type == "bool"
    if spec.type == "int":
        return isinstance(value, int)
    if spec.type == "float":
        return isinstance(value, int | float)
    if spec.type == "str":
        return isinstance(value, str)
    return False
