"""Malformed data files: every one must give a `DataError` (exit code 3) naming the file, line and field.

`MALFORMED_CASES` rows are ``(case_id, filename, content, expected_substring)``. `content` is the file's
bytes; ``None`` means the path is not created (a missing file); a filename ending in ``/`` is created as a
directory. `materialise(case, folder)` writes a case and returns the path to hand to the loader or CLI.
The expected substring is part of the error text, including ``name:line:`` where a line applies.

The sentences are public-domain openings (Austen, Melville, Dickens, Tolstoy).
"""

from __future__ import annotations

import json
from pathlib import Path

AUSTEN = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife."
)
MELVILLE = "Call me Ishmael."
DICKENS = "It was the best of times, it was the worst of times."
TOLSTOY = "Happy families are all alike; every unhappy family is unhappy in its own way."


def _j(obj: object) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def _chat(*turns: tuple[str, object]) -> bytes:
    return _j({"messages": [{"role": r, "content": c} for r, c in turns]})


GOOD_CHAT = _chat(("system", "Name the novel."), ("user", MELVILLE), ("assistant", "Moby-Dick"))
GOOD_PC = _j({"prompt": DICKENS, "completion": "A Tale of Two Cities"})
GOOD_ALPACA = _j(
    {"instruction": "Name the novel that opens with this line.", "input": TOLSTOY, "output": "Anna Karenina"}
)
GOOD_ROW = _j({"text": AUSTEN, "label": "Pride and Prejudice"})
GOOD_SHAREGPT = _j(
    {"conversations": [{"from": "human", "value": MELVILLE}, {"from": "gpt", "value": "Moby-Dick"}]}
)
GOOD_TRL = _j(
    {"prompt": [{"role": "user", "content": DICKENS}], "completion": [{"role": "assistant", "content": "x"}]}
)


def _sharegpt(*turns: tuple[str, object]) -> bytes:
    return _j({"conversations": [{"from": f, "value": v} for f, v in turns]})


def _trl(prompt: object, completion: object) -> bytes:
    return _j({"prompt": prompt, "completion": completion})


USER = {"role": "user", "content": TOLSTOY}
ANSWER = {"role": "assistant", "content": "Anna Karenina"}

