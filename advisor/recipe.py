"""`tunegate advise`: load → audit → benchmark → measure → decide → write.

This module is the recipe; each step lives in its own module. The Python API
(`from advisor import advise; advise("data.jsonl")`, advisor/api.py) runs it too.
The backend, torch and rich are only touched when a model is used, so a data-only run stays light.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from advisor import progress
from advisor.audit import checks as audit_mod
from advisor.backends import get_backend
from advisor.backends.model import ModelSource, resolve_model
from advisor.config import URL_CREDENTIALS_HELP, AdviseConfig
from advisor.decide import confidence, rules
from advisor.decide import verdict as decide
from advisor.errors import ConfigError
from advisor.files import check_regular
from advisor.intake import data
from advisor.measure import evaluate, prompts, rates
from advisor.measure.baselines import choose_metric
from advisor.measure.evaluate import prompting_signals
from advisor.measure.evidence import evidence_signals, gather_evidence
from advisor.measure.prompt_record import record_prompts
from advisor.report import render as report
from advisor.report.document import Report
from advisor.rundir import RunDir
from advisor.textsafe import has_url_credentials, redact_url
from advisor.types import Example, TaskKind


def advise(config: AdviseConfig, backend: Any = None) -> Report:
    """Run the advisor and return the typed report (also written to `config.out` as decision.json).

    `backend` (a `advisor.backends.base.Backend`) replaces the one `config` names; the Python API
    (advisor/api.py) passes its caller's.
    """
    ruleset = rules.load_rules([Path(d) for d in config.rules_dirs], overrides=config.thresholds)
    _check_inputs(config)
    # The local model is found (not loaded) first: a wrong --model fails before the run folder is touched.
    model = resolve_model(config.model) if backend is None and config.backend == "hf" else None
    run_dir = RunDir(config.out).create(inputs=input_paths(config))

    # load
    loaded, task, labels, examples = load_task(config)

    # audit and split
    split = audit_mod.make_split(
        examples, seed=config.seed, eval_size=config.eval_size, dev_size=config.dev_size
    )
    audit_mod.write_split(run_dir, split, loaded.sha256, _data_location(config.data))
    if backend is None:
        backend = _open_backend(config, model)
    count_tokens = backend.count_tokens if backend is not None else None
    audit = audit_mod.audit(examples, task, labels, count_tokens=count_tokens)
    signals: dict[str, Any] = dict(audit_mod.audit_signals(audit, split))
    signals["task_kind"] = task.value
    choice = metric_choice(config, ruleset, task, examples)
    metric, quality_target = choice.metric, choice.quality_target
    config = config.replace(target_metric=metric, quality_target=quality_target)
    run_dir.write_config(config.to_dict())
    signals["target_metric"] = metric
    signals["quality_target"] = quality_target
    signals["prompting_measured"] = False
    signals["finetune_measured"] = False  # until `train`/`verify` verifies a model on the eval items

    # benchmark
    prompting = None
    by_line = {ex.line: ex for ex in examples}
    train = [by_line[i] for i in split.train]
    dev = [by_line[i] for i in split.dev]
    eval_items = [by_line[i] for i in split.eval]

    def benchmark(eval_items: list[Example]) -> Any:  # the arms on these eval items, same settings every time
        return _benchmark(
            config,
            backend,
            task,
            labels,
            (train, dev, eval_items),
            choice.reason,
            ruleset.thresholds,
            run_dir,
        )

    if backend is not None:
        prompting = benchmark(eval_items)
        signals.update(prompting_signals(prompting))

    # measure
    evidence = gather_evidence(backend, prompting, train, eval_items, task, labels, config)
    signals.update(evidence_signals(evidence, config))

    # decide, and measure P(verdict); while it is low, grow the eval split and measure again
    decision = _decide(ruleset, signals, prompting)
    growth = _Growth(initial_eval=len(split.eval), probabilities=[_probability(decision)])
    while prompting is not None:
        chunk = _next_eval_chunk(ruleset, config, backend, decision, prompting, examples, split, growth)
        if not chunk:
            break
        moved = set(chunk)
        split = replace(split, train=tuple(i for i in split.train if i not in moved), eval=split.eval + chunk)
        audit_mod.write_split(run_dir, split, loaded.sha256, _data_location(config.data))
        # The demonstrations still come from the original training rows, so the items measured before
        # keep their prompts (answered from the response cache); only the new items cost model calls.
        eval_items = [by_line[i] for i in split.eval]
        prompting = benchmark(eval_items)
        signals.update(prompting_signals(prompting))
        signals["n_eval"], signals["n_train"] = len(split.eval), len(split.train)
        decision = _decide(ruleset, signals, prompting)
        growth.add(chunk, _probability(decision))

    # write
    result = report.build_report(
        config=config,
        loaded=loaded,
        task=task,
        labels=labels,
        audit=audit,
        split={**audit_mod.split_section(split), "eval_growth": growth.to_dict(len(split.eval))},
        signals=signals,
        decision=decision,
        ruleset=ruleset,
        prompting=prompting.to_dict() if prompting is not None else None,
        evidence=evidence.to_dict() if evidence is not None else None,
        backend_info=_backend_info(backend),
        model=_model_section(backend),
    )
    if prompting is not None:
        run_dir.write_prompts(record_prompts(prompting))
    report.write_report(run_dir, result)
    rates.record(backend)
    return result


def input_paths(config: AdviseConfig) -> list[str | None]:
    """The files and folders a run reads: a run folder must not hold them under a name it writes."""
    return [config.data, config.system_prompt_file, config.prices, *config.rules_dirs]


def load_task(config: AdviseConfig) -> tuple[Any, TaskKind, tuple[str, ...], Sequence[Example]]:
    """The data file read, its task kind (detected, or forced by `config.task`), labels and examples."""
    loaded = data.load_examples(
        config.data,
        fmt=config.fmt,
        input_col=config.input_col,
        output_col=config.output_col,
        split=config.dataset_split,
    )
    task, labels = data.detect_task(loaded.examples)
    if config.task is not None and TaskKind(config.task) is not task:
        task = TaskKind(config.task)
        # Forced classification: every distinct non-empty target is a label.
        labels = (
            tuple(sorted({ex.target.strip() for ex in loaded.examples} - {""}))
            if task is TaskKind.CLASSIFY
            else ()
        )
    examples = data.with_labels(loaded.examples, labels) if task is TaskKind.CLASSIFY else loaded.examples
    return loaded, task, labels, examples


def metric_choice(config: AdviseConfig, ruleset: Any, task: TaskKind, examples: Sequence[Example]) -> Any:
    """The target metric and quality target: the configured ones, else the rules' defaults for the data."""
    return choose_metric(
        task,
        Counter(ex.label for ex in examples if ex.label is not None),
        metric=config.target_metric,
        quality_target=config.quality_target,
        thresholds={k: float(v) for k, v in ruleset.thresholds.items() if isinstance(v, int | float)},
    )


