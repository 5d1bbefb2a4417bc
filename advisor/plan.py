"""`--dry-run`: the model requests, tokens, cost and time a run would spend, before it sends any.

The estimate walks the same plan the real run executes: the same data, split, ladder, arm variants
(calibration and demonstration selection scored on dev), latency samples and domain texts, built by
the same functions, but against a recording backend that renders and counts every request with the
real model's chat template and tokenizer and answers none of them (no model call is made). What
depends on the answers is bounded from above and marked so: the ladder's automatic extension (k
doubles while the top rung still improves, up to the largest k that fits) and the eval split's growth
while P(verdict) is low. The learning curve is a CPU probe and sends nothing.

Requests are counted once each (a request the run sends twice is answered by the response cache the
second time), and the response cache is asked which are already answered: those cost neither money nor
time. Tokens: the rendered prompt, and the answer (the label's tokens for scoring, `max_gen_tokens` for
generation: an upper bound). Time: model time per request measured by earlier runs of this model on this
machine, else a shipped default (advisor/measure/rates.py); loading the model and the statistics add a little.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from advisor import progress, recipe
from advisor.audit import checks as audit_mod
from advisor.backends.base import GenRequest, GenResult, LoglikRequest, LoglikResult, OnDone
from advisor.backends.model import resolve_model
from advisor.config import AdviseConfig
from advisor.decide import rules
from advisor.finetune import pilot
from advisor.finetune.prompts import as_finetune_examples
from advisor.measure import rates
from advisor.measure.cost import cost_per_request, load_cost_config
from advisor.measure.evaluate import race_schedule
from advisor.measure.evidence import DOMAIN_STAGE
from advisor.measure.prompts import SELECTIONS
from advisor.types import Message

LOGLIK, GENERATE = "loglikelihood", "generate"


@dataclass(frozen=True)
class StagePlan:
    """One stage's requests: all it sends, how many are new (not in the response cache), their tokens."""

    stage: str
    op: str  # "loglikelihood" or "generate": the backend operation (its time per request differs)
    requests: int
    new: int
    prompt_tokens: int  # of the new requests
    answer_tokens: int  # of the new requests
    upper_bound: bool = False
    note: str = ""


@dataclass(frozen=True)
class RunPlan:
    backend: str
    model_id: str
    n_train: int
    n_dev: int
    n_eval: int
    labels: tuple[str, ...]
    arms: tuple[str, ...]
    stages: tuple[StagePlan, ...]
    seconds: float | None  # model time of the new requests of the planned stages
    seconds_upper: float | None  # with the upper bounds added
    time_basis: str
    cost: float | None
    cost_upper: float | None
    currency: str | None
    cost_note: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    pilot: dict[str, Any] | None = None  # the pilot fine-tune's steps and time (advisor.finetune.pilot)

    def planned(self) -> tuple[StagePlan, ...]:
        return tuple(s for s in self.stages if not s.upper_bound)

    def total(self, attr: str, *, upper: bool = False) -> int:
        return sum(getattr(s, attr) for s in self.stages if upper or not s.upper_bound)

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["totals"] = {
            name: {"planned": self.total(name), "upper_bound": self.total(name, upper=True)}
            for name in ("requests", "new", "prompt_tokens", "answer_tokens")
        }
        return doc