MALFORMED_CASES: list[tuple[str, str, bytes | None, str]] = [
    # chat JSONL
    (
        "invalid_json",
        "bad.jsonl",
        GOOD_CHAT + b'{"messages": [{"role": "user", "content": "x"}\n',
        "bad.jsonl:2: invalid JSON",
    ),
    (
        "record_not_object",
        "bad.jsonl",
        GOOD_CHAT + _j([MELVILLE, "Moby-Dick"]),
        "bad.jsonl:2: wrong type: expected a JSON object, got list",
    ),
    ("record_is_number", "bad.jsonl", GOOD_CHAT + b"42\n", "bad.jsonl:2: wrong type: expected a JSON object"),
    (
        "messages_not_list",
        "bad.jsonl",
        GOOD_CHAT + _j({"messages": MELVILLE}),
        "bad.jsonl:2: field 'messages': wrong type",
    ),
    ("messages_empty", "bad.jsonl", GOOD_CHAT + _j({"messages": []}), "bad.jsonl:2: field 'messages': empty"),
    (
        "message_not_object",
        "bad.jsonl",
        GOOD_CHAT + _j({"messages": [MELVILLE, "Moby-Dick"]}),
        "bad.jsonl:2: field 'messages[0]': wrong type",
    ),
    (
        "role_missing",
        "bad.jsonl",
        GOOD_CHAT + _j({"messages": [{"content": DICKENS}, {"role": "assistant", "content": "x"}]}),
        "bad.jsonl:2: field 'messages[0].role': missing",
    ),
    (
        "role_unknown",
        "bad.jsonl",
        GOOD_CHAT + _chat(("user", DICKENS), ("bot", "A Tale of Two Cities")),
        "bad.jsonl:2: field 'messages[1].role': unknown role 'bot'",
    ),
    (
        "content_wrong_type",
        "bad.jsonl",
        GOOD_CHAT + _chat(("user", 1859), ("assistant", "A Tale of Two Cities")),
        "bad.jsonl:2: field 'messages[0].content': wrong type: expected a string, got number",
    ),
    (
        "content_null",
        "bad.jsonl",
        GOOD_CHAT + _chat(("user", None), ("assistant", "A Tale of Two Cities")),
        "bad.jsonl:2: field 'messages[0].content': wrong type: expected a string, got null",
    ),
    (
        "user_content_empty",
        "bad.jsonl",
        GOOD_CHAT + _chat(("user", "  "), ("assistant", "Anna Karenina")),
        "bad.jsonl:2: field 'messages[0].content': empty",
    ),
    (
        "last_turn_not_assistant",
        "bad.jsonl",
        GOOD_CHAT + _chat(("user", TOLSTOY), ("user", "Which novel?")),
        "bad.jsonl:2: field 'messages[1].role': the last turn is 'user'",
    ),
    (
        "no_user_turn",
        "bad.jsonl",
        GOOD_CHAT + _chat(("system", "Name the novel."), ("assistant", "Emma")),
        "bad.jsonl:2: field 'messages': no user turn",
    ),
    ("mixed_formats", "bad.jsonl", GOOD_CHAT + GOOD_PC, "bad.jsonl:2: mixed formats"),
    (
        "non_utf8",
        "bad.jsonl",
        GOOD_CHAT + b'{"prompt": "caf\xe9 society", "completion": "x"}\n',
        "bad.jsonl:2: not valid UTF-8",
    ),
    (
        "json_array_not_lines",
        "novels.json",
        b"[\n" + GOOD_PC.rstrip(b"\n") + b",\n" + GOOD_PC + b"]\n",
        "novels.json:1: invalid JSON: Expecting value (column 1); the file looks like one JSON array",
    ),
    # OpenAI chat: developer and tool roles, list-of-parts content
    (
        "content_part_not_text",
        "bad.jsonl",
        GOOD_CHAT
        + _chat(
            ("user", [{"type": "image_url", "image_url": {"url": "https://x/1.png"}}]), ("assistant", "x")
        ),
        "bad.jsonl:2: field 'messages[0].content[0].type': content part of type 'image_url' is not text",
    ),
    (
        "content_part_not_object",
        "bad.jsonl",
        GOOD_CHAT + _chat(("user", [TOLSTOY]), ("assistant", "Anna Karenina")),
        "bad.jsonl:2: field 'messages[0].content[0]': wrong type: expected a content part object, got string",
    ),
    (
        "content_part_text_wrong_type",
        "bad.jsonl",
        GOOD_CHAT + _chat(("user", [{"type": "text", "text": 1877}]), ("assistant", "Anna Karenina")),
        "bad.jsonl:2: field 'messages[0].content[0].text': wrong type: expected a string, got number",
    ),
    (
        "content_parts_empty",
        "bad.jsonl",
        GOOD_CHAT + _chat(("user", []), ("assistant", "Anna Karenina")),
        "bad.jsonl:2: field 'messages[0].content': empty",
    ),
    (
        "last_turn_tool",
        "bad.jsonl",
        GOOD_CHAT + _chat(("user", TOLSTOY), ("tool", "Anna Karenina")),
        "bad.jsonl:2: field 'messages[1].role': the last turn is 'tool'",
    ),
    (
        "developer_without_user",
        "bad.jsonl",
        GOOD_CHAT
        + _chat(("developer", "Name the novel."), ("tool", TOLSTOY), ("assistant", "Anna Karenina")),
        "bad.jsonl:2: field 'messages': no user turn",
    ),
    # ShareGPT
    (
        "sharegpt_not_list",
        "bad.jsonl",
        GOOD_SHAREGPT + _j({"conversations": {"from": "human", "value": TOLSTOY}}),
        "bad.jsonl:2: field 'conversations': wrong type: expected a list of messages, got object",
    ),
    (
        "sharegpt_from_unknown",
        "bad.jsonl",
        GOOD_SHAREGPT + _sharegpt(("human", TOLSTOY), ("bot", "Anna Karenina")),
        "bad.jsonl:2: field 'conversations[1].from': unknown role 'bot'; expected one of system, human",
    ),
    (
        "sharegpt_value_missing",
        "bad.jsonl",
        GOOD_SHAREGPT + _j({"conversations": [{"from": "human"}, {"from": "gpt", "value": "Anna Karenina"}]}),
        "bad.jsonl:2: field 'conversations[0].value': missing",
    ),
    (
        "sharegpt_last_turn_human",
        "bad.jsonl",
        GOOD_SHAREGPT + _sharegpt(("gpt", "Which novel?"), ("human", TOLSTOY)),
        "bad.jsonl:2: field 'conversations[1].from': the last turn is 'human'",
    ),
    (
        "sharegpt_no_human_turn",
        "bad.jsonl",
        GOOD_SHAREGPT + _sharegpt(("system", "Name the novel."), ("gpt", "Emma")),
        "bad.jsonl:2: field 'conversations': no user turn",
    ),
    # TRL conversational prompt/completion
    (
        "trl_prompt_turn_not_object",
        "bad.jsonl",
        GOOD_TRL + _trl([AUSTEN], [ANSWER]),
        "bad.jsonl:2: field 'prompt[0]': wrong type: expected an object, got string",
    ),
    (
        "trl_completion_not_list",
        "bad.jsonl",
        GOOD_TRL + _trl([USER], "Anna Karenina"),
        "bad.jsonl:2: field 'completion': wrong type: the prompt is a list of messages, so the completion",
    ),
    (
        "trl_completion_two_turns",
        "bad.jsonl",
        GOOD_TRL + _trl([USER], [ANSWER, ANSWER]),
        "bad.jsonl:2: field 'completion': expected one assistant turn (the target)",
    ),
    (
        "trl_completion_user_turn",
        "bad.jsonl",
        GOOD_TRL + _trl([USER], [USER]),
        "bad.jsonl:2: field 'completion[0].role': the last turn is 'user'",
    ),
    (
        "trl_prompt_no_user",
        "bad.jsonl",
        GOOD_TRL + _trl([{"role": "system", "content": "Name the novel."}], [ANSWER]),
        "bad.jsonl:2: field 'prompt': no user turn in the prompt",
    ),
    (
        "trl_prompt_role_missing",
        "bad.jsonl",
        GOOD_TRL + _trl([{"content": TOLSTOY}], [ANSWER]),
        "bad.jsonl:2: field 'prompt[0].role': missing",
    ),
    # prompt/completion and alpaca JSONL
    (
        "completion_missing",
        "bad.jsonl",
        GOOD_PC + _j({"prompt": AUSTEN}),
        "bad.jsonl:2: field 'completion': missing",
    ),
    (
        "prompt_empty",
        "bad.jsonl",
        GOOD_PC + _j({"prompt": "", "completion": "Emma"}),
        "bad.jsonl:2: field 'prompt': empty",
    ),
    (
        "prompt_wrong_type",
        "bad.jsonl",
        GOOD_PC + _j({"prompt": {"text": AUSTEN}, "completion": "Emma"}),
        "bad.jsonl:2: field 'prompt': wrong type: expected a string, got object",
    ),
    (
        "alpaca_output_missing",
        "bad.jsonl",
        GOOD_ALPACA + _j({"instruction": "Name the novel.", "input": AUSTEN}),
        "bad.jsonl:2: field 'output': missing",
    ),
    (
        "alpaca_input_wrong_type",
        "bad.jsonl",
        GOOD_ALPACA + _j({"instruction": "Name the novel.", "input": {"text": AUSTEN}, "output": "Emma"}),
        "bad.jsonl:2: field 'input': wrong type",
    ),
    # JSONL of flat records (a table)
    (
        "row_cell_wrong_type",
        "bad.jsonl",
        GOOD_ROW + _j({"text": [DICKENS], "label": "A Tale of Two Cities"}),
        "bad.jsonl:2: field 'text': wrong type",
    ),
    (
        "row_column_missing",
        "bad.jsonl",
        GOOD_ROW + _j({"text": DICKENS}),
        "bad.jsonl:2: field 'label': missing",
    ),
    # whole-file problems
    ("empty_file", "empty.jsonl", b"", "empty.jsonl: the file is empty"),
    ("blank_lines_only", "blank.jsonl", b"\n  \n\n", "blank.jsonl: the file is empty"),
    ("unknown_extension", "novels.txt", GOOD_CHAT, "novels.txt: unknown file extension ('.txt')"),
    ("directory", "novels.jsonl/", None, "novels.jsonl: is a directory"),
    ("missing_path", "nowhere.jsonl", None, "nowhere.jsonl: no such file"),
    # CSV / TSV / Parquet
    (
        "csv_ragged_row",
        "bad.csv",
        b'text,label\n"'
        + AUSTEN.encode()
        + b'",Pride and Prejudice\n'
        + MELVILLE.encode()
        + b",Moby-Dick,1851\n",
        "bad.csv:3: row 2 has 3 fields, the header has 2",
    ),
    (
        "csv_unclosed_quote",
        "bad.csv",
        b'text,label\n"'
        + MELVILLE.encode()
        + b",Moby-Dick\n"
        + DICKENS.encode()
        + b",A Tale of Two Cities\n",
        "bad.csv:3: row 1 has 1 fields, the header has 2; a quoted field may lack",
    ),
    (
        "csv_short_row",
        "bad.csv",
        b"text,label\n" + MELVILLE.encode() + b"\n",
        "bad.csv:2: row 1 has 1 fields, the header has 2",
    ),
    (
        "csv_columns_not_found",
        "bad.csv",
        b"novel,first_line\nMoby-Dick," + MELVILLE.encode() + b"\n",
        "bad.csv:1: field 'input': no input column: none of text, input, prompt, question, sentence found; "
        "available columns: novel, first_line",
    ),
    ("csv_empty_input", "bad.csv", b"text,label\n,Moby-Dick\n", "bad.csv:2: field 'text': row 1: empty"),
    ("csv_non_utf8", "bad.csv", b"text,label\ncaf\xe9 society,Emma\n", "bad.csv:2: not valid UTF-8"),
    ("csv_header_only", "bad.csv", b"text,label\n", "bad.csv: the file has a header but no data rows"),
    (
        "tsv_ragged_row",
        "bad.tsv",
        b"text\tlabel\n" + DICKENS.encode() + b"\tA Tale of Two Cities\textra\n",
        "bad.tsv:2: row 1 has 3 fields, the header has 2",
    ),
    ("parquet_not_parquet", "bad.parquet", GOOD_ROW, "bad.parquet: not a readable Parquet file"),
]


def materialise(case: tuple[str, str, bytes | None, str], folder: Path) -> Path:
    """Create the case's file (or directory) under `folder`; return the path to load."""
    _, filename, content, _ = case
    path = folder / filename.rstrip("/")
    if filename.endswith("/"):
        path.mkdir(parents=True, exist_ok=True)
    elif content is not None:
        path.write_bytes(content)
    return path
