"""The prompting arms: zero-shot, system prompt, and k-shot with demonstrations from the train split.

How each arm renders one eval example (decided here, relied on by evaluation and reports):

- ``zero_shot``: the example's own turns without any dataset system turn (the bare model), the last
  user turn followed, for classification, by a one-line format hint listing the labels. Log-likelihood
  scoring already limits the answer to the label set; the hint is there so that a server scored by
  generate-and-match sees the same conversation and can answer with a label at all.
- ``system``: ``zero_shot`` plus a system turn: the arm's instruction (a user-supplied file, or one built
  from the label set and an optional task description). A system turn the dataset itself carries is kept,
  appended after the instruction, so context the user wrote is never lost.
- ``few_shot_k<k>``: ``system`` plus k demonstrations as earlier user/assistant turns, each demonstration
  formatted exactly like the query (same hint), its assistant turn being the demonstration's target.

Demonstrations come only from the train split. ``stratified`` draws one fixed, seeded set per seed that
cycles through the labels (each label appears ``k // L`` or ``k // L + 1`` times), so the set for k=2
contains the set for k=1 and every eval item of an arm shares the same prefix (cacheable). ``nearest``
picks, per eval item, the k train examples most similar by TF-IDF cosine similarity, most similar last
(next to the query); a train example whose input equals the query's is skipped so a duplicate never
hands the answer over.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from advisor.backends.base import Backend
from advisor.errors import ConfigError
from advisor.files import read_text
from advisor.types import Example, Message, TaskKind

DEFAULT_K_LADDER = (1, 2, 4, 8, 16, 32)
# A prompt budget, not the model's limit: long prompts cost CPU time quadratically; pass the model's
# own context length to allow more.
DEFAULT_MAX_CONTEXT_TOKENS = 2048
SELECTIONS = ("stratified", "nearest")


class ArmKind(StrEnum):
    ZERO_SHOT = "zero_shot"
    SYSTEM = "system"
    FEW_SHOT = "few_shot"


@dataclass(frozen=True)
class Arm:
    """One way of prompting the model; everything needed to render a request is in here."""

    name: str
    kind: ArmKind
    k: int = 0
    selection: str = "stratified"
    instruction: str | None = None  # system turn text (system and few-shot arms)
    format_hint: str = ""  # appended to the last user turn ("" for generation)

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"Arm.selection must be one of {SELECTIONS}, got {self.selection!r}")
        if (self.kind is ArmKind.FEW_SHOT) != (self.k > 0):
            raise ValueError(f"Arm {self.name!r}: k must be > 0 exactly for few-shot arms, got k={self.k}")
        if self.kind is not ArmKind.ZERO_SHOT and not self.instruction:
            raise ValueError(f"Arm {self.name!r}: system and few-shot arms need an instruction")


def label_order(labels: Sequence[str], seed: int | None) -> list[str]:
    """The labels as prompts list them: a seeded shuffle, so no label is favoured by always coming first.

    `seed` None keeps the given order (the fine-tuned model's prompt, fixed at training time).
    """
    out = list(labels)
    if seed is not None:
        random.Random(f"labels:{seed}").shuffle(out)
    return out


def format_hint(task: TaskKind, labels: Sequence[str], seed: int | None = None) -> str:
    """The one-line answer-format hint; only classification has one."""
    if task is TaskKind.CLASSIFY:
        return "Answer with exactly one of: " + ", ".join(label_order(labels, seed)) + "."
    return ""


def system_instruction(
    task: TaskKind,
    labels: Sequence[str],
    description: str | None = None,
    system_file_text: str | None = None,
    seed: int | None = None,
) -> str:
    """The system-arm instruction: the user's file verbatim when given, else built from the labels.

    For classification it says more than the zero-shot hint (which only lists the labels): a role, the
    task, and that every label is a real possibility, so the system arm measures an instruction rather
    than the same request with a system turn added.
    """
    if system_file_text is not None and system_file_text.strip():
        return system_file_text.strip()
    parts = []
    if description and description.strip():
        parts.append(description.strip())
    if task is TaskKind.CLASSIFY:
        names = label_order(labels, seed)
        parts.append(
            "You are a careful annotator. Read the user's message and decide which of these "
            f"{len(names)} labels describes it best: "
            + ", ".join(names)
            + ". Every label occurs in this task, so do not default to any one of them; weigh what the "
            "message actually says. Reply with the label only, without explanation."
        )
    else:
        parts.append("Reply to the user's message with the expected output only, without extra commentary.")
    return " ".join(parts)


def arm_name(kind: ArmKind, k: int = 0, selection: str = "stratified") -> str:
    if kind is not ArmKind.FEW_SHOT:
        return str(kind)
    return f"few_shot_k{k}" + ("_nearest" if selection == "nearest" else "")


def _query_turns(example: Example, hint: str) -> list[Message]:
    """The example's non-system turns, the hint appended to the last user turn."""
    turns = [m for m in example.messages if m.role != "system"]
    if hint:
        for i in range(len(turns) - 1, -1, -1):
            if turns[i].role == "user":
                turns[i] = Message("user", f"{turns[i].content}\n\n{hint}")
                break
    return turns


def render_messages(arm: Arm, example: Example, demos: Sequence[Example] = ()) -> tuple[Message, ...]:
    """The chat turns sent to the model for `example` under `arm` (see the module docstring)."""
    out: list[Message] = []
    if arm.kind is not ArmKind.ZERO_SHOT:
        system = arm.instruction or ""
        if example.system:
            system = f"{system}\n\n{example.system}"
        out.append(Message("system", system))
    if arm.kind is ArmKind.FEW_SHOT:
        for d in demos:
            out.extend(_query_turns(d, arm.format_hint))
            out.append(Message("assistant", d.target))
    out.extend(_query_turns(example, arm.format_hint))
    return tuple(out)


def stratified_order(train: Sequence[Example], seed: int) -> tuple[Example, ...]:
    """All train examples in a seeded order that cycles through the labels (round robin).

    Taking the first k gives a label-balanced demonstration set, nested across k. Without labels
    (generation) it is a seeded shuffle.
    """
    rng = random.Random(seed)
    pools: dict[str | None, list[Example]] = {}
    for ex in train:
        pools.setdefault(ex.label, []).append(ex)
    keys = sorted(pools, key=lambda k: (k is None, k or ""))
    for key in keys:
        rng.shuffle(pools[key])
    rng.shuffle(keys)
    out: list[Example] = []
    depth = 0
    while len(out) < len(train):
        for key in keys:
            if depth < len(pools[key]):
                out.append(pools[key][depth])
        depth += 1
    return tuple(out)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


class DemoSelector:
    """Picks demonstrations for an arm from the train split only (prepared once per run)."""

    def __init__(self, train: Sequence[Example], seed: int) -> None:
        self.train = tuple(train)
        self.order = stratified_order(self.train, seed)
        self._tfidf: tuple[object, object] | None = None
        self._normed: list[str] = []

    def select(self, arm: Arm, example: Example) -> tuple[Example, ...]:
        if arm.kind is not ArmKind.FEW_SHOT:
            return ()
        if arm.selection == "stratified":
            return self.order[: arm.k]
        return self._nearest(example, arm.k)

    def _nearest(self, example: Example, k: int) -> tuple[Example, ...]:
        import numpy as np

        if self._tfidf is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            vec = TfidfVectorizer(lowercase=True, sublinear_tf=True)
            matrix = vec.fit_transform([ex.input_text for ex in self.train])
            self._tfidf = (vec, matrix)
            self._normed = [_norm(ex.input_text) for ex in self.train]
        vec, matrix = self._tfidf
        query = vec.transform([example.input_text])  # type: ignore[attr-defined]
        sims = np.asarray((matrix @ query.T).toarray()).ravel()  # type: ignore[operator]
        # Stable sort on (-similarity, train position): deterministic ties.
        ranked = np.argsort(-sims, kind="stable")
        q = _norm(example.input_text)
        picked: list[int] = []
        for i in ranked:
            if self._normed[i] != q:
                picked.append(int(i))
                if len(picked) == k:
                    break
        return tuple(self.train[i] for i in reversed(picked))


def _p95(values: Sequence[int]) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def max_demos(
    render: Callable[[Sequence[Message]], str],
    count_tokens: Callable[[Sequence[str]], list[int]],
    train: Sequence[Example],
    system_arm: Arm,
    max_context_tokens: int,
    reserve_tokens: int,
    seed: int = 0,
    sample: int = 500,
) -> int:
    """How many demonstrations fit the context, estimated from a seeded train sample.

    A probe query of 95th-percentile input length and a probe demonstration of 95th-percentile
    input+target length are rendered through the backend's own chat template; the k-shot prompt is
    estimated as the system prompt plus k times one demonstration, plus `reserve_tokens` for the answer.
    """
    if not train:
        return 0
    rng = random.Random(seed)
    pool = list(train) if len(train) <= sample else rng.sample(list(train), sample)
    in_len = count_tokens([ex.input_text for ex in pool])
    demo_len = count_tokens([ex.input_text + "\n" + ex.target for ex in pool])
    p_in, p_demo = _p95(in_len), _p95(demo_len)
    query = next(ex for ex, n in zip(pool, in_len, strict=True) if n == p_in)
    demo = next(ex for ex, n in zip(pool, demo_len, strict=True) if n == p_demo)
    t0, t1 = count_tokens(
        [
            render(render_messages(system_arm, query)),
            render(render_messages(few_shot_arm(system_arm, 1), query, (demo,))),
        ]
    )
    per_demo = max(1, t1 - t0)
    room = max_context_tokens - t0 - reserve_tokens
    return max(0, room // per_demo)


def few_shot_arm(system_arm: Arm, k: int, selection: str = "stratified") -> Arm:
    """The k-shot arm built on `system_arm`'s instruction and hint (any arm with an instruction will do)."""
    return Arm(
        name=arm_name(ArmKind.FEW_SHOT, k, selection),
        kind=ArmKind.FEW_SHOT,
        k=k,
        selection=selection,
        instruction=system_arm.instruction,
        format_hint=system_arm.format_hint,
    )


@dataclass(frozen=True)
class Ladder:
    """The arms to measure, cheapest first, and the largest k that fits the prompt budget and train split."""

    arms: tuple[Arm, ...]
    k_max: int


def build_ladder(
    backend: Backend,
    task: TaskKind,
    labels: Sequence[str],
    train: Sequence[Example],
    *,
    k_ladder: Sequence[int] = DEFAULT_K_LADDER,
    description: str | None = None,
    system_file: str | Path | None = None,
    demo_selection: str = "stratified",
    seed: int = 0,
    max_context_tokens: int = DEFAULT_MAX_CONTEXT_TOKENS,
    max_gen_tokens: int = 64,
) -> Ladder:
    """Zero-shot, system and the few-shot ladder, cheapest first; k bounded by the context and n_train.

    The system instruction is `system_file`'s text when given, else built from the labels and the
    optional task `description`. `demo_selection` ("stratified" or "nearest") picks the
    demonstrations of every few-shot arm. Labels are listed in a seeded shuffled order. Token counts
    use the backend's tokenizer and chat template.
    """
    if demo_selection not in SELECTIONS:
        raise ConfigError(
            f"{demo_selection!r} is not one of: {', '.join(SELECTIONS)}", field="demo_selection"
        )
    file_text = None
    if system_file is not None:
        file_text = read_text(system_file, ConfigError, "system prompt file")
        if not file_text.strip():
            raise ConfigError("the system prompt file is empty", file=str(system_file))
    hint = format_hint(task, labels, seed)
    text = system_instruction(task, labels, description, file_text, seed)
    zero = Arm(arm_name(ArmKind.ZERO_SHOT), ArmKind.ZERO_SHOT, format_hint=hint)
    system = Arm(arm_name(ArmKind.SYSTEM), ArmKind.SYSTEM, instruction=text, format_hint=hint)
    # Room left for the answer: the longest label (plus end of turn), or the generation limit.
    is_classify = task is TaskKind.CLASSIFY
    reserve = max(backend.count_tokens(list(labels)), default=1) + 2 if is_classify else max_gen_tokens
    fits = max_demos(
        backend.render, backend.count_tokens, train, system, max_context_tokens, reserve, seed=seed
    )
    k_max = min(len(train), fits)
    arms = [zero, system]
    for k in sorted(set(k_ladder)):
        if 0 < k <= k_max:
            arms.append(few_shot_arm(system, k, demo_selection))
    return Ladder(tuple(arms), k_max)


def build_arms(
    backend: Backend, task: TaskKind, labels: Sequence[str], train: Sequence[Example], **kw: object
) -> tuple[Arm, ...]:
    """The arms of `build_ladder` (same arguments)."""
    return build_ladder(backend, task, labels, train, **kw).arms  # type: ignore[arg-type]