class _Recorder:
    """A backend that renders and counts every request with the real model's tokenizer and answers none.

    Answers are neutral (every label equally likely, empty generations, zero latency), so the harness runs
    its whole plan without a model call. `stage` names where the requests come from; the arms' progress
    callback files the requests made since the last report under that arm.
    """

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.name, self.model_id = backend.name, backend.model_id
        self.stage = ""
        self.seen: dict[LoglikRequest | GenRequest, str] = {}  # each distinct request, its first stage
        self.by_arm: dict[str, list[LoglikRequest | GenRequest]] = {}
        self._pending: list[LoglikRequest | GenRequest] = []
        self._tokens: dict[Any, int] = {}
        self.neutral = 0  # requests answered neutrally (not in the response cache)

    @property
    def scoring_method(self) -> str | None:
        return getattr(self.backend, "scoring_method", None)

    @property
    def scoring_note(self) -> str | None:
        return getattr(self.backend, "scoring_note", None)

    def render(self, messages: Sequence[Message]) -> str:
        return str(self.backend.render(messages))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return list(self.backend.count_tokens(texts))

    def prompt_tokens(self, messages: tuple[Message, ...]) -> int:
        if messages not in self._tokens:
            self._tokens[messages] = self.count_tokens([self.render(messages)])[0]
        return self._tokens[messages]

    def text_tokens(self, text: str) -> int:
        if text not in self._tokens:
            self._tokens[text] = self.count_tokens([text])[0]
        return self._tokens[text]

    def _record(self, requests: Sequence[LoglikRequest | GenRequest]) -> None:
        for r in requests:
            self.seen.setdefault(r, self.stage)
        self._pending.extend(requests)

    def arm_done(self, arm: str, done: int, total: int) -> None:
        """The harness's progress callback: what was requested since the last report belongs to `arm`."""
        if arm:
            self.by_arm.setdefault(arm, []).extend(self._pending)
        self._pending = []

    def _cached(self, op: str, requests: Sequence[Any]) -> list[Any]:
        lookup = getattr(self.backend, "cached", None)
        found = list(lookup(op, requests)) if callable(lookup) else [None] * len(requests)
        self.neutral += sum(f is None for f in found)
        return found

    def loglikelihood(
        self, requests: Sequence[LoglikRequest], on_done: OnDone[LoglikResult] | None = None
    ) -> list[LoglikResult]:
        self._record(requests)
        out = [
            f
            if f is not None
            else LoglikResult(0.0, max(1, self.text_tokens(r.continuation)), self.prompt_tokens(r.messages))
            for r, f in zip(requests, self._cached(LOGLIK, requests), strict=True)
        ]
        if on_done is not None:
            on_done(range(len(out)), out)
        return out

    def generate(
        self, requests: Sequence[GenRequest], on_done: OnDone[GenResult] | None = None
    ) -> list[GenResult]:
        self._record(requests)
        out = [
            f if f is not None else GenResult("", self.prompt_tokens(r.messages), 0, 0.0)
            for r, f in zip(requests, self._cached(GENERATE, requests), strict=True)
        ]
        if on_done is not None:
            on_done(range(len(out)), out)
        return out


class _Stages:
    """A progress reporter that files the recorder's requests under the stage the run is in (and the
    arms' requests under their arm), so the plan's rows follow the run's own progress bars."""

    def __init__(self, rec: _Recorder) -> None:
        self.rec = rec

    def update(self, stage: str, done: int, total: int | None, detail: str = "") -> None:
        if stage.startswith("prompting "):
            self.rec.stage = "prompting arms"
            self.rec.arm_done(stage.removeprefix("prompting ").split(" (")[0], done, total or 0)
        elif stage in ("latency samples", DOMAIN_STAGE):
            self.rec.arm_done("", done, total or 0)
            self.rec.stage = stage

    def note(self, text: str) -> None:
        pass


def plan_run(config: AdviseConfig) -> RunPlan:
    """The dry run of `advise(config)`: nothing is written and no model call is made."""
    ruleset = rules.load_rules([Path(d) for d in config.rules_dirs], overrides=config.thresholds)
    recipe.check_inputs(config)
    loaded, task, labels, examples = recipe.load_task(config)
    split = audit_mod.make_split(
        examples, seed=config.seed, eval_size=config.eval_size, dev_size=config.dev_size
    )
    by_line = {ex.line: ex for ex in examples}
    train = [by_line[i] for i in split.train]
    dev = [by_line[i] for i in split.dev]
    eval_items = [by_line[i] for i in split.eval]
    sizes = (len(train), len(dev), len(eval_items))
    if config.backend == "none":
        return _no_model_plan(sizes, tuple(labels))
    choice = recipe.metric_choice(config, ruleset, task, examples)
    config = config.replace(target_metric=choice.metric, quality_target=choice.quality_target)
    model = resolve_model(config.model) if config.backend == "hf" else None
    backend = recipe._open_backend(config, model)
    rec = _Recorder(backend)
    _, signals = recipe.audit_signals(rec, examples, task, tuple(labels), split)
    signals["target_metric"], signals["quality_target"] = choice.metric, choice.quality_target

    # The run itself, against the recorder: answers from the response cache where it has them (so a warm
    # cache replays the run exactly), neutral ones (every label equally likely) where not.
    # The learning-curve probe keeps the run's resamples: its figures feed P(verdict), which decides how far
    # the eval split grows, so a replay with fewer would walk another path.
    settings = {**config.to_dict(), "prices": None}
    with progress.reporting(_Stages(rec)):
        rec.stage = "prompting arms"
        measured = recipe.measure_until_settled(
            config, rec, task, tuple(labels), examples, split, choice, ruleset, signals, None,
            evidence_config=settings,
        )  # fmt: skip
    prompting = measured.prompting
    stages = _measured_stages(rec)
    if rec.neutral:  # some answers were guessed: what depends on them is bounded
        most = _most_eval_arms(ruleset.thresholds, prompting, len(dev))
        stages += _race_bound(rec, config, prompting, most)
        limit = recipe.growth_limit(measured.growth, config, ruleset.thresholds, len(examples), len(dev))
        stages += _growth_bound(rec, config, prompting, limit - len(measured.growth.lines), most)
        stages += _extension_bound(rec, prompting, _extension_rungs(prompting, len(train)), 0)
    arms = tuple(a.name for a in prompting.arms)
    priced = _priced(config, backend, sizes, tuple(labels), arms, tuple(stages))
    return replace(
        priced, pilot=_pilot_estimate(config, rec, priced, train, len(dev), len(eval_items), task, labels)
    )


