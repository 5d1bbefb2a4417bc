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

from advisor import document, progress
from advisor.audit import checks as audit_mod
from advisor.backends import get_backend
from advisor.backends.hf import chat_template_problem
from advisor.backends.model import ModelSource, resolve_model
from advisor.config import URL_CREDENTIALS_HELP, AdviseConfig
from advisor.decide import confidence, rules
from advisor.decide import verdict as decide
from advisor.document import Report
from advisor.errors import ConfigError
from advisor.files import check_regular
from advisor.finetune import pilot as pilot_mod
from advisor.intake import data
from advisor.measure import evaluate, prompts, rates, stats
from advisor.measure.baselines import choose_metric
from advisor.measure.cost import load_cost_config
from advisor.measure.evaluate import prompting_signals
from advisor.measure.evidence import evidence_signals, gather_evidence
from advisor.measure.prompt_record import record_prompts
from advisor.report import render as report
from advisor.rundir import RunDir
from advisor.textsafe import has_url_credentials, redact_url
from advisor.types import Example, TaskKind


def advise(config: AdviseConfig, backend: Any = None) -> Report:
    """Run the advisor and return the typed report (also written to `config.out` as decision.json).

    `backend` (a `advisor.backends.base.Backend`) replaces the one `config` names; the Python API
    (advisor/api.py) passes its caller's.
    """
    ruleset = rules.load_rules([Path(d) for d in config.rules_dirs], overrides=config.thresholds)
    check_inputs(config)
    # The local model is found (not loaded) first: a wrong --model fails before the run folder is touched.
    model = resolve_model(config.model) if backend is None and config.backend == "hf" else None
    candidate = finetune_candidate(config, model)
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
    audit, signals = audit_signals(backend, examples, task, labels, split)
    choice = metric_choice(config, ruleset, task, examples)
    config = config.replace(target_metric=choice.metric, quality_target=choice.quality_target)
    run_dir.write_config(config.to_dict())
    signals["target_metric"] = choice.metric
    signals["quality_target"] = choice.quality_target

    if backend is not None and not split.eval:  # before the pilots train, not after
        distinct = len({audit_mod.input_key(ex) for ex in examples})
        raise ConfigError(
            f"prompting needs at least one eval item, and none was held out: the {len(examples):,} usable "
            f"examples have {distinct:,} distinct inputs, and rows with the same input stay together in "
            "one split; add examples with other inputs",
            field="eval_size",
        )

    # the pilot fine-tunes (trained when measure_until_settled first needs them)
    by_line = {ex.line: ex for ex in examples}
    pilot = pilot_mod.start(
        run_dir,
        config,
        _pilot_task(
            config,
            model,
            candidate,
            backend,
            task,
            labels,
            [by_line[i] for i in split.train],
            [by_line[i] for i in split.dev],
        ),
        {"train": split.train, "dev": split.dev},
        loaded.sha256,
        len(examples),
    )

    # benchmark, measure, decide: the arms on a small slice of the eval split first, more while unsettled
    measured = measure_until_settled(
        config, backend, task, labels, examples, split, choice, ruleset, signals, run_dir, pilot=pilot
    )
    prompting, evidence, decision, growth, split = (
        measured.prompting,
        measured.evidence,
        measured.decision,
        measured.growth,
        measured.split,
    )
    if prompting is not None:  # the eval split as scored
        audit_mod.write_split(run_dir, split, loaded.sha256, _data_location(config.data))

    # write
    result = report.build_report(
        config=config,
        loaded=loaded,
        task=task,
        labels=labels,
        audit=audit,
        split={**audit_mod.split_section(split), "eval_growth": growth.section()},
        signals=signals,
        decision=decision,
        ruleset=ruleset,
        prompting=prompting.to_dict() if prompting is not None else None,
        evidence=evidence.to_dict() if evidence is not None else None,
        backend_info=_backend_info(backend),
        model=_model_section(backend),
        pilot=measured.pilot,
    )
    if prompting is not None:
        run_dir.write_prompts(record_prompts(prompting))
    report.write_report(run_dir, result)
    rates.record(backend)
    return result


