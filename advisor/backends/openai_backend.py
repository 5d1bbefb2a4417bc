"""The OpenAI-compatible backend (OpenAI, vLLM, Ollama, llama.cpp's server) through the `openai` client.

Classification needs log-probabilities of each label as the reply. Servers differ in what they offer, so
the first scoring call probes, in this order, and records the method in `scoring_method` and why in
`scoring_note`:

- "echo": `/v1/completions` with `echo=True` and `logprobs` returns the log-probability of every prompt
  token, so the continuation is scored exactly like the local backend does. It needs the prompt text
  with the chat template applied, rendered client-side: only when a tokenizer folder is given.
- "chat_logprobs": `/v1/chat/completions` with `logprobs` and `top_logprobs`; a label scores the
  log-probability of the longest listed first token that starts it (labels sharing a first token tie).
- "generate": greedy chat generation; the label the reply starts with scores 0, the others
  `NO_MATCH_LOGPROB`. Not a log-probability: measurements that need one (domain perplexity) are skipped.

Requests run through a window of `concurrency` threads: at most that many are in flight, the next is sent
as soon as one finishes (no batch waits on its slowest request), and answers are kept by their index, so the
results do not depend on the concurrency.

Parameters a model refuses: OpenAI's reasoning models answer HTTP 400 "Unsupported parameter: 'max_tokens'
... Use 'max_completion_tokens' instead", and some refuse `temperature` or log-probabilities. Such a request
is sent again once with `max_completion_tokens` in place of `max_tokens`, or without the refused parameter,
and the choice holds for the backend's lifetime; `request_params` records what was sent and what was refused.

Faults: the `openai` client retries 408/409/429/5xx, timeouts and dropped connections itself
(`max_retries`), honouring `Retry-After`. Every attempt, retries included, counts against the hard
`RequestBudget`: a batch's first attempts are reserved before it is sent, each retry takes one more.
Each attempt may take `timeout` seconds in all: connecting, sending, the response headers and the body
(`_DeadlineBackend`: a server trickling its headers a byte at a time cannot stretch it). An answer larger than
`MAX_RESPONSE_BYTES` is refused while it is read; an answer that is not JSON, lacks what was asked for or
holds text that is not valid Unicode stops the run with a `BackendError` (and is never cached). A redirect
is not followed (see `_redirected`).

Secrets: the API key is held only by the client object: it never appears in a repr, a log line or an error
message, and its characters are checked before the first request (a key with a line break or a non-ASCII
character would fail every request as "Connection error"). A key in the base URL (``?key=``, ``/key/sk-..``)
is redacted in every URL tunegate shows or records (`model_id`, error messages).
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

from advisor.backends.base import GenRequest, GenResult, LoglikRequest, LoglikResult, OnDone
from advisor.errors import BackendError, BudgetError, ConfigError
from advisor.textsafe import redact_url, term_safe
from advisor.types import Message

SCORING_METHODS = ("echo", "chat_logprobs", "generate")
NO_MATCH_LOGPROB = -1e9  # a label the server never produced; finite so reports stay plain JSON
KEY_ENVS = ("TUNEGATE_API_KEY", "OPENAI_API_KEY")
URL_ENVS = ("TUNEGATE_BASE_URL", "OPENAI_BASE_URL")
MAX_MODEL_NAME = 256  # characters; a served model's name goes into every report
# The largest answer accepted. The biggest legitimate one is an echo of a full 8k-token context with a
# log-probability per token, about 1.5 MB; a 64-token generation is a few KB. Anything beyond is a
# misbehaving server, and it must not reach memory whole or the response cache.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
_TOP_LOGPROBS = 20  # OpenAI's maximum
_RETRYABLE_STATUS = (408, 409, 429)  # and every 5xx: what the openai client retries
# A parameter the server refuses for its model, and what is sent in its place (None: nothing).
_INSTEAD: dict[str, str | None] = {
    "max_tokens": "max_completion_tokens",
    "temperature": None,
    "logprobs": None,
    "top_logprobs": None,
}
_REFUSED_WITH = {"logprobs": ("top_logprobs",)}  # top_logprobs means nothing without logprobs
_REFUSAL = re.compile(r"Unsupported (?:parameter|value): '(\w+)'")
_PATHS = {"chat": "chat/completions", "completions": "completions"}
_SURROGATE = re.compile("[\ud800-\udfff]")
_T = TypeVar("_T")
_R = TypeVar("_R")


class _Unsupported(Exception):
    """The server rejected a request shape or left out what it asked for: a scoring method is unavailable."""


class _Malformed(Exception):
    """The server's answer is not what the API promises."""


