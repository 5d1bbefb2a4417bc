# ruff: noqa: E501  (tables of probes read better one per line)
"""Hostile probes of issue 20's two classes: text stays inert in every output; every wait has a deadline and
every answer is checked before it is kept.

    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python tests/test_probes_net.py

prints a table (category, tried, clean, failures); the pytest test asserts every probe is clean.

- hostile text: control characters, OSC 8 hyperlinks, bidirectional overrides and isolates, C1 controls
  through every input channel (labels, inputs, file names, --description, --domain, rule messages and
  sources, column names, the server's model name, the --out folder), then report.html, report.md, the
  console, `--json` and decision.json are read back: no raw control or bidi character from the input in the
  page or on the terminal, and decision.json still holds the text exactly (it is data).
- deadline: servers that trickle their headers or body (slowloris), hang before the headers, on POST and on
  GET /models: the attempt ends within its `--timeout`, retries included.
- redirect: 301/302/303/307/308 to another origin, to the same origin, relative, without a Location, in a
  loop, on GET /models: never followed, exit 6 naming both URLs, nothing sent to the other origin.
- bad answer: answers of many wrong shapes and invalid text: exit 6 and nothing cached; cached entries that
  fail the answer check are dropped and asked again.
- secret URL: an API key in the base URL's query, path, fragment or user-info is in no recorded URL or
  message (config.json, decision.json, report.html, report.md, stderr, the backend's repr and model id).
- bad key / base URL: keys with line breaks, spaces or non-ASCII characters, blank or malformed server URLs
  from the environment: exit 2 naming the variable, the key never shown.
- data header: a data "file" that is a symlink to a dotfile shows no more than a short prefix of its first line.

Helpers come from fault_probes.py (probe, the result table), faultserver.py and test_probes.py.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import os
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_probes import GEN, LABELS, RESULTS, backend, print_table, probe, raises_tunegate  # noqa: E402
from faultserver import FaultState, serving  # noqa: E402
from test_faults import _data, advise_argv  # noqa: E402
from test_probes import VERDICTS, _unsafe_markdown, _write  # noqa: E402

from advisor.errors import TunegateError  # noqa: E402
from advisor.textsafe import term_safe  # noqa: E402

# A raw character an output must never carry from the input: C0 (except line feed and tab), DEL, C1, the
# bidirectional marks, overrides and isolates, and the line and paragraph separators.
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
PAYLOADS = {
    "CSI clear screen": "\x1b[2J\x1b[31mred",
    "OSC 8 hyperlink": "\x1b]8;;https://e.x/\x07c\x1b]8;;\x07",
    "BEL and BS": "ding\x07\x08\x08x",
    "RLO U+202E": "abc\u202etxt.exe",
    "isolates U+2066-2069": "\u2066a\u2067b\u2068c\u2069",
    "C1 CSI and NEL": "\x9b31m\x85\x90",
    "CR overwrite": "safe\rEVIL",
    "LRE/PDF U+202A-202C": "\u202a\u202b\u202cx",
}
SECRET = "sk-proj-SECRETabc123XYZ789"


@contextlib.contextmanager
def environ(**values: str | None) -> Iterator[None]:
    """Environment variables set (None: unset) for the block, then restored."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cli(argv: list[str]) -> tuple[int, str, str]:
    """`tunegate` in this process: (exit code, stdout, stderr); an escaping exception is exit 70."""
    from advisor.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    except BaseException as exc:  # noqa: BLE001 (what the entry point would turn into exit 70)
        rc = 70
        err.write(f"Traceback: {type(exc).__name__}: {exc}")
    return rc, out.getvalue(), err.getvalue()


def _console(rc: int, out: str, err: str, expect: set[int]) -> str | None:
    if rc == 70 or "Traceback" in err:
        return f"exit {rc} with a traceback: {err[-300:]!r}"
    if rc not in expect:
        return f"exit {rc}, expected {sorted(expect)}: {err[-300:]!r}"
    if UNSAFE.search(out) or UNSAFE.search(err):
        return "a control or bidi character reached the terminal"
    if rc not in VERDICTS and len([ln for ln in err.splitlines() if "error:" in ln]) != 1:
        return f"not one error line: {err[-300:]!r}"
    return None