def _pilot_estimate(
    config: AdviseConfig,
    rec: _Recorder,
    priced: RunPlan,
    train: Sequence[Any],
    n_dev: int,
    n_eval: int,
    task: Any,
    labels: Sequence[str],
) -> dict[str, Any] | None:
    """The pilot's training time, and its scoring at the arms' measured time per item (None: no pilot).
    With --finetune-model the pilots train that model, which is also scored prompted on the eval items;
    its tokens are counted with the arms' tokenizer (an approximation when the two differ)."""
    candidate = config.finetune_model if config.backend != "none" else None
    if not config.pilot or (config.backend != "hf" and candidate is None):
        return None
    plan = pilot.plan_pilot(len(train), config.pilot_steps, pilot.recipe(config.seed))
    if isinstance(plan, str):
        return {"not_run": plan}
    rendered = {ex.line: ex for ex in as_finetune_examples(train, task, labels)}
    est = pilot.estimate(
        plan, train, lambda ex: rec.prompt_tokens(rendered[ex.line].messages) + 2, n_dev, n_eval
    )
    # Scoring time in proportion to prompt tokens, at the arms' rate: the pilots' prompts are zero-shot
    # (no demonstrations), far shorter than the average arm's.
    mean_tokens = sum(rec.prompt_tokens(ex.messages) for ex in rendered.values()) / max(1, len(rendered))
    arm_tokens = priced.total("prompt_tokens")
    per_token = (priced.seconds or 0.0) / arm_tokens if arm_tokens else 0.0
    if candidate is not None:
        est["model"] = candidate
        est["scored_items"] += n_eval  # the candidate prompted, without an adapter
    est["score_seconds"] = est["scored_items"] * max(1, len(labels)) * mean_tokens * per_token
    return est


def training_estimate(plan: RunPlan, cfg: Any) -> dict[str, float | None] | None:
    """`run`'s training and verification time, from the pilot's estimate: the steps `cfg` asks for (or
    its epochs over the train split) at the pilot's tokens per example and trained tokens a second, and
    the eval items scored at the pilot's time per item. None without a pilot estimate."""
    p = plan.pilot
    if not p or "tokens_per_example" not in p or not p.get("scored_items"):
        return None
    per_step = cfg.batch_size * cfg.grad_accum
    steps = cfg.max_steps or math.ceil(cfg.epochs * plan.n_train / per_step)
    tokens = steps * per_step * float(p["tokens_per_example"])
    return {
        "steps": float(steps),
        "trained_tokens": tokens,
        "tokens_per_s": pilot.CPU_TRAIN_TOKENS_PER_S,
        "train_seconds": tokens / pilot.CPU_TRAIN_TOKENS_PER_S,
        "verify_seconds": (
            float(p["score_seconds"]) / float(p["scored_items"]) * plan.n_eval
            if p.get("score_seconds")
            else None  # no time per request known for this model
        ),
    }


