"""The OpenAI-compatible backend (OpenAI, vLLM, Ollama, llama.cpp's server) through the `openai` client.

Classification needs log-probabilities of each label as the reply. Servers differ in what they offer, so
the first scoring call probes, in this order, and records the method in `scoring_method`:

- "echo": `/v1/completions` with `echo=True` and `logprobs` returns the log-probability of every prompt
  token, so the continuation is scored exactly like the local backend does. It needs the prompt text
  with the chat template applied, rendered client-side: only when a tokenizer folder is given.
- "chat_logprobs": `/v1/chat/completions` with `logprobs` and `top_logprobs`; a label scores the
  log-probability of the longest listed first token that starts it (labels sharing a first token tie).
- "generate": greedy chat generation; the label the reply starts with scores 0, the others
  `NO_MATCH_LOGPROB`.

Every request is counted against a hard `RequestBudget`, reserved before it is sent. The API key is held
only by the client object: it never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from advisor.backends.base import GenRequest, GenResult, LoglikRequest, LoglikResult
from advisor.errors import BackendError, BudgetError, ConfigError
from advisor.types import Message

SCORING_METHODS = ("echo", "chat_logprobs", "generate")
NO_MATCH_LOGPROB = -1e9  # a label the server never produced; finite so reports stay plain JSON
KEY_ENVS = ("TUNEGATE_API_KEY", "OPENAI_API_KEY")
_TOP_LOGPROBS = 20  # OpenAI's maximum
_T = TypeVar("_T")
_R = TypeVar("_R")


class _Unsupported(Exception):
    """The server rejected a request shape (so a scoring method is not available)."""


@dataclass
class RequestBudget:
    """A hard cap on requests and tokens for one run; `None` means no cap."""

    max_requests: int | None = None
    max_tokens: int | None = None
    requests: int = 0
    tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def reserve(self, requests: int, tokens: int) -> None:
        """Count a batch before sending it; refuse (sending nothing) when it would pass a cap."""
        with self._lock:
            if self.max_requests is not None and self.requests + requests > self.max_requests:
                raise BudgetError(
                    f"request budget exhausted: {self.requests} of {self.max_requests} requests used, "
                    f"the next batch needs {requests}; raise the budget or use fewer eval items"
                )
            if self.max_tokens is not None and self.tokens + tokens > self.max_tokens:
                raise BudgetError(
                    f"token budget exhausted: about {self.tokens} of {self.max_tokens} tokens used, "
                    f"the next batch needs about {tokens}; raise the budget or use fewer eval items"
                )
            self.requests += requests
            self.tokens += tokens

    def settle(self, estimated: int, actual: int) -> None:
        """Replace a reservation's token estimate by what the server reported."""
        with self._lock:
            self.tokens += actual - estimated


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        base_url: str | None,
        model: str | None,
        *,
        api_key_env: str | None = None,
        tokenizer: str | Path | None = None,
        scoring_method: str | None = None,
        concurrency: int = 4,
        max_retries: int = 5,
        timeout: float = 60.0,
        backoff_s: float = 0.5,
        budget: RequestBudget | None = None,
    ) -> None:
        if scoring_method is not None and scoring_method not in SCORING_METHODS:
            raise ConfigError(
                f"unknown scoring method {scoring_method!r}; allowed: {', '.join(SCORING_METHODS)}",
                field="scoring_method",
            )
        if scoring_method == "echo" and tokenizer is None:
            raise ConfigError(
                "scoring method 'echo' needs a tokenizer folder to render prompts", field="tokenizer"
            )
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}", field="concurrency")
        import openai

        self.base_url = base_url
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.budget = budget if budget is not None else RequestBudget()
        self.scoring_method: str | None = scoring_method
        self._forced = scoring_method is not None
        key = _find_key(api_key_env)
        self._secret = key  # only for scrubbing error text; never formatted anywhere
        # A local server needs no key, but the client insists on one.
        self._client = openai.OpenAI(
            base_url=base_url, api_key=key or "no-key", timeout=timeout, max_retries=0
        )
        self.model = model or self._only_served_model()
        self.model_id = f"{self.model}@{base_url or 'https://api.openai.com/v1'}"
        self._tokenizer: Any = None
        self.tokenizer_dir = Path(tokenizer) if tokenizer is not None else None
        if self.tokenizer_dir is not None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)
        self.exact_token_counts = self._tokenizer is not None
        self.cache_params: dict[str, Any] = {
            "scoring": scoring_method or "auto",
            "tokenizer": self.tokenizer_dir.name if self.tokenizer_dir else None,
        }
        self._detect_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r})"

    def close(self) -> None:
        self._client.close()

    def _only_served_model(self) -> str:
        """The model name when the server offers exactly one (a local server usually does)."""
        self.model = "(listing models)"  # for error messages from _call
        names = [m.id for m in self._call(self._client.models.list)]
        if len(names) != 1:
            shown = ", ".join(names[:10]) or "none"
            raise ConfigError(f"the server offers {len(names)} models ({shown}); name one", field="model")
        return names[0]

    # ----------------------------------------------------------------------------------------- text
    def render(self, messages: Sequence[Message]) -> str:
        conversation = [{"role": m.role, "content": m.content} for m in messages]
        if self._tokenizer is not None:
            return str(
                self._tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
            )
        # Without the model's tokenizer the exact template is the server's secret; this is for display.
        return "".join(f"{m.role}: {m.content}\n" for m in messages) + "assistant: "

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Exact with a tokenizer folder; otherwise an over-estimate (3 characters a token)."""
        if self._tokenizer is not None:
            return [len(self._tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        return [math.ceil(len(t) / 3) for t in texts]

    def _estimate(self, messages: Sequence[Message]) -> int:
        if self._tokenizer is not None:
            return self.count_tokens([self.render(messages)])[0]
        return sum(self.count_tokens([m.content])[0] + 4 for m in messages) + 3

    # ---------------------------------------------------------------------------------- generation
    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        estimates = [self._estimate(r.messages) + r.max_tokens for r in requests]
        self.budget.reserve(len(requests), sum(estimates))
        return self._map(self._generate_one, list(zip(requests, estimates, strict=True)))

    def _generate_one(self, item: tuple[GenRequest, int]) -> GenResult:
        r, estimate = item
        t0 = time.perf_counter()
        resp = self._call(
            self._client.chat.completions.create,
            model=self.model,
            messages=_chat(r.messages),
            max_tokens=r.max_tokens,
            temperature=0.0,
            stop=list(r.stop) or None,
        )
        latency = time.perf_counter() - t0
        text = resp.choices[0].message.content or ""
        for s in r.stop:  # some servers leave the stop sequence in
            cut = text.find(s)
            if cut >= 0:
                text = text[:cut]
        prompt_tokens, completion_tokens = _usage(resp)
        self.budget.settle(estimate, prompt_tokens + completion_tokens or estimate)
        return GenResult(text, prompt_tokens, completion_tokens, latency)

    # ------------------------------------------------------------------------------ log-likelihood
    def loglikelihood(self, requests: Sequence[LoglikRequest]) -> list[LoglikResult]:
        if not requests:
            return []
        self._ensure_method(requests[0])
        if self.scoring_method == "echo":
            estimates = [
                self._estimate(r.messages) + self.count_tokens([r.continuation])[0] + 1 for r in requests
            ]
            self.budget.reserve(len(requests), sum(estimates))
            return self._map(self._echo_one, list(zip(requests, estimates, strict=True)))
        # One request per distinct prompt scores all its labels.
        by_prompt: dict[tuple[Message, ...], list[int]] = {}
        for i, r in enumerate(requests):
            by_prompt.setdefault(r.messages, []).append(i)
        groups = [(msgs, [requests[i].continuation for i in idx]) for msgs, idx in by_prompt.items()]
        reply = self._max_reply_tokens(requests) if self.scoring_method == "generate" else 1
        estimates = [self._estimate(m) + reply for m, _ in groups]
        self.budget.reserve(len(groups), sum(estimates))
        one = self._chat_logprobs_one if self.scoring_method == "chat_logprobs" else self._generate_match_one
        scored = self._map(one, [(m, c, e, reply) for (m, c), e in zip(groups, estimates, strict=True)])
        out: list[LoglikResult | None] = [None] * len(requests)
        for (msgs, _), results in zip(groups, scored, strict=True):
            for i, res in zip(by_prompt[msgs], results, strict=True):
                out[i] = res
        return [r for r in out if r is not None]

    def _ensure_method(self, sample: LoglikRequest) -> None:
        with self._detect_lock:
            if self.scoring_method is not None:
                return
            if self._tokenizer is not None:
                self.budget.reserve(1, self._estimate(sample.messages) + 8)
                try:
                    if self._echo_one((sample, 0)).n_tokens > 0:
                        self.scoring_method = "echo"
                        return
                except _Unsupported:
                    pass
            self.budget.reserve(1, self._estimate(sample.messages) + 1)
            try:
                res = self._chat_logprobs_one((sample.messages, [sample.continuation], 0, 1))
                if res and res[0].n_tokens > 0:
                    self.scoring_method = "chat_logprobs"
                    return
            except _Unsupported:
                pass
            self.scoring_method = "generate"

    def _echo_one(self, item: tuple[LoglikRequest, int]) -> LoglikResult:
        r, estimate = item
        prompt = self.render(r.messages)
        resp = self._call(
            self._client.completions.create,
            probing=not self._forced and self.scoring_method is None,
            model=self.model,
            prompt=prompt + r.continuation,
            max_tokens=1,  # 0 means "no limit" on some servers; the one generated token is ignored
            temperature=0.0,
            echo=True,
            logprobs=1,
        )
        lp = resp.choices[0].logprobs
        if lp is None or not lp.tokens or not lp.token_logprobs:
            raise _Unsupported("no prompt log-probabilities in the echo response")
        prompt_tokens, completion_tokens = _usage(resp)
        if estimate:
            self.budget.settle(estimate, prompt_tokens + completion_tokens or estimate)
        span = _continuation_span(list(lp.tokens), r.continuation, completion_tokens)
        if span is None:
            raise _Unsupported("the continuation's tokens are not separable in the echo response")
        logprobs = list(lp.token_logprobs)[span[0] : span[1]]
        if any(x is None for x in logprobs):
            raise _Unsupported("the echo response has no log-probability for a continuation token")
        n = span[1] - span[0]
        return LoglikResult(float(sum(logprobs)), n, max(prompt_tokens - n, 0))

    def _chat_logprobs_one(self, item: tuple[tuple[Message, ...], list[str], int, int]) -> list[LoglikResult]:
        messages, continuations, estimate, _ = item
        resp = self._call(
            self._client.chat.completions.create,
            probing=not self._forced and self.scoring_method is None,
            model=self.model,
            messages=_chat(messages),
            max_tokens=1,
            temperature=0.0,
            logprobs=True,
            top_logprobs=_TOP_LOGPROBS,
        )
        lp = resp.choices[0].logprobs
        content = lp.content if lp is not None else None
        if not content or not content[0].top_logprobs:
            raise _Unsupported("no top_logprobs in the chat response")
        top = [(t.token, t.logprob) for t in content[0].top_logprobs]
        floor = min(p for _, p in top) - 1.0  # below every listed token: not listed means less likely
        prompt_tokens, completion_tokens = _usage(resp)
        if estimate:
            self.budget.settle(estimate, prompt_tokens + completion_tokens or estimate)
        results = []
        for c in continuations:
            matches = [(len(tok), p) for tok, p in top if tok and c.startswith(tok)]
            logprob = max(matches)[1] if matches else floor
            results.append(LoglikResult(logprob, 1, prompt_tokens))
        return results

    def _generate_match_one(
        self, item: tuple[tuple[Message, ...], list[str], int, int]
    ) -> list[LoglikResult]:
        messages, continuations, estimate, reply = item
        resp = self._call(
            self._client.chat.completions.create,
            model=self.model,
            messages=_chat(messages),
            max_tokens=reply,
            temperature=0.0,
        )
        text = _norm(resp.choices[0].message.content or "")
        prompt_tokens, completion_tokens = _usage(resp)
        self.budget.settle(estimate, prompt_tokens + completion_tokens or estimate)
        produced = [c for c in continuations if _norm(c) and text.startswith(_norm(c))]
        best = max(produced, key=lambda c: len(_norm(c))) if produced else None
        return [LoglikResult(0.0 if c == best else NO_MATCH_LOGPROB, 1, prompt_tokens) for c in continuations]

    def _max_reply_tokens(self, requests: Sequence[LoglikRequest]) -> int:
        longest = max(self.count_tokens([r.continuation for r in requests]), default=1)
        return min(longest + 2, 32)

    # ------------------------------------------------------------------------------------ plumbing
    def _map(self, fn: Callable[[_T], _R], items: list[_T]) -> list[_R]:
        if self.concurrency == 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(fn, items))

    def _call(self, fn: Callable[..., Any], *, probing: bool = False, **kwargs: Any) -> Any:
        """One API call with retries on 429, 5xx, timeouts and dropped connections (exponential backoff)."""
        import openai

        # APIConnectionError covers timeouts; InternalServerError is every 5xx.
        retryable = (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError)
        for attempt in range(self.max_retries + 1):
            try:
                return fn(**kwargs)
            except retryable as e:
                if attempt == self.max_retries:
                    raise BackendError(
                        self._scrub(f"{self._where()}: gave up after {attempt + 1} tries: {_say(e)}")
                    ) from None
                delay = self.backoff_s * 2**attempt
                time.sleep(delay * (0.5 + random.random() / 2))  # jitter spreads the threads' retries
            except openai.APIStatusError as e:
                if probing and e.status_code in (400, 404, 405, 422):
                    raise _Unsupported(self._scrub(_say(e))) from None
                raise BackendError(self._scrub(f"{self._where()}: {_say(e)}")) from None
        raise AssertionError("unreachable")

    def _where(self) -> str:
        return f"{self.base_url or 'OpenAI'} (model {self.model})"

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text


def _find_key(api_key_env: str | None) -> str | None:
    names = (api_key_env,) if api_key_env else KEY_ENVS
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def _continuation_span(tokens: list[str], continuation: str, generated: int) -> tuple[int, int] | None:
    """Where the continuation's tokens sit in an echoed prompt, found from the end.

    Servers render special tokens (the chat template's markers) differently in `text_offset`, so the
    span is found by text: the tokens just before the generated ones must spell the continuation exactly.
    """
    for tail in dict.fromkeys((generated, 1, 0, 2)):
        end = len(tokens) - tail
        text, start = "", end
        while start > 0 and len(text) < len(continuation):
            start -= 1
            text = tokens[start] + text
        if text == continuation and start < end:
            return start, end
    return None


def _chat(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _usage(resp: Any) -> tuple[int, int]:
    u = getattr(resp, "usage", None)
    if u is None:
        return 0, 0
    return int(u.prompt_tokens or 0), int(u.completion_tokens or 0)


def _norm(text: str) -> str:
    return text.strip().strip(".!\"'`*").strip().casefold()


def _say(e: Exception) -> str:
    status = getattr(e, "status_code", None)
    return f"{type(e).__name__}" + (f" (HTTP {status})" if status else "") + f": {e}"
