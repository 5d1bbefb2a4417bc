"""Fault injection: the `openai` backend and `tunegate advise` against a server that misbehaves on purpose.

Each fault ends in a documented exit code with a one-line message (never a traceback, never exit 70),
in a fallback recorded in the report, or in a retry that waits as long as the server asked.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from faultserver import FaultState
from tiny import rotten_tomatoes_rows

from advisor.backends.base import GenRequest, LoglikRequest
from advisor.errors import BackendError, BudgetError
from advisor.types import Message

REPO = Path(__file__).resolve().parents[1]
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


def test_hanging_server_fails_fast_with_the_timeout(fault_server: tuple[str, FaultState]) -> None:
    url, state = fault_server
    state.mode = "hang"
    t0 = time.monotonic()
    with pytest.raises(BackendError, match=r"no answer within 1 s \(2 tries\)"):
        _backend(url, timeout=1.0, max_retries=1).generate([GEN])
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
def _data(tmp_path: Path, n: int = 40) -> Path:
    path = tmp_path / "reviews.jsonl"
    rows = rotten_tomatoes_rows(n, seed=1)
    path.write_text("".join(json.dumps({"prompt": t, "completion": lab}) + "\n" for _, t, lab in rows))
    return path


def advise(url: str, data: Path, out: Path, cache: Path, *extra: str, timeout: float = 120) -> Any:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TUNEGATE_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    env.pop("OPENAI_API_KEY", None)
    cmd = [sys.executable, "-m", "advisor.cli", "advise", str(data), "--backend", "openai", "--base-url", url,
           "--out", str(out), "--eval-size", "12", "--k", "1,2", "--set", "latency_samples=3",
           "--set", "max_retries=1", *extra]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _one_clean_line(proc: Any, code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("tunegate: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


@pytest.mark.parametrize(
    ("mode", "code", "says"),
    [
        ("hang", 6, "no answer within 1 s"),
        ("bad_json", 6, "not valid JSON"),
        ("truncated", 6, "broke off"),
        ("wrong_shape", 6, "malformed answer"),
        ("500", 6, "gave up after 2 tries"),
    ],
)
def test_advise_under_a_fault_exits_with_one_line(
    fault_server: tuple[str, FaultState], tmp_path: Path, mode: str, code: int, says: str
) -> None:
    url, state = fault_server
    state.mode, state.hang_s = mode, 10.0
    state.wrong_shape = WRONG_LOGPROBS["logprob is text"]
    proc = advise(url, _data(tmp_path), tmp_path / "run", tmp_path / "cache", "--timeout", "1")
    assert says in _one_clean_line(proc, code)


def test_advise_budget_counts_retries(fault_server: tuple[str, FaultState], tmp_path: Path) -> None:
    url, state = fault_server
    state.mode, state.retry_after = "429", "0.01"
    proc = advise(url, _data(tmp_path), tmp_path / "run", tmp_path / "cache", "--max-requests", "5",
                  "--set", "max_retries=10")  # fmt: skip
    assert "request budget exhausted" in _one_clean_line(proc, 7)
    assert len(state.received) <= 5


def test_advise_without_logprobs_records_the_fallback_and_reruns_free(
    fault_server: tuple[str, FaultState], tmp_path: Path
) -> None:
    url, state = fault_server
    state.mode = "no_logprobs"
    data, out, cache = _data(tmp_path), tmp_path / "run", tmp_path / "cache"
    first = advise(url, data, out, cache)
    assert first.returncode in (0, 10, 11, 12, 13), first.stderr[-3000:]
    doc = json.loads((out / "decision.json").read_text())
    backend = doc["provenance"]["backend"]
    assert backend["scoring_method"] == "generate" and "no log-probabilities" in backend["scoring_note"]
    missing = {m["what"] if isinstance(m, dict) else m[0]: m for m in doc["evidence"]["not_measured"]}
    assert "domain perplexity" in missing
    sent = len(state.received)
    second = advise(url, data, out, cache)
    assert second.returncode == first.returncode, second.stderr[-3000:]
    assert len(state.received) == sent  # everything answered from the cache
    again = json.loads((out / "decision.json").read_text())["provenance"]["backend"]
    assert again["scoring_method"] == "generate" and again["cache"]["calls"] == 0