def _measured_stages(rec: _Recorder) -> list[StagePlan]:
    """One row per stage and operation, from the distinct requests the plan recorded."""
    groups: dict[tuple[str, str], list[LoglikRequest | GenRequest]] = {}
    for request, stage in rec.seen.items():
        op = LOGLIK if isinstance(request, LoglikRequest) else GENERATE
        groups.setdefault((stage, op), []).append(request)
    answered = getattr(rec.backend, "answered", None)
    out = []
    for (stage, op), requests in groups.items():
        done = answered(op, requests) if callable(answered) else [False] * len(requests)
        new = [r for r, d in zip(requests, done, strict=True) if not d]
        note = ""
        if stage == "latency samples":
            note = "one request at a time, as a user would send them; answers at the label's length"
        elif op == GENERATE:
            note = "answers counted at max_gen_tokens (an upper bound)"
        out.append(
            StagePlan(
                stage=stage,
                op=op,
                requests=len(requests),
                new=len(new),
                prompt_tokens=sum(rec.prompt_tokens(r.messages) for r in new),
                answer_tokens=sum(_answer_tokens(rec, r) for r in new),
                note=note,
            )
        )
    return out


def _answer_tokens(rec: _Recorder, request: LoglikRequest | GenRequest) -> int:
    if isinstance(request, LoglikRequest):
        return max(1, rec.text_tokens(request.continuation))
    return request.max_tokens


def _extension_rungs(prompting: Any, n_train: int) -> list[int]:
    """The k of every rung the ladder may add by itself: k doubles from the top rung up to the largest k
    that fits the prompt budget and the train split."""
    few = [a for a in prompting.arms if a.kind == "few_shot"]
    if not few:
        return []
    top = max(a.k for a in few)
    limit = min(prompting.k_max, n_train) if prompting.k_max else n_train
    rungs = []
    while 2 * top <= limit:
        top *= 2
        rungs.append(top)
    return rungs


def _extension_bound(
    rec: _Recorder, prompting: Any, rungs: Sequence[int], growth_items: int
) -> list[StagePlan]:
    """The ladder's automatic extension at most: each added rung costs what the top rung cost (its dev
    variants and its eval items) plus its share of the eval growth (`growth_items` items), with prompts
    longer by the added demonstrations."""
    if not rungs:
        return []
    top = max((a for a in prompting.arms if a.kind == "few_shot"), key=lambda a: a.k)
    requests = list(dict.fromkeys(rec.by_arm.get(top.name, [])))
    if not requests:
        return []
    per_rung = len(requests) + growth_items * max(1, len(prompting.labels))
    system = next((a for a in prompting.arms if a.kind == "system"), None)
    per_demo = (top.mean_prompt_tokens - (system.mean_prompt_tokens if system else 0.0)) / top.k
    base_tokens = sum(rec.prompt_tokens(r.messages) for r in requests)
    answer = sum(_answer_tokens(rec, r) for r in requests)
    op = LOGLIK if isinstance(requests[0], LoglikRequest) else GENERATE
    per_request = base_tokens / len(requests)
    extra_tokens = sum(int(per_rung * (per_request + per_demo * (k - top.k))) for k in rungs)
    shown = ", ".join(str(k) for k in rungs)
    return [
        StagePlan(
            stage=f"ladder extension (k={shown})",
            op=op,
            requests=per_rung * len(rungs),
            new=per_rung * len(rungs),
            prompt_tokens=extra_tokens,
            answer_tokens=int(answer / len(requests) * per_rung * len(rungs)),
            upper_bound=True,
            note="only while the top rung still improves and is below the target",
        )
    ]


def _per_request_tokens(rec: _Recorder, prompting: Any) -> tuple[float, int]:
    """Prompt tokens of the costliest arm's requests (an upper bound per request) and answer tokens."""
    means = [
        sum(rec.prompt_tokens(r.messages) for r in reqs) / len(reqs) for reqs in rec.by_arm.values() if reqs
    ]
    prompt = max(means, default=max((a.mean_prompt_tokens for a in prompting.arms), default=0.0))
    return prompt, 1


def _most_eval_arms(thresholds: Mapping[str, Any], prompting: Any, n_dev: int) -> int:
    """The most arms the dev race can send to eval: its finalists (`race_schedule`) and the zero-shot and
    system arms."""
    ladder = len(prompting.arms) + len(prompting.raced_out)
    few = any(a.kind == "few_shot" for a in prompting.arms) or bool(prompting.raced_out)
    rounds = race_schedule(
        ladder + (len(SELECTIONS) - 1 if few else 0),
        n_dev,
        int(thresholds["race_round_items"]),
        float(thresholds["race_keep_share"]),
    )
    return min(ladder, (rounds[-1] if rounds else ladder) + 2)


