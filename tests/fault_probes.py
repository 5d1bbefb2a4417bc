# ruff: noqa: E501  (tables of probes read better one per line)
"""Hostile probes of the `openai` backend, the response cache and `tunegate advise` under server faults.

    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python tests/fault_probes.py [--json probes.json]

Prints a table (category, tried, clean, failures) and each failure. A probe is clean when tunegate
answers as documented: a `TunegateError` (one line, a documented exit code) or a correct answer, a
fallback recorded, a warning and a recovery; within a time bound. A traceback, exit 70, a multi-line
message, an overrun of the time bound or of the request budget is a failure. The fault tests
(test_faults.py, test_cache.py, test_crash_safety.py) assert the important cases in CI; this script
tries many more variants, for the hardening table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faultserver import FaultState, _Server, make_handler, serving  # noqa: E402
from test_faults import WRONG_LOGPROBS, WRONG_SHAPES, _data, advise_argv  # noqa: E402

from advisor.backends.base import GenRequest, LoglikRequest  # noqa: E402
from advisor.errors import TunegateError  # noqa: E402
from advisor.types import Message  # noqa: E402

GEN = GenRequest((Message("user", "Say hi"),), max_tokens=4)
LABELS = [LoglikRequest((Message("user", "A dull film."),), lab) for lab in ("positive", "negative")]
RESULTS: list[dict[str, Any]] = []


def backend(url: str, **kw: Any) -> Any:
    from advisor.backends.openai_backend import OpenAIBackend

    kw.setdefault("concurrency", 1)
    kw.setdefault("timeout", 2.0)
    kw.setdefault("max_retries", 1)
    return OpenAIBackend(url, kw.pop("model", "fault-model"), **kw)


def probe(category: str, name: str, fn: Callable[[], str | None], bound_s: float = 15.0) -> None:
    """Run one probe; `fn` returns None when clean, else why not. Escaping exceptions are failures."""
    t0 = time.monotonic()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            why = fn()
    except TunegateError as e:
        text = str(e)
        why = None if "\n" not in text and len(text) < 600 else f"message not one line: {text[:200]!r}"
        if why is None and "Traceback" in err.getvalue():
            why = "a traceback was printed"
    except BaseException as e:  # noqa: BLE001 (a probe must report everything that escapes)
        why = f"escaped: {type(e).__name__}: {str(e)[:200]} | {traceback.format_exc(limit=2)[-300:]!r}"
    took = time.monotonic() - t0
    if why is None and took > bound_s:
        why = f"took {took:.1f} s (bound {bound_s} s)"
    RESULTS.append(
        {"category": category, "probe": name, "clean": why is None, "why": why, "s": round(took, 2)}
    )


def raises_tunegate(call: Callable[[], Any], *, expect: str = "") -> Callable[[], str | None]:
    def run() -> str | None:
        try:
            call()
        except TunegateError as e:
            text = str(e)
            if "\n" in text:
                return f"message not one line: {text[:200]!r}"
            if expect and expect not in text:
                return f"unexpected message: {text[:200]}"
            return None
        return "no error raised"

    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    state = FaultState()
    server = _Server(("127.0.0.1", 0), make_handler(state))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    tmp = Path(tempfile.mkdtemp(prefix="tunegate-probes-"))
    os.environ["TUNEGATE_CACHE_DIR"] = str(tmp / "cache")
    os.environ.pop("OPENAI_API_KEY", None)

    def fresh(**kw: Any) -> None:
        state.reset()
        for k, v in kw.items():
            setattr(state, k, v)

    ops = {"generate": lambda b: b.generate([GEN]), "loglikelihood": lambda b: b.loglikelihood(LABELS)}

    # --- HTTP status codes
    for status in (400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 429, 500, 501, 502, 503, 504, 520):
        fresh(mode="raw", raw=(status, {"Content-Type": "application/json", "Retry-After": "0"},
                               b'{"error": {"message": "refused"}}'))  # fmt: skip
        probe(
            "HTTP status",
            f"{status} on every request",
            raises_tunegate(lambda: ops["generate"](backend(url))),
        )
    for status in (401, 500):
        fresh(mode="raw", raw=(status, {"Content-Type": "text/html"}, b"<html>\n<h1>Error</h1>\n</html>"))
        probe(
            "HTTP status",
            f"{status} with an HTML body",
            raises_tunegate(lambda: backend(url).generate([GEN])),
        )

    # --- Retry-After: the retry waits as asked (or the client declines a long wait), then succeeds
    for value, low in (("0", 0), ("1", 1.0), ("2", 2.0), ("1.5", 1.5), ("-5", 0), ("abc", 0), ("nan", 0),
                       ("Wed, 21 Oct 2015 07:28:00 GMT", 0), ("", 0)):  # fmt: skip

        def retry_after(value: str = value, low: float = low) -> str | None:
            fresh(plan=["429"], retry_after=value)
            out = backend(url, max_retries=2).generate([GEN])
            (t0, _, _), (t1, _, _) = state.received[:2]
            if not out[0].text:
                return "no answer"
            return None if t1 - t0 >= low else f"retried after {t1 - t0:.2f} s, asked {value}"

        probe("Retry-After", f"429 with Retry-After: {value!r}", retry_after)
    fresh(mode="429", retry_after="100000")
    probe(
        "Retry-After",
        "429 with Retry-After: 100000 (beyond 60 s)",
        raises_tunegate(lambda: backend(url).generate([GEN])),
        5,
    )

    # --- silence and slowness
    for mode in ("hang", "stall_body", "trickle", "close"):
        for op in ops:
            fresh(mode=mode, hang_s=20.0)
            probe(
                "hang / slow",
                f"{mode} ({op}), --timeout 2",
                raises_tunegate(lambda op=op: ops[op](backend(url))),
                12,
            )
    probe(
        "hang / slow",
        "connection refused",
        raises_tunegate(lambda: backend("http://127.0.0.1:9/v1").generate([GEN])),
        12,
    )

    # --- bodies that are not JSON objects
    bad_bodies = {
        "bad JSON": b'{"choices": [{"message": {"content": "pos',
        "empty body": b"",
        "null": b"null",
        "a JSON list": b"[]",
        "a JSON string": b'"hello"',
        "a number": b"123",
        "nested 100k deep": b"[" * 100_000 + b"]" * 100_000,
        "NaN logprob": b'{"choices": [{"logprobs": {"content": [{"top_logprobs": [{"token": "a", "logprob": NaN}]}]}}]}',
        "Infinity usage": b'{"choices": [{"message": {"content": "a"}}], "usage": {"prompt_tokens": Infinity}}',
        "1e999 logprob": b'{"choices": [{"logprobs": {"content": [{"top_logprobs": [{"token": "a", "logprob": -1e999}]}]}}]}',
        "huge integer usage": b'{"choices": [{"message": {"content": "a"}}], "usage": {"prompt_tokens": 1' + b"0" * 5000 + b"}}",
        "invalid UTF-8": b'{"choices": [{"message": {"content": "\xff\xfe"}}]}',
        "trailing garbage": b'{"choices": []} trailing',
        "HTML page as JSON": b"<html><body>502 Bad Gateway</body></html>",
    }  # fmt: skip
    for name, raw in bad_bodies.items():
        for op in ops:
            fresh(mode="raw", raw=(200, {"Content-Type": "application/json"}, raw))
            probe(
                "malformed JSON",
                f"{name} ({op})",
                raises_tunegate(lambda op=op: ops[op](backend(url, max_retries=0))),
            )
    fresh(mode="raw", raw=(200, {"Content-Type": "application/json"},
                           b'\xef\xbb\xbf' + json.dumps({"choices": [{"message": {"content": "hi"}}]}).encode()))  # fmt: skip
    probe(
        "malformed JSON",
        "BOM before valid JSON (accepted)",
        lambda: None if backend(url).generate([GEN])[0].text == "hi" else "wrong text",
    )
    fresh(
        mode="raw",
        raw=(
            200,
            {"Content-Type": "application/json"},
            b'{"choices": [{"message": {"content": "\\ud800"}}]}',
        ),
    )
    probe(
        "malformed JSON",
        "lone surrogate in the reply (kept, cached)",
        lambda: None if backend(url).generate([GEN]) else "none",
    )

    # --- valid JSON of the wrong shape
    for name, doc in {**WRONG_SHAPES, **WRONG_LOGPROBS}.items():
        op = "generate" if name in WRONG_SHAPES else "loglikelihood"
        fresh(mode="wrong_shape", wrong_shape=doc)
        probe(
            "wrong shape",
            name,
            raises_tunegate(lambda op=op: ops[op](backend(url, max_retries=0)), expect="malformed"),
        )
    echo_shapes = {
        "echo tokens and logprobs differ in length": {"choices": [{"logprobs": {"tokens": ["a", "b"], "token_logprobs": [None]}}]},
        "echo token is a number": {"choices": [{"logprobs": {"tokens": [1], "token_logprobs": [-1.0]}}]},
    }  # fmt: skip
    from advisor.backends import openai_backend as ob

    for name, doc in echo_shapes.items():
        b = backend(url)  # the backend's own conversion of a malformed answer
        probe(
            "wrong shape",
            name,
            raises_tunegate(lambda b=b, doc=doc: b._answer(lambda d: ob._echo_logprobs(ob._choice(d)), doc)),
        )
    for name, raw in {"model list not a list": b'{"data": "m"}', "two models": b'{"data": [{"id": "a"}, {"id": "b"}]}',
                      "no models": b'{"data": []}', "model id a number": b'{"data": [{"id": 5}]}'}.items():  # fmt: skip
        fresh()

        def models(raw: bytes = raw) -> str | None:
            from advisor.backends.openai_backend import OpenAIBackend

            srv = _Server(("127.0.0.1", 0), _models_handler(raw))
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            try:
                OpenAIBackend(f"http://127.0.0.1:{srv.server_address[1]}/v1", None, max_retries=0)
            finally:
                srv.shutdown()
            return "accepted"

        probe("wrong shape", f"GET /v1/models: {name}", models)

    # --- truncated and oversized bodies
    for mode in ("truncated",):
        for op in ops:
            fresh(mode=mode)
            probe(
                "truncated",
                f"{mode} half body ({op})",
                raises_tunegate(lambda op=op: ops[op](backend(url)), expect="broke off"),
            )
    fresh(mode="raw", raw=(200, {"Content-Type": "application/json", "Content-Length": "500"}, b""))
    probe(
        "truncated", "Content-Length 500, no body", raises_tunegate(lambda: backend(url).generate([GEN])), 12
    )
    for name, mode, size in (("20 MB, with length", "huge", 20 << 20), ("100 MB chunked, no length", "chunked_huge", 100 << 20),
                             ("8 MiB + 1 KB", "huge", (8 << 20) + 1024)):  # fmt: skip

        def huge(mode: str = mode, size: int = size) -> str | None:
            from advisor.backends.cache import CachedBackend

            fresh(mode=mode, huge_bytes=size)
            db = tmp / f"huge-{mode}-{size}.sqlite"
            cached = CachedBackend(backend(url), db)
            try:
                cached.generate([GEN])
                return "accepted"
            except TunegateError as e:
                if "refused" not in str(e):
                    return f"unexpected: {e}"
            finally:
                cached.close()
            with contextlib.closing(sqlite3.connect(db)) as con:
                n = con.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
            return None if n == 0 else "cached"

        probe("huge answer", name, huge)
    fresh(mode="huge", huge_bytes=4 << 20)
    probe(
        "huge answer",
        "4 MiB answer (under the cap: accepted)",
        lambda: None if len(backend(url).generate([GEN])[0].text) == 4 << 20 else "wrong",
    )

    # --- servers without log-probabilities
    no_lp = {
        "logprobs null": None,
        "content empty": {"content": []},
        "content null": {"content": None},
        "top_logprobs empty": {"content": [{"token": "a", "logprob": -1.0, "top_logprobs": []}]},
    }
    for name, lp in no_lp.items():

        def degrade(lp: Any = lp) -> str | None:
            fresh(
                mode="wrong_shape",
                wrong_shape={"choices": [{"message": {"content": "negative"}, "logprobs": lp}]},
            )
            b = backend(url)
            res = b.loglikelihood(LABELS)
            if b.scoring_method != "generate" or "no log-probabilities" not in (b.scoring_note or ""):
                return f"scored by {b.scoring_method}"
            return None if [r.logprob for r in res] == [-1e9, 0.0] else f"scores {res}"

        probe("no logprobs", name, degrade)

    def vanish() -> None:
        fresh()
        b = backend(url)
        b.loglikelihood(LABELS)
        state.mode = "no_logprobs"
        b.loglikelihood([LoglikRequest((Message("user", "x"),), "positive")])

    probe(
        "no logprobs", "logprobs vanish after the probe", raises_tunegate(vanish, expect="stopped answering")
    )

    # --- the request budget counts every attempt
    from advisor.backends.openai_backend import RequestBudget

    for cap in (1, 2, 3, 5, 8, 13):
        for mode in ("429", "500"):

            def budget(cap: int = cap, mode: str = mode) -> str | None:
                fresh(mode=mode, retry_after="0")
                b = backend(url, max_retries=20, budget=RequestBudget(max_requests=cap), concurrency=2)
                with contextlib.suppress(TunegateError):
                    b.generate([GEN, GenRequest(GEN.messages, 5)])
                sent = len(state.received)
                return None if sent <= cap else f"{sent} requests sent with --max-requests {cap}"

            probe(
                "budget", f"--max-requests {cap} against {mode} everywhere", budget, 120
            )  # backoff up to 8 s a retry

    # --- the response cache file
    cache_dir = tmp / "cachefiles"
    cache_dir.mkdir()
    from advisor.backends.cache import CachedBackend

    def fill(db: Path) -> None:
        fresh()
        c = CachedBackend(backend(url), db)
        c.loglikelihood(
            [LoglikRequest((Message("user", f"t{i}"),), lab) for i in range(60) for lab in ("a", "b")]
        )
        c.close()
        _sql(db, "PRAGMA wal_checkpoint(TRUNCATE)")

    damages: dict[str, Callable[[Path], None]] = {
        "garbage bytes": lambda db: db.write_bytes(b"garbage\x00" * 500),
        "truncated to a third": lambda db: db.write_bytes(db.read_bytes()[: db.stat().st_size // 3]),
        "pages zeroed": lambda db: db.write_bytes(db.read_bytes()[:4096] + b"\0" * (db.stat().st_size - 4096)),
        "header only": lambda db: db.write_bytes(db.read_bytes()[:100]),
        "empty file": lambda db: db.write_bytes(b""),
        "garbage -wal file": lambda db: Path(str(db) + "-wal").write_bytes(b"\x37\x7f\x06\x82" + b"x" * 5000),
        "row not JSON": lambda db: _sql(db, "UPDATE responses SET value = 'not json' WHERE rowid = 1"),
        "row a JSON list": lambda db: _sql(db, "UPDATE responses SET value = '[1]' WHERE rowid = 2"),
        "row with text logprob": lambda db: _sql(db, """UPDATE responses SET value = '{"result": {"logprob": "x", "n_tokens": 1, "prompt_tokens": 1}}' WHERE rowid = 3"""),
        "row missing a field": lambda db: _sql(db, """UPDATE responses SET value = '{"result": {"logprob": -1.0}}' WHERE rowid = 4"""),
        "row nested 100k deep": lambda db: _sql(db, "UPDATE responses SET value = '" + "[" * 100_000 + "' WHERE rowid = 5"),
        "table dropped": lambda db: _sql(db, "DROP TABLE responses"),
        "table of another shape": lambda db: (_sql(db, "DROP TABLE responses"), _sql(db, "CREATE TABLE responses (x)")),
    }  # fmt: skip
    for name, damage in damages.items():

        def damaged(name: str = name, damage: Callable[[Path], None] = damage) -> str | None:
            db = cache_dir / f"{name.replace(' ', '_')}.sqlite"
            fill(db)
            damage(db)
            c = CachedBackend(backend(url), db)
            out = c.loglikelihood(
                [LoglikRequest((Message("user", f"t{i}"),), lab) for i in range(60) for lab in ("a", "b")]
            )
            c.close()
            return None if len(out) == 120 else "wrong number of answers"

        probe("cache file", name, damaged)
    probe(
        "cache file",
        "cache path is a folder",
        raises_tunegate(lambda: CachedBackend(backend(url), cache_dir), expect="cache"),
    )
    blocker = cache_dir / "file"
    blocker.write_text("x")
    probe(
        "cache file",
        "a file where the cache folder goes",
        raises_tunegate(lambda: CachedBackend(backend(url), blocker / "c.sqlite")),
    )

    def modes() -> str | None:
        db = tmp / "private" / "sub" / "r.sqlite"
        fill(db)
        bad = [p for p in db.parent.iterdir() if p.stat().st_mode & 0o077]
        return None if not bad and db.parent.stat().st_mode & 0o777 == 0o700 else f"not private: {bad}"

    probe("cache file", "new cache is 0700 / 0600 (with -wal, -shm)", modes)

    # --- tunegate advise end to end (in process: an escaping exception is what exit 70 would be)
    from advisor.cli import main as cli

    data = _data(tmp)
    cli_cases = [
        ("hang, --timeout 1", {"mode": "hang", "hang_s": 20.0}, ["--timeout", "1"], 6),
        ("trickle, --timeout 1", {"mode": "trickle"}, ["--timeout", "1"], 6),
        ("bad JSON", {"mode": "bad_json"}, [], 6),
        ("truncated", {"mode": "truncated"}, [], 6),
        ("wrong logprobs shape", {"mode": "wrong_shape", "wrong_shape": WRONG_LOGPROBS["top is a string"]}, [], 6),
        ("500 everywhere", {"mode": "500"}, [], 6),
        ("401", {"mode": "raw", "raw": (401, {}, b'{"error": {"message": "bad key"}}')}, [], 6),
        ("huge answer", {"mode": "huge", "huge_bytes": 20 << 20}, [], 6),
        ("429 with --max-requests 6", {"mode": "429", "retry_after": "0"}, ["--max-requests", "6", "--set", "max_retries=9"], 7),
        ("--timeout 0", {}, ["--timeout", "0"], 2),
        ("--timeout -1", {}, ["--timeout", "-1"], 2),
        ("--timeout nan", {}, ["--timeout", "nan"], 2),
        ("--timeout inf", {}, ["--timeout", "inf"], 2),
        ("--timeout abc", {}, ["--timeout", "abc"], 2),
        ("--set max_retries=-1", {}, ["--set", "max_retries=-1"], 2),
    ]  # fmt: skip
    for i, (name, server_state, extra, code) in enumerate(cli_cases):

        def run(
            i: int = i,
            server_state: dict[str, Any] = server_state,
            extra: list[str] = extra,
            code: int = code,
        ) -> str | None:
            fresh(**server_state)
            os.environ["TUNEGATE_CACHE_DIR"] = str(tmp / f"cli-cache-{i}")
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                got = cli(advise_argv(url, data, tmp / f"cli-run-{i}", "--set", "max_retries=1", *extra))
            lines = [ln for ln in err.getvalue().splitlines() if "error:" in ln]  # ours, or argparse's
            if got != code:
                return f"exit {got}, expected {code}: {err.getvalue()[-300:]!r}"
            return None if len(lines) == 1 else f"{len(lines)} error lines"

        probe("advise end to end", name, run, 30)

    def no_logprobs_rerun() -> str | None:
        fresh(mode="no_logprobs")
        os.environ["TUNEGATE_CACHE_DIR"] = str(tmp / "cli-cache-nolp")
        with contextlib.redirect_stderr(io.StringIO()):
            first = cli(advise_argv(url, data, tmp / "cli-nolp"))
            sent = len(state.received)
            second = cli(advise_argv(url, data, tmp / "cli-nolp"))
        doc = json.loads((tmp / "cli-nolp" / "decision.json").read_text())
        if first not in (0, 10, 11, 12, 13) or second != first:
            return f"exits {first}, {second}"
        if doc["provenance"]["backend"].get("scoring_method") != "generate":
            return "fallback not recorded"
        return None if len(state.received) == sent else "the re-run called the server"

    probe("advise end to end", "no logprobs: advise, then re-run free", no_logprobs_rerun, 60)

    # --- issue 20: a deadline for the whole attempt, no redirect followed, no bad answer cached
    for name, setup, bound in (
        ("headers a byte every 0.5 s", {"mode": "trickle_headers", "trickle_s": 0.5}, 6.0),
        ("headers a byte every 0.1 s", {"mode": "trickle_headers", "trickle_s": 0.1}, 6.0),
        ("GET /models headers trickle", {"get_mode": "trickle_headers", "trickle_s": 0.5}, 6.0),
    ):

        def trickled(setup: dict[str, Any] = setup) -> str | None:
            fresh(**setup)
            make = (
                (lambda: backend(url, model=None))
                if "get_mode" in setup
                else (lambda: backend(url).generate([GEN]))
            )
            return raises_tunegate(lambda: make(), expect="no answer within 2 s")()

        probe("deadline", name, trickled, bound)
    for status in (301, 302, 303, 307, 308):

        def redirected(status: int = status) -> str | None:
            with serving("127.0.0.2") as (other, other_state):
                fresh(mode="redirect", redirect=(status, other + "/chat/completions"))
                why = raises_tunegate(lambda: backend(url).generate([GEN]), expect=other)()
                return why or (
                    f"{len(other_state.received)} requests followed to the other origin"
                    if other_state.received
                    else None
                )

        probe("redirect", f"{status} to another origin", redirected)
    for name, content in (("lone high surrogate", "ok\ud800"), ("lone low surrogate", "\udfff")):

        def surrogate(content: str = content) -> str | None:
            fresh(mode="wrong_shape", wrong_shape={"choices": [{"message": {"content": content}}]})
            db = tmp / f"bad-answer-{len(RESULTS)}.sqlite"
            why = raises_tunegate(lambda: CachedBackend(backend(url), db).generate([GEN]), expect="Unicode")()
            return why or _rows_in(db, "a bad answer was cached")

        probe("bad answer", name, surrogate)

    def bad_entry_reasked() -> str | None:
        fresh()
        db = tmp / "bad-entry.sqlite"
        CachedBackend(backend(url), db).generate([GEN])
        _sql(db, r"""UPDATE responses SET value = replace(value, '"text": "', '"text": "\ud800')""")
        sent = len(state.received)
        out = CachedBackend(backend(url), db).generate([GEN])
        if len(state.received) != sent + 1:
            return "the bad entry was not asked again"
        return None if "\ud800" not in out[0].text else "the bad entry was used"

    probe("bad answer", "cached entry with a lone surrogate: dropped, asked again", bad_entry_reasked)

    # --- the table
    print_table(RESULTS)
    if args.json:
        args.json.write_text(json.dumps(RESULTS, indent=1))
    state.stop.set()
    server.shutdown()


def print_table(results: list[dict[str, Any]]) -> int:
    """Print the table (category, tried, clean, failures) and each failure; the number of failures."""
    cats: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        cats.setdefault(r["category"], []).append(r)
    print(f"{'category':<26} {'tried':>5} {'clean':>5} {'failures':>8}")
    for cat, rows in cats.items():
        clean = sum(r["clean"] for r in rows)
        print(f"{cat:<26} {len(rows):>5} {clean:>5} {len(rows) - clean:>8}")
    total = sum(r["clean"] for r in results)
    print(f"{'total':<26} {len(results):>5} {total:>5} {len(results) - total:>8}")
    for r in results:
        if not r["clean"]:
            print(f"FAIL {r['category']} / {r['probe']}: {r['why']}")
    return len(results) - total


def _rows_in(db: Path, why: str) -> str | None:
    """`why` when the cache file `db` holds any answer, else None."""
    if not db.exists():
        return None
    with contextlib.closing(sqlite3.connect(db)) as con:
        n = con.execute("SELECT count(*) FROM responses").fetchone()[0]
    return f"{why} ({n} rows)" if n else None


def _sql(db: Path, statement: str) -> None:
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.execute(statement)


def _models_handler(raw: bytes) -> Any:
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


if __name__ == "__main__":
    main()
