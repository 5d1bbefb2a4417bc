"""Data intake: every format on real text, and every malformed input as a DataError naming file/line/field."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
from malformed_cases import MALFORMED_CASES, materialise

from advisor.errors import ConfigError, DataError, ExitCode, Problem
from advisor.intake import data
from advisor.intake.data import detect_task, iter_examples, load_examples, with_labels
from advisor.types import Example, Message, TaskKind


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------
# Malformed input


@pytest.mark.parametrize("case", MALFORMED_CASES, ids=[c[0] for c in MALFORMED_CASES])
def test_malformed_input_is_a_data_error_naming_the_place(case, tmp_path: Path) -> None:
    path = materialise(case, tmp_path)
    with pytest.raises(DataError) as err:
        load_examples(path)
    message = str(err.value)
    assert case[3] in message
    assert str(path) in message
    assert err.value.exit_code == ExitCode.BAD_INPUT


def test_there_are_at_least_22_malformed_cases() -> None:
    assert len(MALFORMED_CASES) >= 22
    assert len({c[0] for c in MALFORMED_CASES}) == len(MALFORMED_CASES)


def test_problems_are_collected_up_to_the_limit_then_reading_stops(tmp_path: Path, rt_snippets) -> None:
    text, label = rt_snippets[0]
    good = json.dumps({"prompt": text, "completion": label})
    lines = [good] + ["{not json"] * 30 + [good]
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_examples(path)
    problems = err.value.problems
    assert len(problems) == data.MAX_PROBLEMS + 1  # the problems, then the note that reading stopped
    assert [p.line for p in problems[:-1]] == list(range(2, 2 + data.MAX_PROBLEMS))
    assert "stopped reading after 20 problems" in problems[-1].message
    with pytest.raises(DataError) as small:
        load_examples(path, max_problems=3)
    assert len(small.value.problems) == 4


def test_iter_examples_raises_at_the_first_problem_or_collects(tmp_path: Path, rt_snippets) -> None:
    recs = [{"prompt": t, "completion": lab} for t, lab in rt_snippets[:3]]
    recs[1] = {"prompt": 7, "completion": "fresh"}
    path = _write_jsonl(tmp_path / "d.jsonl", recs)
    with pytest.raises(DataError, match=r"d\.jsonl:2: field 'prompt': wrong type"):
        list(iter_examples(path))
    problems: list[Problem] = []
    got = list(iter_examples(path, problems=problems))
    assert [ex.line for ex in got] == [1, 3]
    assert [(p.line, p.field) for p in problems] == [(2, "prompt")]


def test_every_problem_in_one_file_is_reported(tmp_path: Path) -> None:
    case = {c[0]: c for c in MALFORMED_CASES}
    body = b"".join(
        c[2] or b"" for k, c in case.items() if k in ("role_unknown", "content_null", "no_user_turn")
    )
    path = tmp_path / "three.jsonl"
    path.write_bytes(body)
    with pytest.raises(DataError) as err:
        load_examples(path)
    # each case starts with a good record, so the bad ones sit on lines 2, 4 and 6
    assert [p.line for p in err.value.problems] == [2, 4, 6]


def test_over_long_line_is_reported_without_reading_it_whole(
    tmp_path: Path, monkeypatch, rt_snippets
) -> None:
    monkeypatch.setattr(data, "MAX_LINE_BYTES", 1000)
    text, label = rt_snippets[0]
    long = json.dumps({"prompt": "x" * 5000, "completion": label})
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"prompt": text, "completion": label}) + "\n" + long + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"long\.jsonl:2: line longer than"):
        load_examples(path)


def test_table_column_given_but_missing_names_it_and_lists_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("review,verdict\nA quiet triumph.,fresh\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_examples(path, input_col="text", output_col="verdict")
    assert "field 'text': input column 'text' not found; available columns: review, verdict" in str(err.value)
    with pytest.raises(
        DataError, match="output column 'label' not found; available columns: review, verdict"
    ):
        load_examples(path, input_col="review", output_col="label")


def test_unknown_format_is_a_usage_error(tmp_path: Path, rt_snippets) -> None:
    path = _write_jsonl(tmp_path / "d.jsonl", [{"prompt": rt_snippets[0][0], "completion": "fresh"}])
    with pytest.raises(ConfigError, match="unknown format 'vicuna'") as err:
        load_examples(path, fmt="vicuna")
    assert err.value.exit_code == ExitCode.USAGE


def test_forced_format_that_does_not_match_reports_missing_fields(tmp_path: Path, rt_snippets) -> None:
    path = _write_jsonl(tmp_path / "d.jsonl", [{"prompt": rt_snippets[0][0], "completion": "fresh"}])
    with pytest.raises(DataError, match=r"d\.jsonl:1: mixed formats"):
        load_examples(path, fmt="chat")


# ---------------------------------------------------------------------------------------------------
# Happy paths, one per format, on real snippets


def test_chat_jsonl(tmp_path: Path, rt_snippets) -> None:
    system = "Decide whether the critic liked the film."
    recs = [
        {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": t},
                {"role": "assistant", "content": lab},
            ]
        }
        for t, lab in rt_snippets[:5]
    ]
    # a multi-turn record: earlier turns are history, the last assistant turn is the target
    t0, t1 = rt_snippets[5][0], rt_snippets[6][0]
    recs.append(
        {
            "messages": [
                {"role": "user", "content": t0},
                {"role": "assistant", "content": rt_snippets[5][1]},
                {"role": "user", "content": t1},
                {"role": "assistant", "content": rt_snippets[6][1]},
            ]
        }
    )
    path = _write_jsonl(tmp_path / "chat.jsonl", recs)
    loaded = load_examples(path)
    assert loaded.fmt == "chat"
    assert loaded.n_records == 6
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    first = loaded.examples[0]
    assert first == Example(
        line=1,
        messages=(Message("system", system), Message("user", rt_snippets[0][0])),
        target=rt_snippets[0][1],
    )
    assert first.system == system and first.input_text == rt_snippets[0][0]
    last = loaded.examples[-1]
    assert [m.role for m in last.messages] == ["user", "assistant", "user"]
    assert last.input_text == t1 and last.target == rt_snippets[6][1]


def test_prompt_completion_with_bom_crlf_and_blank_lines(tmp_path: Path, rt_snippets) -> None:
    body = "\r\n".join(json.dumps({"prompt": t, "completion": lab}) for t, lab in rt_snippets[:4])
    path = tmp_path / "pc.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + body.replace("\r\n", "\r\n\r\n", 1).encode() + b"\r\n")
    loaded = load_examples(path)
    assert loaded.fmt == "prompt_completion"
    assert [ex.line for ex in loaded.examples] == [1, 3, 4, 5]
    assert [ex.target for ex in loaded.examples] == [lab for _, lab in rt_snippets[:4]]
    assert loaded.examples[0].messages == (Message("user", rt_snippets[0][0]),)


def test_alpaca_with_and_without_input(tmp_path: Path, rt_snippets) -> None:
    recs = [
        {
            "instruction": "Is this review positive or negative?",
            "input": rt_snippets[0][0],
            "output": "fresh",
        },
        {"instruction": f"Classify this review: {rt_snippets[1][0]}", "output": "rotten"},
        {"instruction": f"Classify: {rt_snippets[2][0]}", "input": "", "output": "fresh"},
    ]
    loaded = load_examples(_write_jsonl(tmp_path / "alpaca.jsonl", recs))
    assert loaded.fmt == "alpaca"
    assert loaded.examples[0].input_text == f"Is this review positive or negative?\n\n{rt_snippets[0][0]}"
    assert loaded.examples[1].input_text == recs[1]["instruction"]
    assert loaded.examples[2].input_text == recs[2]["instruction"]


def test_sharegpt_with_both_role_spellings_and_labels(tmp_path: Path, rt_snippets) -> None:
    system = "Decide whether the critic liked the film."
    human, gpt = ("human", "gpt"), ("user", "assistant")
    recs = [
        {
            "conversations": [
                {"from": "system", "value": system},
                {"from": names[0], "value": t},
                {"from": names[1], "value": lab},
            ]
        }
        for i, (t, lab) in enumerate(rt_snippets[:10])
        for names in [human if i % 2 else gpt]
    ]
    loaded = load_examples(_write_jsonl(tmp_path / "sharegpt.jsonl", recs))
    assert loaded.fmt == "sharegpt"
    assert loaded.examples[1] == Example(
        line=2,
        messages=(Message("system", system), Message("user", rt_snippets[1][0])),
        target=rt_snippets[1][1],
    )
    assert [ex.target for ex in loaded.examples] == [lab for _, lab in rt_snippets[:10]]
    kind, labels = detect_task(loaded.examples)
    assert kind == TaskKind.CLASSIFY and labels == tuple(sorted({lab for _, lab in rt_snippets[:10]}))
    assert [ex.label for ex in with_labels(loaded.examples, labels)] == [lab for _, lab in rt_snippets[:10]]


def test_openai_developer_role_text_parts_and_dropped_tool_turns(tmp_path: Path, rt_snippets) -> None:
    (t0, l0), (t1, l1) = rt_snippets[:2]
    half = len(t0) // 2
    recs = [
        {
            "messages": [
                {"role": "developer", "content": "Answer fresh or rotten."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": t0[:half]}, {"type": "text", "text": t0[half:]}],
                },
                {"role": "assistant", "content": [{"type": "text", "text": l0}]},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": t1},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
                {"role": "tool", "tool_call_id": "c1", "content": '{"critic": "unknown"}'},
                {"role": "assistant", "content": l1},
            ]
        },
    ]
    loaded = load_examples(_write_jsonl(tmp_path / "openai.jsonl", recs))
    assert loaded.fmt == "chat"
    assert loaded.examples[0] == Example(
        line=1, messages=(Message("system", "Answer fresh or rotten."), Message("user", t0)), target=l0
    )
    # the tool call and the tool's result are dropped: the input is the user's text only
    assert loaded.examples[1] == Example(line=2, messages=(Message("user", t1),), target=l1)


def test_trl_conversational_prompt_completion(tmp_path: Path, rt_snippets) -> None:
    system = {"role": "system", "content": "Decide whether the critic liked the film."}
    recs = [
        {
            "prompt": [system, {"role": "user", "content": t}],
            "completion": [{"role": "assistant", "content": lab}],
        }
        for t, lab in rt_snippets[:10]
    ]
    loaded = load_examples(_write_jsonl(tmp_path / "trl.jsonl", recs))
    assert loaded.fmt == "prompt_completion"
    assert loaded.examples[3].messages == (
        Message("system", system["content"]),
        Message("user", rt_snippets[3][0]),
    )
    assert [ex.target for ex in loaded.examples] == [lab for _, lab in rt_snippets[:10]]
    assert detect_task(loaded.examples)[0] == TaskKind.CLASSIFY


def test_integer_labels_in_a_jsonl_table_stay_as_given(tmp_path: Path, rt_snippets) -> None:
    recs = [{"text": t, "label": int(lab == "fresh")} for t, lab in rt_snippets[:10]]
    loaded = load_examples(_write_jsonl(tmp_path / "ints.jsonl", recs))
    assert [ex.target for ex in loaded.examples] == [str(r["label"]) for r in recs]
    assert detect_task(loaded.examples) == (TaskKind.CLASSIFY, ("0", "1"))


def test_empty_target_is_accepted_for_the_audit(tmp_path: Path, rt_snippets) -> None:
    recs = [
        {"prompt": rt_snippets[0][0], "completion": ""},
        {"prompt": rt_snippets[1][0], "completion": "fresh"},
    ]
    loaded = load_examples(_write_jsonl(tmp_path / "d.jsonl", recs))
    assert [ex.target for ex in loaded.examples] == ["", "fresh"]


def test_csv_with_quotes_commas_newlines_and_bom(tmp_path: Path, rt_snippets) -> None:
    path = tmp_path / "reviews.csv"
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["movie_name", "Text", "Category"])
        w.writerow(["one", 'He said "wow", twice,\nthen left.', "fresh"])
        for t, lab in rt_snippets[:3]:
            w.writerow(["two", t, lab])
    loaded = load_examples(path)
    assert loaded.fmt == "table"
    assert loaded.examples[0].input_text == 'He said "wow", twice,\nthen left.'
    assert [ex.line for ex in loaded.examples] == [1, 2, 3, 4]  # data rows
    assert [ex.target for ex in loaded.examples[1:]] == [lab for _, lab in rt_snippets[:3]]


def test_csv_row_problem_names_row_and_physical_line(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text('text,label\n"two\nlines",fresh\n,rotten\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_examples(path)
    assert "r.csv:4: field 'text': row 2: empty" in str(err.value)


def test_tsv_and_explicit_columns(tmp_path: Path, rt_snippets) -> None:
    path = tmp_path / "reviews.tsv"
    path.write_text(
        "sentiment\treview\n" + "".join(f"{lab}\t{t}\n" for t, lab in rt_snippets[:5]), encoding="utf-8"
    )
    loaded = load_examples(path, input_col="review", output_col="sentiment")
    assert [(ex.input_text, ex.target) for ex in loaded.examples] == rt_snippets[:5]


def test_parquet_streams_batches_and_turns_numbers_into_text(tmp_path: Path, rt_snippets) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [t for t, _ in rt_snippets]
    labels = [1 if lab == "fresh" else 0 for _, lab in rt_snippets]
    path = tmp_path / "reviews.parquet"
    pq.write_table(pa.table({"text": texts, "label": labels}), path, row_group_size=7)
    loaded = load_examples(path)
    assert loaded.n_records == len(texts)
    assert [ex.target for ex in loaded.examples] == [str(v) for v in labels]
    assert loaded.examples[-1].line == len(texts)


def test_parquet_missing_value_names_the_row(tmp_path: Path, rt_snippets) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"text": [rt_snippets[0][0], None], "label": ["fresh", "rotten"]}), path)
    with pytest.raises(DataError, match=r"r\.parquet:2: field 'text': row 2: missing value"):
        load_examples(path)


def test_jsonl_table_guesses_columns_case_insensitively(tmp_path: Path, rt_snippets) -> None:
    recs = [{"id": i, "Sentence": t, "Label": lab} for i, (t, lab) in enumerate(rt_snippets[:4])]
    loaded = load_examples(_write_jsonl(tmp_path / "flat.jsonl", recs))
    assert loaded.fmt == "table"
    assert [(ex.input_text, ex.target) for ex in loaded.examples] == rt_snippets[:4]


def test_jsonl_table_with_explicit_columns(tmp_path: Path, rt_snippets) -> None:
    recs = [{"review": t, "verdict": lab, "prompt": "unused"} for t, lab in rt_snippets[:3]]
    loaded = load_examples(
        _write_jsonl(tmp_path / "flat.jsonl", recs), input_col="review", output_col="verdict"
    )
    assert loaded.fmt == "table"
    assert [ex.target for ex in loaded.examples] == [lab for _, lab in rt_snippets[:3]]


def test_a_five_megabyte_line_loads(tmp_path: Path, rt_snippets) -> None:
    text = " ".join(t for t, _ in rt_snippets)
    long = (text + " ") * (5 * 2**20 // len(text) + 1)
    assert len(long) > 5 * 2**20
    path = _write_jsonl(tmp_path / "big.jsonl", [{"prompt": long, "completion": "fresh"}])
    assert load_examples(path).examples[0].input_text == long
    csv_path = tmp_path / "big.csv"
    csv_path.write_text(f'text,label\n"{long}",fresh\n', encoding="utf-8")
    assert load_examples(csv_path).examples[0].input_text == long


# ---------------------------------------------------------------------------------------------------
# Task detection


def _examples(targets: list[str]) -> list[Example]:
    return [
        Example(line=i + 1, messages=(Message("user", f"item {i}"),), target=t) for i, t in enumerate(targets)
    ]


def test_detect_classification_on_real_labels(rt_snippets) -> None:
    exs = _examples([lab for _, lab in rt_snippets])
    task, labels = detect_task(exs)
    assert task is TaskKind.CLASSIFY
    assert labels == ("fresh", "rotten")
    labelled = with_labels(exs, labels)
    assert all(ex.label == ex.target for ex in labelled)


def test_detect_generation_on_free_text(rt_snippets) -> None:
    assert detect_task(_examples([t for t, _ in rt_snippets])) == (TaskKind.GENERATE, ())


@pytest.mark.parametrize(
    ("targets", "kind"),
    [
        (["yes", "no", "no", "yes"], TaskKind.CLASSIFY),  # two labels always allowed
        ([" fresh ", "rotten\n", "fresh"] * 3, TaskKind.CLASSIFY),  # compared stripped
        (["fresh"] * 10, TaskKind.GENERATE),  # one label is not a choice
        ([f"label{i}" for i in range(21)] * 10, TaskKind.GENERATE),  # more than MAX_LABELS
        ([f"label{i}" for i in range(20)] * 10, TaskKind.CLASSIFY),
        (["a", "b", "c"] * 2, TaskKind.GENERATE),  # 3 labels need at least 15 examples
        (["a", "b", "c"] * 5, TaskKind.CLASSIFY),
        (["very good indeed and true", "bad"] * 5, TaskKind.GENERATE),  # a five-word target
        (["fresh", "rotten", "", "  "] * 5, TaskKind.CLASSIFY),  # empty targets are ignored
    ],
)
def test_detect_task_thresholds(targets: list[str], kind: TaskKind) -> None:
    assert detect_task(_examples(targets))[0] is kind


def test_labels_are_sorted_and_with_labels_leaves_others_unset() -> None:
    exs = _examples(["rotten", "fresh", "fresh", "rotten", "", "rotten"])
    task, labels = detect_task(exs)
    assert (task, labels) == (TaskKind.CLASSIFY, ("fresh", "rotten"))
    assert [ex.label for ex in with_labels(exs, labels)] == [
        "rotten",
        "fresh",
        "fresh",
        "rotten",
        None,
        "rotten",
    ]


def test_corrupt_parquet_data_is_a_data_error(tmp_path: Path, rt_snippets) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [t for t, _ in rt_snippets] * 250
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": texts, "label": ["fresh"] * len(texts)}), path, row_group_size=2000)
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 3
    raw[middle : middle + 2000] = bytes(2000)
    path.write_bytes(bytes(raw))
    with pytest.raises(
        DataError, match=r"c\.parquet: (unreadable after row \d+|not a readable Parquet file)"
    ):
        load_examples(path)


def test_iter_examples_is_lazy(tmp_path: Path, rt_snippets) -> None:
    lines = [json.dumps({"prompt": t, "completion": lab}) for t, lab in rt_snippets[:3]] + ["{broken"]
    path = tmp_path / "lazy.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    stream = iter_examples(path)
    assert next(stream).input_text == rt_snippets[0][0]  # the bad last line is not read yet
    with pytest.raises(DataError, match=r"lazy\.jsonl:4: invalid JSON"):
        list(stream)
