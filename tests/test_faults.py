"""Fault injection: the `openai` backend and `tunegate advise` against a server that misbehaves on purpose.

Each fault ends in a documented exit code with a one-line message (never a traceback, never exit 70),
in a fallback recorded in the report, or in a retry that waits as long as the server asked.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from faultserver import FaultState
from tiny import rotten_tomatoes_rows

from advisor.backends.base import GenRequest, LoglikRequest
from advisor.errors import BackendError, BudgetError
from advisor.measure.evidence import DOMAIN_CONTEXT
from advisor.types import Message

GEN = GenRequest((Message("user", "Say hi"),), max_tokens=4)
LABELS = [LoglikRequest((Message("user", "A dull film."),), lab) for lab in ("positive", "negative")]


def _backend(url: str, **kw: Any) -> Any:
    from advisor.backends.openai_backend import OpenAIBackend

    kw.setdefault("concurrency", 1)
    return OpenAIBackend(url, kw.pop("model", "fault-model"), **kw)


# ------------------------------------------------------------------------------------------ retries
def test_retry_waits_as_long_as_retry_after_says(fault_server: tuple[str, FaultState]) -> None:
    url, state = fault_server
    state.plan, state.retry_after = ["429"], "2"
    out = _backend(url).generate([GEN])
    assert out[0].text
    (t0, _, first), (t1, _, second) = state.received
    assert (first, second) == ("429", "ok")
    assert t1 - t0 >= 2.0, t1 - t0  # the client's own backoff would have retried after at most 0.5 s


def test_5xx_is_retried_then_gives_up_in_one_line(fault_server: tuple[str, FaultState]) -> None:
    url, state = fault_server
    state.mode = "500"
    with pytest.raises(BackendError) as err:
        _backend(url, max_retries=2).generate([GEN])
    assert len(state.received) == 3
    assert "gave up after 3 tries" in str(err.value) and "\n" not in str(err.value)


def test_request_budget_stops_retries_at_the_cap(fault_server: tuple[str, FaultState]) -> None:
    from advisor.backends.openai_backend import RequestBudget

    url, state = fault_server
    state.mode, state.retry_after = "429", "0.01"
    budget = RequestBudget(max_requests=4)
    backend = _backend(url, budget=budget, max_retries=10, concurrency=2)
    with pytest.raises(BudgetError, match="retries included"):
        backend.generate([GEN, GenRequest(GEN.messages, max_tokens=5)])
    assert len(state.received) == 4 and budget.requests == 4  # two first attempts and two retries
    state.mode = "ok"
    with pytest.raises(BudgetError):
        backend.generate([GEN])  # nothing is left: not sent at all
    assert len(state.received) == 4


@pytest.mark.parametrize("mode", ["hang", "stall_body", "trickle"])
def test_a_silent_or_trickling_server_fails_fast_with_the_timeout(
    fault_server: tuple[str, FaultState], mode: str
) -> None:
    url, state = fault_server
    state.mode = mode
    backend = _backend(url, timeout=1.0, max_retries=1)  # built first: importing `openai` is not the wait
    t0 = time.monotonic()
    tries = "2 tries" if mode == "hang" else "1 try"  # the client retries only a wait for the headers
    with pytest.raises(BackendError, match=rf"no answer within 1 s \({tries}\)"):
        backend.generate([GEN])
    assert time.monotonic() - t0 < 6


# -------------------------------------------------------------------------------- malformed answers
WRONG_SHAPES = {
    "choices is a string": {"choices": "none"},
    "empty choices": {"choices": []},
    "no message": {"choices": [{"index": 0}]},
    "content is a number": {"choices": [{"message": {"content": 7}}]},
    "usage is text": {"choices": [{"message": {"content": "hi"}}], "usage": "many"},
    "negative usage": {"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": -3}},
    "a JSON list": [1, 2, 3],
}
WRONG_LOGPROBS = {
    "logprobs is a list": {"choices": [{"message": {"content": "x"}, "logprobs": [1]}]},
    "content is a dict": {"choices": [{"message": {"content": "x"}, "logprobs": {"content": {"a": 1}}}]},
    "top is a string": {"choices": [{"logprobs": {"content": [{"token": "a", "top_logprobs": "abc"}]}}]},
    "token is a number": {
        "choices": [{"logprobs": {"content": [{"top_logprobs": [{"token": 5, "logprob": -1.0}]}]}}]
    },
    "logprob is text": {
        "choices": [{"logprobs": {"content": [{"top_logprobs": [{"token": "a", "logprob": "low"}]}]}}]
    },
    "logprob is positive": {
        "choices": [{"logprobs": {"content": [{"top_logprobs": [{"token": "a", "logprob": 3.5}]}]}}]
    },
}


@pytest.mark.parametrize("mode", ["bad_json", "html", "truncated", "huge"])
def test_broken_answers_are_one_line_backend_errors(fault_server: tuple[str, FaultState], mode: str) -> None:
    url, state = fault_server
    state.mode, state.huge_bytes = mode, 20 * 1024 * 1024
    for call in (lambda b: b.generate([GEN]), lambda b: b.loglikelihood(LABELS)):
        with pytest.raises(BackendError) as err:
            call(_backend(url, max_retries=0))
        text = str(err.value)
        assert "\n" not in text and len(text) < 400
        expected = {"bad_json": "not valid JSON", "html": "not valid JSON", "truncated": "broke off",
                    "huge": "refused an answer larger than 8 MiB"}[mode]  # fmt: skip
        assert expected in text, text


@pytest.mark.parametrize("name", list(WRONG_SHAPES) + list(WRONG_LOGPROBS))
def test_wrong_shapes_are_one_line_backend_errors(fault_server: tuple[str, FaultState], name: str) -> None:
    url, state = fault_server
    state.mode = "wrong_shape"
    state.wrong_shape = WRONG_SHAPES.get(name) or WRONG_LOGPROBS[name]
    call = (lambda b: b.generate([GEN])) if name in WRONG_SHAPES else (lambda b: b.loglikelihood(LABELS))
    with pytest.raises(BackendError, match="malformed answer") as err:
        call(_backend(url, max_retries=0))
    assert "\n" not in str(err.value)


def test_a_huge_answer_is_not_cached(fault_server: tuple[str, FaultState], tmp_path: Path) -> None:
    from advisor.backends.cache import CachedBackend

    url, state = fault_server
    state.mode, state.huge_bytes = "huge", 100 * 1024 * 1024
    cached = CachedBackend(_backend(url, max_retries=0), tmp_path / "c.sqlite")
    with pytest.raises(BackendError, match="refused"):
        cached.generate([GEN])
    cached.close()
    with sqlite3.connect(tmp_path / "c.sqlite") as con:
        assert con.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 0
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) < 1024 * 1024


def test_answers_in_flight_when_another_fails_are_kept(
    fault_server: tuple[str, FaultState], tmp_path: Path
) -> None:
    from advisor.backends.cache import CachedBackend

    url, state = fault_server
    state.plan, state.delay_s = ["bad_json"], 0.3  # all four are in flight when the first answer breaks
    cached = CachedBackend(_backend(url, max_retries=0, concurrency=4), tmp_path / "c.sqlite")
    reqs = [GenRequest((Message("user", f"question {i}"),), max_tokens=4) for i in range(4)]
    with pytest.raises(BackendError, match="not valid JSON"):
        cached.generate(reqs)
    assert cached.stats()["calls"] == 3  # the three good answers were stored
    state.delay_s = 0.0
    assert len(cached.generate(reqs)) == 4
    assert len(state.received) == 5  # only the broken one was asked again


def test_a_server_without_logprobs_degrades_to_generation(fault_server: tuple[str, FaultState]) -> None:
    url, state = fault_server
    state.mode = "no_logprobs"
    backend = _backend(url)
    res = backend.loglikelihood(LABELS)
    assert backend.scoring_method == "generate"
    assert "no log-probabilities" in backend.scoring_note
    assert sorted(r.logprob for r in res) == [-1e9, 0.0]  # the reply starts with exactly one label


def test_logprobs_that_vanish_after_the_probe_are_a_backend_error(
    fault_server: tuple[str, FaultState],
) -> None:
    url, state = fault_server
    backend = _backend(url)
    backend.loglikelihood(LABELS)
    assert backend.scoring_method == "chat_logprobs"
    state.mode = "no_logprobs"
    with pytest.raises(BackendError, match="stopped answering as it did when probed"):
        backend.loglikelihood([LoglikRequest((Message("user", "Other."),), "positive")])


def test_the_probe_answer_is_reused_not_asked_twice(fault_server: tuple[str, FaultState]) -> None:
    url, state = fault_server
    backend = _backend(url, concurrency=4)
    reqs = [LoglikRequest((Message("user", f"text {i}"),), lab) for i in range(6) for lab in ("yes", "no")]
    backend.loglikelihood(reqs)
    counts = state.counts()
    assert len(counts) == 6 and set(counts.values()) == {1}
    assert backend.budget.requests == 6


# ------------------------------------------------------------------------------ the command line
def _data(tmp_path: Path, n: int = 80) -> Path:
    path = tmp_path / "reviews.jsonl"
    rows = rotten_tomatoes_rows(n, seed=1)
    path.write_text("".join(json.dumps({"prompt": t, "completion": lab}) + "\n" for _, t, lab in rows))
    return path


def advise_argv(url: str, data: Path, out: Path, *extra: str) -> list[str]:
    return ["advise", str(data), "--backend", "openai", "--base-url", url, "--out", str(out),
            "--eval-size", "16", "--dev-size", "4", "--k", "1,2", "--set", "latency_samples=3",
            *extra]  # fmt: skip


@pytest.fixture
def run_advise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str]]:
    """`tunegate advise` in this process against a server: (exit code, stderr)."""
    from advisor.cli import main

    monkeypatch.setenv("TUNEGATE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    data = _data(tmp_path)

    def run(url: str, *extra: str) -> tuple[int, str]:
        code = main(advise_argv(url, data, tmp_path / "run", "--set", "max_retries=1", *extra))
        return code, capsys.readouterr().err

    return run


def _one_line(err: str) -> str:
    errors = [ln for ln in err.splitlines() if ln.startswith("tunegate: error:")]
    assert len(errors) == 1, err[-2000:]
    return errors[0]


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("hang", "no answer within 1 s (2 tries)"),
        ("bad_json", "not valid JSON"),
        ("truncated", "broke off"),
        ("wrong_shape", "malformed answer"),
        ("500", "gave up after 2 tries"),
    ],
)
def test_advise_under_a_fault_exits_6_with_one_line(
    fault_server: tuple[str, FaultState], run_advise: Callable[..., tuple[int, str]], mode: str, says: str
) -> None:
    url, state = fault_server
    state.mode, state.hang_s = mode, 10.0
    state.wrong_shape = WRONG_LOGPROBS["logprob is text"]
    code, err = run_advise(url, "--timeout", "1")
    assert code == 6 and says in _one_line(err)


def test_advise_budget_counts_retries(
    fault_server: tuple[str, FaultState], run_advise: Callable[..., tuple[int, str]]
) -> None:
    url, state = fault_server
    state.mode, state.retry_after = "429", "0.01"
    code, err = run_advise(url, "--max-requests", "5", "--set", "max_retries=10")
    assert code == 7 and "request budget exhausted" in _one_line(err)
    assert len(state.received) == 4  # and GET /v1/models: five HTTP requests in all


@pytest.mark.slow
def test_advise_without_logprobs_records_the_fallback_and_reruns_free(
    fault_server: tuple[str, FaultState], run_advise: Callable[..., tuple[int, str]], tmp_path: Path
) -> None:
    url, state = fault_server
    state.mode = "no_logprobs"
    first, err = run_advise(url)
    assert first in (0, 10, 11, 12, 13), err[-3000:]
    doc = json.loads((tmp_path / "run" / "decision.json").read_text())
    backend = doc["provenance"]["backend"]
    assert backend["scoring_method"] == "generate" and "no log-probabilities" in backend["scoring_note"]
    assert "domain perplexity" in json.dumps(doc["evidence"]["not_measured"])
    sent = len(state.received)
    second, err = run_advise(url)
    assert second == first, err[-3000:]
    assert len(state.received) == sent  # everything answered from the cache
    again = json.loads((tmp_path / "run" / "decision.json").read_text())["provenance"]["backend"]
    assert again["scoring_method"] == "generate" and again["cache"]["calls"] == 0
    assert again["scoring_note"] == backend["scoring_note"]


@pytest.mark.slow
def test_advise_generation_without_logprobs_skips_perplexity_after_one_probe(
    fault_server: tuple[str, FaultState], run_advise: Callable[..., tuple[int, str]], tmp_path: Path
) -> None:
    url, state = fault_server
    state.mode = "no_logprobs"
    code, err = run_advise(url, "--task", "generate")
    assert code in (0, 10, 11, 12, 13), err[-3000:]
    doc = json.loads((tmp_path / "run" / "decision.json").read_text())
    assert "perplexity needs whole-text log-probabilities" in json.dumps(doc["evidence"]["not_measured"])
    domain = [b for b in state.bodies if b["messages"][0]["content"] == DOMAIN_CONTEXT[0].content]
    assert len(domain) == 2  # the chat-logprobs probe and one generate-and-match, not one per text


# ------------------------------------------------------------------------------------- concurrency
def test_the_window_stays_full_across_batches(fault_server: tuple[str, FaultState], tmp_path: Path) -> None:
    """Through the cache, generation used to go out 4 at a time whatever the concurrency."""
    from advisor.backends.cache import CachedBackend

    url, state = fault_server
    state.delay_s = 0.3
    for concurrency in (8, 3):
        state.peak = 0
        cached = CachedBackend(_backend(url, concurrency=concurrency), tmp_path / f"c{concurrency}.sqlite")
        reqs = [GenRequest((Message("user", f"question {i}"),), max_tokens=4) for i in range(3 * concurrency)]
        assert len(cached.generate(reqs)) == len(reqs)
        cached.close()
        assert state.peak == concurrency


def test_answers_do_not_depend_on_the_concurrency(fault_server: tuple[str, FaultState]) -> None:
    url, state = fault_server
    state.jitter_s = 0.2  # answers finish out of order
    gens = [GenRequest((Message("user", f"question {i}"),), max_tokens=4) for i in range(12)]
    scored = [LoglikRequest((Message("user", f"text {i}"),), lab) for i in range(12) for lab in ("yes", "no")]
    runs = []
    for concurrency in (1, 6):
        backend = _backend(url, concurrency=concurrency)
        texts = [g.text for g in backend.generate(gens)]
        runs.append((texts, backend.loglikelihood(scored)))
        backend.close()
    assert runs[0] == runs[1]
    assert len(set(runs[0][0])) > 1 and len({r.logprob for r in runs[0][1]}) > 2  # not all alike


# --------------------------------------------------------------------- parameters a model refuses
def test_a_refused_max_tokens_is_sent_as_max_completion_tokens(fault_server: tuple[str, FaultState]) -> None:
    url, state = fault_server
    state.refuse = ("max_tokens",)
    backend = _backend(url)
    out = backend.generate([GEN, GenRequest((Message("user", "Say bye"),), max_tokens=4)])
    assert all(o.text for o in out)
    assert len(state.bodies) == 3  # refused once, then remembered
    assert "max_tokens" in state.bodies[0] and "max_completion_tokens" not in state.bodies[0]
    assert all(b["max_completion_tokens"] == 4 and "max_tokens" not in b for b in state.bodies[1:])
    assert backend.budget.requests == 3  # the request sent again is counted
    params = backend.request_params["chat/completions"]
    assert params["refused"] == ["max_tokens"] and "max_completion_tokens" in params["sent"]
    assert "temperature" in params["sent"]


def test_refused_temperature_and_logprobs_are_left_out(fault_server: tuple[str, FaultState]) -> None:
    url, state = fault_server
    state.refuse = ("max_tokens", "temperature", "logprobs")
    backend = _backend(url)
    res = backend.loglikelihood(LABELS)
    # Without log-probabilities the chat probe finds none: generate-and-match, as for any such server.
    assert backend.scoring_method == "generate"
    assert sorted(r.logprob for r in res) == [-1e9, 0.0]
    assert backend.request_params["chat/completions"] == {
        "sent": ["max_completion_tokens"],
        "refused": ["logprobs", "max_tokens", "temperature", "top_logprobs"],
    }
    last = state.bodies[-1]
    assert set(last) == {"model", "messages", "max_completion_tokens"}
    assert len(state.bodies) == 5  # one refusal each, then the bare probe and one generation


def test_a_parameter_refused_again_is_a_backend_error(fault_server: tuple[str, FaultState]) -> None:
    url, state = fault_server
    state.refuse = ("max_tokens", "max_completion_tokens")
    with pytest.raises(BackendError, match="max_completion_tokens") as err:
        _backend(url).generate([GEN])
    assert len(state.bodies) == 2 and "\n" not in str(err.value)


@pytest.mark.slow
def test_advise_records_the_refused_parameters_also_from_the_cache(
    fault_server: tuple[str, FaultState], run_advise: Callable[..., tuple[int, str]], tmp_path: Path
) -> None:
    url, state = fault_server
    state.refuse = ("max_tokens",)
    first, err = run_advise(url, "--concurrency", "3")
    assert first in (0, 10, 11, 12, 13), err[-3000:]
    backend = json.loads((tmp_path / "run" / "decision.json").read_text())["provenance"]["backend"]
    assert backend["request_params"]["chat/completions"]["refused"] == ["max_tokens"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["concurrency"] == 3
    sent = len(state.received)
    second, err = run_advise(url)
    assert second == first and len(state.received) == sent, err[-3000:]  # all from the cache
    again = json.loads((tmp_path / "run" / "decision.json").read_text())["provenance"]["backend"]
    assert again["request_params"] == backend["request_params"]


@pytest.mark.slow
def test_advise_renders_echo_prompts_with_the_tokenizer_given(
    fault_server: tuple[str, FaultState], run_advise: Callable[..., tuple[int, str]], tmp_path: Path
) -> None:
    from tiny import tiny_tokenizer

    url, state = fault_server
    tiny_tokenizer(tmp_path / "tok")
    code, err = run_advise(url, "--tokenizer", str(tmp_path / "tok"))
    assert code in (0, 10, 11, 12, 13), err[-3000:]
    echo = [b for b in state.bodies if b.get("echo")]
    assert echo and echo[0]["prompt"].startswith("<|im_start|>")  # the tokenizer's chat template
    code, err = run_advise(url, "--tokenizer", str(tmp_path / "missing"))
    assert code == 2 and "tokenizer" in _one_line(err)


# ------------------------------------------------------------------- issue 20: deadlines and redirects
@pytest.mark.parametrize("where", ["POST", "GET /models"])
def test_a_header_trickling_server_fails_within_the_per_attempt_deadline(
    fault_server: tuple[str, FaultState], where: str
) -> None:
    """A byte of the headers every 0.5 s: every read is quick, but the attempt must still end at --timeout."""
    import openai  # noqa: F401  (imported before the clock starts)

    url, state = fault_server
    state.trickle_s = 0.5
    if where == "POST":
        state.mode = "trickle_headers"
        call: Callable[[], Any] = lambda: _backend(url, timeout=2.0, max_retries=0).generate([GEN])  # noqa: E731
    else:
        state.get_mode = "trickle_headers"
        call = lambda: _backend(url, model=None, timeout=2.0, max_retries=0)  # noqa: E731
    t0 = time.monotonic()
    with pytest.raises(BackendError, match=r"no answer within 2 s \(1 try\)"):
        call()
    assert 1.9 < time.monotonic() - t0 < 3.5


def test_advise_with_trickling_headers_ends_within_the_timeout(
    fault_server: tuple[str, FaultState], run_advise: Callable[..., tuple[int, str]]
) -> None:
    url, state = fault_server
    state.mode = state.get_mode = "trickle_headers"
    t0 = time.monotonic()
    code, err = run_advise(url, "--timeout", "3", "--set", "max_retries=0")
    assert code == 6 and "no answer within 3 s" in _one_line(err)
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("origin", ["another", "the same"])
def test_a_redirect_is_not_followed(fault_server: tuple[str, FaultState], status: int, origin: str) -> None:
    from faultserver import serving

    url, state = fault_server
    with serving("127.0.0.2") as (other, other_state):
        target = other if origin == "another" else url.replace("/v1", "/v2")
        state.mode, state.redirect = "redirect", (status, target + "/chat/completions")
        with pytest.raises(BackendError) as err:
            _backend(url, max_retries=2).generate([GEN])
        assert f"{url}/chat/completions to {target}/chat/completions (HTTP {status})" in str(err.value)
        assert other_state.received == [] and len(state.received) == 1  # neither followed nor retried


def test_advise_stops_at_a_redirect_to_another_origin_with_exit_6(
    fault_server: tuple[str, FaultState], run_advise: Callable[..., tuple[int, str]]
) -> None:
    from faultserver import serving

    url, state = fault_server
    with serving("127.0.0.2") as (other, other_state):
        state.mode, state.redirect = "redirect", (302, other + "/chat/completions")
        code, err = run_advise(url)
        assert other_state.answered == []
    assert code == 6 and url in _one_line(err) and other in _one_line(err)


@pytest.mark.parametrize("content", ["positive\ud800", "\udfff"])
def test_a_bad_answer_is_exit_6_and_never_cached(
    fault_server: tuple[str, FaultState], tmp_path: Path, content: str
) -> None:
    from advisor.backends.cache import CachedBackend

    url, state = fault_server
    state.mode, state.wrong_shape = "wrong_shape", {"choices": [{"message": {"content": content}}]}
    db = tmp_path / "c.sqlite"
    with pytest.raises(BackendError, match="not valid Unicode"):
        CachedBackend(_backend(url), db).generate([GEN])
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM responses").fetchone()[0] == 0
    state.mode = "ok"  # a healthy server: asked again, answered
    assert CachedBackend(_backend(url), db).generate([GEN])[0].text in ("positive", "negative")
