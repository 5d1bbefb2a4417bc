"""The persistent response cache: re-runs make zero calls; a SIGKILL loses nothing already finished."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

from advisor.backends.base import GenRequest, GenResult, LoglikRequest, LoglikResult
from advisor.backends.cache import CachedBackend
from advisor.types import Message

REPO = Path(__file__).resolve().parents[1]


class CountingBackend:
    """A deterministic stand-in that counts what it is asked."""

    name = "counting"

    def __init__(self, model_id: str = "m1", scoring_method: str | None = None) -> None:
        self.model_id = model_id
        self.scoring_method = scoring_method
        self.loglik_calls = 0
        self.gen_calls = 0

    def loglikelihood(self, requests: Sequence[LoglikRequest]) -> list[LoglikResult]:
        self.loglik_calls += len(requests)
        return [LoglikResult(-float(len(r.continuation)), len(r.continuation), 7) for r in requests]

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        self.gen_calls += len(requests)
        return [GenResult(r.messages[-1].content.upper()[: r.max_tokens], 3, 2, 0.5) for r in requests]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def render(self, messages: Sequence[Message]) -> str:
        return "|".join(m.content for m in messages)


def _reqs(n: int) -> list[LoglikRequest]:
    return [LoglikRequest((Message("user", f"item {i}"),), lab) for i in range(n) for lab in ("yes", "no")]


def test_rerun_makes_zero_calls_and_returns_the_same(tmp_path: Path) -> None:
    db = tmp_path / "cache.sqlite"
    inner = CountingBackend(scoring_method="echo")
    first = CachedBackend(inner, db, chunk_size=3)
    a = first.loglikelihood(_reqs(5))
    g = first.generate([GenRequest((Message("user", "abc"),), max_tokens=2)])
    assert first.stats() == {"hits": 0, "calls": 11}
    first.close()

    inner2 = CountingBackend()
    second = CachedBackend(inner2, db)
    assert second.loglikelihood(_reqs(5)) == a
    assert second.generate([GenRequest((Message("user", "abc"),), max_tokens=2)]) == g
    assert (inner2.loglik_calls, inner2.gen_calls) == (0, 0)
    assert second.stats() == {"hits": 11, "calls": 0}
    assert second.scoring_method == "echo"  # recorded with the cached answers
    second.close()


def test_key_covers_model_params_and_decoding(tmp_path: Path) -> None:
    db = tmp_path / "cache.sqlite"
    base = GenRequest((Message("user", "abc"),), max_tokens=2)
    CachedBackend(CountingBackend("m1"), db).generate([base])
    other_model = CountingBackend("m2")
    CachedBackend(other_model, db).generate([base])
    assert other_model.gen_calls == 1
    same = CountingBackend("m1")
    cached = CachedBackend(same, db)
    cached.generate([base, GenRequest(base.messages, max_tokens=3), GenRequest(base.messages, 2, ("\n",))])
    assert same.gen_calls == 2
    params = CountingBackend("m1")
    params.cache_params = {"dtype": "bfloat16"}  # type: ignore[attr-defined]
    CachedBackend(params, db).generate([base])
    assert params.gen_calls == 1


def test_duplicates_in_one_batch_are_sent_once(tmp_path: Path) -> None:
    inner = CountingBackend()
    cached = CachedBackend(inner, tmp_path / "c.sqlite")
    reqs = _reqs(2) + _reqs(2)
    out = cached.loglikelihood(reqs)
    assert len(out) == 8 and out[:4] == out[4:]
    assert inner.loglik_calls == 4 and cached.stats() == {"hits": 0, "calls": 4}


CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from advisor.backends.base import LoglikRequest, LoglikResult
    from advisor.backends.cache import CachedBackend
    from advisor.types import Message

    class Slow:
        name = "slow"
        model_id = "m"
        def loglikelihood(self, requests):
            with open({log!r}, "a") as fh:
                for r in requests:
                    time.sleep(0.02)
                    fh.write(r.messages[0].content + "\\n")
                    fh.flush()
            return [LoglikResult(-1.0, 1, 1) for _ in requests]

    reqs = [LoglikRequest((Message("user", f"item {{i}}"),), "x") for i in range(200)]
    CachedBackend(Slow(), {db!r}, chunk_size=10).loglikelihood(reqs)
    """
)


def test_sigkill_midway_then_resume_repeats_no_finished_call(tmp_path: Path) -> None:
    db, log = tmp_path / "cache.sqlite", tmp_path / "calls.log"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO), log=str(log), db=str(db)))

    child = subprocess.Popen([sys.executable, str(script)])
    deadline = time.monotonic() + 60
    while (not log.exists() or len(log.read_text().splitlines()) < 45) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL

    with sqlite3.connect(db) as con:
        finished = con.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    assert 40 <= finished < 200 and finished % 10 == 0  # whole chunks were committed

    before = len(log.read_text().splitlines())
    subprocess.run([sys.executable, str(script)], check=True, timeout=120)
    after = log.read_text().splitlines()
    resumed = after[before:]
    assert len(resumed) == 200 - finished  # only the unfinished calls were made again
    assert set(resumed) | set(after[:finished]) == {f"item {i}" for i in range(200)}

    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 200


def test_database_is_in_wal_mode(tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"
    CachedBackend(CountingBackend(), db).close()
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
