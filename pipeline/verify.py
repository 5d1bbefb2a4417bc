"""Verification: the fine-tuned model, scored by the advisor's own harness on the same eval items.

Before/after is the best prompting arm (its per-item predictions from `advise`, in predictions/) against
the fine-tuned model prompted as it was trained (the zero-shot rendering:
`advisor.finetune.prompts.finetune_arm`).
The difference is paired over the same items; flips are counted both ways with a few real items shown.
Fine-tuning is *verified* when the fine-tuned model is honest and better on the run's target metric than
both the best honest (non-degenerate) prompting arm and the majority baseline: the paired 95% intervals of
(fine-tuned − best honest arm) and (fine-tuned − always the commonest label) lie above 0. A fine-tuned model
that collapses onto one label or does not beat the majority baseline is reported as degenerate, never as
verified (the same test as for the prompting arms, advisor.measure.baselines). With no honest prompting arm
the majority baseline is the "before".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advisor import document
from advisor.audit.checks import input_key
from advisor.backends import get_backend
from advisor.backends.base import GenRequest
from advisor.backends.hf import HFBackend
from advisor.backends.model import resolve_model
from advisor.decide.rules import load_rules
from advisor.errors import ConfigError, DataError
from advisor.finetune.prompts import adapter_fingerprint, finetune_arm, finetuned_backend
from advisor.intake.data import with_labels
from advisor.measure import evaluate, prompts, stats
from advisor.measure.baselines import judge_generation
from advisor.measure.evaluate import ArmResult, Comparison, ItemResult, PromptingResult, summarise
from advisor.measure.evidence import measure_latency, summarize_latency
from advisor.measure.prompt_record import PromptRecord, RecordedArm
from advisor.progress import report
from advisor.rundir import RunDir
from advisor.textsafe import redact_url
from advisor.types import Example, TaskKind
from pipeline.examples import load_run_data
from pipeline.export import update_decision, write_model_card

if TYPE_CHECKING:
    from advisor.document import Degeneracy

FINETUNED = "fine_tuned"
N_FLIP_EXAMPLES = 3
SIGNAL_NAMES = (
    "finetune_measured",
    "finetune_score",
    "finetune_gain",
    "finetune_verified",
    "finetune_degenerate",
    "finetune_beats_majority",
)


# ---------------------------------------------------------------- pure: section, signals, markdown


def _latency_section(lat: Any) -> document.Latency | None:
    if lat is None:
        return None
    return document.Latency(n=lat.n, p50_ms=lat.p50_ms, p95_ms=lat.p95_ms, mean_ms=lat.mean_ms)


def _estimates(scores: Mapping[str, stats.Estimate]) -> dict[str, document.Estimate]:
    return {m: document.Estimate(value=e.value, low=e.low, high=e.high, n=e.n) for m, e in scores.items()}


def _difference(
    diff: stats.PairedDiff, *, p_value: float, mcnemar_p_value: float | None = None
) -> document.Difference:
    return document.Difference(
        diff=diff.diff,
        low=diff.low,
        high=diff.high,
        p_value=p_value,
        n=diff.n,
        mcnemar_p_value=mcnemar_p_value,
    )


def _flip_examples(
    lines: Sequence[int], before: Mapping[int, ItemResult], after: Mapping[int, ItemResult]
) -> list[document.Flip]:
    out = []
    for line in lines[:N_FLIP_EXAMPLES]:
        b, a = before[line], after[line]
        text = a.input if len(a.input) <= 200 else a.input[:197] + "..."
        out.append(
            document.Flip(line=line, input=text, target=a.target, before=b.prediction, after=a.prediction)
        )
    return out


def build_verification(
    *,
    baseline_name: str,
    baseline_items: Sequence[ItemResult],
    finetuned: ArmResult,
    comparison: Comparison,
    metric: str,
    quality_target: float | None,
    task: TaskKind,
    labels: Sequence[str],
    seed: int,
    latency: Mapping[str, Any],
    adapter_dir: str | None,
    model_id: str | None,
    provenance: document.GateRecord,
    vs_majority: Comparison | None = None,
    degeneracy: Degeneracy | None = None,
    majority_label: str | None = None,
    prompted_as: str = "finetune",
) -> document.Verification:
    """The `verification` section of decision.json.

    `vs_majority` (fine-tuned − majority baseline) and `degeneracy` (advisor.document.Degeneracy) are
    given for classification; without them only the gain over the baseline arm counts.
    """
    base_scores = summarise(baseline_items, task, labels, seed)
    before = {it.line: it for it in baseline_items}
    after = {it.line: it for it in finetuned.items}
    diff = comparison.diff
    ft_score = finetuned.scores[metric].value
    return document.Verification(
        metric=metric,
        n_eval=finetuned.n,
        quality_target=quality_target,
        baseline=document.ScoredModel(
            arm=baseline_name,
            prompted_as=None,  # the arm's own recorded prompts
            scores=_estimates(base_scores),
            mean_prompt_tokens=sum(it.prompt_tokens for it in baseline_items) / max(1, len(baseline_items)),
            latency=_latency_section(latency.get(baseline_name)),
        ),
        finetuned=document.ScoredModel(
            arm=FINETUNED,
            model_id=model_id,
            adapter_dir=adapter_dir,
            prompted_as=prompted_as,
            scores=_estimates(finetuned.scores),
            mean_prompt_tokens=finetuned.mean_prompt_tokens,
            latency=_latency_section(latency.get(FINETUNED)),
        ),
        difference=_difference(diff, p_value=diff.p_value, mcnemar_p_value=comparison.mcnemar.p_value),
        flips=document.Flips(
            improved=len(comparison.improved_lines),
            regressed=len(comparison.regressed_lines),
            improved_examples=_flip_examples(comparison.improved_lines, before, after),
            regressed_examples=_flip_examples(comparison.regressed_lines, before, after),
        ),
        majority=None
        if vs_majority is None
        else document.MajorityGap(
            label=majority_label,
            difference=_difference(vs_majority.diff, p_value=vs_majority.p_value),
            beats=vs_majority.diff.low > 0,
        ),
        degeneracy=degeneracy,
        meets_target=None if quality_target is None else ft_score >= quality_target,
        finetune_verified=diff.low > 0
        and (vs_majority is None or vs_majority.diff.low > 0)
        and not (degeneracy is not None and degeneracy.degenerate),
        provenance=provenance,
    )


def verification_signals(section: document.Verification | None) -> dict[str, float | bool | None]:
    """finetune_score, finetune_gain (vs the best prompting arm), finetune_verified; None: not measured."""
    if section is None:
        return dict.fromkeys(SIGNAL_NAMES) | {"finetune_measured": False}
    majority, degeneracy = section.majority, section.degeneracy
    return {
        "finetune_measured": True,
        "finetune_score": float(section.finetuned.scores[section.metric].value),
        "finetune_gain": float(section.difference.diff),
        "finetune_verified": bool(section.finetune_verified),
        "finetune_degenerate": None if degeneracy is None else bool(degeneracy.degenerate),
        "finetune_beats_majority": None if majority is None else bool(majority.beats),
    }


# ---------------------------------------------------------------- edges: models, files


FINETUNE_PROMPTS, BEST_PROMPTS = "finetune", "best"


@dataclass
class Candidate:
    """The model verification scores, and what the report names it by.

    `base_model_dir`: a local model folder on which the best prompting arm's latency is timed beside the
    candidate's (None for a served candidate: its latency and the local base's would not compare).
    `own_adapter`: the run's own adapter, whose model card gets the comparison.
    """

    backend: Any
    model_id: str
    adapter_dir: Path | None = None
    base_model_dir: Path | None = None
    own_adapter: bool = False


def _report_verification(arm: str, done: int, total: int) -> None:
    report(f"verification {arm}", done, total)


def adapter_candidate(
    base_dir: str | Path, adapter_dir: str | Path, *, own: bool = False, device: str | None = None
) -> Candidate:
    """A peft adapter on a local base model (the run's own adapter, or one trained elsewhere)."""
    adapter = Path(adapter_dir)
    if (
        not (adapter / "adapter_config.json").is_file()
        or not (adapter / "adapter_model.safetensors").is_file()
    ):
        raise ConfigError(
            "not a peft adapter folder (adapter_config.json and adapter_model.safetensors expected)",
            file=str(adapter),
            field="adapter",
        )
    return Candidate(
        finetuned_backend(base_dir, adapter, device=device),
        f"{Path(base_dir).name}+lora:{adapter_fingerprint(adapter)}",
        adapter_dir=adapter,
        base_model_dir=Path(base_dir),
        own_adapter=own,
    )


def model_candidate(model_dir: str | Path, *, device: str | None = None) -> Candidate:
    """A local model folder scored as it is (a merged model, or a model fine-tuned elsewhere)."""
    folder = resolve_model(str(model_dir)).path
    return Candidate(HFBackend(folder, device=device), folder.name, base_model_dir=None)


def served_candidate(
    base_url: str | None,
    model: str | None,
    *,
    api_key_env: str | None = None,
    tokenizer: str | None = None,
    timeout: float = 60.0,
    concurrency: int = 4,
) -> Candidate:
    """A model behind an OpenAI-compatible server (a served LoRA, a merged model, one tuned elsewhere).

    Uncached: a served name can be pointed at new weights between two verifications."""
    backend = get_backend(
        "openai",
        model=model,
        base_url=base_url,
        api_key_env=api_key_env,
        tokenizer=tokenizer,
        timeout=timeout,
        concurrency=concurrency,
        cache=False,
    )
    return Candidate(backend, redact_url(str(backend.model_id)))


def _latency(backend: Any, name: str, prompts: Sequence[tuple[Any, ...]], max_tokens: int, n: int) -> Any:
    if n <= 0 or not prompts:
        return None
    reqs = [GenRequest(p, max_tokens=max_tokens) for p in prompts[:n]]
    return summarize_latency(measure_latency(backend, {name: reqs}, n=n)).get(name)


def verify_run(
    run_dir: str | Path,
    *,
    candidate: Callable[[], Candidate] | None = None,
    prompts_from: str = FINETUNE_PROMPTS,
    latency_samples: int = 10,
    device: str | None = None,
    progress: Any = None,
) -> document.Verification:
    """Score a candidate model on the eval split, compare with the best prompting arm, update decision.json.

    The candidate is the run's own adapter on its base model unless `candidate` builds another (after
    the run folder is checked, so a refused folder loads no model). `prompts_from`:
    "finetune" prompts it as tunegate's adapters are trained (`finetune_arm`); "best" with the best arm's
    recorded turns, demonstrations and label-bias correction, exactly as that arm was scored; an arm's
    name: that arm's (pointed at the base model, this reproduces the arm: a check of a serving stack).
    Writes predictions/fine_tuned.jsonl, the `verification` section and the finetune_* signals, and
    adds the comparison to the run's own adapter's model card. Returns the section.
    """
    run = RunDir(run_dir)
    run_report = run.read_report()
    prompting = _prompting_section(run_report)
    training = run_report.training
    task, labels, seed = prompting.task, tuple(prompting.labels), prompting.seed
    best = prompting.plateau.best_arm  # the best honest arm; None when every arm is degenerate

    config, split, record = run.read_config(), run.read_split(), run.read_prompts(PromptRecord)
    if record.eval_lines != list(split["eval"]) or record.best_arm != best:
        raise DataError(
            "prompts.json does not match split.json and decision.json (written by another advise run); "
            "run `tunegate advise` again",
            file=str(run.path / "prompts.json"),
        )
    by_line, train_ex, eval_ex = _split_examples(config, split, task, labels)
    run.check_held_out(
        split, {line: input_key(ex) for line, ex in by_line.items()}, [arm.demos for arm in record.arms]
    )
    prompting_arm = _prompting_arm(record, prompts_from)
    if best is None and prompting.baselines is None:
        # Generated text, every arm degenerate, and no constant predictor for free text: the "before" is
        # the best-scoring arm as it is (the prompt a user would otherwise keep), named as degenerate.
        m = prompting.target_metric
        best = max(prompting.arms, key=lambda a: a.scores[m].value if m in a.scores else -1.0).name

    any_arm = prompting.arms[0].name
    recorded = evaluate.read_predictions(run, best or any_arm)
    majority_label = prompting.baselines.majority_label if prompting.baselines is not None else None
    if best is None:  # no honest prompting arm: the constant predictor is the "before"
        best = "majority"
        baseline_items = evaluate.majority_items(recorded, str(majority_label))
    else:
        baseline_items = recorded
    model = candidate() if candidate is not None else _own_adapter(run, training, device)
    max_gen = int(config.get("max_gen_tokens") or 64)
    stop = evaluate.default_stop(train_ex) if task is TaskKind.GENERATE else ()
    best_prompts = record.arm(best).render(eval_ex, by_line) if best != "majority" else []
    if prompting_arm is not None:
        ft_prompts, prompted_as = prompting_arm.render(eval_ex, by_line), prompting_arm.name
    else:
        arm = finetune_arm(task, labels)
        ft_prompts = [prompts.render_messages(arm, ex) for ex in eval_ex]
        prompted_as = FINETUNE_PROMPTS
    by_example = {ex.line: p for ex, p in zip(eval_ex, ft_prompts, strict=True)}
    ft = evaluate.score_arm(
        model.backend,
        FINETUNED,
        lambda ex: by_example[ex.line],
        eval_ex,
        task=task,
        labels=labels,
        seed=seed,
        kind=FINETUNED,
        max_gen_tokens=max_gen,
        stop=stop,
        progress=progress or _report_verification,
    )
    offsets = prompting_arm.offsets if prompting_arm is not None else None
    if offsets is not None:  # the arm's label-bias correction, as that arm was scored
        items = evaluate.recalibrated(ft.items, offsets, labels)
        ft = replace(ft, items=items, scores=evaluate.summarise(items, task, labels, seed))
    evaluate.write_arm_predictions(run, ft)

    # Latency per request, measured now: the candidate's own prompts on the candidate, and, when the
    # candidate runs here, the best arm's recorded prompts (demonstrations included) on the local base.
    answer_tokens = max(model.backend.count_tokens(list(labels)), default=1) + 1 if labels else max_gen
    latency = {FINETUNED: _latency(model.backend, FINETUNED, ft_prompts, answer_tokens, latency_samples)}
    backend_for_base = model.base_model_dir
    model.backend = None  # free the candidate before the base model loads
    if latency_samples > 0 and best_prompts and backend_for_base is not None:
        base = HFBackend(backend_for_base, device=device)
        latency[best] = _latency(base, best, best_prompts, answer_tokens, latency_samples)

    section = judge_finetuned(
        prompting,
        best,
        baseline_items,
        ft,
        thresholds=run_thresholds(run_report),
        latency=latency,
        adapter_dir=None if model.adapter_dir is None else str(model.adapter_dir),
        model_id=model.model_id,
        provenance=training.provenance if model.own_adapter and training is not None else NO_GATE,
        prompted_as=prompted_as,
    )
    update_decision(run, verification=section, signals=verification_signals(section))
    if model.own_adapter and model.adapter_dir is not None and training is not None:
        write_model_card(run, model.adapter_dir, training, section)
    return section


# A model trained elsewhere passed no gate of this run.
NO_GATE = document.GateRecord(gate_verdict=None, forced=False)


def _prompting_arm(record: PromptRecord, prompts_from: str) -> RecordedArm | None:
    """The recorded arm whose prompts the candidate gets; None: the fine-tuning prompt."""
    if prompts_from == FINETUNE_PROMPTS:
        return None
    name = record.best_arm if prompts_from == BEST_PROMPTS else prompts_from
    if name is None:
        raise ConfigError("every prompting arm was degenerate, so there is no best arm", field="prompts")
    names = [a.name for a in record.arms]
    if name not in names:
        raise ConfigError(
            f"{name!r} is not {FINETUNE_PROMPTS!r}, {BEST_PROMPTS!r} or a recorded arm ({', '.join(names)})",
            field="prompts",
        )
    return record.arm(name)


def _own_adapter(run: RunDir, training: document.Training | None, device: str | None) -> Candidate:
    if training is None:
        raise ConfigError(
            "the run has no trained adapter: run `tunegate train` first, or name the model to verify "
            "(--adapter, --model, or --backend openai)"
        )
    adapter_dir = run.inside(training.adapter_dir, field="training.adapter_dir")
    # The folder trained on, through the resolver every stage uses (a run trained before the resolver
    # existed may record a Hub id here).
    base_dir = resolve_model(training.base_model).path
    return adapter_candidate(base_dir, adapter_dir, own=True, device=device)


def _prompting_section(run_report: document.Report) -> document.Prompting:
    """The `prompting` section of the run's decision.json; verification compares with it."""
    if run_report.prompting is None:
        raise ConfigError(
            "the run has no prompting measurements to compare with (advise ran without a model)"
        )
    return run_report.prompting


def _split_examples(
    config: Mapping[str, Any], split: Mapping[str, Any], task: TaskKind, labels: Sequence[str]
) -> tuple[dict[int, Example], list[Example], list[Example]]:
    """Every example by line, and the train and eval examples (eval is read in verification, never in
    training)."""
    loaded = load_run_data(config, split)
    examples = with_labels(loaded.examples, labels) if task is TaskKind.CLASSIFY else loaded.examples
    by_line = {ex.line: ex for ex in examples}
    missing = [ln for ln in list(split["train"]) + list(split["eval"]) if ln not in by_line]
    if missing:
        raise DataError(
            f"line {missing[0]} of the split is not in the data any more", file=str(split.get("data_path"))
        )
    return by_line, [by_line[i] for i in split["train"]], [by_line[i] for i in split["eval"]]


def run_thresholds(run_report: document.Report) -> Mapping[str, Any]:
    """The thresholds the advise run decided with (a run folder older than a threshold: the shipped one)."""
    return {**load_rules([]).thresholds, **run_report.provenance.thresholds}


def judge_finetuned(
    prompting: document.Prompting | PromptingResult,
    baseline_name: str,
    baseline_items: Sequence[ItemResult],
    ft: ArmResult,
    *,
    thresholds: Mapping[str, Any],
    latency: Mapping[str, Any],
    adapter_dir: str | None,
    model_id: str | None,
    provenance: document.GateRecord,
    n_resamples: int = stats.N_RESAMPLES,
    prompted_as: str = "finetune",
) -> document.Verification:
    """The verification section: the fine-tuned model against the baseline arm and, for classification,
    against the majority baseline, with the prompting arms' degeneracy test. One judgment, used by
    `verify_run` on the eval items (the run's typed prompting section) and by P(verdict) on each resample
    of them (the resampled measurements)."""
    task, labels = TaskKind(prompting.task), tuple(prompting.labels)
    metric, seed = str(prompting.target_metric), prompting.seed
    cmp = evaluate.compare(
        baseline_items,
        ft.items,
        metric=metric,
        seed=seed,
        labels=labels,
        before_name=baseline_name,
        after_name=FINETUNED,
        n_resamples=n_resamples,
    )
    base_info = prompting.baselines
    majority_label = base_info.majority_label if base_info is not None else None
    vs_majority = degeneracy = None
    if base_info is None:  # generated text: one repeated answer is degenerate (no demonstrations to copy)
        degeneracy = judge_generation(ft.items, thresholds)
    else:
        vs_majority, degeneracy = evaluate.against_majority(
            ft.items,
            base_info,
            metric=metric,
            seed=seed,
            labels=labels,
            alpha=prompting.alpha,
            thresholds=thresholds,
            after_name=FINETUNED,
            n_resamples=n_resamples,
        )
    return build_verification(
        baseline_name=baseline_name,
        baseline_items=baseline_items,
        finetuned=ft,
        comparison=cmp,
        metric=metric,
        quality_target=prompting.quality_target,
        task=task,
        labels=labels,
        seed=seed,
        latency=latency,
        adapter_dir=adapter_dir,
        model_id=model_id,
        provenance=provenance,
        vs_majority=vs_majority,
        degeneracy=degeneracy,
        majority_label=majority_label,
        prompted_as=prompted_as,
    )