@dataclass(frozen=True)
class Measured:
    """What `measure_until_settled` measured and decided (the split as scored)."""

    prompting: Any
    evidence: Any
    decision: Any
    growth: EvalSteps
    split: Any
    pilot: Any = None  # the Pilot section (None: no pilot step, as in the dry run)


def measure_until_settled(
    config: AdviseConfig,
    backend: Any,
    task: TaskKind,
    labels: tuple[str, ...],
    examples: Sequence[Example],
    split: Any,
    choice: Any,
    ruleset: Any,
    signals: dict[str, Any],
    run_dir: RunDir | None,
    *,
    evidence_config: Any = None,
    pilot: pilot_mod.PilotStep | None = None,
) -> Measured:
    """Benchmark → measure → decide, then score the eval split in steps while P(verdict) is unsettled.

    `signals` (the audit's) is updated in place. `pilot`: the pilot fine-tunes (advisor.finetune.pilot),
    whose largest model is scored on the same eval items at every step. The dry run (advisor.plan) calls
    this too, with a backend that answers from the response cache or not at all, `run_dir` None (nothing
    written) and no pilot; `evidence_config` replaces `config` for `gather_evidence` there.
    """
    prompting = None
    by_line = {ex.line: ex for ex in examples}
    train = [by_line[i] for i in split.train]
    dev = [by_line[i] for i in split.dev]
    held_out = [
        by_line[i] for i in split.eval
    ]  # the eval split: scored in steps, as far as the verdict needs
    growth = EvalSteps.start(held_out, config, ruleset.thresholds)
    eval_items = [by_line[i] for i in growth.lines]

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
        signals["n_eval"] = len(eval_items)

    # measure: once, on the whole eval split where it costs no model call (the probe, token counts)
    settings = config if evidence_config is None else evidence_config
    evidence = gather_evidence(backend, prompting, train, held_out, task, labels, settings)
    signals.update(evidence_signals(evidence, config))

    # pilot: the fine-tuning side, measured by short LoRA runs with the `train` recipe (or why not)
    n_full = len(split.train)

    def measure_pilot() -> Any:
        if pilot is None:  # the dry run: the signals of a pilot not measured, as a run without one has
            signals.update(pilot_mod.signals(None, len(examples), n_full))
            return None
        section = pilot.measure(prompting, eval_items)
        signals.update(pilot_mod.signals(section, len(examples), n_full))
        return section

    pilot_section = measure_pilot()

    # decide, and measure P(verdict); while it is below the settled level, score more eval items
    decision = _decide(ruleset, signals, prompting, pilot)
    if prompting is not None:
        growth.record(decision, spent(backend, prompting, config))
    trained = pilot.trained_lines() if pilot is not None else frozenset()
    while prompting is not None:
        chunk = next_eval_chunk(
            ruleset.thresholds, config, decision, prompting, examples, split, growth, trained=trained
        )
        if not chunk:
            break
        # Items measured before keep their prompts (answered from the response cache); only the new
        # items cost model calls. The demonstrations come from the original training rows throughout.
        split = growth.add(chunk, split)
        eval_items = [by_line[i] for i in growth.lines]
        prompting = benchmark(eval_items)
        signals.update(prompting_signals(prompting))
        signals["n_eval"] = len(eval_items)
        pilot_section = measure_pilot()
        decision = _decide(ruleset, signals, prompting, pilot)
        growth.record(decision, spent(backend, prompting, config))
    if prompting is not None:  # held-out rows never scored go back to training: eval is what was scored
        split = growth.final_split(split)
        signals["n_eval"], signals["n_train"] = len(split.eval), len(split.train)
    return Measured(prompting, evidence, decision, growth, split, pilot_section)


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