def _check_inputs(config: AdviseConfig) -> None:
    """Fail before any work on input files that are not regular files, and on a server URL with
    credentials taken from the environment (the flag and the config file are checked by the config)."""
    if config.system_prompt_file is not None:
        check_regular(config.system_prompt_file, ConfigError, "system prompt file")
    if config.prices is not None:
        check_regular(config.prices, ConfigError, "price file")
    if config.backend == "openai" and config.base_url is None:
        # The variable the backend will use: the first one set (see `get_backend`).
        var = next((v for v in ("TUNEGATE_BASE_URL", "OPENAI_BASE_URL") if os.environ.get(v)), None)
        if var is not None and has_url_credentials(os.environ[var]):
            raise ConfigError(URL_CREDENTIALS_HELP, field=f"${var}")


def _decide(ruleset: Any, signals: dict[str, Any], prompting: Any) -> Any:
    """The verdict, with P(verdict) when per-item measurements exist to resample."""
    decision = decide.decide(ruleset, signals)
    if prompting is None:
        return decision
    return decide.with_confidence(
        decision, confidence.of_prompting(ruleset, signals, decision.verdict, prompting)
    )


def _probability(decision: Any) -> float | None:
    return None if decision.confidence is None else decision.confidence.probability


@dataclass
class _Growth:
    """What growing the eval split did, for decision.json's split section."""

    initial_eval: int
    probabilities: list[float | None]
    added_lines: list[int] = field(default_factory=list)
    rounds: int = 0
    stopped: str = "no model was run: P(verdict) not measured"

    def add(self, chunk: tuple[int, ...], probability: float | None) -> None:
        self.rounds += 1
        self.added_lines.extend(chunk)
        self.probabilities.append(probability)

    def to_dict(self, final_eval: int) -> dict[str, Any]:
        return {
            "initial_eval": self.initial_eval,
            "final_eval": final_eval,
            "rounds": self.rounds,
            "added_lines": list(self.added_lines),
            "probabilities": [p for p in self.probabilities if p is not None],
            "stopped": self.stopped,
        }