def outputs_inert(run: Path, raw: str, *, shown: bool = True) -> str | None:
    """None when report.html and report.md carry nothing raw from `raw` and decision.json keeps it as data;
    when `shown`, the page shows it, made visible (``\\x1b``), not dropped."""
    page = (run / "report.html").read_text(encoding="utf-8")
    if shown and html.escape(term_safe(raw, single_line=True)) not in page:
        return "report.html does not show the text (made visible)"
    if UNSAFE.search(page):
        return f"report.html holds {UNSAFE.search(page).group(0)!r}"  # type: ignore[union-attr]
    if "<script" in page.lower() or 'href="https://e.x' in page:
        return "report.html holds markup or a link from the input"
    md = (run / "report.md").read_text(encoding="utf-8")
    if UNSAFE.search(md):
        return f"report.md holds {UNSAFE.search(md).group(0)!r}"  # type: ignore[union-attr]
    unsafe = _unsafe_markdown(md)
    if unsafe:
        return f"report.md: {unsafe}"
    json.loads((run / "decision.json").read_text(encoding="utf-8"))  # still valid JSON
    return None


def _secret_free(*texts: str) -> str | None:
    for t in texts:
        if SECRET in t or "SECRETabc" in t:
            return "the key reached an output or a message"
    return None


# --------------------------------------------------------------------------------------- hostile text
def text_probes(tmp: Path, url: str, state: FaultState) -> None:
    """Each payload through each channel; a data-only run unless the channel is the server."""

    def rows(label_suffix: str = "", input_suffix: str = "") -> str:
        return "".join(
            json.dumps({"prompt": f"item {i} {'good' if i % 2 else 'bad'}{input_suffix}",
                        "completion": ("pos" if i % 2 else "neg") + label_suffix}) + "\n"
            for i in range(40)
        )  # fmt: skip

    def rules_dir(d: Path, text: str) -> str:
        r = d / "rules"
        r.mkdir(exist_ok=True)
        doc = {
            "rule": [
                {"id": "hostile_rule", "kind": "vote", "verdict": "collect_data", "weight": 0.1,
                 "message": "rule says " + text, "note": "note " + text,
                 "source": {"title": "title " + text, "url": "https://example.org/" + text, "citation": "cite " + text},
                 "when": [{"signal": "n_examples", "op": "gt", "value": 0}]}
            ]
        }  # fmt: skip
        (r / "hostile.toml").write_text(_toml(doc), encoding="utf-8")
        return str(r)

    channels: dict[str, Callable[[Path, str], list[str]]] = {
        "label": lambda d, t: ["advise", _write(d, "l.jsonl", rows(label_suffix=t)), "--no-model"],
        "input text": lambda d, t: ["advise", _write(d, "i.jsonl", rows(input_suffix=t)), "--no-model"],
        "file name": lambda d, t: ["advise", _write(d, f"f{t}.jsonl", rows()), "--no-model"],
        "--description": lambda d, t: [
            "advise",
            _write(d, "d.jsonl", rows()),
            "--no-model",
            "--description",
            t,
        ],
        "--domain": lambda d, t: [
            "advise",
            _write(d, "m.jsonl", rows()),
            "--no-model",
            "--domain",
            "law" + t,
        ],
        "rule message and source": lambda d, t: [
            "advise",
            _write(d, "r.jsonl", rows()),
            "--no-model",
            "--rules",
            rules_dir(d, t),
        ],
        "column names": lambda d, t: [
            "advise",
            _csv(d, t),
            "--no-model",
            "--input-col",
            "text" + t,
            "--output-col",
            "lab" + t,
        ],
    }
    for channel, argv in channels.items():
        for kind, text in PAYLOADS.items():
            if channel == "file name":
                text = text.replace("/", "")  # a file name cannot hold one

            def run(
                argv: Callable[[Path, str], list[str]] = argv, text: str = text, channel: str = channel
            ) -> str | None:
                d = Path(tempfile.mkdtemp(dir=tmp))
                out_dir = d / "run"
                rc, out, err = cli([*argv(d, text), "--out", str(out_dir)])
                # a data-only report shows no input text
                return _console(rc, out, err, VERDICTS) or outputs_inert(
                    out_dir, text, shown=channel != "input text"
                )

            probe("hostile text", f"{channel}: {kind}", run, 60)

    # The server's model name, through a real run against the fault server, and the --json output.
    data = _data(tmp)
    for kind in ("OSC 8 hyperlink", "RLO U+202E"):

        def served(kind: str = kind) -> str | None:
            state.reset()
            state.model_names = ("fault-model" + PAYLOADS[kind],)
            out_dir = Path(tempfile.mkdtemp(dir=tmp)) / "run"
            with environ(TUNEGATE_CACHE_DIR=str(out_dir.parent / "cache")):
                rc, out, err = cli(advise_argv(url, data, out_dir, "--set", "max_retries=0", "--json"))
            why = _console(rc, out, err, VERDICTS) or outputs_inert(out_dir, PAYLOADS[kind])
            if (
                why is None
                and json.loads(out)["provenance"]["backend"]["model_id"].split("@")[0] != state.model_names[0]
            ):
                return "--json does not hold the model name as data"
            return why

        probe("hostile text", f"server model name: {kind}", served, 120)

    def out_folder() -> str | None:
        d = Path(tempfile.mkdtemp(dir=tmp))
        out_dir = d / ("run" + PAYLOADS["OSC 8 hyperlink"].replace("/", "") + "\u202e")
        rc, out, err = cli(["advise", _write(d, "o.jsonl", rows()), "--no-model", "--out", str(out_dir)])
        return _console(rc, out, err, VERDICTS) or outputs_inert(out_dir, "")

    probe("hostile text", "--out folder name: OSC 8 and RLO", out_folder, 60)


