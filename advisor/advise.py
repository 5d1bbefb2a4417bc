"""`tunegate advise`: load → audit → benchmark → measure → decide → write.

This module is the recipe; each step lives in its own module. The backend, torch and rich are only
touched when a model is used, so a data-only run stays light.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from advisor.baselines import choose_metric
from advisor.config import AdviseConfig
from advisor.types import Example, TaskKind


def advise(config: AdviseConfig) -> dict[str, Any]:
    """Run the advisor and return the report document (also written to `config.out`)."""
    from advisor import audit as audit_mod
    from advisor import data, decide, report, rules

    ruleset = rules.load_rules([Path(d) for d in config.rules_dirs], overrides=config.thresholds)
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)

    # load
    loaded = data.load_examples(
        config.data, fmt=config.fmt, input_col=config.input_col, output_col=config.output_col
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

    # audit and split
    split = audit_mod.make_split(
        examples, seed=config.seed, eval_size=config.eval_size, dev_size=config.dev_size
    )
    audit_mod.write_split(run_dir, split, loaded.sha256, str(Path(config.data).resolve()))
    backend = _open_backend(config)
    count_tokens = backend.count_tokens if backend is not None else None
    audit = audit_mod.audit(examples, task, labels, count_tokens=count_tokens)
    signals: dict[str, Any] = dict(audit_mod.audit_signals(audit, split))
    signals["task_kind"] = task.value
    choice = choose_metric(
        task,
        Counter(ex.label for ex in examples if ex.label is not None),
        metric=config.target_metric,
        quality_target=config.quality_target,
        thresholds={k: float(v) for k, v in ruleset.thresholds.items() if isinstance(v, int | float)},
    )
    metric, quality_target = choice.metric, choice.quality_target
    config = replace(config, target_metric=metric, quality_target=quality_target)
    report.write_json(run_dir / "config.json", config.to_dict())
    signals["target_metric"] = metric
    signals["quality_target"] = quality_target
    signals["prompting_measured"] = False

    # benchmark
    prompting = None
    by_line = {ex.line: ex for ex in examples}
    train = [by_line[i] for i in split.train]
    dev = [by_line[i] for i in split.dev]
    eval_items = [by_line[i] for i in split.eval]
    if backend is not None:
        prompting = _benchmark(
            config,
            backend,
            task,
            labels,
            (train, dev, eval_items),
            choice.reason,
            ruleset.thresholds,
            run_dir,
        )
        from advisor.evaluate import prompting_signals

        signals.update(prompting_signals(prompting))

    # measure
    from advisor.evidence import evidence_signals, gather_evidence

    evidence = gather_evidence(backend, prompting, train, eval_items, task, labels, config)
    signals.update(evidence_signals(evidence, config))

    # decide and write
    decision = decide.decide(ruleset, signals)
    doc = report.build_report(
        config=config,
        loaded=loaded,
        task=task,
        labels=labels,
        audit=audit,
        split=split,
        signals=signals,
        decision=decision,
        ruleset=ruleset,
        prompting=prompting.to_dict() if prompting is not None else None,
        evidence=evidence.to_dict() if evidence is not None else None,
        backend_info=_backend_info(backend),
    )
    report.write_report(run_dir, doc)
    return doc


def _open_backend(config: AdviseConfig) -> Any:
    if config.backend == "none":
        return None
    from advisor.backends import get_backend

    return get_backend(
        config.backend,
        model=config.model,
        base_url=config.base_url,
        api_key_env=config.api_key_env,
        max_requests=config.max_requests,
        max_tokens=config.max_tokens,
    )


def _backend_info(backend: Any) -> dict[str, Any] | None:
    if backend is None:
        return None
    info: dict[str, Any] = {"name": backend.name, "model_id": backend.model_id}
    for attr in ("scoring_method",):
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
    run_dir: Path,
) -> Any:
    from advisor import evaluate, prompts

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
        progress=_progress_printer(),
        dev_items=dev,
        k_max=ladder.k_max,
        thresholds=thresholds,
        metric_reason=metric_reason,
    )
    evaluate.write_predictions(run_dir, result)
    return result


def _progress_printer() -> Any:
    """One stderr line per arm as it finishes (and a running count on a terminal)."""
    tty = sys.stderr.isatty()

    def show(arm: str, done: int, total: int) -> None:
        if done >= total:
            print(f"\r  {arm}: {done}/{total} items", file=sys.stderr, flush=True)
        elif tty:
            print(f"\r  {arm}: {done}/{total} items", end="", file=sys.stderr, flush=True)

    return show


def read_document(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "decision.json"
    with path.open(encoding="utf-8") as fh:
        doc: dict[str, Any] = json.load(fh)
    return doc
