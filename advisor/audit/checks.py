"""Data audit (counts, balance, duplicates, conflicts, empty targets, lengths) and the held-out split.

`audit` makes one streaming pass and keeps, per example, a few 8-byte hashes, its line and two lengths
(56 bytes), never the texts, so a million-row file audits in about 170 MB (bench/audit_scale.py).

Definitions used throughout:
- *input*: all input turns (system, history, last user turn), role by role.
- *normalised* text: casefolded, punctuation removed (any character that is neither a word character nor
  whitespace), whitespace collapsed to single spaces.
- *exact duplicate*: an example whose input and target equal an earlier example's, byte for byte.
- *normalised duplicate*: the same after normalising input and target (exact duplicates included).
- *conflict*: a group of examples with the same normalised input but more than one distinct target
  (targets compared after stripping surrounding whitespace); `conflict_examples` counts their members.
- *tokens*: the model tokenizer's counts when a `count_tokens` callable is given (``token_method =
  "tokenizer"``), else the approximation ceil(characters / 4) (``token_method = "chars/4"``), a common
  rule of thumb for English text with BPE tokenizers.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import random
import re
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from advisor.errors import DataError
from advisor.intake.data import Chunk, LabelCounter, iter_examples, jsonl_chunks
from advisor.rundir import RunDir
from advisor.types import Example, TaskKind

CountTokens = Callable[[list[str]], list[int]]

TOKEN_BATCH = 512
"""Texts handed to `count_tokens` per call."""
MAX_CONFLICT_PAIRS = 5
"""Example line pairs shown for conflicting duplicates."""
MAX_HELD_OUT_SHARE = 0.5
"""eval + dev never take more than this share of the examples; both shrink proportionally to fit."""
SPLIT_FILE = "split.json"

_PUNCT = re.compile(r"[^\w\s]+")
# The same rule for ASCII text, as bytes to delete, with ASCII whitespace mapped to a space: bytes.translate
# is several times faster than the regex and the split/join.
_ASCII_DROP = bytes(c for c in range(128) if _PUNCT.fullmatch(chr(c)))
_ASCII_SPACE = bytes(32 if chr(c).isspace() else c for c in range(256))


def normalise(text: str) -> str:
    """Casefold, drop punctuation, collapse whitespace."""
    folded = text.casefold()
    if folded.isascii():
        out = folded.encode().translate(_ASCII_SPACE, _ASCII_DROP).decode()
        return " ".join(out.split()) if "  " in out else out.strip(" ")
    return " ".join(_PUNCT.sub("", folded).split())


# Earlier turns (system prompts, shared history) repeat across examples; normalise each once.
_normalise_earlier = functools.lru_cache(maxsize=4096)(normalise)


def input_key(example: Example) -> str:
    """The normalised input of an example (all turns, with their roles): the duplicate/grouping key."""
    msgs = example.messages
    if len(msgs) == 1:
        return normalise(msgs[0].content)
    parts = [m.role + "\x1f" + _normalise_earlier(m.content) for m in msgs[:-1]]
    parts.append(msgs[-1].role + "\x1f" + normalise(msgs[-1].content))
    return "\x1e".join(parts)


def _input_text(example: Example) -> str:
    if len(example.messages) == 1:
        return example.messages[0].content
    return "\n".join(m.content for m in example.messages)


def _h(text: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little", signed=True
    )


@dataclass(frozen=True)
class TokenStats:
    mean: float
    p50: float
    p95: float
    max: int


@dataclass(frozen=True)
class Audit:
    """What the audit found. `to_dict()` is the ``audit`` section of decision.json."""

    n_examples: int
    task_kind: str
    labels: tuple[str, ...]
    label_counts: dict[str, int]
    n_labels: int
    imbalance_ratio: float | None  # largest / smallest count among labels that occur (classification only)
    minority_share: float | None  # smallest label count / labelled examples
    exact_duplicates: int
    normalised_duplicates: int
    duplicate_share: float  # normalised_duplicates / n_examples
    conflict_groups: int
    conflict_examples: int
    conflict_share: float  # conflict_examples / n_examples
    conflict_pairs: tuple[tuple[int, int], ...]  # (line, line) with the same input and different targets
    empty_targets: int
    input_tokens: TokenStats
    target_tokens: TokenStats
    token_method: str  # "tokenizer" or "chars/4"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["conflict_pairs"] = [list(p) for p in self.conflict_pairs]
        return d


def audit(
    examples: Iterable[Example],
    task: TaskKind | None = None,
    labels: Sequence[str] | None = None,
    count_tokens: CountTokens | None = None,
) -> Audit:
    """Audit examples in one streaming pass (any iterable, e.g. `data.iter_examples(path)`).

    With `task=None` the task kind and labels are detected in the same pass (as `data.detect_task`).
    Label counts use `Example.label` when set, else the stripped target if it is one of `labels`.
    """
    return _finish(_tally(examples, task, labels, count_tokens), task, labels, count_tokens is not None)


def audit_file(
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    input_col: str | None = None,
    output_col: str | None = None,
    workers: int = 2,
) -> Audit:
    """`audit(iter_examples(path))` with the task detected, using `workers` processes for JSON Lines.

    The file is cut into ranges of whole lines (`data.jsonl_chunks`); this process reads the first range
    while the others are read in worker processes, and their tallies are merged before the counts are
    made, so the result equals the one-process audit. A malformed record raises the `DataError` of the
    earliest range that has one. Lengths use the chars/4 approximation (no tokenizer in the workers).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Forked workers share this process's str-hash salt, which the per-example hashes rely on.
    forking = "fork" in multiprocessing.get_all_start_methods()
    chunks = (
        jsonl_chunks(path, workers, fmt=fmt, input_col=input_col, output_col=output_col) if forking else []
    )
    if len(chunks) < 2:
        return audit(iter_examples(path, fmt=fmt, input_col=input_col, output_col=output_col))
    with ProcessPoolExecutor(
        max_workers=len(chunks) - 1, mp_context=multiprocessing.get_context("fork")
    ) as pool:
        futures = [pool.submit(_tally_chunk, str(path), c) for c in chunks[1:]]
        results = [_tally_chunk(str(path), chunks[0])] + [f.result() for f in futures]
    for result in results:
        if isinstance(result, DataError):
            raise result
    tallies = [r for r in results if isinstance(r, _Tally)]
    return _finish(_merge(tallies), None, None, False)


