"""Model backends behind one protocol (base.py): a local transformers model, or an OpenAI-compatible server.

`get_backend` builds one from plain settings, wrapped in the persistent response cache by default.
Heavy imports (torch, transformers, openai) happen only here, when a backend is actually built.
"""

from __future__ import annotations

import os
from pathlib import Path

from advisor.backends.base import Backend
from advisor.backends.model import ModelSource, resolve_model
from advisor.errors import ConfigError

BACKENDS = ("hf", "openai")


def get_backend(
    kind: str,
    *,
    model: str | ModelSource | None = None,
    base_url: str | None = None,
    api_key_env: str | None = None,
    tokenizer: str | Path | None = None,
    scoring_method: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    concurrency: int = 4,
    max_requests: int | None = None,
    max_tokens: int | None = None,
    timeout: float = 60.0,
    max_retries: int = 5,
    cache: bool = True,
    cache_path: str | Path | None = None,
) -> Backend:
    """A backend of `kind`.

    hf: `model` is a local Hugging Face folder, a .gguf file, a Hub id[@revision] (see
    `advisor.backends.model.resolve_model`), already resolved, or None for the embedded SmolLM2-135M-Instruct.
    openai: `base_url` (else $TUNEGATE_BASE_URL, $OPENAI_BASE_URL, else OpenAI's), `model` (else
    $TUNEGATE_MODEL, else the server's only model), the key from $`api_key_env` (else $TUNEGATE_API_KEY,
    $OPENAI_API_KEY); `tokenizer` (a local folder with the served model's tokenizer) enables exact echo
    scoring; `max_requests` (every HTTP attempt, retries included) and `max_tokens` cap the run; each
    attempt may take `timeout` seconds, and the client retries up to `max_retries` times.
    """
    backend: Backend
    if kind == "hf":
        from advisor.backends.hf import HFBackend

        source = model if isinstance(model, ModelSource) else resolve_model(model)
        backend = HFBackend(source.path, device=device, dtype=dtype, source=source)
    elif kind == "openai":
        from advisor.backends.openai_backend import OpenAIBackend, RequestBudget

        env = os.environ
        base_url = base_url or env.get("TUNEGATE_BASE_URL") or env.get("OPENAI_BASE_URL") or None
        if isinstance(model, ModelSource):
            raise ConfigError("a resolved local model is for the hf backend, not a server", field="model")
        served = model or env.get("TUNEGATE_MODEL") or None
        backend = OpenAIBackend(
            base_url,
            served,
            api_key_env=api_key_env,
            tokenizer=tokenizer,
            scoring_method=scoring_method,
            concurrency=concurrency,
            max_retries=max_retries,
            timeout=timeout,
            budget=RequestBudget(max_requests=max_requests, max_tokens=max_tokens),
        )
    else:
        raise ConfigError(f"unknown backend {kind!r}; allowed: {', '.join(BACKENDS)}", field="backend")
    if cache:
        from advisor.backends.cache import CachedBackend

        return CachedBackend(backend, cache_path)
    return backend