def _next_eval_chunk(
    ruleset: Any,
    config: AdviseConfig,
    backend: Any,
    decision: Any,
    prompting: Any,
    examples: Sequence[Example],
    split: Any,
    growth: _Growth,
) -> tuple[int, ...]:
    """The lines of the next eval chunk, or () with `growth.stopped` saying why the split stays as it is.

    Grows only while P(verdict) is below `min_verdict_probability`, for at most `max_eval_growth_rounds`
    rounds, from training rows no prompt used as a demonstration (stratified, seeded, duplicates kept
    together: `make_split` on those rows), while the held-out share stays within the audit's cap and the
    new items' model calls fit what is left of --max-requests/--max-tokens.
    """
    th = ruleset.thresholds
    p = _probability(decision)
    floor = float(th["min_verdict_probability"])
    if p is None or p >= floor:
        growth.stopped = f"P(verdict) {p:.2f} is at least {floor:.2f}" if p is not None else "not measured"
        return ()
    if growth.rounds >= int(th["max_eval_growth_rounds"]):
        growth.stopped = f"P(verdict) {p:.2f} after {growth.rounds} growth rounds (the most allowed)"
        return ()
    held_out_room = (
        math.floor(len(examples) * audit_mod.MAX_HELD_OUT_SHARE) - len(split.eval) - len(split.dev)
    )
    size = min(math.ceil(config.eval_size * float(th["eval_growth_chunk_share"])), held_out_room)
    demos = {line for arm in prompting.arms for it in arm.items for line in it.demo_lines}
    train = set(split.train)
    # Not a demonstration, nor a duplicate of one: the splits stay disjoint by content.
    demo_inputs = {audit_mod.input_key(ex) for ex in examples if ex.line in demos}
    unused = [
        ex
        for ex in examples
        if ex.line in train and ex.line not in demos and audit_mod.input_key(ex) not in demo_inputs
    ]
    chunk = audit_mod.make_split(
        unused, seed=config.seed + growth.rounds + 1, eval_size=size, dev_size=0
    ).eval
    if size <= 0 or not chunk:
        growth.stopped = f"P(verdict) {p:.2f}, and no unused labeled rows are left to hold out"
        return ()
    requests, tokens = _eval_cost(prompting, len(chunk), config.max_gen_tokens)
    # What the run has spent: the backend's own count where it keeps one (the openai backend), else the
    # estimate for the eval items measured so far.
    budget = getattr(getattr(backend, "inner", backend), "budget", None)
    spent = (
        (budget.requests, budget.tokens)
        if budget is not None
        else _eval_cost(prompting, prompting.arms[0].n, config.max_gen_tokens)
    )
    if (config.max_requests is not None and spent[0] + requests > config.max_requests) or (
        config.max_tokens is not None and spent[1] + tokens > config.max_tokens
    ):
        growth.stopped = (
            f"P(verdict) {p:.2f}; {len(chunk)} more eval items would pass the request or token budget"
        )
        return ()
    return tuple(chunk)


