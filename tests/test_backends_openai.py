"""The OpenAI-compatible backend.

Failure paths (retries, budget, key hygiene) run against a small scripted HTTP server on 127.0.0.1;
the success path runs against a real llama.cpp server (the `llama_server` fixture, tests/server.py).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from advisor.backends.base import GenRequest, LoglikRequest
from advisor.errors import BackendError, BudgetError
from advisor.types import Message

SECRET = "sk-test-DO-NOT-LEAK-4242"


def _chat_body(text: str, top: list[tuple[str, float]] | None = None) -> dict[str, Any]:
    logprobs = None
    if top is not None:
        logprobs = {
            "content": [
                {
                    "token": top[0][0],
                    "logprob": top[0][1],
                    "bytes": None,
                    "top_logprobs": [{"token": t, "logprob": p, "bytes": None} for t, p in top],
                }
            ]
        }
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": text},
                "logprobs": logprobs,
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12},
    }


class Scripted:
    """Answers each POST with the next (status, body) of `script` (the last one repeats); records requests."""

    def __init__(self, script: list[tuple[int, dict[str, Any]]]) -> None:
        self.script = script
        self.seen: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.lock = threading.Lock()


@pytest.fixture
def scripted() -> Iterator[tuple[str, Scripted]]:
    state = Scripted([])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status, payload = state.script[min(len(state.seen), len(state.script)) - 1]
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", state
    server.shutdown()
    server.server_close()


def _backend(url: str, **kw: Any) -> Any:
    from advisor.backends.openai_backend import OpenAIBackend

    model = kw.pop("model", "m")
    return OpenAIBackend(url, model, **kw)


GEN = GenRequest((Message("user", "Say hi"),), max_tokens=4)


def test_retries_on_429_and_5xx_then_succeeds(scripted: tuple[str, Scripted]) -> None:
    url, state = scripted
    state.script = [(429, {"error": {"message": "slow down"}}), (503, {"error": {"message": "busy"}}),
                    (200, _chat_body("hello"))]  # fmt: skip
    out = _backend(url, concurrency=1).generate([GEN])
    assert out[0].text == "hello" and out[0].prompt_tokens == 11 and out[0].completion_tokens == 1
    assert len(state.seen) == 3


def test_gives_up_after_max_retries(scripted: tuple[str, Scripted]) -> None:
    url, state = scripted
    state.script = [(500, {"error": {"message": "down"}})]
    with pytest.raises(BackendError, match="gave up after 3 tries"):
        _backend(url, max_retries=2).generate([GEN])
    assert len(state.seen) == 3


def test_budget_is_checked_before_spending(scripted: tuple[str, Scripted]) -> None:
    from advisor.backends.openai_backend import RequestBudget

    url, state = scripted
    state.script = [(200, _chat_body("hello"))]
    budget = RequestBudget(max_requests=3)
    backend = _backend(url, budget=budget)
    backend.generate([GEN, GEN])
    with pytest.raises(BudgetError, match="request budget exhausted"):
        backend.generate([GEN, GEN])  # would make 4: nothing of this batch is sent
    assert len(state.seen) == 2 and budget.requests == 2
    tokens = RequestBudget(max_tokens=10)
    with pytest.raises(BudgetError, match="token budget"):
        _backend(url, budget=tokens).generate([GenRequest(GEN.messages, max_tokens=50)])
    assert len(state.seen) == 2


def test_api_key_never_leaks(
    scripted: tuple[str, Scripted], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url, state = scripted
    monkeypatch.setenv("TUNEGATE_API_KEY", SECRET)
    # A hostile server that echoes the Authorization header back in its error.
    state.script = [(401, {"error": {"message": f"bad key Bearer {SECRET}"}})]
    caplog.set_level(logging.DEBUG)
    backend = _backend(url)
    with pytest.raises(BackendError) as err:
        backend.generate([GEN])
    assert state.seen[0][1]["authorization"] == f"Bearer {SECRET}"  # the key is used...
    assert SECRET not in str(err.value) and "***" in str(err.value)  # ...and never shown
    assert SECRET not in repr(backend) and SECRET not in str(backend)
    assert SECRET not in caplog.text
    state.script = [(500, {"error": {"message": f"oops {SECRET}"}})]
    with pytest.raises(BackendError) as err2:
        _backend(url, max_retries=0).generate([GEN])
    assert SECRET not in str(err2.value)


def test_falls_back_to_generate_and_match(scripted: tuple[str, Scripted]) -> None:
    """A server without logprobs: the label the reply starts with wins."""
    url, state = scripted
    state.script = [
        (200, _chat_body("Negative.")),
        (200, _chat_body("Negative.")),
        (200, _chat_body("positive")),
    ]
    backend = _backend(url, concurrency=1)
    msgs = (Message("user", "A dull film."),)
    res = backend.loglikelihood([LoglikRequest(msgs, "positive"), LoglikRequest(msgs, "negative")])
    assert backend.scoring_method == "generate"
    assert res[1].logprob == 0.0 and res[0].logprob < -1e6
    assert "logprobs" in state.seen[0][2] and "logprobs" not in state.seen[1][2]


def test_chat_top_logprobs_scoring(scripted: tuple[str, Scripted]) -> None:
    url, state = scripted
    top = [("neg", -0.2), ("pos", -1.9), ("positive", -2.5), ("Ne", -3.0)]
    state.script = [(200, _chat_body("neg", top))]
    backend = _backend(url, concurrency=1)
    msgs = (Message("user", "A dull film."),)
    labels = ["positive", "negative", "neutral"]
    res = backend.loglikelihood([LoglikRequest(msgs, lab) for lab in labels])
    assert backend.scoring_method == "chat_logprobs"
    assert res[0].logprob == -2.5  # the longest listed token that starts the label
    assert res[1].logprob == -0.2
    assert res[2].logprob < -3.0  # not listed: below everything listed
    assert len(state.seen) == 1  # the probe asked for this prompt: its answer scores all three labels


# ------------------------------------------------------------------------ against llama.cpp's server
ITEMS = [
    ("A moving, beautifully acted and thoroughly delightful film.", "positive"),
    ("A masterpiece: funny, warm and wonderfully made.", "positive"),
    ("One of the best movies of the year, a triumph.", "positive"),
    ("Smart, tender and full of life; I loved every minute.", "positive"),
    ("A gorgeous, exhilarating adventure.", "positive"),
    ("A dull, tedious and lifeless mess.", "negative"),
    ("Awful. Boring, badly written and far too long.", "negative"),
    ("A complete waste of time and a painful bore.", "negative"),
    ("Clumsy, loud and utterly forgettable.", "negative"),
    ("The worst film I have seen in years.", "negative"),
]
SYSTEM = Message("system", "Classify the sentiment of the movie review. Answer positive or negative.")


def _label_requests() -> list[LoglikRequest]:
    return [
        LoglikRequest((SYSTEM, Message("user", t)), lab) for t, _ in ITEMS for lab in ("positive", "negative")
    ]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    from advisor.backends.model import default_model_dir

    return default_model_dir()


@pytest.mark.server
@pytest.mark.realmodel
def test_llama_server_scoring_method_and_generation(llama_server: str, model_dir: Path) -> None:
    with_tok = _backend(llama_server, tokenizer=model_dir)
    res = with_tok.loglikelihood(_label_requests()[:4])
    assert with_tok.scoring_method == "echo"
    assert all(math.isfinite(r.logprob) and r.logprob < 0 and r.n_tokens >= 1 for r in res)
    no_tok = _backend(llama_server, model=None)
    assert no_tok.model == "smollm2"  # the server's only model, asked for when none is named
    no_tok.loglikelihood(_label_requests()[:2])
    assert no_tok.scoring_method == "chat_logprobs"
    out = no_tok.generate([GenRequest((Message("user", "What is the capital of France?"),), 12, ("\n",))])
    assert out[0].text.strip() and "\n" not in out[0].text
    assert 0 < out[0].completion_tokens <= 12 and out[0].prompt_tokens > 5


@pytest.mark.server
@pytest.mark.realmodel
def test_both_backends_rank_labels_alike(llama_server: str, model_dir: Path) -> None:
    from advisor.backends.hf import HFBackend

    # Six items, three of each: llama-cpp-python's echo costs ~6 s a request on 2 cores (it sorts the
    # whole vocabulary in Python for every prompt token).
    items = ITEMS[:3] + ITEMS[5:8]
    texts = {t for t, _ in items}
    reqs = [r for r in _label_requests() if r.messages[-1].content in texts]
    local = HFBackend(model_dir, device="cpu").loglikelihood(reqs)
    # Echo requests queue behind each other on the CPU server: a generous timeout, no retries piling up.
    remote = _backend(llama_server, tokenizer=model_dir, timeout=900, max_retries=0).loglikelihood(reqs)

    def ranking(res: list[Any]) -> list[bool]:
        return [res[2 * i].logprob > res[2 * i + 1].logprob for i in range(len(items))]

    # The server runs the 4-bit GGUF, the local backend its fp32 dequantisation: close, not identical.
    agree = sum(a == b for a, b in zip(ranking(local), ranking(remote), strict=True))
    assert agree >= len(items) - 1, (ranking(local), ranking(remote))
    for a, b in zip(local, remote, strict=True):
        assert a.n_tokens == b.n_tokens
        assert abs(a.logprob - b.logprob) < 1.5


@pytest.mark.server
@pytest.mark.realmodel
def test_advise_predicts_the_same_at_any_concurrency(
    llama_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's acceptance check: `advise --concurrency 8` against the server predicts what
    `--concurrency 1` does. Each run has its own empty cache, so both really ask the server (about 37
    requests a run: three arms on six items, latency samples and the evidence)."""
    from tiny import rotten_tomatoes_rows

    from advisor.cli import main
    from advisor.rundir import RunDir

    data = tmp_path / "reviews.jsonl"
    rows = rotten_tomatoes_rows(20, seed=3)
    data.write_text("".join(json.dumps({"prompt": t, "completion": lab}) + "\n" for _, t, lab in rows))
    runs = {}
    for concurrency in (1, 8):
        monkeypatch.setenv("TUNEGATE_CACHE_DIR", str(tmp_path / f"cache-{concurrency}"))
        out = tmp_path / f"run-{concurrency}"
        argv = ["advise", str(data), "--backend", "openai", "--base-url", llama_server, "--out", str(out),
                "--eval-size", "6", "--dev-size", "2", "--k", "1", "--concurrency", str(concurrency),
                "--timeout", "600", "--set", "max_retries=0", "--set", "latency_samples=1"]  # fmt: skip
        code = main(argv)
        err = capsys.readouterr().err
        assert code in (0, 10, 11, 12, 13), err[-3000:]
        doc = json.loads((out / "decision.json").read_text())
        run = RunDir(out)
        arms = [a["name"] for a in doc["prompting"]["arms"]]
        # A fresh cache: every answer scored came from the server (hits: requests repeated within the run).
        assert doc["provenance"]["backend"]["cache"]["calls"] >= len(arms) * 6
        runs[concurrency] = (
            doc["provenance"]["backend"]["scoring_method"],
            {arm: [(r["line"], r["prediction"]) for r in run.read_predictions(arm)] for arm in arms},
        )
    assert runs[1][0] == runs[8][0] == "chat_logprobs"
    assert len(runs[1][1]) >= 3 and all(len(p) >= 6 for p in runs[1][1].values())
    assert runs[8] == runs[1]


