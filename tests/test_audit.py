"""The audit (duplicates, conflicts, balance, lengths) and the split (stratified, seeded, grouped, saved)."""

from __future__ import annotations

import json
import random
import string
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from tiny import rotten_tomatoes_examples

from advisor.audit import checks as audit_mod
from advisor.audit.checks import (
    Split,
    audit,
    audit_file,
    audit_signals,
    held_out_sizes,
    input_key,
    leakage,
    make_split,
    normalise,
    read_split,
    split_section,
    write_split,
)
from advisor.document import Audit
from advisor.document import Split as SplitSection
from advisor.errors import DataError
from advisor.intake import data
from advisor.intake.data import iter_examples, load_examples
from advisor.report.markdown import audit_section
from advisor.types import Example, Message, TaskKind

SIGNALS = {
    "n_examples",
    "n_train",
    "n_dev",
    "n_eval",
    "task_kind",
    "n_labels",
    "minority_share",
    "imbalance_ratio",
    "duplicate_share",
    "conflict_share",
    "empty_target_count",
    "leakage_count",
    "mean_input_tokens",
    "p95_input_tokens",
    "mean_target_tokens",
}


def ex(line: int, text: str, target: str, label: str | None = None, system: str | None = None) -> Example:
    msgs = ((Message("system", system),) if system else ()) + (Message("user", text),)
    return Example(line=line, messages=msgs, target=target, label=label)


@pytest.fixture(scope="module")
def rt_1000() -> list[Example]:
    return rotten_tomatoes_examples(1000, seed=0)


def test_normalise_casefolds_strips_punctuation_and_collapses_space() -> None:
    assert normalise("  A Gem,  of a FILM!!\n") == "a gem of a film"
    assert normalise("Café — très   BIEN.") == "café très bien"
    assert normalise("Straße") == normalise("STRASSE")


def test_the_fast_ascii_normalisation_matches_the_general_rule(rt_snippets) -> None:
    general = audit_mod._PUNCT
    rng = random.Random(0)
    alphabet = string.printable + "\x1c\x1f\x85\xa0é—“”"
    texts = [t for t, _ in rt_snippets] + [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(3000)
    ]
    for text in texts:
        assert normalise(text) == " ".join(general.sub("", text.casefold()).split()), repr(text)


def test_exact_and_normalised_duplicates(rt_snippets) -> None:
    (a, la), (b, lb), (c, lc) = rt_snippets[:3]
    exs = [
        ex(1, a, la),
        ex(2, a, la),  # exact duplicate of line 1
        ex(3, a.upper() + "!!", la),  # normalised duplicate of line 1
        ex(4, b, lb),
        ex(5, b, lb, system="Be brief."),  # different input (a system turn): not a duplicate
        ex(6, c, lc),
    ]
    result = audit(exs, TaskKind.CLASSIFY, ("fresh", "rotten"))
    assert result.exact_duplicates == 1
    assert result.normalised_duplicates == 2
    assert result.duplicate_share == pytest.approx(2 / 6, abs=1e-6)
    assert result.conflict_groups == 0 and result.conflict_pairs == ()


def test_conflicting_duplicates_are_counted_with_line_pairs(rt_snippets) -> None:
    (a, _), (b, _), (c, _) = rt_snippets[:3]
    exs = [
        ex(1, a, "fresh"),
        ex(2, b, "rotten"),
        ex(3, a + ".", "rotten"),  # same normalised input as line 1, other target
        ex(4, c, "fresh"),
        ex(5, b.lower(), "fresh"),  # conflicts with line 2
        ex(6, b, "rotten"),  # duplicate of line 2 (same target): part of the conflicting group
        ex(7, c, " fresh "),  # same target once stripped: no conflict
    ]
    result = audit(exs, TaskKind.CLASSIFY, ("fresh", "rotten"))
    assert result.conflict_groups == 2
    assert result.conflict_examples == 5
    assert result.conflict_share == pytest.approx(5 / 7, abs=1e-6)
    assert result.conflict_pairs == ((1, 3), (2, 5))