def audit_signals(
    backend: Any, examples: Sequence[Example], task: TaskKind, labels: tuple[str, ...], split: Any
) -> tuple[Any, dict[str, Any]]:
    """The data audit (token counts with the backend's tokenizer when there is one) and its signals."""
    count_tokens = backend.count_tokens if backend is not None else None
    audit = audit_mod.audit(examples, task, labels, count_tokens=count_tokens)
    signals: dict[str, Any] = dict(audit_mod.audit_signals(audit, split))
    signals["task_kind"] = task.value
    signals["prompting_measured"] = False
    signals["finetune_measured"] = False  # until `train`/`verify` verifies a model on the eval items
    return audit, signals


def metric_choice(config: AdviseConfig, ruleset: Any, task: TaskKind, examples: Sequence[Example]) -> Any:
    """The target metric and quality target: the configured ones, else the rules' defaults for the data."""
    return choose_metric(
        task,
        Counter(ex.label for ex in examples if ex.label is not None),
        metric=config.target_metric,
        quality_target=config.quality_target,
        thresholds={k: float(v) for k, v in ruleset.thresholds.items() if isinstance(v, int | float)},
    )


def check_inputs(config: AdviseConfig) -> None:
    """Fail before any work (and before the run folder is touched) on input files that are not regular
    files, on a price file that does not read as one, and on a server URL with credentials taken from the
    environment (the flag and the config file are checked by the config). The dry run checks the same."""
    if config.system_prompt_file is not None:
        check_regular(config.system_prompt_file, ConfigError, "system prompt file")
    if config.prices is not None:
        check_regular(config.prices, ConfigError, "price file")
        load_cost_config(Path(config.prices))  # every bad value named now, not after the arms were paid for
    if config.backend == "openai" and config.base_url is None:
        # The variable the backend will use: the first one set (see `get_backend`).
        var = next((v for v in ("TUNEGATE_BASE_URL", "OPENAI_BASE_URL") if os.environ.get(v)), None)
        if var is not None and has_url_credentials(os.environ[var]):
            raise ConfigError(URL_CREDENTIALS_HELP, field=f"${var}")


def _decide(
    ruleset: Any, signals: dict[str, Any], prompting: Any, pilot: pilot_mod.PilotStep | None = None
) -> Any:
    """The verdict, with P(verdict) when per-item measurements exist to resample (the pilot's eval
    predictions resampled with the arms')."""
    decision = decide.decide(ruleset, signals)
    if prompting is None:
        return decision
    extra = pilot.resampler(prompting) if pilot is not None else None
    return decide.with_confidence(
        decision, confidence.of_prompting(ruleset, signals, decision.verdict, prompting, extra=extra)
    )


def finetune_candidate(config: AdviseConfig, arms_model: ModelSource | None) -> ModelSource | None:
    """The model to fine-tune when it is not the arms' (--finetune-model), resolved and checked before the
    run folder is touched or a model is called: a local folder transformers can train, with a chat
    template (the fine-tuning prompt is a chat). None: the arms' own model is the candidate."""
    if config.finetune_model is None or config.backend == "none":
        return None
    try:
        source = resolve_model(config.finetune_model)
    except ConfigError as exc:  # the resolver's words, about the flag the user gave
        raise ConfigError(problems=[replace(p, field="finetune_model") for p in exc.problems]) from None
    if arms_model is not None and source.path.resolve() == arms_model.path.resolve():
        return None  # the arms' model named again: one model, no model change to measure
    problem = chat_template_problem(source.path)
    if problem is not None:
        raise ConfigError(f"{config.finetune_model}: {problem}", field="finetune_model")
    return source


def _pilot_task(
    config: AdviseConfig,
    model: ModelSource | None,
    candidate: ModelSource | None,
    backend: Any,
    task: TaskKind,
    labels: tuple[str, ...],
    train: list[Example],
    dev: list[Example],
) -> pilot_mod.PilotTask | None:
    """What the pilot trains: the fine-tuning candidate when one is named (then also scored prompted, to
    tell the model change from the fine-tuning), else the model the arms were measured with, when that
    is the local transformers backend's (None: no local trainable model, or answers that do not come
    from `model`, such as a server's or a backend the caller handed in)."""
    if candidate is not None:
        model_dir, model_id = candidate.path, candidate.label
        arms_model_id = redact_url(str(backend.model_id)) if backend is not None else None
    else:
        local = getattr(backend, "inner", backend)  # the model's backend behind the response cache
        if model is None or config.backend != "hf" or getattr(local, "name", None) != "hf":
            return None
        model_dir, model_id, arms_model_id = model.path, str(backend.model_id), None
    return pilot_mod.PilotTask(
        model_dir=model_dir,
        model_id=model_id,
        task=task,
        labels=labels,
        train=tuple(train),
        dev=tuple(dev),
        seed=config.seed,
        max_gen_tokens=config.max_gen_tokens,
        arms_model_id=arms_model_id,
    )