def _csv(d: Path, text: str) -> str:
    cell = text.replace('"', "'")
    lines = [f'"text{cell}","lab{cell}"'] + [
        f"item {i} {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}" for i in range(40)
    ]
    return _write(d, "c.csv", "\n".join(lines) + "\n")


def _toml(doc: dict[str, Any]) -> str:
    """The rules document as TOML (one array of tables; strings as TOML basic strings, escaped as JSON is)."""
    out = []
    for rule in doc["rule"]:
        out.append("[[rule]]")
        for k, v in rule.items():
            if k == "when":
                continue
            if isinstance(v, dict):
                inner = ", ".join(f"{ik} = {json.dumps(iv)}" for ik, iv in v.items())
                out.append(f"{k} = {{ {inner} }}")
            else:
                out.append(f"{k} = {json.dumps(v)}")
        for cond in rule["when"]:
            out.append("[[rule.when]]")
            out += [f"{k} = {json.dumps(v)}" for k, v in cond.items()]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------- deadlines
def deadline_probes(tmp: Path, url: str, state: FaultState) -> None:
    import openai  # noqa: F401  (imported before the first clock starts: the bounds time the waits)

    cases = [
        # (name, server setup, backend kwargs, what, bound in s)
        (
            "POST headers a byte every 0.5 s, --timeout 2",
            {"mode": "trickle_headers", "trickle_s": 0.5},
            {"timeout": 2.0, "max_retries": 0},
            "generate",
            5,
        ),
        (
            "POST headers a byte every 0.2 s, --timeout 1",
            {"mode": "trickle_headers", "trickle_s": 0.2},
            {"timeout": 1.0, "max_retries": 0},
            "generate",
            4,
        ),
        (
            "POST headers a byte every 0.05 s, --timeout 1",
            {"mode": "trickle_headers", "trickle_s": 0.05},
            {"timeout": 1.0, "max_retries": 0},
            "generate",
            4,
        ),
        (
            "headers trickle, 2 retries: 3 attempts of 1 s",
            {"mode": "trickle_headers", "trickle_s": 0.3},
            {"timeout": 1.0, "max_retries": 2},
            "generate",
            9,
        ),
        (
            "headers trickle while scoring labels",
            {"mode": "trickle_headers", "trickle_s": 0.3},
            {"timeout": 1.0, "max_retries": 0},
            "loglikelihood",
            5,
        ),
        (
            "headers trickle, 4 requests in flight",
            {"mode": "trickle_headers", "trickle_s": 0.3},
            {"timeout": 1.0, "max_retries": 0, "concurrency": 4},
            "generate4",
            5,
        ),
        (
            "body a byte every 0.2 s (slowloris body)",
            {"mode": "trickle"},
            {"timeout": 1.0, "max_retries": 0},
            "generate",
            4,
        ),
        (
            "half a body, then silence",
            {"mode": "stall_body", "hang_s": 30.0},
            {"timeout": 1.0, "max_retries": 0},
            "generate",
            4,
        ),
        (
            "no headers at all (hang)",
            {"mode": "hang", "hang_s": 30.0},
            {"timeout": 1.0, "max_retries": 0},
            "generate",
            4,
        ),
        (
            "GET /models headers trickle",
            {"get_mode": "trickle_headers", "trickle_s": 0.3},
            {"timeout": 1.0, "max_retries": 0, "model": None},
            "list",
            4,
        ),
        (
            "GET /models hangs",
            {"get_mode": "hang", "hang_s": 30.0},
            {"timeout": 1.0, "max_retries": 0, "model": None},
            "list",
            4,
        ),
    ]
    for name, setup, kw, what, bound in cases:

        def run(setup: dict[str, Any] = setup, kw: dict[str, Any] = kw, what: str = what) -> str | None:
            state.reset()
            for k, v in setup.items():
                setattr(state, k, v)

            def call() -> Any:
                b = backend(url, **kw)
                if what == "generate":
                    return b.generate([GEN])
                if what == "generate4":
                    return b.generate([GEN] * 4)
                if what == "loglikelihood":
                    return b.loglikelihood(LABELS)
                return None

            return raises_tunegate(call, expect="no answer within")()

        probe("deadline", name, run, bound)

    def cli_trickle() -> str | None:
        state.reset()
        state.get_mode, state.mode, state.trickle_s = "trickle_headers", "trickle_headers", 0.5
        d = Path(tempfile.mkdtemp(dir=tmp))
        with environ(TUNEGATE_CACHE_DIR=str(d / "cache")):
            rc, out, err = cli(
                advise_argv(url, _data(d), d / "run", "--timeout", "3", "--set", "max_retries=0")
            )
        return _console(rc, out, err, {6})

    probe("deadline", "advise --timeout 3 --set max_retries=0, headers trickle", cli_trickle, 10)