def test_imbalance_minority_and_empty_targets() -> None:
    exs = [ex(i, f"review number {i}", "fresh" if i <= 30 else "rotten") for i in range(1, 41)]
    exs.append(ex(41, "a review without a verdict", "  "))
    result = audit(exs, TaskKind.CLASSIFY, ("fresh", "rotten"))
    assert result.label_counts == {"fresh": 30, "rotten": 10}
    assert result.n_labels == 2
    assert result.imbalance_ratio == 3.0
    assert result.minority_share == 0.25
    assert result.empty_targets == 1


def test_generation_has_no_label_statistics(rt_snippets) -> None:
    exs = [ex(i, f"Summarise: {t}", t) for i, (t, _) in enumerate(rt_snippets, start=1)]
    result = audit(exs)
    assert result.task_kind == "generate"
    assert result.labels == () and result.label_counts == {}
    assert result.imbalance_ratio is None and result.minority_share is None


def test_token_lengths_approximate_or_from_the_tokenizer(monkeypatch) -> None:
    exs = [ex(1, "a" * 8, "b" * 3), ex(2, "c" * 9, "d"), ex(3, "e" * 40, "f" * 8)]
    approx = audit(exs, TaskKind.GENERATE, ())
    assert approx.token_method == "chars/4"
    assert (approx.input_tokens.max, approx.input_tokens.p50, approx.target_tokens.max) == (10, 3.0, 2)
    assert approx.input_tokens.mean == pytest.approx(5.0)

    calls: list[int] = []

    def words(texts: list[str]) -> list[int]:
        calls.append(len(texts))
        return [len(t) for t in texts]

    monkeypatch.setattr(audit_mod, "TOKEN_BATCH", 2)
    exact = audit(exs, TaskKind.GENERATE, (), count_tokens=words)
    assert exact.token_method == "tokenizer"
    assert exact.input_tokens.max == 40 and exact.target_tokens.max == 8
    assert calls == [2, 2, 1, 1]  # batches of inputs and targets