def _probability(decision: Any) -> float | None:
    return None if decision.confidence is None else decision.confidence.probability


GROWTH_STAGE = "eval items scored"


def eval_steps(held_out: Sequence[Example], *, seed: int, first: int, step: int) -> list[tuple[int, ...]]:
    """The eval split cut into the seeded steps it is scored in: `first` items, then `step` at a time.

    Each step is a seeded, label-stratified draw (`make_split`, duplicates kept together) from what is
    left, so every prefix of steps is itself a stratified sample; a remainder no larger than a step is
    the last step. The steps partition the eval split.
    """
    rest = list(held_out)
    out: list[tuple[int, ...]] = []
    size = max(1, first)
    while rest:
        if len(rest) <= size:
            chunk = tuple(ex.line for ex in rest)
        else:
            chunk = audit_mod.make_split(rest, seed=seed + len(out), eval_size=size, dev_size=0).eval
            chunk = chunk or tuple(ex.line for ex in rest[:size])
        out.append(chunk)
        taken = set(chunk)
        rest = [ex for ex in rest if ex.line not in taken]
        size = max(1, step)
    return out


@dataclass
class EvalSteps:
    """The eval split scored in steps while P(verdict) is below the settled level; each look recorded.

    `pending`: the eval split's steps not scored yet; once they are all scored, further chunks come from
    training rows no prompt used (`beyond`: how many such rounds). decision.json's `split.eval_growth`.
    """

    held_out: tuple[int, ...]
    pending: list[tuple[int, ...]]
    lines: tuple[int, ...]
    settled_at: float
    steps: list[document.EvalStep] = field(default_factory=list)
    beyond: int = 0
    stopped: str = "no model was run: P(verdict) not measured"
    _source: str = "eval split"
    _added: int = 0

    @classmethod
    def start(cls, held_out: Sequence[Example], config: AdviseConfig, thresholds: Any) -> EvalSteps:
        steps = eval_steps(
            held_out,
            seed=config.seed,
            first=int(thresholds["initial_eval_items"]),
            step=int(thresholds["eval_step_items"]),
        )
        return cls(
            held_out=tuple(ex.line for ex in held_out),
            pending=steps[1:],
            lines=steps[0] if steps else (),
            settled_at=float(thresholds["min_verdict_probability"]),
            _added=len(steps[0]) if steps else 0,
        )

    def add(self, chunk: tuple[int, ...], split: Any) -> Any:
        """Score `chunk` next; returns the split with rows taken from training moved to eval."""
        self.lines += chunk
        self._added = len(chunk)
        if self.pending and chunk == self.pending[0]:
            self.pending.pop(0)
            self._source = "eval split"
            return split
        self.beyond += 1
        self._source = "train rows"
        moved = set(chunk)
        return replace(split, train=tuple(i for i in split.train if i not in moved), eval=split.eval + chunk)

    def record(self, decision: Any, spent: tuple[int, int]) -> None:
        """One look: the verdict and P(verdict) on the items scored so far."""
        self.steps.append(
            document.EvalStep(
                n_eval=len(self.lines),
                added=self._added,
                source=self._source,  # type: ignore[arg-type]
                verdict=decision.verdict,
                probability=_probability(decision),
                requests=spent[0],
                tokens=spent[1],
            )
        )
        progress.report(GROWTH_STAGE, len(self.lines), max(len(self.held_out), len(self.lines)))

    def final_split(self, split: Any) -> Any:
        """The split as scored: eval holds the scored items; eval-split rows never scored go to train."""
        scored = set(self.lines)
        unscored = tuple(i for i in split.eval if i not in scored)
        return replace(split, train=split.train + unscored, eval=self.lines)

    def section(self) -> dict[str, Any]:
        if not self.steps:  # no model run: nothing was scored, the eval split stays as it is
            return document.EvalGrowth(
                initial_eval=len(self.held_out),
                final_eval=len(self.held_out),
                rounds=0,
                added_lines=[],
                stopped=self.stopped,
                settled_at=None,
                returned_to_train=0,
                method="",
            ).model_dump(mode="json")
        first = self.steps[0].n_eval
        return document.EvalGrowth(
            initial_eval=first,
            final_eval=len(self.lines),
            rounds=max(0, len(self.steps) - 1),
            added_lines=list(self.lines[first:]),
            probabilities=[s.probability for s in self.steps if s.probability is not None],
            stopped=self.stopped,
            settled_at=self.settled_at,
            steps=list(self.steps),
            returned_to_train=len([i for i in self.held_out if i not in set(self.lines)]),
            method=stats.ANYTIME_METHOD,
        ).model_dump(mode="json")