# ------------------------------------------------------------------------------------------- redirects
def redirect_probes(tmp: Path, url: str, state: FaultState, other: str, other_state: FaultState) -> None:
    origin = url.rsplit("/v1", 1)[0]
    cases = [
        (f"{s} to another origin", (s, other + "/chat/completions"), other) for s in (301, 302, 303, 307, 308)
    ] + [
        (f"{s} to the same origin, another path", (s, origin + "/v2/chat/completions"), origin + "/v2/chat/completions") for s in (301, 302, 307, 308)
    ] + [
        ("302 relative Location", (302, "/elsewhere"), origin + "/elsewhere"),
        ("302 to https on another host", (302, "https://evil.example/v1/chat/completions"), "https://evil.example/v1/chat/completions"),
        ("302 with no Location", (302, ""), "no Location"),
        ("302 in a loop to itself", (302, url + "/chat/completions"), url + "/chat/completions"),
    ]  # fmt: skip
    for name, (status, location), named in cases:

        def run(status: int = status, location: str = location, named: str = named) -> str | None:
            state.reset()
            other_state.reset()
            state.mode = "redirect"
            state.redirect = (status, location)
            why = raises_tunegate(lambda: backend(url, max_retries=2).generate([GEN]), expect=named)()
            if why is None and other_state.received:
                return f"{len(other_state.received)} requests followed to the other origin"
            if why is None and len(state.received) != 1:
                return f"{len(state.received)} requests to the server (a redirect is not retried)"
            return why

        probe("redirect", name, run)

    def models_redirect() -> str | None:
        state.reset()
        other_state.reset()
        state.get_mode, state.redirect = "redirect", (302, other + "/models")
        return raises_tunegate(lambda: backend(url, model=None), expect=other)()

    probe("redirect", "GET /models 302 to another origin", models_redirect)

    def cli_redirect() -> str | None:
        state.reset()
        other_state.reset()
        state.mode, state.redirect = "redirect", (307, other + "/chat/completions")
        d = Path(tempfile.mkdtemp(dir=tmp))
        with environ(TUNEGATE_CACHE_DIR=str(d / "cache")):
            rc, out, err = cli(advise_argv(url, _data(d), d / "run", "--set", "max_retries=1"))
        why = _console(rc, out, err, {6})
        if why is None and not (url in err and other in err):
            return f"the message does not name both URLs: {err[-300:]!r}"
        return why or (
            f"{len(other_state.answered)} answers from the other origin" if other_state.answered else None
        )

    probe("redirect", "advise: 307 to another origin is exit 6 naming both", cli_redirect, 30)


