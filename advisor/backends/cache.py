"""A persistent response cache in front of any backend (SQLite in the user cache folder).

Each request is keyed by the sha256 of (backend name, model id, operation, the backend's decoding
parameters, the full request). Misses go to the inner backend in chunks, and each chunk is committed
before the next is sent, so a run killed midway resumes without repeating a finished chunk, and a
re-run makes zero model calls.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from advisor.backends.base import Backend, GenRequest, GenResult, LoglikRequest, LoglikResult
from advisor.model import user_cache_dir
from advisor.types import Message

Req = TypeVar("Req", LoglikRequest, GenRequest)
Res = TypeVar("Res", LoglikResult, GenResult)


def default_cache_path() -> Path:
    return user_cache_dir() / "responses.sqlite"


class CachedBackend:
    """Wraps `inner`; `stats()` says how many requests were answered from the cache and how many were sent."""

    def __init__(self, inner: Backend, path: str | Path | None = None, chunk_size: int = 32) -> None:
        self.inner = inner
        self.name = inner.name
        self.model_id = inner.model_id
        self.path = Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.chunk_size = chunk_size
        self._hits = 0
        self._calls = 0
        self._recorded_method: str | None = None
        self._db = sqlite3.connect(self.path, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "PRAGMA synchronous=NORMAL"
        )  # WAL + NORMAL: a committed row survives a killed process
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses"
            " (key TEXT PRIMARY KEY, op TEXT NOT NULL, value TEXT NOT NULL)"
        )
        self._db.commit()

    def __repr__(self) -> str:
        return f"CachedBackend({self.inner!r}, path={str(self.path)!r})"

    @property
    def scoring_method(self) -> str | None:
        """How classification was scored: the inner backend's, or the one recorded with cached answers."""
        return getattr(self.inner, "scoring_method", None) or self._recorded_method

    def stats(self) -> dict[str, int]:
        return {"hits": self._hits, "calls": self._calls}

    def close(self) -> None:
        self._db.close()
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()

    def render(self, messages: Sequence[Message]) -> str:
        return self.inner.render(messages)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.inner.count_tokens(texts)

    def loglikelihood(self, requests: Sequence[LoglikRequest]) -> list[LoglikResult]:
        return self._through("loglikelihood", requests, self.inner.loglikelihood, LoglikResult)

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        return self._through("generate", requests, self.inner.generate, GenResult)

    def _through(
        self,
        op: str,
        requests: Sequence[Req],
        call: Callable[[Sequence[Req]], list[Res]],
        result_type: type[Res],
    ) -> list[Res]:
        keys = [self._key(op, r) for r in requests]
        found = self._lookup(keys)
        out: list[Res | None] = [None] * len(requests)
        missing: dict[str, list[int]] = {}  # duplicates in one batch are sent once
        for i, k in enumerate(keys):
            if k in found:
                value = found[k]
                out[i] = result_type(**value["result"])
                self._recorded_method = value.get("scoring_method") or self._recorded_method
                self._hits += 1
            else:
                missing.setdefault(k, []).append(i)
        todo = list(missing)
        size = (
            self.chunk_size if op == "loglikelihood" else max(1, self.chunk_size // 8)
        )  # generation is slow
        for start in range(0, len(todo), size):
            chunk = todo[start : start + size]
            results = call([requests[missing[k][0]] for k in chunk])
            self._calls += len(chunk)
            method = getattr(self.inner, "scoring_method", None) if op == "loglikelihood" else None
            rows = []
            for k, res in zip(chunk, results, strict=True):
                for i in missing[k]:
                    out[i] = res
                value = {"result": dataclasses.asdict(res), "scoring_method": method}
                rows.append((k, op, json.dumps(value)))
            self._db.executemany("INSERT OR REPLACE INTO responses (key, op, value) VALUES (?, ?, ?)", rows)
            self._db.commit()
        return [r for r in out if r is not None]

    def _lookup(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):  # stay under SQLite's bound-parameter limit
            part = unique[start : start + 500]
            marks = ",".join("?" * len(part))
            for key, value in self._db.execute(
                f"SELECT key, value FROM responses WHERE key IN ({marks})", part
            ):
                found[key] = json.loads(value)
        return found

    def _key(self, op: str, request: LoglikRequest | GenRequest) -> str:
        doc = {
            "backend": self.inner.name,
            "model_id": self.inner.model_id,
            "op": op,
            "params": getattr(self.inner, "cache_params", {}),
            "request": dataclasses.asdict(request),
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