class _Refused(Exception):
    """The server refused a parameter as unsupported by its model (HTTP 400): send the request again."""

    def __init__(self, param: str) -> None:
        super().__init__(param)
        self.param = param


@dataclass
class RequestBudget:
    """A hard cap on HTTP requests (every attempt, retries included) and tokens for a run; `None`: no cap."""

    max_requests: int | None = None
    max_tokens: int | None = None
    requests: int = 0
    tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def reserve(self, requests: int, tokens: int) -> None:
        """Count a batch's first attempts before it is sent; refuse (sending nothing) past a cap."""
        with self._lock:
            if self.max_requests is not None and self.requests + requests > self.max_requests:
                raise BudgetError(
                    f"request budget exhausted: {self.requests} of {self.max_requests} requests used "
                    f"(retries included), the next batch needs {requests}; raise --max-requests or use "
                    "fewer eval items"
                )
            if self.max_tokens is not None and self.tokens + tokens > self.max_tokens:
                raise BudgetError(
                    f"token budget exhausted: about {self.tokens} of {self.max_tokens} tokens used, "
                    f"the next batch needs about {tokens}; raise the budget or use fewer eval items"
                )
            self.requests += requests
            self.tokens += tokens

    def take_retries(self, wanted: int) -> int:
        """Count up to `wanted` retries of one request now (fewer near the cap); `give_back` the unused."""
        with self._lock:
            n = (
                wanted
                if self.max_requests is None
                else max(0, min(wanted, self.max_requests - self.requests))
            )
            self.requests += n
            return n

    def give_back(self, requests: int) -> None:
        with self._lock:
            self.requests -= requests

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
        if max_retries < 0:
            raise ConfigError(f"must be 0 or more, got {max_retries}", field="max_retries")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ConfigError(f"must be a positive number of seconds, got {timeout}", field="timeout")
        import openai

        base_url = _checked_base_url(base_url)
        self.base_url = base_url
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.budget = budget if budget is not None else RequestBudget()
        self.scoring_method: str | None = scoring_method
        self.scoring_note: str | None = "set by configuration" if scoring_method else None
        self._forced = scoring_method is not None
        key = _find_key(api_key_env)
        self._secret = key  # only for scrubbing error text; never formatted anywhere
        self.shown_url = redact_url(base_url or "https://api.openai.com/v1", (key,))
        # A local server needs no key, but the client insists on one.
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=key or "no-key",
            timeout=timeout,
            max_retries=max_retries,
            http_client=_http_client(openai, timeout),
        )
        # The same client with fewer retries, for when the request budget is nearly spent.
        self._clients = {max_retries: self._client}
        self._probed: dict[str, dict[str, Any]] = {}  # the probe's answer, reused by the identical request
        self._refused: dict[str, set[str]] = {}  # per endpoint: the parameters its model refused
        self._sent: dict[str, set[str]] = {}  # per endpoint: the parameters sent in its answered requests
        self._params_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.model = model or self._only_served_model()
        # Keys the cache and the rates file, and is recorded in decision.json: never with a secret in it.
        self.model_id = f"{self.model}@{self.shown_url}"
        self._tokenizer: Any = None
        self.tokenizer_dir = Path(tokenizer) if tokenizer is not None else None
        if self.tokenizer_dir is not None:
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)
            except (OSError, ValueError) as e:  # a missing folder, an unknown or offline Hub id
                raise ConfigError(
                    f"cannot load the tokenizer {str(tokenizer)!r} (a local folder or a Hub id): {_short(e)}",
                    field="tokenizer",
                ) from None
        self.exact_token_counts = self._tokenizer is not None
        self.cache_params: dict[str, Any] = {
            "scoring": scoring_method or "auto",
            "tokenizer": self.tokenizer_dir.name if self.tokenizer_dir else None,
        }
        self._detect_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAIBackend(base_url={self.shown_url!r}, model={self.model!r})"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    @property
    def request_params(self) -> dict[str, dict[str, list[str]]] | None:
        """Per API path: the parameters sent with the model's requests (`sent`) and those the server refused
        (`refused`: sent again without them, or `max_tokens` as `max_completion_tokens`); None before any."""
        with self._params_lock:
            used = sorted(self._sent.keys() | self._refused.keys())
            out: dict[str, dict[str, list[str]]] = {}
            for endpoint in used:
                out[_PATHS[endpoint]] = {"sent": sorted(self._sent.get(endpoint, ()))}
                if self._refused.get(endpoint):
                    out[_PATHS[endpoint]]["refused"] = sorted(self._refused[endpoint])
            return out or None

    def _only_served_model(self) -> str:
        """The model name when the server offers exactly one (a local server usually does)."""
        self.model = "(listing models)"  # for error messages from _call
        self.budget.reserve(1, 0)
        doc = self._call("models")
        data = doc.get("data")
        if not isinstance(data, list) or not all(
            isinstance(m, dict) and isinstance(m.get("id"), str) for m in data
        ):
            raise BackendError(
                self._scrub(f"{self._where()}: malformed answer: the model list has no 'data' ids")
            )
        names = [m["id"] for m in data]
        for name in names:
            if _SURROGATE.search(name) or not name.strip() or len(name) > MAX_MODEL_NAME:
                raise BackendError(
                    self._scrub(
                        f"{self._where()}: malformed answer: a model name in the list is not a usable name "
                        f"({_short(repr(name))}); name the model with --model"
                    )
                )
        if len(names) != 1:
            shown = term_safe(", ".join(names[:10]), single_line=True)[:600] or "none"
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
    def generate(
        self, requests: Sequence[GenRequest], on_done: OnDone[GenResult] | None = None
    ) -> list[GenResult]:
        estimates = [self._estimate(r.messages) + r.max_tokens for r in requests]
        self.budget.reserve(len(requests), sum(estimates))
        done = None if on_done is None else (lambda i, res: on_done([i], [res]))
        return self._map(self._generate_one, list(zip(requests, estimates, strict=True)), done)

    def _generate_one(self, item: tuple[GenRequest, int]) -> GenResult:
        r, estimate = item
        t0 = time.perf_counter()
        doc = self._call(
            "chat",
            model=self.model,
            messages=_chat(r.messages),
            max_tokens=r.max_tokens,
            temperature=0.0,
            stop=list(r.stop) or None,
        )
        latency = time.perf_counter() - t0
        text = _chat_text(_choice(doc))
        for s in r.stop:  # some servers leave the stop sequence in
            cut = text.find(s)
            if cut >= 0:
                text = text[:cut]
        prompt_tokens, completion_tokens = _usage(doc)
        self.budget.settle(estimate, prompt_tokens + completion_tokens or estimate)
        return GenResult(text, prompt_tokens, completion_tokens, latency)

    # ------------------------------------------------------------------------------ log-likelihood
    def loglikelihood(
        self, requests: Sequence[LoglikRequest], on_done: OnDone[LoglikResult] | None = None
    ) -> list[LoglikResult]:
        if not requests:
            return []
        self._ensure_method(requests[0])
        if self.scoring_method == "echo":
            estimates = [
                self._estimate(r.messages) + self.count_tokens([r.continuation])[0] + 1 for r in requests
            ]
            self.budget.reserve(len(requests), sum(estimates))
            done = None if on_done is None else (lambda i, res: on_done([i], [res]))
            return self._map(self._echo_one, list(zip(requests, estimates, strict=True)), done)
        # One request per distinct prompt scores all its labels.
        by_prompt: dict[tuple[Message, ...], list[int]] = {}
        for i, r in enumerate(requests):
            by_prompt.setdefault(r.messages, []).append(i)
        groups = [(msgs, [requests[i].continuation for i in idx]) for msgs, idx in by_prompt.items()]
        reply = self._max_reply_tokens(requests) if self.scoring_method == "generate" else 1
        estimates = [self._estimate(m) + reply for m, _ in groups]
        self.budget.reserve(len(groups), sum(estimates))
        one = self._chat_logprobs_one if self.scoring_method == "chat_logprobs" else self._generate_match_one
        index = list(by_prompt.values())

        def group_done(g: int, results: list[LoglikResult]) -> None:
            if on_done is not None:
                on_done(index[g], results)

        scored = self._map(
            one, [(m, c, e, reply) for (m, c), e in zip(groups, estimates, strict=True)], group_done
        )
        out: list[LoglikResult | None] = [None] * len(requests)
        for idx, results in zip(index, scored, strict=True):
            for i, res in zip(idx, results, strict=True):
                out[i] = res
        return [r for r in out if r is not None]

    def _ensure_method(self, sample: LoglikRequest) -> None:
        with self._detect_lock:
            if self.scoring_method is not None:
                return
            why = "echo: no tokenizer folder given to render prompts"
            if self._tokenizer is not None:
                self.budget.reserve(1, self._estimate(sample.messages) + 8)
                try:
                    self._answer(self._echo_one, (sample, 0), probing=True)
                    self.scoring_method, self.scoring_note = "echo", "prompt-token log-probabilities"
                    return
                except _Unsupported as e:
                    why = f"echo: {e}"
            self.budget.reserve(1, self._estimate(sample.messages) + 1)
            try:
                self._answer(
                    self._chat_logprobs_one, (sample.messages, [sample.continuation], 0, 1), probing=True
                )
                self.scoring_method, self.scoring_note = "chat_logprobs", f"first-token top_logprobs ({why})"
                return
            except _Unsupported as e:
                why += f"; chat: {e}"
            self._probed.clear()
            self.scoring_method = "generate"
            self.scoring_note = (
                f"the server gave no log-probabilities ({why}); a label scores 0 when the greedy reply "
                "starts with it"
            )

    def _echo_one(self, item: tuple[LoglikRequest, int]) -> LoglikResult:
        r, estimate = item
        prompt = self.render(r.messages)
        doc = self._call(
            "completions",
            probing=not self._forced and self.scoring_method is None,
            model=self.model,
            prompt=prompt + r.continuation,
            max_tokens=1,  # 0 means "no limit" on some servers; the one generated token is ignored
            temperature=0.0,
            echo=True,
            logprobs=1,
        )
        echoed = _echo_logprobs(_choice(doc))
        if echoed is None:
            raise _Unsupported("no prompt log-probabilities in the echo response")
        tokens, token_logprobs = echoed
        prompt_tokens, completion_tokens = _usage(doc)
        if estimate:
            self.budget.settle(estimate, prompt_tokens + completion_tokens or estimate)
        span = _continuation_span(tokens, r.continuation, completion_tokens)
        if span is None:
            raise _Unsupported("the continuation's tokens are not separable in the echo response")
        logprobs = token_logprobs[span[0] : span[1]]
        if any(x is None for x in logprobs):
            raise _Unsupported("the echo response has no log-probability for a continuation token")
        n = span[1] - span[0]
        return LoglikResult(float(sum(x for x in logprobs if x is not None)), n, max(prompt_tokens - n, 0))

    def _chat_logprobs_one(self, item: tuple[tuple[Message, ...], list[str], int, int]) -> list[LoglikResult]:
        messages, continuations, estimate, _ = item
        doc = self._call(
            "chat",
            probing=not self._forced and self.scoring_method is None,
            model=self.model,
            messages=_chat(messages),
            max_tokens=1,
            temperature=0.0,
            logprobs=True,
            top_logprobs=_TOP_LOGPROBS,
        )
        top = _top_logprobs(_choice(doc))
        if not top:
            raise _Unsupported("no top_logprobs in the chat response")
        floor = min(p for _, p in top) - 1.0  # below every listed token: not listed means less likely
        prompt_tokens, completion_tokens = _usage(doc)
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
        doc = self._call(
            "chat",
            model=self.model,
            messages=_chat(messages),
            max_tokens=reply,
            temperature=0.0,
        )
        text = _norm(_chat_text(_choice(doc)))
        prompt_tokens, completion_tokens = _usage(doc)
        self.budget.settle(estimate, prompt_tokens + completion_tokens or estimate)
        produced = [c for c in continuations if _norm(c) and text.startswith(_norm(c))]
        best = max(produced, key=lambda c: len(_norm(c))) if produced else None
        return [LoglikResult(0.0 if c == best else NO_MATCH_LOGPROB, 1, prompt_tokens) for c in continuations]

    def _max_reply_tokens(self, requests: Sequence[LoglikRequest]) -> int:
        longest = max(self.count_tokens([r.continuation for r in requests]), default=1)
        return min(longest + 2, 32)

    # ------------------------------------------------------------------------------------ plumbing
    def _map(
        self, fn: Callable[[_T], _R], items: list[_T], on_done: Callable[[int, _R], None] | None = None
    ) -> list[_R]:
        """`fn` over `items`, at most `concurrency` in flight; `on_done(i, result)` in this thread as each
        finishes, and the results in the order of `items`, whatever order they finished in.

        The next item is sent as soon as one finishes, and only the calls in flight exist as futures, so
        memory does not grow with the batch. On a failure nothing new is started, the calls in flight are
        awaited (and reported to `on_done` when they succeed, so their answers are not lost), and the first
        error is raised.
        """
        results: list[Any] = [None] * len(items)
        if self.concurrency == 1 or len(items) <= 1:
            for i, x in enumerate(items):
                results[i] = self._answer(fn, x)
                if on_done is not None:
                    on_done(i, results[i])
            return results
        pool = self._executor()
        waiting = iter(enumerate(items))
        running: dict[Future[_R], int] = {}
        error: BaseException | None = None
        try:
            while True:
                while error is None and len(running) < self.concurrency:
                    nxt = next(waiting, None)
                    if nxt is None:
                        break
                    running[pool.submit(self._answer, fn, nxt[1])] = nxt[0]
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    i = running.pop(fut)
                    try:
                        results[i] = fut.result()
                    except Exception as e:  # noqa: BLE001 (re-raised below, after the calls in flight)
                        error = error or e
                        continue
                    if on_done is not None:
                        on_done(i, results[i])
        finally:  # on Ctrl-C too: nothing more is sent, and the calls in flight end before this returns
            if running:
                wait(running)
        if error is not None:
            raise error
        return results

    def _executor(self) -> ThreadPoolExecutor:
        """The backend's `concurrency` worker threads, started on first use and kept until `close`."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="tunegate-openai")
            return self._pool

    def _answer(self, fn: Callable[[_T], _R], item: _T, *, probing: bool = False) -> _R:
        """`fn(item)`; a malformed answer (or, past the probe, a missing one) becomes a `BackendError`."""
        try:
            return fn(item)
        except _Malformed as e:
            raise BackendError(self._scrub(f"{self._where()}: malformed answer: {e}")) from None
        except _Unsupported as e:
            if probing:
                raise
            raise BackendError(
                self._scrub(f"{self._where()}: the server stopped answering as it did when probed: {e}")
            ) from None

    def _call(self, endpoint: str, *, probing: bool = False, **body: Any) -> dict[str, Any]:
        """One API call, as its parsed JSON object; the probe's answer is kept for the identical request.

        A parameter the server refuses for its model is left out (or renamed) from then on, and the request
        is sent again, counted in the budget like any other."""
        body = self._without_refused(endpoint, body)
        memo = endpoint + json.dumps(body, sort_keys=True)
        if memo in self._probed:
            self.budget.give_back(1)  # reserved for a request that is not sent
            return self._probed.pop(memo)
        while True:
            try:
                raw = self._send(endpoint, probing, body)
                break
            except _Refused as e:  # each refusal removes a parameter: this ends
                with self._params_lock:
                    refused = self._refused.setdefault(endpoint, set())
                    refused.update((e.param, *_REFUSED_WITH.get(e.param, ())))
                body = self._without_refused(endpoint, body)
                self.budget.reserve(1, 0)
        if endpoint in _PATHS:
            with self._params_lock:
                self._sent.setdefault(endpoint, set()).update(
                    k for k, v in body.items() if v is not None and k not in ("model", "messages", "prompt")
                )
        doc = _json_object(raw)
        if probing:
            self._probed[endpoint + json.dumps(body, sort_keys=True)] = doc
        return doc

    def _without_refused(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """`body` without the parameters this endpoint's model refused, `max_tokens` renamed where refused."""
        with self._params_lock:
            refused = set(self._refused.get(endpoint, ()))
        out: dict[str, Any] = {}
        for key, value in body.items():
            if key not in refused:
                out[key] = value
            elif _INSTEAD[key] is not None:
                out[str(_INSTEAD[key])] = value
        return out

    def _send(self, endpoint: str, probing: bool, body: dict[str, Any]) -> bytes:
        """The answer's bytes. The client retries (honouring Retry-After); each retry is budgeted."""
        import openai

        retries = self.budget.take_retries(self.max_retries)
        client = self._clients.get(retries)
        if client is None:
            client = self._clients[retries] = self._client.with_options(max_retries=retries)
        taken = retries
        try:
            if endpoint == "models":
                ctx = client.models.with_streaming_response.list()
            elif endpoint == "chat":
                ctx = client.chat.completions.with_streaming_response.create(**body)
            else:
                ctx = client.completions.with_streaming_response.create(**body)
            with ctx as resp:
                taken = int(getattr(resp, "retries_taken", retries))
                return self._read(resp, taken)
        except openai.APIStatusError as e:
            taken = _retries_taken(e, retries)
            if 300 <= e.status_code < 400:
                raise BackendError(self._redirected(e)) from None
            refused = _refused_param(e)
            if refused in body:
                raise _Refused(refused) from None
            if probing and e.status_code in (400, 404, 405, 422):
                raise _Unsupported(self._scrub(_say(e))) from None
            retryable = e.status_code in _RETRYABLE_STATUS or e.status_code >= 500
            if retryable and taken == retries < self.max_retries:  # the budget, not the server, ended it
                raise BudgetError(
                    f"request budget exhausted: {self.budget.max_requests} requests used (retries included) "
                    f"while {self._where()} answered HTTP {e.status_code}; raise --max-requests"
                ) from None
            tries = f"gave up after {_tries(taken + 1)}: " if retryable else ""
            raise BackendError(self._scrub(f"{self._where()}: {tries}{_say(e)}")) from None
        except openai.APITimeoutError as e:
            taken = _retries_taken(e, retries)
            raise BackendError(self._timed_out(taken)) from None
        except openai.APIConnectionError as e:
            taken = _retries_taken(e, retries)
            raise BackendError(
                self._scrub(f"{self._where()}: gave up after {_tries(taken + 1)}: {_say(e)}")
            ) from None
        finally:
            self.budget.give_back(retries - taken)

    def _read(self, resp: Any, taken: int) -> bytes:
        """The body, refused past `MAX_RESPONSE_BYTES` (by its declared length, else as it arrives) or when it
        takes longer than the timeout to arrive."""
        too_big = self._scrub(
            f"{self._where()}: refused an answer larger than {MAX_RESPONSE_BYTES // (1024 * 1024)} MiB "
            "(nothing of it is cached)"
        )
        length = str(resp.headers.get("content-length") or "")
        if length.isdigit() and int(length) > MAX_RESPONSE_BYTES:
            raise BackendError(too_big)
        chunks, size = [], 0
        deadline = time.monotonic() + self.timeout  # a body trickling in byte by byte never times out a read
        try:
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise BackendError(too_big)
                if time.monotonic() > deadline:
                    raise BackendError(self._timed_out(taken))
                chunks.append(chunk)
        except BackendError:
            raise
        except Exception as e:  # noqa: BLE001 (the HTTP library's own errors, whichever library the client uses)
            if "timeout" in type(e).__name__.lower():
                raise BackendError(self._timed_out(taken)) from None
            raise BackendError(
                self._scrub(f"{self._where()}: the answer broke off after {size} bytes ({type(e).__name__})")
            ) from None
        return b"".join(chunks)

    def _redirected(self, e: Any) -> str:
        """A redirect is never followed, to the same server or another: 301, 302 and 303 turn the POST into a
        body-less GET, a 307 or 308 to another host would send the prompts (and the key, if the client kept
        it) there, and answers from another address must not be scored as this server's. Naming both URLs
        lets the user point --base-url at the right one."""
        response = getattr(e, "response", None)
        asked = str(getattr(getattr(response, "request", None), "url", "") or self.shown_url)
        target = str(response.headers.get("location") or "") if response is not None else ""
        target = urljoin(asked, target) if target else "(no Location header)"
        return self._scrub(
            f"{self._where()}: the server redirected {asked} to {target} (HTTP {e.status_code}); tunegate "
            "does not follow redirects: if the new address is the right server, pass it as --base-url"
        )

    def _timed_out(self, taken: int) -> str:
        return self._scrub(
            f"{self._where()}: no answer within {self.timeout:g} s ({_tries(taken + 1)}); "
            "check the server or raise --timeout"
        )

    def _where(self) -> str:
        return f"{self.shown_url} (model {self.model})"

    def _scrub(self, text: str) -> str:
        """`text` without the key and the secrets of any URL in it, on one line, control characters shown."""
        return term_safe(redact_url(text, (self._secret,)), single_line=True)


