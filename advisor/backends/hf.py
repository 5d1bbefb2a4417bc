"""The local backend: a Hugging Face causal LM through transformers, on CPU or GPU.

Scoring many requests that share a prefix is the common case here: every item of a k-shot arm starts
with the same system prompt and demonstrations, and every label of an item shares that item's prompt.
With `prefix_reuse` (the default) each batch of distinct prompts is run in three steps:

1. the prompts' longest common token prefix, once (its KV cache is kept for the next call too);
2. each prompt's remaining tokens, batched, on top of that cache (one row per distinct prompt); the
   last position gives every continuation's first token, so single-token labels are done here;
3. continuations of several tokens, batched, on top of their prompt's row (one row per request).

Rows are left-padded and carry explicit position ids, so padding in the middle of a row is masked out
and the result equals scoring every request on its own (tested to 1e-4).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advisor.backends.base import GenRequest, GenResult, LoglikRequest, LoglikResult, OnDone
from advisor.backends.model import ModelSource
from advisor.errors import BackendError
from advisor.types import Message

NO_CHAT_TEMPLATE = (
    "the tokenizer has no chat template; tunegate scores and fine-tunes chat conversations, so use an "
    "instruction-tuned model (or add a chat_template to tokenizer_config.json)"
)


def has_chat_template(tokenizer: Any) -> bool:
    """Whether `tokenizer` (transformers) renders chats: one test for the arms' model and the candidate."""
    return bool(getattr(tokenizer, "chat_template", None))