# ----------------------------------------------------------------------------------------- bad answers
def answer_probes(tmp: Path, url: str, state: FaultState) -> None:
    from advisor.backends.cache import CachedBackend

    def chat(content: Any, **choice: Any) -> dict[str, Any]:
        return {"choices": [{"message": {"role": "assistant", "content": content}, **choice}]}

    shapes: list[tuple[str, Any, str]] = [
        ("content with a lone high surrogate", chat("pos\ud800"), "generate"),
        ("content with a lone low surrogate", chat("\udc80neg"), "generate"),
        ("content a number", chat(42), "generate"),
        ("content a list", chat(["pos"]), "generate"),
        ("content an object", chat({"text": "pos"}), "generate"),
        ("message a string", {"choices": [{"message": "pos"}]}, "generate"),
        ("choices empty", {"choices": []}, "generate"),
        ("choices null", {"choices": None}, "generate"),
        (
            "usage negative",
            {**chat("pos"), "usage": {"prompt_tokens": -3, "completion_tokens": 1}},
            "generate",
        ),
        (
            "usage a string",
            {**chat("pos"), "usage": {"prompt_tokens": "12", "completion_tokens": 1}},
            "generate",
        ),
        (
            "usage 10^12",
            {**chat("pos"), "usage": {"prompt_tokens": 10**12, "completion_tokens": 1}},
            "generate",
        ),
        ("a JSON array", [chat("pos")], "generate"),
        (
            "top_logprobs with a surrogate token and no logprob",
            chat(
                "pos",
                logprobs={
                    "content": [{"token": "p", "logprob": -0.1, "top_logprobs": [{"token": "\ud800"}]}]
                },
            ),
            "loglikelihood",
        ),
        (
            "top_logprobs logprob a string",
            chat(
                "pos",
                logprobs={
                    "content": [
                        {"token": "p", "logprob": -0.1, "top_logprobs": [{"token": "pos", "logprob": "-0.1"}]}
                    ]
                },
            ),
            "loglikelihood",
        ),
        (
            "top_logprobs logprob +5",
            chat(
                "pos",
                logprobs={
                    "content": [
                        {"token": "p", "logprob": -0.1, "top_logprobs": [{"token": "pos", "logprob": 5.0}]}
                    ]
                },
            ),
            "loglikelihood",
        ),
    ]
    for name, doc, op in shapes:

        def run(doc: Any = doc, op: str = op) -> str | None:
            state.reset()
            state.mode, state.wrong_shape = "wrong_shape", doc
            db = Path(tempfile.mkdtemp(dir=tmp)) / "c.sqlite"
            method = "chat_logprobs" if op == "loglikelihood" else None
            c = CachedBackend(backend(url, scoring_method=method), db)
            call = (lambda: c.generate([GEN])) if op == "generate" else (lambda: c.loglikelihood(LABELS))
            why = raises_tunegate(call)()
            c.close()
            return why or _cached_rows(db, "the bad answer was cached")

        probe("bad answer", name, run)

    for name in ("lone surrogate in a model name", "a blank model name", "a 10,000-character model name"):

        def listing(name: str = name) -> str | None:
            state.reset()
            state.model_names = {
                "lone surrogate in a model name": ("m\ud800",),
                "a blank model name": ("  ",),
                "a 10,000-character model name": ("m" * 10_000,),
            }[name]
            return raises_tunegate(lambda: backend(url, model=None), expect="model name")()

        probe("bad answer", name, listing)

    # Entries already in the cache that fail the answer check: dropped with a warning and asked again.
    edits = {
        "text with a lone surrogate escape": r"""replace(value, '"text": "', '"text": "\ud800')""",
        "text bytes that are not UTF-8": """CAST(replace(value, '"text": "', '"text": "' || CAST(X'FF' AS TEXT)) AS BLOB)""",
        "latency negative": """json_set(value, '$.result.latency_s', -1.0)""",
        "token count negative": """json_set(value, '$.result.prompt_tokens', -5)""",
        "scoring note with a lone surrogate": r"""json_set(value, '$.scoring_note', 'x') """,
        "result missing": """json_remove(value, '$.result')""",
    }
    for name, expr in edits.items():

        def reasked(name: str = name, expr: str = expr) -> str | None:
            state.reset()
            db = Path(tempfile.mkdtemp(dir=tmp)) / "c.sqlite"
            c = CachedBackend(backend(url), db)
            first = c.generate([GEN])
            c.close()
            with contextlib.closing(sqlite3.connect(db)) as con, con:
                con.execute(f"UPDATE responses SET value = {expr}")
                if name == "scoring note with a lone surrogate":  # json_set writes compact JSON
                    con.execute(
                        r"""UPDATE responses SET value = replace(value, '"scoring_note":"x"', '"scoring_note":"\udfff"')"""
                    )
            sent = len(state.received)
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                c = CachedBackend(backend(url), db)
                again = c.generate([GEN])
                c.close()
            if len(state.received) != sent + 1:
                return "the bad entry was not asked again"
            if again[0].text != first[0].text:
                return "a different answer"
            c = CachedBackend(backend(url), db)
            c.generate([GEN])
            c.close()
            return None if len(state.received) == sent + 1 else "the answer asked again was not cached"

        probe("bad cached entry", name, reasked)