def next_eval_chunk(
    thresholds: Any,
    config: AdviseConfig,
    decision: Any,
    prompting: Any,
    examples: Sequence[Example],
    split: Any,
    growth: EvalSteps,
    trained: frozenset[int] = frozenset(),
) -> tuple[int, ...]:
    """The lines of the next eval step, or () with `growth.stopped` saying why scoring stops here.

    Scores more only while P(verdict) is below `min_verdict_probability`: first the eval split's own
    steps, then at most `max_eval_growth_rounds` chunks from training rows no prompt used as a
    demonstration (stratified, seeded, duplicates kept together: `make_split` on those rows) while the
    held-out share stays within the audit's cap; always only while the new items' model calls fit what
    is left of --max-requests/--max-total-tokens, and only while those items can plausibly settle the
    verdict (`worth_growing`: futility). The comparisons that decide are anytime-valid
    (advisor.measure.stats), so stopping at a look where the verdict looks settled keeps their level.
    """
    th = thresholds
    p = _probability(decision)
    floor = float(th["min_verdict_probability"])
    if p is None or p >= floor:
        growth.stopped = f"P(verdict) {p:.2f} is at least {floor:.2f}" if p is not None else "not measured"
        return ()
    if growth.pending:
        chunk = growth.pending[0]
    else:
        if growth.beyond >= int(th["max_eval_growth_rounds"]):
            growth.stopped = (
                f"P(verdict) {p:.2f} with the eval split scored and {growth.beyond} growth rounds beyond it "
                "(the most allowed)"
            )
            return ()
        size = beyond_chunk_size(config, th, len(examples), len(split.eval), len(split.dev))
        # Rows a prompt showed as a demonstration, or a pilot trained on, never become eval items.
        demos = {line for arm in prompting.arms for it in arm.items for line in it.demo_lines} | trained
        train = set(split.train)
        # Not a demonstration, nor a duplicate of one: the splits stay disjoint by content.
        demo_inputs = {audit_mod.input_key(ex) for ex in examples if ex.line in demos}
        unused = [
            ex
            for ex in examples
            if ex.line in train and ex.line not in demos and audit_mod.input_key(ex) not in demo_inputs
        ]
        chunk = (
            audit_mod.make_split(
                unused, seed=config.seed + growth.beyond + 1, eval_size=size, dev_size=0
            ).eval
            if size > 0
            else ()
        )
        if not chunk:
            growth.stopped = f"P(verdict) {p:.2f}, and no unused labeled rows are left to hold out"
            return ()
    requests, tokens = eval_cost(prompting, len(chunk), config.max_gen_tokens)
    done = (growth.steps[-1].requests, growth.steps[-1].tokens)
    if (config.max_requests is not None and done[0] + requests > config.max_requests) or (
        config.max_total_tokens is not None and done[1] + tokens > config.max_total_tokens
    ):
        growth.stopped = (
            f"P(verdict) {p:.2f}; {len(chunk)} more eval items would pass the request or token budget"
        )
        return ()
    reach = min(
        growth_limit(growth, config, th, len(examples), len(split.dev)),
        len(growth.lines) + affordable_items(prompting, config, done),
    )
    if not worth_growing(decision.confidence, growth, reach, float(th["min_predictive_power"])):
        return ()
    return tuple(chunk)