def _eval_cost(prompting: Any, n_items: int, max_gen_tokens: int) -> tuple[int, int]:
    """Model requests and tokens (estimated from the measured arms) that `n_items` more eval items cost."""
    per_item = max(1, len(prompting.labels))
    requests = n_items * per_item * len(prompting.arms)
    answer = 0 if prompting.labels else max_gen_tokens
    tokens = sum(math.ceil(n_items * per_item * (a.mean_prompt_tokens + answer)) for a in prompting.arms)
    return requests, tokens


def _open_backend(config: AdviseConfig, model: ModelSource | None) -> Any:
    """The backend `config` names (None: data-only); `model` is the local model already resolved."""
    if config.backend == "none":
        return None
    return get_backend(
        config.backend,
        model=model or config.model,
        base_url=config.base_url,
        api_key_env=config.api_key_env,
        tokenizer=config.tokenizer,
        concurrency=config.concurrency,
        max_requests=config.max_requests,
        max_tokens=config.max_tokens,
        timeout=config.timeout,
        max_retries=config.max_retries,
    )


def _data_location(data: str) -> str:
    """Where the data is, for split.json: a local file or folder as an absolute path, a Hub dataset id as
    it is."""
    path = Path(data).expanduser()
    return str(path.resolve()) if path.exists() else data


def _model_section(backend: Any) -> dict[str, Any] | None:
    """decision.json's `model` section: where the local model came from (see advisor.backends.model)."""
    source = getattr(getattr(backend, "inner", backend), "source", None)
    return source.to_dict() if source is not None else None


def _backend_info(backend: Any) -> dict[str, Any] | None:
    if backend is None:
        return None
    # The model id of a server backend holds its URL: never record credentials in it.
    info: dict[str, Any] = {"name": backend.name, "model_id": redact_url(str(backend.model_id))}
    for attr in ("scoring_method", "scoring_note", "request_params"):
        if getattr(backend, attr, None) is not None:
            info[attr] = getattr(backend, attr)
    stats = getattr(backend, "stats", None)
    if callable(stats):
        info["cache"] = stats()
    return info


def _benchmark(
    config: AdviseConfig,
    backend: Any,
    task: TaskKind,
    labels: tuple[str, ...],
    splits: tuple[list[Example], list[Example], list[Example]],
    metric_reason: str,
    thresholds: Any,
    run_dir: RunDir | None,
    on_progress: Any = None,
) -> Any:
    """The ladder's arms measured on the eval items; their predictions written into `run_dir` (None:
    not written, for the dry run)."""
    train, dev, eval_items = splits
    ladder = prompts.build_ladder(
        backend,
        task,
        labels,
        train,
        k_ladder=config.k_ladder,
        description=config.task_description,
        system_file=config.system_prompt_file,
        demo_selection=config.demo_selection,
        seed=config.seed,
        max_context_tokens=config.max_prompt_tokens,
        max_gen_tokens=config.max_gen_tokens,
    )
    result = evaluate.evaluate_arms(
        backend,
        ladder.arms,
        train,
        eval_items,
        task,
        labels,
        seed=config.seed,
        target_metric=str(config.target_metric),
        quality_target=config.quality_target,
        min_gain=config.min_gain,
        max_gen_tokens=config.max_gen_tokens,
        progress=on_progress or _report_arm,
        dev_items=dev,
        k_max=ladder.k_max,
        thresholds=thresholds,
        metric_reason=metric_reason,
    )
    if run_dir is not None:
        evaluate.write_predictions(run_dir, result)
    return result


def _report_arm(arm: str, done: int, total: int) -> None:
    progress.report(f"prompting {arm}", done, total)
