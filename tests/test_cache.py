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

import pytest

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

    def loglikelihood(self, requests: Sequence[LoglikRequest], on_done: object = None) -> list[LoglikResult]:
        self.loglik_calls += len(requests)
        return [LoglikResult(-float(len(r.continuation)), len(r.continuation), 7) for r in requests]

    def generate(self, requests: Sequence[GenRequest], on_done: object = None) -> list[GenResult]:
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
        def loglikelihood(self, requests, on_done=None):
            with open({log!r}, "a") as fh:
                for i, r in enumerate(requests):
                    time.sleep(0.02)
                    fh.write(r.messages[0].content + "\\n")
                    fh.flush()
                    if on_done is not None and {each!r}:
                        on_done([i], [LoglikResult(-1.0, 1, 1)])
            return [LoglikResult(-1.0, 1, 1) for _ in requests]

    reqs = [LoglikRequest((Message("user", f"item {{i}}"),), "x") for i in range(200)]
    CachedBackend(Slow(), {db!r}, chunk_size=10).loglikelihood(reqs)
    """
)


@pytest.mark.parametrize("each", [False, True], ids=["per-chunk", "per-answer"])
def test_sigkill_midway_then_resume_repeats_no_finished_call(tmp_path: Path, each: bool) -> None:
    """A backend that reports answers as they finish loses at most the one in flight; one that does not,
    at most the chunk in flight."""
    db, log = tmp_path / "cache.sqlite", tmp_path / "calls.log"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO), log=str(log), db=str(db), each=each))

    child = subprocess.Popen([sys.executable, str(script)])
    deadline = time.monotonic() + 60
    while (not log.exists() or len(log.read_text().splitlines()) < 45) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL

    with sqlite3.connect(db) as con:
        finished = con.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    before = len(log.read_text().splitlines())
    assert 40 <= finished < 200
    if each:
        assert before - finished <= 1  # only an answer not yet reported can be lost
    else:
        assert finished % 10 == 0  # whole chunks were committed

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


# ---------------------------------------------------------------------------------- the file itself
def test_keys_of_unchanged_requests_stay_stable(tmp_path: Path) -> None:
    """Existing caches stay warm: these keys were computed by the release before per-answer commits."""

    class Server(CountingBackend):
        name = "openai"
        cache_params = {"scoring": "auto", "tokenizer": None}

    cached = CachedBackend(Server("smollm2@http://127.0.0.1:8080/v1"), tmp_path / "c.sqlite")
    msgs = (Message("system", "Classify."), Message("user", "A dull film."))
    assert cached._key("loglikelihood", LoglikRequest(msgs, "negative")) == (
        "ac4b46ea953c8f4b38990faa7c67be7b2622e3cd3e6d2ec6d9d7f0c86bdae4b4"
    )
    assert cached._key("generate", GenRequest((Message("user", "Say hi"),), 8, ("\n",))) == (
        "d268b7e872e36aa7339ac6bdb6fe44494c8e17f071d7b7016562fe61a0ef2ada"
    )


def test_cache_folder_and_file_are_private(tmp_path: Path) -> None:
    db = tmp_path / "new" / "cache" / "responses.sqlite"
    cached = CachedBackend(CountingBackend(), db)
    cached.loglikelihood(_reqs(2))
    cached.close()
    assert db.parent.stat().st_mode & 0o777 == 0o700
    for part in db.parent.iterdir():
        assert part.stat().st_mode & 0o077 == 0, part  # the -wal and -shm files too
    old = tmp_path / "old.sqlite"
    old.touch(mode=0o644)
    CachedBackend(CountingBackend(), old).close()
    assert old.stat().st_mode & 0o777 == 0o600


def _filled(db: Path, n: int = 300) -> list[LoglikResult]:
    cached = CachedBackend(CountingBackend(), db)
    out = cached.loglikelihood(_reqs(n))
    cached.close()
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return out


@pytest.mark.parametrize("damage", ["garbage", "truncated", "zeroed pages"])
def test_a_damaged_cache_is_moved_aside_with_a_warning(
    tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "responses.sqlite"
    expected = _filled(db)
    raw = db.read_bytes()
    if damage == "garbage":
        db.write_bytes(b"this is not a database at all\x00\xff" * 100)
    elif damage == "truncated":
        db.write_bytes(raw[: len(raw) // 3])
    else:
        db.write_bytes(raw[:4096] + b"\x00" * (len(raw) - 4096))
    inner = CountingBackend()
    cached = CachedBackend(inner, db)
    assert cached.loglikelihood(_reqs(300)) == expected  # asked again, same answers
    cached.close()
    assert inner.loglik_calls > 0
    err = capsys.readouterr().err
    assert "tunegate: warning: the response cache" in err and "moved it to" in err
    assert "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    again = CountingBackend()
    CachedBackend(again, db).loglikelihood(_reqs(300))
    assert again.loglik_calls == 0  # the new cache works


def test_unreadable_rows_are_dropped_and_asked_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "c.sqlite"
    expected = _filled(db, 3)
    with sqlite3.connect(db) as con:
        keys = [k for (k,) in con.execute("SELECT key FROM responses ORDER BY key")]
        con.execute("UPDATE responses SET value = 'not json {' WHERE key = ?", (keys[0],))
        con.execute("UPDATE responses SET value = '[1, 2]' WHERE key = ?", (keys[1],))
        con.execute(
            """UPDATE responses SET value = '{"result": {"logprob": "x"}}' WHERE key = ?""", (keys[2],)
        )
    inner = CountingBackend()
    assert CachedBackend(inner, db).loglikelihood(_reqs(3)) == expected
    assert inner.loglik_calls == 3
    assert "2 unreadable entries" in capsys.readouterr().err


def test_an_unusable_cache_path_is_a_one_line_config_error(tmp_path: Path) -> None:
    from advisor.errors import ConfigError

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    for path in (blocker / "c.sqlite", tmp_path):  # under a file; a folder itself
        with pytest.raises(ConfigError, match="cannot use the response cache") as err:
            CachedBackend(CountingBackend(), path)
        assert "TUNEGATE_CACHE_DIR" in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------- issue 20: every answer checked before it is kept
class BadTextBackend(CountingBackend):
    """Answers generation with a lone surrogate for prompts that say "bad", as a broken server could."""

    def generate(self, requests: Sequence[GenRequest], on_done: object = None) -> list[GenResult]:
        self.gen_calls += len(requests)
        texts = ["oops\ud800" if "bad" in r.messages[-1].content else "fine" for r in requests]
        return [GenResult(text, 3, 1, 0.1) for text in texts]


def test_a_bad_answer_is_never_cached_and_the_good_ones_are(tmp_path: Path) -> None:
    from advisor.errors import BackendError

    db = tmp_path / "c.sqlite"
    reqs = [GenRequest((Message("user", text),), max_tokens=4) for text in ("good 1", "bad", "good 2")]
    with pytest.raises(BackendError, match="lone UTF-16 surrogate.*not cached"):
        CachedBackend(BadTextBackend(), db).generate(reqs)
    with sqlite3.connect(db) as con:
        values = [v for (v,) in con.execute("SELECT value FROM responses")]
    assert len(values) == 2 and all('"fine"' in v for v in values)


@pytest.mark.parametrize(
    "edit",
    [
        r"""replace(value, '"text": "', '"text": "\ud800')""",
        """CAST(replace(value, '"text": "', '"text": "' || CAST(X'FF' AS TEXT)) AS BLOB)""",
        """json_set(value, '$.result.latency_s', -1.0)""",
        """json_set(value, '$.result.completion_tokens', -2)""",
        r"""replace(value, '"scoring_method": null', '"scoring_method": "\udfff"')""",
    ],
)
def test_a_cached_entry_that_fails_the_check_is_dropped_and_asked_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str
) -> None:
    db = tmp_path / "c.sqlite"
    reqs = [GenRequest((Message("user", f"q{i}"),), max_tokens=4) for i in range(3)]
    expected = CachedBackend(CountingBackend(), db).generate(reqs)
    with sqlite3.connect(db) as con:
        con.execute(f"UPDATE responses SET value = {edit} WHERE rowid = 1")
        assert con.total_changes == 1
    inner = CountingBackend()
    assert CachedBackend(inner, db).generate(reqs) == expected
    # not valid UTF-8 fails as an unreadable row, the others as entries that are not valid answers
    assert inner.gen_calls == 1 and "; dropped, they will be asked for again" in capsys.readouterr().err
    again = CountingBackend()
    assert CachedBackend(again, db).generate(reqs) == expected and again.gen_calls == 0  # replaced


@pytest.mark.parametrize(
    "result,why",
    [
        (LoglikResult(float("nan"), 1, 2), "log-probability"),
        (LoglikResult(float("-inf"), 1, 2), "log-probability"),
        (LoglikResult(-1.0, -1, 2), "token count"),
        (GenResult("x\udcff", 1, 1, 0.1), "surrogate"),
        (GenResult("x", 1, 1, float("nan")), "latency"),
        (GenResult("x", 10**12, 1, 0.1), "token count"),
    ],
)
def test_the_answer_check(result: LoglikResult | GenResult, why: str) -> None:
    from advisor.backends.cache import invalid

    assert why in (invalid(result) or "")
    assert invalid(LoglikResult(-1e9, 1, 2)) is None and invalid(GenResult("", 0, 0, 0.0)) is None