def chat_template_problem(model_dir: str | Path) -> str | None:
    """Why the folder's tokenizer cannot render a chat (None: it can), read as HFBackend reads it, without
    loading the weights: a check that can run before any model call."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its tokenizer cannot be loaded ({type(exc).__name__}: {str(exc)[:120]})"
    return None if has_chat_template(tokenizer) else NO_CHAT_TEMPLATE


if TYPE_CHECKING:
    import torch

_SMALL_FILE = 64 * 1024 * 1024  # files below this size are content-hashed for the model id


class HFBackend:
    name = "hf"

    def __init__(
        self,
        model_dir: str | Path,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 16,
        prefix_reuse: bool = True,
        source: ModelSource | None = None,
    ) -> None:
        """`source` says where `model_dir` came from (see `advisor.backends.model.resolve_model`); its
        label (else the folder's name) starts `model_id`."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_dir = Path(model_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = dtype or ("bfloat16" if self.device.startswith("cuda") else "float32")
        if batch_size < 1:
            raise BackendError(f"batch_size must be at least 1, got {batch_size}", field="batch_size")
        self.batch_size = batch_size
        self.prefix_reuse = prefix_reuse
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        if not has_chat_template(self.tokenizer):
            raise BackendError(f"{self.model_dir}: {NO_CHAT_TEMPLATE}")
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=getattr(torch, self.dtype))
        self.model.to(self.device).eval()  # type: ignore[arg-type]
        pad = self.tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        self.source = source
        label = source.label if source is not None else self.model_dir.name
        self.model_id = f"{label}:{_fingerprint(self.model_dir)}:{self.dtype}"
        self.cache_params: dict[str, Any] = {"dtype": self.dtype}
        self._prefix_memo: tuple[tuple[int, ...], Any] | None = None
        # transformers 5.24 renamed `past_key_values` to `cache`; earlier 5.x releases know only the old name.
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def __repr__(self) -> str:
        return f"HFBackend(model_dir={str(self.model_dir)!r}, device={self.device!r}, dtype={self.dtype!r})"

    # ----------------------------------------------------------------------------------------- text
    def render(self, messages: Sequence[Message]) -> str:
        conversation = [{"role": m.role, "content": m.content} for m in messages]
        text = self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        return str(text)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(self._ids(t)) for t in texts]

    def _ids(self, text: str) -> list[int]:
        # The chat template already writes any BOS it wants into the text.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ------------------------------------------------------------------------------ log-likelihood
    def loglikelihood(
        self, requests: Sequence[LoglikRequest], on_done: OnDone[LoglikResult] | None = None
    ) -> list[LoglikResult]:
        prompt_ids: dict[tuple[Message, ...], tuple[int, ...]] = {}
        encoded: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        for r in requests:
            if r.messages not in prompt_ids:
                prompt_ids[r.messages] = tuple(self._ids(self.render(r.messages)))
            p = prompt_ids[r.messages]
            if not p:
                raise BackendError("the chat template rendered an empty prompt")
            # The continuation is tokenised on its own so its tokens start exactly at the reply.
            encoded.append((p, tuple(self._ids(r.continuation))))
        sums = [0.0] * len(encoded)
        todo = [i for i, (_, c) in enumerate(encoded) if c]
        import torch

        with torch.inference_mode():
            if self.prefix_reuse:
                self._score_shared(encoded, todo, sums)
            else:
                self._score_plain(encoded, todo, sums)
        results = [
            LoglikResult(logprob=sums[i], n_tokens=len(c), prompt_tokens=len(p))
            for i, (p, c) in enumerate(encoded)
        ]
        if on_done is not None:
            on_done(range(len(results)), results)
        return results

    def _score_plain(
        self, encoded: list[tuple[tuple[int, ...], tuple[int, ...]]], todo: list[int], sums: list[float]
    ) -> None:
        """Every request on its own row, whole; batched by length."""
        order = sorted(todo, key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            rows = [list(encoded[i][0]) + list(encoded[i][1]) for i in batch]
            conts = [encoded[i][1] for i in batch]
            logp, _, _ = self._forward(rows, None, None, keep=max(map(len, conts)) + 1)
            self._gather(logp, conts, batch, sums)

    def _score_shared(
        self, encoded: list[tuple[tuple[int, ...], tuple[int, ...]]], todo: list[int], sums: list[float]
    ) -> None:
        import torch

        by_prompt: dict[tuple[int, ...], list[int]] = {}
        for i in todo:
            by_prompt.setdefault(encoded[i][0], []).append(i)
        prompts = sorted(by_prompt, key=len)  # similar lengths together: little padding
        # The last prompt token goes with the continuation, so the prefix stops before it.
        n_common = _common_prefix_len([p[:-1] for p in prompts])
        for start in range(0, len(prompts), self.batch_size):
            group = prompts[start : start + self.batch_size]
            cache, mask = self._prefix_cache(group[0][:n_common], len(group))
            # Each prompt's remaining tokens; the last position predicts every continuation's first token.
            logp, cache, mask = self._forward([list(p[n_common:]) for p in group], cache, mask, keep=1)
            rows_of: list[int] = []  # for each longer continuation: its prompt's row in `cache`
            longer: list[int] = []
            for g, p in enumerate(group):
                for i in by_prompt[p]:
                    c = encoded[i][1]
                    sums[i] = float(logp[g, -1, c[0]])
                    if len(c) > 1:
                        rows_of.append(g)
                        longer.append(i)
            # Continuations of several tokens: feed all but the last on top of their prompt's row.
            step = self.batch_size * 4  # these rows are short
            for s in range(0, len(longer), step):
                batch = longer[s : s + step]
                rest = [encoded[i][1][1:] for i in batch]
                sel = torch.tensor(rows_of[s : s + step], device=self.device)
                rows = [list(encoded[i][1][:-1]) for i in batch]
                logp_rest, _, _ = self._forward(
                    rows, _select(cache, sel), mask[sel], keep=max(map(len, rest))
                )
                for j, (i, r) in enumerate(zip(batch, rest, strict=True)):
                    start_pos = logp_rest.shape[1] - len(r)
                    picked = logp_rest[j, start_pos:].gather(-1, torch.tensor(r, device=self.device)[:, None])
                    sums[i] += float(picked.sum())

    def _prefix_cache(self, prefix: tuple[int, ...], batch: int) -> tuple[Any, torch.Tensor | None]:
        """The prefix's KV cache repeated for `batch` rows, and its attention mask (None when empty)."""
        import torch

        if not prefix:
            return None, None
        one = torch.zeros(1, dtype=torch.long, device=self.device)
        memo = self._prefix_memo
        if memo is not None and memo[0] == prefix:
            base = memo[1]
        elif memo is not None and memo[0] and prefix[: len(memo[0])] == memo[0]:
            # Extend the kept prefix (e.g. the same demos, then a few more shared tokens) without
            # replacing it, so the next call, which may share less, still finds it.
            n = len(memo[0])
            ones = torch.ones(1, n, dtype=torch.long, device=self.device)
            _, base, _ = self._forward([list(prefix[n:])], _select(memo[1], one), ones, keep=1)
        else:
            _, base, _ = self._forward([list(prefix)], None, None, keep=1)
            self._prefix_memo = (prefix, base)
        cache = _select(base, torch.zeros(batch, dtype=torch.long, device=self.device))
        mask = torch.ones(batch, len(prefix), dtype=torch.long, device=self.device)
        return cache, mask

    def _forward(
        self, rows: list[list[int]], cache: Any, past_mask: torch.Tensor | None, keep: int
    ) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """Run left-padded `rows` on top of `cache`; log-probs of the last `keep` positions."""
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        row_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            if r:
                ids[j, width - len(r) :] = torch.tensor(r)
                row_mask[j, width - len(r) :] = 1
        ids, row_mask = ids.to(self.device), row_mask.to(self.device)
        positions = (row_mask.cumsum(dim=1) - 1).clamp(min=0)
        mask = row_mask
        if past_mask is not None:
            mask = torch.cat([past_mask, row_mask], dim=1)
            positions = positions + past_mask.sum(dim=1, keepdim=True)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=keep,
            **{self._cache_kw: cache},
        )
        new_cache = out.cache if self._cache_kw == "cache" else out.past_key_values
        return out.logits.float().log_softmax(dim=-1), new_cache, mask

    @staticmethod
    def _gather(
        logp: torch.Tensor, conts: list[tuple[int, ...]], batch: list[int], sums: list[float]
    ) -> None:
        import torch

        # Rows end with [last prompt token, *continuation]; logp holds the last max_c + 1 positions,
        # and the position before each continuation token predicts it.
        max_c = logp.shape[1] - 1
        for j, (i, c) in enumerate(zip(batch, conts, strict=True)):
            start = max_c - len(c)
            target = torch.tensor(c, device=logp.device).unsqueeze(-1)
            picked = logp[j, start : start + len(c)].gather(-1, target)
            sums[i] = float(picked.sum())

    # ---------------------------------------------------------------------------------- generation
    def generate(
        self, requests: Sequence[GenRequest], on_done: OnDone[GenResult] | None = None
    ) -> list[GenResult]:
        """Greedy decoding, one request at a time (so latency is per request, as a user would see it)."""
        import torch

        encoded = [self._ids(self.render(r.messages)) for r in requests]
        shared: tuple[int, ...] = ()
        if self.prefix_reuse and len(encoded) > 1:
            shared = tuple(encoded[0][: _common_prefix_len([tuple(e[:-1]) for e in encoded])])
        results = []
        with torch.inference_mode():
            for r, ids in zip(requests, encoded, strict=True):
                t0 = time.perf_counter()
                kwargs: dict[str, Any] = {}
                if shared:
                    kwargs[self._cache_kw], _ = self._prefix_cache(shared, 1)
                input_ids = torch.tensor([ids], device=self.device)
                out = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    max_new_tokens=r.max_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=self._pad_id,
                    stop_strings=list(r.stop) or None,
                    tokenizer=self.tokenizer if r.stop else None,
                    **kwargs,
                )
                new = out[0, len(ids) :].tolist()
                text = str(self.tokenizer.decode(new, skip_special_tokens=True))
                for s in r.stop:
                    cut = text.find(s)
                    if cut >= 0:
                        text = text[:cut]
                results.append(
                    GenResult(
                        text=text,
                        prompt_tokens=len(ids),
                        completion_tokens=len(new),
                        latency_s=time.perf_counter() - t0,
                    )
                )
                if on_done is not None:
                    on_done([len(results) - 1], results[-1:])
        return results


def _select(cache: Any, indices: torch.Tensor) -> Any:
    """A new cache holding rows `indices` of `cache` (rows may repeat); `cache` stays untouched."""
    new = copy.copy(cache)
    new.layers = [copy.copy(layer) for layer in cache.layers]
    new.batch_select_indices(indices)  # indexing makes new tensors; the originals are not modified
    return new


def _common_prefix_len(seqs: Sequence[tuple[int, ...]]) -> int:
    if not seqs:
        return 0
    first, n = seqs[0], min(len(s) for s in seqs)
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
    return n


def _fingerprint(folder: Path) -> str:
    """A short hash of the model folder: contents of small files, size and mtime of large ones."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(str(f.relative_to(folder)).encode())
        if st.st_size < _SMALL_FILE:
            h.update(f.read_bytes())
        else:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]