def _race_bound(rec: _Recorder, config: AdviseConfig, prompting: Any, most: int) -> list[StagePlan]:
    """The arms the dev race sends to eval: with neutral answers the cheapest arms lead it, so the plan
    scored fewer arms than the race picks. Counted as planned: the finalists and the zero-shot and
    system arms on the first eval step, and their latency samples."""
    extra = max(0, most - len(prompting.arms))
    if extra == 0:
        return []
    first = prompting.arms[0].n
    prompt, _ = _per_request_tokens(rec, prompting)
    out = [
        _eval_scoring(
            rec,
            config,
            prompting,
            extra * first * max(1, len(prompting.labels)),
            f"eval arms the race picks (+{extra})",
            f"at most {most} arms on eval; prompt tokens at the costliest arm's (an upper bound)",
        )
    ]
    if config.latency_samples > 0:
        n = extra * min(config.latency_samples, first)
        out.append(
            StagePlan(
                stage="latency samples of those arms",
                op=GENERATE,
                requests=n,
                new=n,
                prompt_tokens=int(n * prompt),
                answer_tokens=n,
                note="one request at a time",
            )
        )
    return out


def _growth_bound(
    rec: _Recorder, config: AdviseConfig, prompting: Any, added: int, most: int
) -> list[StagePlan]:
    """More eval steps at most: `added` items (the rest of the eval split, then every growth round allowed
    beyond it: `recipe.growth_limit`), each scored under the most arms the race can send to eval."""
    if added <= 0:
        return []
    requests = added * max(1, len(prompting.labels)) * most
    if config.max_requests is not None:
        requests = max(0, min(requests, config.max_requests - sum(len(v) for v in rec.by_arm.values())))
    step = _eval_scoring(
        rec,
        config,
        prompting,
        requests,
        f"eval steps (up to {added} more items)",
        "only while P(verdict) < min_verdict_probability, in the recipe's seeded steps",
    )
    return [replace(step, upper_bound=True)]


def _eval_scoring(
    rec: _Recorder, config: AdviseConfig, prompting: Any, requests: int, stage: str, note: str
) -> StagePlan:
    """`requests` more eval scoring requests, none in the response cache, at the arms' tokens per request."""
    prompt, answer = _per_request_tokens(rec, prompting)
    return StagePlan(
        stage=stage,
        op=LOGLIK if prompting.labels else GENERATE,
        requests=requests,
        new=requests,
        prompt_tokens=int(requests * prompt),
        answer_tokens=requests * (answer if prompting.labels else config.max_gen_tokens),
        note=note,
    )


def _no_model_plan(sizes: tuple[int, int, int], labels: tuple[str, ...]) -> RunPlan:
    n_train, n_dev, n_eval = sizes
    return RunPlan(
        backend="none",
        model_id="",
        n_train=n_train,
        n_dev=n_dev,
        n_eval=n_eval,
        labels=labels,
        arms=(),
        stages=(),
        seconds=0.0,
        seconds_upper=0.0,
        time_basis="no model is used (--no-model)",
        cost=0.0,
        cost_upper=0.0,
        currency=None,
        cost_note="no model is used",
    )