def _find_key(api_key_env: str | None) -> str | None:
    """The API key from the first variable set, checked: an HTTP header takes printable ASCII only, so a key
    with a line break (pasted from a file) or a non-ASCII character would fail every request."""
    names = (api_key_env,) if api_key_env else KEY_ENVS
    for name in names:
        value = os.environ.get(name)
        if value:
            bad = next((c for c in value if not "!" <= c <= "~"), None)
            if bad is not None:
                what = (
                    "a line break" if bad in "\r\n" else "a space or tab" if bad in " \t" else
                    "a control character" if ord(bad) < 0x20 or ord(bad) == 0x7F else "a non-ASCII character"
                )  # fmt: skip
                raise ConfigError(
                    f"the API key holds {what} at character {value.index(bad) + 1} of {len(value)}; an API "
                    "key is printable ASCII: set the variable again without it",
                    field=f"${name}",
                )
            return value
    return None


def _checked_base_url(base_url: str | None) -> str | None:
    """The server URL, from the caller or (when None) the environment, refused with exit 2 naming where it
    came from when it is blank or not an http(s) address with a host: tried as it is, it would fail every
    request as "Connection error" after all the retries."""
    if base_url is None:
        name = next((n for n in URL_ENVS if n in os.environ), None)
        if name is None:
            return None
        base_url = os.environ[name]
    where = next((f"${n}" for n in URL_ENVS if os.environ.get(n) == base_url), "base_url")
    shown = redact_url(term_safe(base_url, single_line=True))
    if not base_url.strip():
        raise ConfigError("the server URL is blank: set it to the server's address, or unset it", field=where)
    parts = urlsplit(base_url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or base_url != base_url.strip()
        or term_safe(base_url, single_line=True) != base_url
        or any(c.isspace() for c in base_url)
    ):
        raise ConfigError(
            f"the server URL {shown!r} is not an http(s) address with a host (such as http://127.0.0.1:8080/v1)",
            field=where,
        )
    return base_url


