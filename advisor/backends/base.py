"""The one small protocol every model backend implements: batch in, batch out.

Requests carry chat messages; the backend applies its chat template (with the generation prompt)
itself, so a local model and a server score exactly the same conversation. A backend calls `on_done`
with each finished part of a batch as soon as it has it (the response cache stores it at once, so a
killed run repeats no finished call); a backend that finishes a batch at once calls it once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from advisor.types import Message


@dataclass(frozen=True)
class LoglikRequest:
    """Log-probability of `continuation` as the assistant's reply to `messages`."""

    messages: tuple[Message, ...]
    continuation: str


@dataclass(frozen=True)
class LoglikResult:
    logprob: float  # sum over the continuation's tokens
    n_tokens: int  # continuation tokens scored
    prompt_tokens: int  # tokens in the rendered prompt


@dataclass(frozen=True)
class GenRequest:
    """Greedy generation of the assistant's reply to `messages`."""

    messages: tuple[Message, ...]
    max_tokens: int = 64
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float


BATCH_ROUNDS = 8
"""A batch for a backend that sends requests concurrently holds at least this many times its concurrency:
between two batches its window drains (fewer requests in flight while the last ones finish), and over
eight rounds that tail is a small share of the batch's time."""


def batch_size(backend: object, default: int) -> int:
    """Requests per batch: `default`, or more for a backend whose `concurrency` window must stay full."""
    concurrency = getattr(backend, "concurrency", None)
    if isinstance(concurrency, int) and not isinstance(concurrency, bool):
        return max(default, BATCH_ROUNDS * concurrency)
    return default


_Res = TypeVar("_Res", LoglikResult, GenResult)
# on_done(indexes into the batch, their results), called in the caller's thread.
OnDone = Callable[[Sequence[int], Sequence[_Res]], None]


class Backend(Protocol):
    """What the evaluation harness needs from a model."""

    name: str  # "hf" or "openai"
    model_id: str  # what the cache keys on, e.g. a model folder's hash or a server's model name

    def loglikelihood(
        self, requests: Sequence[LoglikRequest], on_done: OnDone[LoglikResult] | None = None
    ) -> list[LoglikResult]: ...

    def generate(
        self, requests: Sequence[GenRequest], on_done: OnDone[GenResult] | None = None
    ) -> list[GenResult]: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt text for `messages` with the chat template and the generation prompt applied."""
        ...