def _priced(
    config: AdviseConfig,
    backend: Any,
    sizes: tuple[int, int, int],
    labels: tuple[str, ...],
    arms: tuple[str, ...],
    stages: tuple[StagePlan, ...],
) -> RunPlan:
    seconds, seconds_upper, bases = 0.0, 0.0, []
    known = True
    for s in stages:
        rate = rates.lookup(backend.name, str(backend.model_id), s.op)
        if rate is None:
            known = False
            continue
        bases.append(f"{s.op}: {rate.seconds_per_request * 1000:.0f} ms per request, {rate.basis}")
        seconds_upper += s.new * rate.seconds_per_request
        if not s.upper_bound:
            seconds += s.new * rate.seconds_per_request
    basis = "; ".join(dict.fromkeys(bases)) or "no measured rate for this model yet"
    if not known:
        basis += " (stages without a rate are not timed: run once to measure)"
    cost, cost_upper, currency, cost_note = None, None, None, "no prices given (--prices FILE)"
    if config.prices:
        prices = load_cost_config(Path(config.prices))
        currency = prices.currency

        def priced(total: Callable[[str], int]) -> float | None:
            return cost_per_request(prices, total("prompt_tokens"), total("answer_tokens"))

        cost = priced(lambda a: sum(getattr(s, a) for s in stages if not s.upper_bound))
        cost_upper = priced(lambda a: sum(getattr(s, a) for s in stages))
        cost_note = f"{prices.serving} prices from {prices.source or config.prices}" + (
            f" (dated {prices.price_date})" if prices.price_date else ""
        )
        if cost is None:
            cost_note += ": these prices do not give a cost per token (self-hosted needs throughputs)"
    notes = []
    planned_new = sum(s.new for s in stages if not s.upper_bound)
    planned_tokens = sum(s.prompt_tokens + s.answer_tokens for s in stages if not s.upper_bound)
    if (config.max_requests is not None and planned_new > config.max_requests) or (
        config.max_total_tokens is not None and planned_tokens > config.max_total_tokens
    ):
        notes.append(
            "the planned requests or tokens exceed --max-requests/--max-total-tokens: a server run would "
            "stop at the budget (exit 7); raise it or use a smaller --eval-size"
        )
    if backend.name == "openai":
        notes.append(
            "a server scored by chat log-probabilities answers all labels of a prompt in one HTTP request, "
            "and one without whole-text log-probabilities skips the domain perplexity: fewer requests"
        )
    return RunPlan(
        backend=backend.name,
        model_id=str(backend.model_id),
        n_train=sizes[0],
        n_dev=sizes[1],
        n_eval=sizes[2],
        labels=labels,
        arms=arms,
        stages=stages,
        seconds=seconds if known else None,
        seconds_upper=seconds_upper if known else None,
        time_basis=basis,
        cost=cost,
        cost_upper=cost_upper,
        currency=currency,
        cost_note=cost_note,
        notes=tuple(notes),
    )


def render(plan: RunPlan) -> str:
    """The plan as plain text for the terminal."""
    lines = [
        f"Dry run: no model call was made. Model {plan.backend} {plan.model_id}; "
        f"{plan.n_train:,} train, {plan.n_dev:,} dev, {plan.n_eval:,} eval items.",
        "",
        f"{'stage':<40} {'requests':>9} {'new':>9} {'prompt tok':>11} {'answer tok':>11}",
    ]
    for s in plan.stages:
        mark = "≤ " if s.upper_bound else ""
        lines.append(
            f"{s.stage[:40]:<40} {mark + format(s.requests, ','):>9} {mark + format(s.new, ','):>9} "
            f"{mark + format(s.prompt_tokens, ','):>11} {mark + format(s.answer_tokens, ','):>11}"
        )
        if s.note:
            lines.append(f"    {s.note}")
    lines += [
        f"{'planned total':<40} {plan.total('requests'):>9,} {plan.total('new'):>9,} "
        f"{plan.total('prompt_tokens'):>11,} {plan.total('answer_tokens'):>11,}",
        f"{'upper bound (with ≤ rows)':<40} {plan.total('requests', upper=True):>9,} "
        f"{plan.total('new', upper=True):>9,} {plan.total('prompt_tokens', upper=True):>11,} "
        f"{plan.total('answer_tokens', upper=True):>11,}",
        "",
        "New: not yet in the response cache (only these cost money and time).",
        f"Estimated model time: {_duration(plan.seconds)} (upper bound {_duration(plan.seconds_upper)}); "
        f"basis: {plan.time_basis}.",
    ]
    if plan.cost is not None:
        lines.append(
            f"Estimated cost: {plan.cost:,.4f} {plan.currency} (upper bound {plan.cost_upper or 0:,.4f}); "
            f"{plan.cost_note}."
        )
    else:
        lines.append(f"Estimated cost: not estimated; {plan.cost_note}.")
    lines += [f"Note: {n}." for n in plan.notes]
    p = plan.pilot
    if p is not None and "not_run" in p:
        lines.append(f"Pilot fine-tune: not run ({p['not_run']}).")
    elif p is not None:
        sizes = ", ".join(f"{n:,}" for n in p["sizes"])
        of = (
            f" of {p['model']} (the --finetune-model; also scored prompted on the eval items)"
            if "model" in p
            else ""
        )
        lines.append(
            f"Pilot fine-tune{of}: LoRA on {sizes} training examples, {p['steps']} optimizer steps (budget "
            f"{p['budget_steps']}, --set pilot_steps=N; --no-pilot to skip), about "
            f"{p['trained_tokens']:,} trained tokens: about {_duration(p['train_seconds'])} of training on "
            f"two CPU cores and {_duration(p['score_seconds'])} scoring {p['scored_items']:,} items "
            "(nothing, when this run folder already holds the same pilot)."
        )
    return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