def _cached_rows(db: Path, why: str) -> str | None:
    if not db.exists():
        return None
    with contextlib.closing(sqlite3.connect(db)) as con:
        n = con.execute("SELECT count(*) FROM responses").fetchone()[0]
    return f"{why} ({n} rows)" if n else None


# ------------------------------------------------------------------------------------ secrets in URLs
def secret_probes(tmp: Path, url: str, state: FaultState) -> None:
    from advisor.backends.openai_backend import OpenAIBackend

    origin = url.rsplit("/v1", 1)[0]
    forms = {
        "?key=": f"{url}?key={SECRET}",
        "?api_key= among others": f"{url}?api-version=1&api_key={SECRET}",
        "a bare query": f"{url}?{SECRET}",
        "/key/<key>/v1": f"{origin}/key/{SECRET}/v1",
        "/token/<key>/v1": f"{origin}/token/{SECRET}/v1",
        "/v1/<sk-key>": f"{url}/{SECRET}",
        "#fragment": f"{url}#{SECRET}",
        "/<long opaque id>/v1": f"{origin}/{SECRET.replace('-', '')}/v1",
    }
    for name, base in forms.items():

        def shown(base: str = base) -> str | None:
            state.reset()
            b = OpenAIBackend(base, "fault-model", timeout=2.0, max_retries=0)
            texts = [repr(b), str(b.model_id)]
            try:
                b.generate([GEN])
            except TunegateError as e:
                texts.append(str(e))
            return _secret_free(*texts)

        probe("secret URL", f"backend: {name}", shown)

        def down(base: str = base) -> str | None:
            closed = base.replace(origin, "http://127.0.0.1:9")  # nothing listens on port 9
            try:
                OpenAIBackend(closed, None, timeout=1.0, max_retries=0)
            except TunegateError as e:
                return _secret_free(str(e))
            return "no error from a closed port"

        probe("secret URL", f"connection error message: {name}", down)

        def recorded(base: str = base) -> str | None:
            state.reset()
            d = Path(tempfile.mkdtemp(dir=tmp))
            with environ(TUNEGATE_CACHE_DIR=str(d / "cache")):
                rc, out, err = cli(advise_argv(base, _data(d), d / "run", "--set", "max_retries=0"))
            if rc == 70 or "Traceback" in err:
                return f"exit {rc}: {err[-300:]!r}"
            files = [
                p.read_text(encoding="utf-8", errors="replace") for p in (d / "run").rglob("*") if p.is_file()
            ]
            return _secret_free(out, err, *files)

        probe("secret URL", f"advise, every file and message: {name}", recorded, 60)

    def from_env() -> str | None:
        d = Path(tempfile.mkdtemp(dir=tmp))
        with environ(
            TUNEGATE_CACHE_DIR=str(d / "cache"),
            OPENAI_BASE_URL=f"{origin}/key/{SECRET}/v1",
            TUNEGATE_BASE_URL=None,
        ):
            rc, out, err = cli(["advise", str(_data(d)), "--backend", "openai", "--out", str(d / "run"), "--eval-size", "16",
                                "--dev-size", "4", "--k", "1", "--set", "latency_samples=2", "--set", "max_retries=0"])  # fmt: skip
        files = [
            p.read_text(encoding="utf-8", errors="replace") for p in (d / "run").rglob("*") if p.is_file()
        ]
        return _console(rc, out, err, VERDICTS | {6}) or _secret_free(out, err, *files)

    probe("secret URL", "key in $OPENAI_BASE_URL's path: every file and message", from_env, 60)