def _tally_chunk(path: str, chunk: Chunk) -> _Tally | DataError:
    # Returned rather than raised: an exception crossing processes would lose its file/line/field.
    try:
        return _tally(iter_examples(path, chunk=chunk), None, None, None)
    except DataError as exc:
        return DataError(problems=exc.problems)


@dataclass
class _Tally:
    """What one pass keeps: per-example hashes, lines and lengths, plus label and empty-target counts."""

    detector: LabelCounter | None
    label_counts: Counter[str] = field(default_factory=Counter)
    empty: int = 0
    exact: array[int] = field(default_factory=lambda: array("q"))
    norm_in: array[int] = field(default_factory=lambda: array("q"))
    norm_tgt: array[int] = field(default_factory=lambda: array("q"))
    tgt: array[int] = field(default_factory=lambda: array("q"))
    lines: array[int] = field(default_factory=lambda: array("q"))
    in_len: array[int] = field(default_factory=lambda: array("q"))
    tgt_len: array[int] = field(default_factory=lambda: array("q"))


def _tally(
    examples: Iterable[Example],
    task: TaskKind | None,
    labels: Sequence[str] | None,
    count_tokens: CountTokens | None,
) -> _Tally:
    t = _Tally(detector=LabelCounter() if task is None else None)
    label_set = set(labels) if labels is not None else None
    detector, label_counts = t.detector, t.label_counts
    exact, norm_in, norm_tgt, tgt, lines = t.exact, t.norm_in, t.norm_tgt, t.tgt, t.lines
    in_len, tgt_len = t.in_len, t.tgt_len
    pending_in: list[str] = []
    pending_tgt: list[str] = []
    empty = 0
    target_cache: dict[str, tuple[int, int]] = {}

    def flush() -> None:
        if count_tokens is not None and pending_in:
            in_len.extend(count_tokens(pending_in))
            tgt_len.extend(count_tokens(pending_tgt))
        pending_in.clear()
        pending_tgt.clear()

    approx = count_tokens is None
    for ex in examples:
        target = ex.target
        stripped = target.strip()
        if not stripped:
            empty += 1
        if detector is not None:
            detector.add(target)
        if ex.label is not None:
            label_counts[ex.label] += 1
        elif label_set is not None and stripped in label_set:
            label_counts[stripped] += 1
        hashes = target_cache.get(target)
        if hashes is None:
            hashes = (_h(normalise(target)), _h(stripped))
            if len(target_cache) < 100_000:
                target_cache[target] = hashes
        lines.append(ex.line)
        # Python's str hash is salted per process but fixed within it, which is all counting needs; the
        # target hashes above are stable, so the conflict examples shown do not change between runs.
        exact.append(hash((ex.messages, target)))
        norm_in.append(hash(input_key(ex)))
        norm_tgt.append(hashes[0])
        tgt.append(hashes[1])
        if approx:
            msgs = ex.messages
            chars = len(msgs[0].content) if len(msgs) == 1 else sum(len(m.content) + 1 for m in msgs) - 1
            in_len.append((chars + 3) // 4)
            tgt_len.append((len(target) + 3) // 4)
        else:
            pending_in.append(_input_text(ex))
            pending_tgt.append(target)
            if len(pending_in) >= TOKEN_BATCH:
                flush()
    flush()
    t.empty = empty
    return t


def _merge(tallies: list[_Tally]) -> _Tally:
    """One tally from several (in file order). Detection needs the merged label counts."""
    out = _Tally(detector=LabelCounter())
    assert out.detector is not None
    for t in tallies:
        out.label_counts.update(t.label_counts)
        out.empty += t.empty
        for name in ("exact", "norm_in", "norm_tgt", "tgt", "lines", "in_len", "tgt_len"):
            getattr(out, name).extend(getattr(t, name))
        if t.detector is not None:
            out.detector.merge(t.detector)
    return out


def _finish(t: _Tally, task: TaskKind | None, labels: Sequence[str] | None, tokenizer: bool) -> Audit:
    import numpy as np

    label_counts = t.label_counts
    if t.detector is not None:
        task, detected = t.detector.decide()
        labels = detected
        if task is TaskKind.CLASSIFY:
            label_counts = Counter({k: v for k, v in t.detector.counts.items() if k in set(detected)})
    assert task is not None
    if labels is None:
        labels = sorted(label_counts)
    labels = tuple(labels)
    n = len(t.lines)

    def col(a: array[int]) -> Any:
        return np.frombuffer(a, dtype=np.int64) if n else np.zeros(0, np.int64)

    e, ni, nt, st, ln = col(t.exact), col(t.norm_in), col(t.norm_tgt), col(t.tgt), col(t.lines)
    exact_dups = n - len(np.unique(e))
    # Combine the two normalised hashes into one 64-bit key (wrap-around multiply-add).
    pair = ni.view(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + nt.view(np.uint64)
    norm_dups = n - len(np.unique(pair))
    groups, members, pairs = _conflicts(np, ni, st, ln)

    classify = task is TaskKind.CLASSIFY and bool(labels)
    counts = {lab: int(label_counts.get(lab, 0)) for lab in labels} if classify else {}
    present = [c for c in counts.values() if c > 0]
    labelled = sum(present)
    return Audit(
        n_examples=n,
        task_kind=task.value,
        labels=labels if classify else (),
        label_counts=counts,
        n_labels=len(labels) if classify else 0,
        imbalance_ratio=round(max(present) / min(present), 4) if classify and present else None,
        minority_share=round(min(counts.values()) / labelled, 4) if classify and labelled else None,
        exact_duplicates=int(exact_dups),
        normalised_duplicates=int(norm_dups),
        duplicate_share=round(norm_dups / n, 6) if n else 0.0,
        conflict_groups=groups,
        conflict_examples=members,
        conflict_share=round(members / n, 6) if n else 0.0,
        conflict_pairs=pairs,
        empty_targets=t.empty,
        input_tokens=_stats(np, t.in_len),
        target_tokens=_stats(np, t.tgt_len),
        token_method="tokenizer" if tokenizer else "chars/4",
    )


def _conflicts(np: Any, ni: Any, st: Any, ln: Any) -> tuple[int, int, tuple[tuple[int, int], ...]]:
    """(groups, member examples, a few line pairs) for same-normalised-input, different-target groups."""
    n = len(ni)
    if n < 2:
        return 0, 0, ()
    order = np.lexsort((ln, st, ni))
    ni_s, st_s, ln_s = ni[order], st[order], ln[order]
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    new_group[1:] = ni_s[1:] != ni_s[:-1]
    new_target = new_group.copy()
    new_target[1:] |= st_s[1:] != st_s[:-1]
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.append(starts, n))
    distinct = np.add.reduceat(new_target.astype(np.int64), starts)
    bad = distinct > 1
    if not bad.any():
        return 0, 0, ()
    bad_starts = starts[bad]
    target_starts = np.flatnonzero(new_target)
    # The first position after a conflicting group's start where the target changes (inside the group).
    second = target_starts[np.searchsorted(target_starts, bad_starts, side="right")]
    a, b = ln_s[bad_starts], ln_s[second]
    found = sorted({(int(min(x, y)), int(max(x, y))) for x, y in zip(a.tolist(), b.tolist(), strict=True)})
    return int(bad.sum()), int(sizes[bad].sum()), tuple(found[:MAX_CONFLICT_PAIRS])


def _stats(np: Any, lengths: array[int]) -> TokenStats:
    if not len(lengths):
        return TokenStats(0.0, 0.0, 0.0, 0)
    a = np.frombuffer(lengths, dtype=np.int64)
    return TokenStats(
        mean=round(float(a.mean()), 2),
        p50=float(np.percentile(a, 50)),
        p95=float(np.percentile(a, 95)),
        max=int(a.max()),
    )


# ---------------------------------------------------------------------------------------------------
# Split


@dataclass(frozen=True)
class Split:
    """Held-out items by source line (`Example.line`); every stage reads the split from split.json."""

    seed: int
    train: tuple[int, ...]
    dev: tuple[int, ...]
    eval: tuple[int, ...]
    data_sha256: str | None = None
    data_path: str | None = None
    leakage_count: int | None = field(default=None, compare=False)  # set by make_split; not in split.json

    def parts(self, examples: Iterable[Example]) -> tuple[tuple[Example, ...], ...]:
        """(train, dev, eval) examples; DataError when the split names lines the data does not have."""
        by_line = {ex.line: ex for ex in examples}
        out = []
        for name, part in (("train", self.train), ("dev", self.dev), ("eval", self.eval)):
            missing = [i for i in part if i not in by_line]
            if missing:
                raise DataError(
                    f"the split names {len(missing)} {name} line(s) the data does not have "
                    f"(first: {missing[0]}); "
                    "the data changed since the split was written",
                    field=name,
                )
            out.append(tuple(by_line[i] for i in part))
        return tuple(out)


def held_out_sizes(n: int, eval_size: int, dev_size: int) -> tuple[int, int]:
    """(eval, dev) sizes: as asked, or shrunk proportionally so they take at most half of the data."""
    cap = math.floor(n * MAX_HELD_OUT_SHARE)
    if eval_size + dev_size <= cap:
        return eval_size, dev_size
    ev = round(cap * eval_size / (eval_size + dev_size))
    return ev, cap - ev


def make_split(examples: Sequence[Example], *, seed: int, eval_size: int = 200, dev_size: int = 100) -> Split:
    """A seeded train/dev/eval split, stratified by label, that never splits a group of duplicates.

    Examples with the same normalised input form one group and land together on one side. For
    classification (any `Example.label` set) each label gets its proportional share of eval and dev
    (largest remainder), judged by the group's most common label. Sizes: see `held_out_sizes`; a group
    only goes to eval/dev when it fits what is left of that split's quota, so eval and dev never exceed
    their sizes (they can fall short by less than a group's size when duplicates are frequent). The
    split does not depend on the order of the lines. Data too
    small for any held-out item (fewer than 2 examples) is all train.
    """
    n = len(examples)
    eval_n, dev_n = held_out_sizes(n, eval_size, dev_size)
    keys = [input_key(ex) for ex in examples]
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    # Sorted by key before the seeded shuffle, so the split depends on the data and the seed, not on
    # the order of the lines.
    group_list = [groups[k] for k in sorted(groups)]
    random.Random(seed).shuffle(group_list)

    def stratum(members: list[int]) -> str:
        counts = Counter(examples[i].label or "" for i in members)
        return min(counts, key=lambda lab: (-counts[lab], lab))

    strata: dict[str, list[list[int]]] = {}
    for g in group_list:
        strata.setdefault(stratum(g), []).append(g)
    sizes = {s: sum(len(g) for g in gs) for s, gs in strata.items()}
    eval_quota = _allocate(eval_n, sizes)
    dev_quota = _allocate(dev_n, sizes)
    train: list[int] = []
    dev: list[int] = []
    ev: list[int] = []
    for s in sorted(strata):
        e_left, d_left = eval_quota[s], dev_quota[s]
        for g in strata[s]:
            lines = [examples[i].line for i in g]
            if len(g) <= e_left:
                ev.extend(lines)
                e_left -= len(g)
            elif len(g) <= d_left:
                dev.extend(lines)
                d_left -= len(g)
            else:
                train.extend(lines)
    split = Split(seed=seed, train=tuple(sorted(train)), dev=tuple(sorted(dev)), eval=tuple(sorted(ev)))
    return Split(
        seed=seed,
        train=split.train,
        dev=split.dev,
        eval=split.eval,
        leakage_count=_leakage(split, {ex.line: key for ex, key in zip(examples, keys, strict=True)}),
    )


def _allocate(total: int, sizes: dict[str, int]) -> dict[str, int]:
    """Split `total` across strata in proportion to their sizes (largest remainder, ties by name)."""
    n = sum(sizes.values())
    if n == 0 or total == 0:
        return {s: 0 for s in sizes}
    exact = {s: total * size / n for s, size in sizes.items()}
    quota = {s: math.floor(v) for s, v in exact.items()}
    rest = total - sum(quota.values())
    for s in sorted(exact, key=lambda s: (-(exact[s] - quota[s]), s))[:rest]:
        quota[s] += 1
    return quota


def leakage(split: Split, examples: Iterable[Example]) -> int:
    """Held-out items whose normalised input also appears in a split used earlier (0 after `make_split`).

    Counts dev and eval items whose normalised input is also in train, plus eval items whose normalised
    input is also in dev.
    """
    return _leakage(split, {ex.line: input_key(ex) for ex in examples})


def _leakage(split: Split, key_of: dict[int, str]) -> int:
    train = {key_of[i] for i in split.train if i in key_of}
    dev = [key_of[i] for i in split.dev if i in key_of]
    dev_keys = set(dev)
    ev = [key_of[i] for i in split.eval if i in key_of]
    return sum(k in train for k in dev) + sum(k in train or k in dev_keys for k in ev)


def write_split(
    run_dir: RunDir | str | os.PathLike[str], split: Split, data_sha256: str, data_path: str
) -> Path:
    """Write the run folder's split.json (atomically, through RunDir)."""
    doc = {
        "seed": split.seed,
        "data_sha256": data_sha256,
        "data_path": data_path,
        "train": list(split.train),
        "dev": list(split.dev),
        "eval": list(split.eval),
    }
    return RunDir.of(run_dir).write_split(doc)


def read_split(run_dir: RunDir | str | os.PathLike[str]) -> Split:
    run = RunDir.of(run_dir)
    name = str(run.split_path)
    doc = run.read_split()
    for key in ("train", "dev", "eval"):
        value = doc.get(key)
        if not isinstance(value, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in value
        ):
            raise DataError("expected a list of line numbers", file=name, field=key)
    if not isinstance(doc.get("seed"), int):
        raise DataError("expected an integer", file=name, field="seed")
    return Split(
        seed=doc["seed"],
        train=tuple(doc["train"]),
        dev=tuple(doc["dev"]),
        eval=tuple(doc["eval"]),
        data_sha256=doc.get("data_sha256"),
        data_path=doc.get("data_path"),
    )


# ---------------------------------------------------------------------------------------------------
# Signals and report section


def audit_signals(audit: Audit, split: Split, leakage_count: int | None = None) -> dict[str, Any]:
    """The data/audit signals for the rules. `leakage_count` defaults to the one `make_split` measured."""
    if leakage_count is None:
        leakage_count = split.leakage_count
    return {
        "n_examples": audit.n_examples,
        "n_train": len(split.train),
        "n_dev": len(split.dev),
        "n_eval": len(split.eval),
        "task_kind": audit.task_kind,
        "n_labels": audit.n_labels,
        "minority_share": audit.minority_share,
        "imbalance_ratio": audit.imbalance_ratio,
        "duplicate_share": audit.duplicate_share,
        "conflict_share": audit.conflict_share,
        "empty_target_count": audit.empty_targets,
        "leakage_count": leakage_count,
        "mean_input_tokens": audit.input_tokens.mean,
        "p95_input_tokens": audit.input_tokens.p95,
        "mean_target_tokens": audit.target_tokens.mean,
    }


def split_section(split: Split) -> dict[str, Any]:
    """The ``split`` section of decision.json: sizes and provenance (the line lists stay in split.json)."""
    return {
        "file": SPLIT_FILE,
        "seed": split.seed,
        "n_train": len(split.train),
        "n_dev": len(split.dev),
        "n_eval": len(split.eval),
        "leakage_count": split.leakage_count,
    }