# --------------------------------------------------------------- issue 20: keys, server URLs, secrets in URLs
@pytest.mark.parametrize(
    "key,what",
    [
        (SECRET + "\n", "a line break"),
        (SECRET + "\r\n", "a line break"),
        (" " + SECRET, "a space or tab"),
        (SECRET + "é", "a non-ASCII character"),
        (SECRET + "\x1b[2J", "a control character"),
    ],
)
@pytest.mark.parametrize("env", ["OPENAI_API_KEY", "MY_KEY"])
def test_a_bad_key_is_exit_2_naming_the_variable_before_any_request(
    scripted: tuple[str, Scripted], monkeypatch: pytest.MonkeyPatch, key: str, what: str, env: str
) -> None:
    from advisor.errors import ConfigError

    url, state = scripted
    monkeypatch.delenv("TUNEGATE_API_KEY", raising=False)
    monkeypatch.setenv(env, key)
    with pytest.raises(ConfigError) as err:
        _backend(url, api_key_env=None if env == "OPENAI_API_KEY" else env)
    text = str(err.value)
    assert err.value.exit_code == 2 and f"${env}" in text and what in text
    assert SECRET not in text and "\n" not in text and state.seen == []


@pytest.mark.parametrize(
    "env,value",
    [
        ("OPENAI_BASE_URL", ""),
        ("OPENAI_BASE_URL", "  "),
        ("TUNEGATE_BASE_URL", ""),
        ("OPENAI_BASE_URL", "127.0.0.1:8080/v1"),
        ("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1\n"),
    ],
)
def test_a_blank_or_malformed_base_url_is_exit_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str
) -> None:
    import time

    from advisor.backends import get_backend
    from advisor.errors import ConfigError

    for name in ("OPENAI_BASE_URL", "TUNEGATE_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(env, value)
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=rf"field '\${env}'") as err:
        get_backend("openai", model="m", cache=False)
    assert err.value.exit_code == 2 and time.monotonic() - t0 < 2  # refused, not retried six times


@pytest.mark.parametrize(
    "tail",
    ["?key={s}", "?api-version=1&api_key={s}", "/key/{s}", "/{s}", "#{s}"],
)
def test_a_key_in_the_base_url_is_in_no_url_shown(scripted: tuple[str, Scripted], tail: str) -> None:
    url, state = scripted
    base = url + tail.format(s=SECRET)
    backend = _backend(base, max_retries=0)
    state.script = [(500, {"error": {"message": "down"}})]
    with pytest.raises(BackendError) as err:
        backend.generate([GEN])
    for shown in (str(err.value), repr(backend), backend.model_id):
        assert SECRET not in shown and "***" in shown, shown
    closed = _backend(base.replace(url.rsplit("/v1", 1)[0], "http://127.0.0.1:9"), model="m", max_retries=0)
    with pytest.raises(BackendError) as down:
        closed.generate([GEN])
    assert SECRET not in str(down.value)


def test_an_answer_with_a_lone_surrogate_is_a_backend_error(scripted: tuple[str, Scripted]) -> None:
    url, state = scripted
    state.script = [(200, _chat_body("pos\ud800"))]
    with pytest.raises(BackendError, match="lone UTF-16 surrogate"):
        _backend(url).generate([GEN])