_attempt = threading.local()  # .deadline: time.monotonic() when the HTTP attempt in this thread must end


def _left(timeout: float | None) -> float | None:
    """The timeout for one socket operation: what is left of this thread's attempt, if less."""
    deadline = getattr(_attempt, "deadline", None)
    if deadline is None:
        return timeout
    left = max(deadline - time.monotonic(), 1e-6)  # 0 would make the socket non-blocking
    return left if timeout is None else min(timeout, left)


class _DeadlineStream:
    """A connection whose every read and write waits at most until the attempt's deadline."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return bytes(self._inner.read(max_bytes, _left(timeout)))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> Any:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _left(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend:
    """httpcore's network backend, with connections that keep the attempt's deadline.

    httpcore gives each socket operation the read (or connect, write) timeout afresh, so a server sending
    one byte of its headers every half second never trips a 3 s read timeout. Here each operation gets
    at most what is left of the attempt: connecting, TLS, sending, the headers and the body together."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> _DeadlineStream:
        return _DeadlineStream(
            self._inner.connect_tcp(host, port, _left(timeout), local_address, socket_options)
        )

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
        return _DeadlineStream(self._inner.connect_unix_socket(path, _left(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _http_client(openai: Any, timeout: float) -> Any:
    """The HTTP client under the `openai` client: its own default (proxies from the environment included),
    except that it follows no redirect and each attempt must end within `timeout` seconds in all.

    The attempt's deadline is set as the client sends it (a request hook, in the sending thread; the
    client's retries are new attempts) and kept by every connection of the client's connection pools."""

    def start_attempt(request: Any) -> None:
        _attempt.deadline = time.monotonic() + timeout

    client = openai.DefaultHttpxClient(
        timeout=timeout, follow_redirects=False, event_hooks={"request": [start_attempt]}
    )
    # httpx does not expose the pools' network backend; httpx and httpx2 (and httpcore 1 and 2) name it alike.
    transports = [client._transport, *(t for t in client._mounts.values() if t is not None)]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        if pool is None or not hasattr(pool, "_network_backend"):
            raise RuntimeError(
                f"unknown HTTP transport {type(transport).__name__}: cannot bound its attempts"
            )
        pool._network_backend = _DeadlineBackend(pool._network_backend)
    return client


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


def _refused_param(e: Any) -> str | None:
    """The parameter an HTTP 400 refuses as unsupported by the model, when it is one that can be left out.

    OpenAI's shape: {"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this
    model. Use 'max_completion_tokens' instead.", "type": "invalid_request_error", "param": "max_tokens",
    "code": "unsupported_parameter"}} (or "unsupported_value" for a temperature other than the default);
    servers that give only the message are read by its text."""
    if getattr(e, "status_code", None) != 400:
        return None
    param = getattr(e, "param", None)
    if not (str(getattr(e, "code", "") or "").startswith("unsupported") and isinstance(param, str)):
        found = _REFUSAL.search(str(getattr(e, "message", "")))
        param = found.group(1) if found else None
    return param if param in _INSTEAD else None


def _chat(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _usage(doc: dict[str, Any]) -> tuple[int, int]:
    u = doc.get("usage")
    if u is None:
        return 0, 0
    if not isinstance(u, dict):
        raise _Malformed("'usage' is not an object")
    counts = []
    for name in ("prompt_tokens", "completion_tokens"):
        v = u.get(name)
        if v is None:
            v = 0
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 10**9:
            raise _Malformed(f"'usage.{name}' is not a token count")
        counts.append(v)
    return counts[0], counts[1]


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _Malformed(f"not valid JSON ({_short(e)})") from None
    if not isinstance(doc, dict):
        raise _Malformed("not a JSON object")
    return doc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _choice(doc: dict[str, Any]) -> dict[str, Any]:
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _Malformed("no 'choices' list")
    return choices[0]


def _chat_text(choice: dict[str, Any]) -> str:
    message = choice.get("message")
    if not isinstance(message, dict):
        raise _Malformed("the choice has no 'message' object")
    content = message.get("content")
    if content is None:
        return ""
    if not isinstance(content, str):
        raise _Malformed("'message.content' is not text")
    if _SURROGATE.search(content):
        raise _Malformed("'message.content' holds a lone UTF-16 surrogate, which is not valid Unicode text")
    return content


def _is_logprob(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x <= 1e-6


def _top_logprobs(choice: dict[str, Any]) -> list[tuple[str, float]] | None:
    """The first generated token's listed alternatives, or None when the answer has none."""
    lp = choice.get("logprobs")
    if lp is None:
        return None
    if not isinstance(lp, dict):
        raise _Malformed("'logprobs' is not an object")
    content = lp.get("content")
    if not content:
        return None
    if not isinstance(content, list) or not isinstance(content[0], dict):
        raise _Malformed("'logprobs.content' is not a list of tokens")
    top = content[0].get("top_logprobs")
    if not top:
        return None
    if not isinstance(top, list) or not all(
        isinstance(t, dict) and isinstance(t.get("token"), str) and _is_logprob(t.get("logprob")) for t in top
    ):
        raise _Malformed("a 'top_logprobs' entry lacks a token or a log-probability")
    return [(t["token"], float(t["logprob"])) for t in top]


def _echo_logprobs(choice: dict[str, Any]) -> tuple[list[str], list[float | None]] | None:
    """The echoed prompt's tokens and their log-probabilities, or None when the answer has none."""
    lp = choice.get("logprobs")
    if lp is None:
        return None
    if not isinstance(lp, dict):
        raise _Malformed("'logprobs' is not an object")
    tokens, logprobs = lp.get("tokens"), lp.get("token_logprobs")
    if not tokens or not logprobs:
        return None
    if (
        not isinstance(tokens, list)
        or not isinstance(logprobs, list)
        or len(tokens) != len(logprobs)
        or not all(isinstance(t, str) for t in tokens)
        or not all(x is None or _is_logprob(x) for x in logprobs)
    ):
        raise _Malformed("'logprobs.tokens' and 'logprobs.token_logprobs' do not match")
    return tokens, [None if x is None else float(x) for x in logprobs]


def _retries_taken(e: Exception, default: int) -> int:
    """The retry count the client sent with its last attempt (its `x-stainless-retry-count` header)."""
    request = getattr(e, "request", None)
    try:
        return int(request.headers["x-stainless-retry-count"])  # type: ignore[union-attr]
    except (AttributeError, KeyError, TypeError, ValueError):
        return default


def _tries(n: int) -> str:
    return "1 try" if n == 1 else f"{n} tries"


def _short(e: Exception | str) -> str:
    """The first line of a message (an exception's, often holding the server's text), cut to 200 characters,
    control characters and lone surrogates made visible."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return term_safe(text[:200], single_line=True)


def _norm(text: str) -> str:
    return text.strip().strip(".!\"'`*").strip().casefold()


def _say(e: Exception) -> str:
    status = getattr(e, "status_code", None)
    return f"{type(e).__name__}" + (f" (HTTP {status})" if status else "") + f": {_short(e)}"
