"""A persistent response cache in front of any backend (SQLite in the user cache folder).

Each request is keyed by the sha256 of (backend name, model id, operation, the backend's decoding
parameters, the full request). Misses go to a local backend in chunks (its batches; a prompt's
continuations stay in one chunk), to a server backend in one call (it keeps its own window of requests
in flight), and each answer is committed as soon as the backend reports it finished (`on_done`), so a
run killed at any moment resumes without repeating a finished call, and a re-run makes zero model calls.

The cache holds prompts and data: its folder is created 0700 and its file 0600. A file that is not a
SQLite database, or is damaged, is moved aside (`responses.sqlite.corrupt-<time>`) with a warning and a
fresh one is started; a row that cannot be read is dropped and asked for again.

Every answer passes one check (`invalid`) on its way in and on its way out: an answer the backend gives
that is not a plausible result (a lone UTF-16 surrogate in generated text, a log-probability that is not a
finite number, a negative token count ...) stops the run with a `BackendError` and is never
stored; a stored entry that fails it (written by an older version, or edited) is dropped with a warning and
asked for again.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from advisor.backends.base import (
    Backend,
    GenRequest,
    GenResult,
    LoglikRequest,
    LoglikResult,
    OnDone,
)
from advisor.backends.model import user_cache_dir
from advisor.errors import BackendError, ConfigError
from advisor.textsafe import surrogate_path
from advisor.types import Message

Req = TypeVar("Req", LoglikRequest, GenRequest)
Res = TypeVar("Res", LoglikResult, GenResult)
_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def default_cache_path() -> Path:
    return user_cache_dir() / "responses.sqlite"


class CachedBackend:
    """Wraps `inner`; `stats()` says how many requests were answered from the cache and how many were sent."""

    def __init__(self, inner: Backend, path: str | Path | None = None, chunk_size: int = 32) -> None:
        self.inner = inner
        self.name = inner.name
        self.model_id = inner.model_id
        self.path = Path(path) if path is not None else default_cache_path()
        self.chunk_size = chunk_size
        self._hits = 0
        self._calls = 0
        self._model_time: dict[str, list[float]] = {}  # op -> [requests sent, seconds the backend took]
        self._recorded_method: str | None = None
        self._recorded_note: str | None = None
        self._recorded_params: dict[str, Any] | None = None
        self._db = self._open()

    def __repr__(self) -> str:
        return f"CachedBackend({self.inner!r}, path={str(self.path)!r})"

    # ------------------------------------------------------------------------------------ the file
    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Created private before SQLite opens it; SQLite gives its -wal and -shm files the same mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            if self.path.stat().st_mode & 0o077:
                os.chmod(self.path, 0o600)  # a cache written by an older version
        except OSError as e:
            raise self._unusable(e) from None
        try:
            return self._connect()
        except sqlite3.DatabaseError as e:
            if getattr(e, "sqlite_errorname", None) not in _DAMAGED:
                raise self._unusable(e) from None
            self._move_aside(e)
            try:
                return self._connect()
            except sqlite3.Error as e2:
                raise self._unusable(e2) from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0)
        # A row that is not UTF-8 (a damaged or edited file) must not stop every read: its bytes come back as
        # lone surrogates, which the answer check refuses, so the row is dropped and asked again.
        db.text_factory = _text
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a committed row survives a killed process
            db.execute(
                "CREATE TABLE IF NOT EXISTS responses"
                " (key TEXT PRIMARY KEY, op TEXT NOT NULL, value TEXT NOT NULL)"
            )
            db.commit()
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _move_aside(self, error: Exception) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            for suffix in ("", "-wal", "-shm"):
                part = Path(str(self.path) + suffix)
                if part.exists():
                    part.replace(Path(str(aside) + suffix))
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as e:
            raise self._unusable(e) from None
        print(
            f"tunegate: warning: the response cache {self.path} was damaged ({error}); moved it to "
            f"{aside.name} and started a new one (earlier answers will be asked for again)",
            file=sys.stderr,
        )

    def _unusable(self, error: BaseException) -> ConfigError:
        return ConfigError(
            f"cannot use the response cache: {error}; point TUNEGATE_CACHE_DIR at a writable folder",
            file=str(self.path),
        )

    def _recover(self, error: sqlite3.Error) -> None:
        """The database broke during the run: start a fresh one, or stop with a clear message."""
        if getattr(error, "sqlite_errorname", None) not in _DAMAGED:
            raise self._unusable(error) from None
        self._db.close()
        self._move_aside(error)
        try:
            self._db = self._connect()
        except sqlite3.Error as e:
            raise self._unusable(e) from None

    # ----------------------------------------------------------------------------------- the backend
    @property
    def scoring_method(self) -> str | None:
        """How classification was scored: the inner backend's, or the one recorded with cached answers."""
        return getattr(self.inner, "scoring_method", None) or self._recorded_method

    @property
    def scoring_note(self) -> str | None:
        """Why that scoring method (e.g. the server gave no log-probabilities)."""
        return getattr(self.inner, "scoring_note", None) or self._recorded_note

    @property
    def request_params(self) -> dict[str, Any] | None:
        """The parameters the inner backend sent (and the server refused), or those recorded with cached
        answers."""
        return getattr(self.inner, "request_params", None) or self._recorded_params

    @property
    def concurrency(self) -> int | None:
        """The inner backend's in-flight window (a server backend's), so callers batch enough to fill it."""
        return getattr(self.inner, "concurrency", None)

    def stats(self) -> dict[str, int]:
        return {"hits": self._hits, "calls": self._calls}

    def model_time(self) -> dict[str, tuple[int, float]]:
        """Per operation: requests sent to the model in this session and the seconds it took on them."""
        return {op: (int(n), seconds) for op, (n, seconds) in self._model_time.items()}

    def answered(self, op: str, requests: Sequence[LoglikRequest | GenRequest]) -> list[bool]:
        """Which of `requests` the cache answers already (op "loglikelihood" or "generate"); no model call."""
        return [r is not None for r in self.cached(op, requests)]

    def cached(
        self, op: str, requests: Sequence[LoglikRequest | GenRequest]
    ) -> list[LoglikResult | GenResult | None]:
        """The cached answers to `requests` (None where the cache has none); no model call, no count."""
        keys = [self._key(op, r) for r in requests]
        found = self._lookup(keys)
        kind: Any = LoglikResult if op == "loglikelihood" else GenResult
        return [_result(kind, found.get(k, {})) for k in keys]

    def close(self) -> None:
        self._db.close()
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()

    def render(self, messages: Sequence[Message]) -> str:
        return self.inner.render(messages)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.inner.count_tokens(texts)

    def loglikelihood(
        self, requests: Sequence[LoglikRequest], on_done: OnDone[LoglikResult] | None = None
    ) -> list[LoglikResult]:
        return _report(
            self._through("loglikelihood", requests, self.inner.loglikelihood, LoglikResult), on_done
        )

    def generate(
        self, requests: Sequence[GenRequest], on_done: OnDone[GenResult] | None = None
    ) -> list[GenResult]:
        return _report(self._through("generate", requests, self.inner.generate, GenResult), on_done)

    def _through(
        self,
        op: str,
        requests: Sequence[Req],
        call: Callable[..., list[Res]],
        result_type: type[Res],
    ) -> list[Res]:
        keys = [self._key(op, r) for r in requests]
        found = self._lookup(keys)
        out: list[Res | None] = [None] * len(requests)
        missing: dict[str, list[int]] = {}  # duplicates in one batch are sent once
        bad: set[str] = set()
        for i, k in enumerate(keys):
            value = found.get(k, {})
            result = _result(result_type, value)
            if result is None and k in found:
                bad.add(k)
            if result is not None:
                out[i] = result
                self._recorded_method = value.get("scoring_method") or self._recorded_method
                self._recorded_note = value.get("scoring_note") or self._recorded_note
                self._recorded_params = value.get("request_params") or self._recorded_params
                self._hits += 1
            else:
                missing.setdefault(k, []).append(i)
        if bad:
            self._drop(sorted(bad), "entries that are not valid answers")
        for chunk in self._chunks(op, requests, missing):
            store = functools.partial(self._store, op, chunk, missing, out)
            started = time.monotonic()
            returned = call([requests[missing[k][0]] for k in chunk], on_done=store)
            spent = self._model_time.setdefault(op, [0, 0.0])
            spent[0] += len(chunk)
            spent[1] += time.monotonic() - started
            left = [j for j, k in enumerate(chunk) if out[missing[k][0]] is None]
            if left:  # what the backend did not report as it went
                store(left, [returned[j] for j in left])
        return [r for r in out if r is not None]

    def _chunks(self, op: str, requests: Sequence[Req], missing: dict[str, list[int]]) -> list[list[str]]:
        if getattr(self.inner, "concurrency", None) is not None:
            # A server backend keeps its window of requests full across the whole call (the caller sized
            # it, see `batch_size`): chunks here would drain the window at every chunk's end.
            return [list(missing)] if missing else []
        # Generation is slow: smaller chunks (a local model's batch).
        size = self.chunk_size if op == "loglikelihood" else max(1, self.chunk_size // 8)
        groups: dict[Any, list[str]] = {}
        for k, idx in missing.items():
            # A prompt's continuations together: a server scores them in one request.
            group = requests[idx[0]].messages if op == "loglikelihood" else k
            groups.setdefault(group, []).append(k)
        chunks: list[list[str]] = []
        for keys in groups.values():
            if not chunks or len(chunks[-1]) + len(keys) > size:
                chunks.append([])
            chunks[-1].extend(keys)
        return chunks

    def _store(
        self,
        op: str,
        chunk: list[str],
        missing: dict[str, list[int]],
        out: list[Any],
        done: Sequence[int],
        results: Sequence[LoglikResult | GenResult],
    ) -> None:
        """Commit the finished answers (`done` indexes `chunk`) at once: a killed run repeats none of them."""
        keys = [chunk[j] for j in done]
        problems = [(k, why) for k, res in zip(keys, results, strict=True) if (why := invalid(res))]
        if problems:
            # The valid answers of this part are kept (a re-run does not ask them again); the run stops.
            good = [j for j, k in enumerate(keys) if k not in dict(problems)]
            if good:
                self._store(op, chunk, missing, out, [done[j] for j in good], [results[j] for j in good])
            raise BackendError(
                f"{self.inner.name} backend ({self.model_id}): malformed answer to a {op} request: "
                f"{problems[0][1]}; not cached"
            )
        method = getattr(self.inner, "scoring_method", None) if op == "loglikelihood" else None
        note = getattr(self.inner, "scoring_note", None) if op == "loglikelihood" else None
        params = getattr(self.inner, "request_params", None)
        rows = []
        for k, res in zip(keys, results, strict=True):
            for i in missing[k]:
                out[i] = res
            value = {"result": dataclasses.asdict(res), "scoring_method": method}
            if note:
                value["scoring_note"] = note
            if params:
                value["request_params"] = params
            rows.append((k, op, json.dumps(value)))
        self._calls += len(rows)
        sql = "INSERT OR REPLACE INTO responses (key, op, value) VALUES (?, ?, ?)"
        try:
            self._db.executemany(sql, rows)
            self._db.commit()
        except sqlite3.Error as e:
            self._recover(e)
            self._db.executemany(sql, rows)
            self._db.commit()

    def _lookup(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        try:
            return self._select(keys)
        except sqlite3.Error as e:
            self._recover(e)
            return {}

    def _select(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        bad: list[str] = []
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):  # stay under SQLite's bound-parameter limit
            part = unique[start : start + 500]
            marks = ",".join("?" * len(part))
            for key, value in self._db.execute(
                f"SELECT key, value FROM responses WHERE key IN ({marks})", part
            ):
                try:
                    doc = json.loads(value)
                except (TypeError, ValueError, RecursionError):
                    doc = None
                if isinstance(doc, dict):
                    found[key] = doc
                else:
                    bad.append(key)
        if bad:
            self._drop(bad, "unreadable entries")
        return found

    def _drop(self, keys: list[str], what: str) -> None:
        print(
            f"tunegate: warning: {len(keys)} {what} in the response cache {self.path}; "
            "dropped, they will be asked for again",
            file=sys.stderr,
        )
        try:
            self._db.executemany("DELETE FROM responses WHERE key = ?", [(k,) for k in keys])
            self._db.commit()
        except sqlite3.Error as e:
            self._recover(e)

    def _key(self, op: str, request: LoglikRequest | GenRequest) -> str:
        doc = {
            "backend": self.inner.name,
            "model_id": self.inner.model_id,
            "op": op,
            "params": getattr(self.inner, "cache_params", {}),
            "request": dataclasses.asdict(request),
        }
        text = json.dumps(doc, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


_TYPES: dict[str, tuple[type, ...]] = {"float": (int, float), "int": (int,), "str": (str,)}


_MAX_COUNT = 10**9  # tokens in one request: more is not a count


def invalid(result: LoglikResult | GenResult) -> str | None:
    """Why `result` is not a plausible answer, or None: the one check every answer passes before it is
    cached, and every cached entry passes before it is used."""
    counts = (
        (result.n_tokens, result.prompt_tokens)
        if isinstance(result, LoglikResult)
        else (result.prompt_tokens, result.completion_tokens)
    )
    if any(isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < _MAX_COUNT for n in counts):
        return "a token count that is not a whole number from 0"
    if isinstance(result, LoglikResult):
        x = result.logprob
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
            return "a log-probability that is not a finite number"
        return None
    if not isinstance(result.text, str):
        return "generated text that is not text"
    if surrogate_path(result.text) is not None:
        return "generated text holding a lone UTF-16 surrogate, which is not valid Unicode"
    x = result.latency_s
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) or x < 0:
        return "a latency that is not a finite number of seconds"
    return None


def _result(result_type: type[Res], value: dict[str, Any]) -> Res | None:
    """The cached result, or None when the entry does not hold a valid one (it is then asked for again)."""
    fields = value.get("result")
    if not isinstance(fields, dict):
        return None
    expected = {f.name: _TYPES[str(f.type)] for f in dataclasses.fields(result_type)}
    if set(fields) != set(expected) or any(
        isinstance(fields[name], bool) or not isinstance(fields[name], types)
        for name, types in expected.items()
    ):
        return None
    # What is recorded beside the answer goes into the report too: it must be writable text.
    if surrogate_path(value) is not None or not all(
        value.get(k) is None or isinstance(value.get(k), t)
        for k, t in (("scoring_method", str), ("scoring_note", str), ("request_params", dict))
    ):
        return None
    result = result_type(**fields)
    return None if invalid(result) else result


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _report(results: list[Res], on_done: OnDone[Res] | None) -> list[Res]:
    if on_done is not None:
        on_done(range(len(results)), results)
    return results