# -------------------------------------------------------------------------------- keys and server URLs
def key_probes(tmp: Path, url: str, state: FaultState) -> None:
    keys = {
        "trailing LF": SECRET + "\n",
        "trailing CRLF": SECRET + "\r\n",
        "leading space": " " + SECRET,
        "a tab inside": SECRET[:5] + "\t" + SECRET[5:],
        "non-ASCII é": SECRET + "é",
        "an emoji": SECRET + "\U0001f511",
        "DEL": SECRET + "\x7f",
        "an ESC sequence": SECRET + "\x1b[2J",
        "a zero-width space": SECRET + "\u200b",
    }
    for name, key in keys.items():
        for var in ("OPENAI_API_KEY", "MY_KEY"):

            def run(key: str = key, var: str = var) -> str | None:
                d = Path(tempfile.mkdtemp(dir=tmp))
                extra = ["--api-key-env", var] if var == "MY_KEY" else []
                with environ(**{var: key}, TUNEGATE_API_KEY=None, TUNEGATE_CACHE_DIR=str(d / "cache")):
                    rc, out, err = cli(advise_argv(url, _data(d), d / "run", *extra))
                why = _console(rc, out, err, {2})
                if why is None and f"${var}" not in err:
                    return f"the variable is not named: {err!r}"
                return why or _secret_free(out, err) or (None if not state.received else "a request was sent")

            state.reset()
            probe("bad key", f"${var}: {name}", run, 20)

    urls = {
        "blank $OPENAI_BASE_URL": ("OPENAI_BASE_URL", ""),
        "spaces in $OPENAI_BASE_URL": ("OPENAI_BASE_URL", "   "),
        "blank $TUNEGATE_BASE_URL": ("TUNEGATE_BASE_URL", ""),
        "no scheme": ("OPENAI_BASE_URL", "127.0.0.1:8080/v1"),
        "ftp scheme": ("OPENAI_BASE_URL", "ftp://127.0.0.1/v1"),
        "no host": ("OPENAI_BASE_URL", "http:///v1"),
        "trailing newline": ("OPENAI_BASE_URL", url + "\n"),
        "an ESC inside": ("TUNEGATE_BASE_URL", url + "\x1b[2J"),
    }
    for name, (var, value) in urls.items():

        def bad_url(var: str = var, value: str = value) -> str | None:
            d = Path(tempfile.mkdtemp(dir=tmp))
            others = {v: None for v in ("OPENAI_BASE_URL", "TUNEGATE_BASE_URL") if v != var}
            with environ(**{var: value}, **others, TUNEGATE_CACHE_DIR=str(d / "cache")):
                t0 = time.monotonic()
                rc, out, err = cli(["advise", str(_data(d)), "--backend", "openai", "--out", str(d / "run")])
            why = _console(rc, out, err, {2})
            if why is None and f"${var}" not in err:
                return f"the variable is not named: {err!r}"
            return why or (None if time.monotonic() - t0 < 5 else "it was tried (slow)")

        probe("bad base URL", name, bad_url, 10)