def worth_growing(conf: decide.Confidence | None, growth: EvalSteps, reach: int, min_power: float) -> bool:
    """Whether scoring up to `reach` eval items can plausibly settle the verdict (else `growth.stopped`
    says why not): the predictive power (`confidence.predictive_power`) of the verdict plus that of its
    runner-up, from the P(verdict) just measured (`conf`, the decision's Confidence), against
    `min_power` (futility stopping). Recorded on the last look."""
    n = len(growth.lines)
    if conf is None or reach <= n or growth.settled_at > 1:
        return True  # nothing to project, or told to score everything: next_eval_chunk's limits answer
    power = confidence.predictive_power(conf.probability, conf.n_items, reach, growth.settled_at)
    if conf.runner_up is not None:
        power += confidence.predictive_power(conf.runner_up_share, conf.n_items, reach, growth.settled_at)
    power = min(1.0, power)
    growth.steps[-1] = growth.steps[-1].model_copy(update={"reach": reach, "predictive_power": power})
    if power >= min_power:
        return True
    growth.stopped = (
        f"P(verdict) {conf.probability:.2f}; scoring up to {reach:,} eval items (the most within reach) "
        f"would settle a verdict with a chance of {power:.0%}, below {min_power:.0%}: not worth its cost "
        "(futility)"
    )
    return False


def affordable_items(prompting: Any, config: AdviseConfig, done: tuple[int, int]) -> int:
    """Eval items that what is left of --max-requests/--max-total-tokens after `done` (requests, tokens)
    still pays for (a large number without a budget)."""
    requests, tokens = eval_cost(prompting, 1, config.max_gen_tokens)
    room = [10**9]
    if config.max_requests is not None:
        room.append((config.max_requests - done[0]) // max(1, requests))
    if config.max_total_tokens is not None:
        room.append((config.max_total_tokens - done[1]) // max(1, tokens))
    return max(0, min(room))


def beyond_chunk_size(config: AdviseConfig, thresholds: Any, n_examples: int, n_eval: int, n_dev: int) -> int:
    """Items one growth round beyond the eval split adds: a share of --eval-size, within the held-out cap."""
    room = math.floor(n_examples * audit_mod.MAX_HELD_OUT_SHARE) - n_eval - n_dev
    return max(0, min(math.ceil(config.eval_size * float(thresholds["eval_growth_chunk_share"])), room))


def growth_limit(
    growth: EvalSteps, config: AdviseConfig, thresholds: Any, n_examples: int, n_dev: int
) -> int:
    """The most eval items the steps can reach from where `growth` stands: the whole eval split, then the
    growth rounds beyond it still allowed (each as large as the held-out cap and --eval-size allow)."""
    n = max(len(growth.held_out), len(growth.lines))
    for _ in range(int(thresholds["max_eval_growth_rounds"]) - growth.beyond):
        n += beyond_chunk_size(config, thresholds, n_examples, n, n_dev)
    return n


def spent(backend: Any, prompting: Any, config: AdviseConfig) -> tuple[int, int]:
    """Requests and tokens the run has spent: the backend's own count where it keeps one (the openai
    backend), else the estimate for the eval items scored so far."""
    budget = getattr(getattr(backend, "inner", backend), "budget", None)
    if budget is not None:
        return int(budget.requests), int(budget.tokens)
    if prompting is None:
        return 0, 0
    return eval_cost(prompting, prompting.arms[0].n, config.max_gen_tokens)


def eval_cost(prompting: Any, n_items: int, max_gen_tokens: int) -> tuple[int, int]:
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
        max_tokens=config.max_total_tokens,
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