def test_streaming_audit_detects_the_task_and_matches_the_loaded_one(tmp_path: Path, rt_snippets) -> None:
    path = tmp_path / "d.jsonl"
    recs = [{"prompt": t, "completion": lab} for t, lab in rt_snippets] + [
        {"prompt": rt_snippets[0][0], "completion": "rotten"}
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    streamed = audit(iter_examples(path))
    loaded = load_examples(path)
    assert streamed == audit(loaded.examples, TaskKind.CLASSIFY, ("fresh", "rotten"))
    assert streamed.task_kind == "classify"
    assert sum(streamed.label_counts.values()) == len(recs)
    assert json.loads(json.dumps(streamed.to_dict()))["conflict_pairs"] == [[1, len(recs)]]


def test_split_is_stratified_sized_and_disjoint(rt_1000: list[Example]) -> None:
    split = make_split(rt_1000, seed=0)
    assert (len(split.eval), len(split.dev)) == (200, 100)
    parts = [set(split.train), set(split.dev), set(split.eval)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set().union(*parts) == {e.line for e in rt_1000}
    share = Counter(e.label for e in rt_1000)
    train, dev, ev = split.parts(rt_1000)
    for label, count in share.items():
        expected = 200 * count / len(rt_1000)
        assert abs(sum(e.label == label for e in ev) - expected) <= 1
        assert abs(sum(e.label == label for e in dev) - expected / 2) <= 1
    assert split.leakage_count == 0


def test_split_is_deterministic_per_seed(rt_1000: list[Example]) -> None:
    a, b = make_split(rt_1000, seed=7), make_split(rt_1000, seed=7)
    assert a == b
    assert make_split(rt_1000, seed=8).eval != a.eval
    assert make_split(list(reversed(rt_1000)), seed=7).eval == a.eval  # the order of lines does not matter


def test_duplicates_stay_on_one_side_and_leakage_is_zero(rt_1000: list[Example]) -> None:
    # every 10th example is repeated (reworded by case/punctuation) further down the file
    extra = [
        replace(e, line=100_000 + i, messages=(Message("user", e.input_text.upper() + "!"),))
        for i, e in enumerate(rt_1000[::10])
    ]
    data = rt_1000 + extra
    split = make_split(data, seed=3)
    side = {}
    for name in ("train", "dev", "eval"):
        for line in getattr(split, name):
            side[line] = name
    by_line = {e.line: e for e in data}
    groups: dict[str, set[str]] = {}
    for line, name in side.items():
        groups.setdefault(input_key(by_line[line]), set()).add(name)
    assert all(len(sides) == 1 for sides in groups.values())
    assert leakage(split, data) == 0 == split.leakage_count


def test_leakage_counts_held_out_items_seen_in_earlier_splits(rt_snippets) -> None:
    data = [ex(i, t, lab) for i, (t, lab) in enumerate(rt_snippets[:6], start=1)]
    data.append(ex(7, rt_snippets[0][0].lower(), "fresh"))  # same normalised input as line 1
    data.append(ex(8, rt_snippets[1][0], "fresh"))  # same input as line 2
    bad = Split(seed=0, train=(1, 3, 4), dev=(2, 7), eval=(5, 8))
    assert leakage(bad, data) == 2  # line 7 (dev, in train) and line 8 (eval, in dev)


def test_small_data_shrinks_held_out_proportionally() -> None:
    assert held_out_sizes(1000, 200, 100) == (200, 100)
    assert held_out_sizes(600, 200, 100) == (200, 100)
    assert held_out_sizes(300, 200, 100) == (100, 50)
    assert held_out_sizes(10, 200, 100) == (3, 2)
    assert held_out_sizes(1, 200, 100) == (0, 0)
    small = [
        ex(
            i,
            f"the {i}th review of this film",
            "fresh" if i % 2 else "rotten",
            "fresh" if i % 2 else "rotten",
        )
        for i in range(1, 301)
    ]
    split = make_split(small, seed=0)
    assert (len(split.train), len(split.dev), len(split.eval)) == (150, 50, 100)
    one = make_split(small[:1], seed=0)
    assert (one.train, one.dev, one.eval) == ((1,), (), ())


def test_split_file_round_trip_and_atomic_write(tmp_path: Path, rt_1000: list[Example]) -> None:
    split = make_split(rt_1000, seed=11)
    path = write_split(tmp_path, split, "ab" * 32, "/data/reviews.jsonl")
    assert path == tmp_path / "split.json"
    assert [p.name for p in tmp_path.iterdir()] == ["split.json"]  # no temp file left behind
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert set(doc) == {"seed", "data_sha256", "data_path", "train", "dev", "eval"}
    back = read_split(tmp_path)
    assert back == replace(split, data_sha256="ab" * 32, data_path="/data/reviews.jsonl")
    assert back.parts(rt_1000) == split.parts(rt_1000)


def test_reading_a_bad_split_file_names_it(tmp_path: Path, rt_snippets) -> None:
    with pytest.raises(DataError, match="no split file"):
        read_split(tmp_path)
    (tmp_path / "split.json").write_text(
        '{"seed": 0, "train": [1], "dev": "x", "eval": []}', encoding="utf-8"
    )
    with pytest.raises(DataError, match="field 'dev': expected a list of line numbers"):
        read_split(tmp_path)
    (tmp_path / "split.json").write_text("{", encoding="utf-8")
    with pytest.raises(DataError, match="split.json:1: not valid JSON"):
        read_split(tmp_path)
    split = Split(seed=0, train=(1, 99), dev=(), eval=())
    with pytest.raises(DataError, match="the data changed"):
        split.parts([ex(1, rt_snippets[0][0], "fresh")])


def test_signals_section_and_markdown(rt_1000: list[Example]) -> None:
    result = audit(rt_1000, TaskKind.CLASSIFY, ("fresh", "rotten"))
    split = make_split(rt_1000, seed=0)
    signals = audit_signals(result, split)
    assert set(signals) == SIGNALS
    assert signals["n_train"] + signals["n_dev"] + signals["n_eval"] == signals["n_examples"] == 1000
    assert signals["leakage_count"] == 0
    assert all(v is None or isinstance(v, int | float | str | bool) for v in signals.values())
    doc = json.loads(json.dumps(result.to_dict()))
    md = audit_section(Audit.model_validate(doc), SplitSection.model_validate(split_section(split)))
    assert "## Data audit" in md
    assert "| fresh |" in md and "| rotten |" in md
    assert "approximation: ceil(characters / 4)" in md
    assert "700 train, 100 dev, 200 eval" in md


def test_audit_and_split_sections_match_the_shipped_schema(rt_1000: list[Example], rt_snippets) -> None:
    import jsonschema

    schema_path = Path(audit_mod.__file__).parents[1] / "schema" / "decision.schema.json"
    full = json.loads(schema_path.read_text(encoding="utf-8"))
    props = {k: {"$defs": full["$defs"], **v} for k, v in full["properties"].items()}
    split = make_split(rt_1000, seed=0)
    classify = audit(rt_1000, TaskKind.CLASSIFY, ("fresh", "rotten"))
    generate = audit([ex(1, "Summarise the review.", rt_snippets[0][0]), ex(2, "Summarise it.", "")])
    for result in (classify, generate):
        jsonschema.validate(json.loads(json.dumps(result.to_dict())), props["audit"])
    jsonschema.validate(split_section(split), props["split"])


def _write_reviews(path: Path, rt_snippets, *, bom: bool = False, table: bool = False) -> list[dict]:
    recs: list[dict] = []
    for i in range(300):
        text, label = rt_snippets[i % len(rt_snippets)]
        if i % 7 == 3:
            text, label = (
                recs[-1]["text"],
                ("rotten" if recs[-1]["label"] == "fresh" else "fresh"),
            )  # conflict
        elif i % 5 == 1:
            text, label = recs[-1]["text"].upper(), recs[-1]["label"]  # normalised duplicate
        else:
            text = f"{text} (#{i})"
        recs.append({"text": text, "label": label})
    rows = recs if table else [{"prompt": r["text"], "completion": r["label"]} for r in recs]
    body = "".join(json.dumps(r) + "\n" for r in rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + body.encode("utf-8"))
    return recs


@pytest.mark.parametrize(("workers", "bom", "table"), [(2, False, False), (3, True, False), (4, False, True)])
def test_parallel_file_audit_equals_the_one_process_audit(
    tmp_path: Path, rt_snippets, workers: int, bom: bool, table: bool
) -> None:
    path = tmp_path / "reviews.jsonl"
    _write_reviews(path, rt_snippets, bom=bom, table=table)
    chunks = data.jsonl_chunks(path, workers)
    assert len(chunks) == workers
    assert [c.first_line for c in chunks][0] == 1
    assert [e for c in chunks for e in iter_examples(path, chunk=c)] == list(iter_examples(path))
    one = audit(iter_examples(path))
    assert audit_file(path, workers=workers) == one
    assert one.conflict_groups > 0 and one.normalised_duplicates > one.exact_duplicates


def test_parallel_file_audit_reports_the_earliest_problem_with_its_line(tmp_path: Path, rt_snippets) -> None:
    path = tmp_path / "reviews.jsonl"
    _write_reviews(path, rt_snippets)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[249] = '{"prompt": 5, "completion": "fresh"}'
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"reviews\.jsonl:250: field 'prompt': wrong type"):
        audit_file(path, workers=2)
    lines[9] = "{broken"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"reviews\.jsonl:10: invalid JSON"):
        audit_file(path, workers=2)


def test_file_audit_falls_back_to_one_process(tmp_path: Path, rt_snippets) -> None:
    csv_path = tmp_path / "r.csv"
    csv_path.write_text(
        "text,label\n" + "".join(f'"{t}",{lab}\n' for t, lab in rt_snippets), encoding="utf-8"
    )
    assert data.jsonl_chunks(csv_path, 2) == []
    assert audit_file(csv_path).n_examples == len(rt_snippets)
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    assert data.jsonl_chunks(empty, 2) == []
    with pytest.raises(DataError, match="the file is empty"):
        audit_file(empty)