# ----------------------------------------------------------------------------------------- data header
def header_probes(tmp: Path) -> None:
    secret_line = f"OPENAI_API_KEY={SECRET}"
    cases = {
        "symlink data.csv -> .env": (".env", secret_line + "\nOTHER=1\n", "data.csv"),
        "symlink data.tsv -> .netrc": (
            ".netrc",
            f"machine api.example.com login me password {SECRET}\n",
            "data.tsv",
        ),
        "symlink data.csv -> .git-credentials": (
            ".git-credentials",
            f"https://me:{SECRET}@github.com\n",
            "data.csv",
        ),
        "a 5,000-column header": (
            "wide.csv",
            ",".join(f"col{i}" for i in range(5000)) + "\n1\n",
            "wide-link.csv",
        ),
        "a header holding ESC and RLO": ("esc.csv", "a\x1b[2J\u202e,b\x9b\n1,2\n", "esc-link.csv"),
        "JSONL whose keys hold the secret": (
            "keys.jsonl",
            json.dumps({secret_line: "x", "b": "y"}) + "\n",
            "keys-link.jsonl",
        ),
    }
    for name, (target, text, link) in cases.items():

        def run(target: str = target, text: str = text, link: str = link) -> str | None:
            d = Path(tempfile.mkdtemp(dir=tmp))
            (d / target).write_text(text, encoding="utf-8")
            (d / link).symlink_to(d / target)
            rc, out, err = cli(["advise", str(d / link), "--no-model", "--out", str(d / "run")])
            why = _console(rc, out, err, {3})
            if why is None and len(err) > 1200:
                return f"a {len(err)}-character error message"
            return why or _secret_free(out, err)

        probe("data header", name, run, 20)


# ---------------------------------------------------------------------------------------------- all
def run_all(tmp: Path) -> list[dict[str, Any]]:
    RESULTS.clear()
    with (
        environ(TUNEGATE_CACHE_DIR=str(tmp / "cache"), OPENAI_API_KEY=None, TUNEGATE_API_KEY=None,
                OPENAI_BASE_URL=None, TUNEGATE_BASE_URL=None, TUNEGATE_MODEL=None),
        serving() as (url, state),
        serving("127.0.0.2") as (other, other_state),
    ):  # fmt: skip
        text_probes(tmp, url, state)
        deadline_probes(tmp, url, state)
        redirect_probes(tmp, url, state, other, other_state)
        answer_probes(tmp, url, state)
        secret_probes(tmp, url, state)
        key_probes(tmp, url, state)
        header_probes(tmp)
    return list(RESULTS)


@pytest.mark.slow
def test_every_net_probe_is_clean(tmp_path: Path) -> None:
    results = run_all(tmp_path)
    failures = print_table(results)
    assert len(results) >= 150
    assert failures == 0, [r for r in results if not r["clean"]]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        sys.exit(1 if print_table(run_all(Path(tmp))) else 0)
