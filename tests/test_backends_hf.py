"""The local transformers backend: a tiny random Llama for the mechanics, the embedded model for behaviour."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from tiny import rotten_tomatoes_rows, tiny_llama

from advisor.backends.base import GenRequest, LoglikRequest
from advisor.types import Message


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("tiny"))


def _requests() -> list[LoglikRequest]:
    """Shaped like the harness's: a shared system prompt and demos, several labels per item."""
    system = Message("system", "Classify each review as positive or negative.")
    demos = (
        Message("user", "Every score has a bootstrap interval."),
        Message("assistant", "positive"),
        Message("user", "The prefix is computed once."),
        Message("assistant", "negative"),
    )
    items = [
        "When many requests share a prefix.",
        "Classification by comparing the log-likelihood",
        "zero-shot",
        "paired over the same items, every difference between arms is measured and benchmarked.",
    ]
    reqs = []
    for k, demo_part in enumerate([(), demos]):
        for text in items:
            for label in ("positive", "negative", "neutral spam"):
                msgs = (system, *demo_part, Message("user", text))
                reqs.append(LoglikRequest(msgs if k or text != "zero-shot" else msgs[1:], label))
    return reqs


def test_prefix_reuse_matches_plain_scoring(tiny_model_dir: Path) -> None:
    from advisor.backends.hf import HFBackend

    reqs = _requests()
    shared = HFBackend(tiny_model_dir, device="cpu", batch_size=3, prefix_reuse=True).loglikelihood(reqs)
    plain = HFBackend(tiny_model_dir, device="cpu", batch_size=5, prefix_reuse=False).loglikelihood(reqs)
    alone = HFBackend(tiny_model_dir, device="cpu", batch_size=1, prefix_reuse=False)
    single = [alone.loglikelihood([r])[0] for r in reqs[:6]]
    assert len(shared) == len(plain) == len(reqs)
    for a, b in zip(shared, plain, strict=True):
        assert math.isfinite(a.logprob) and a.logprob < 0
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert (a.n_tokens, a.prompt_tokens) == (b.n_tokens, b.prompt_tokens)
    for a, b in zip(shared, single, strict=False):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
    # A multi-token continuation is scored over all its tokens.
    assert max(r.n_tokens for r in shared) > 1 and min(r.n_tokens for r in shared) >= 1


def test_continuation_is_scored_as_the_assistant_reply(tiny_model_dir: Path) -> None:
    """The sum equals a manual forward over [template(prompt) + continuation tokens]."""
    import torch

    from advisor.backends.hf import HFBackend

    backend = HFBackend(tiny_model_dir, device="cpu")
    msgs = (Message("user", "zero-shot prompting"),)
    rendered = backend.render(msgs)
    assert rendered.endswith("<|im_start|>assistant\n")
    p = backend.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    c = backend.tokenizer("negative", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = backend.model(torch.tensor([p + c])).logits[0].log_softmax(-1)
    expected = sum(float(logp[len(p) - 1 + j, t]) for j, t in enumerate(c))
    got = backend.loglikelihood([LoglikRequest(msgs, "negative")])[0]
    assert got.logprob == pytest.approx(expected, abs=1e-4)
    assert got.prompt_tokens == len(p) and got.n_tokens == len(c)
    assert backend.count_tokens(["negative", ""]) == [len(c), 0]


def test_generation_is_greedy_bounded_and_stops(tiny_model_dir: Path) -> None:
    from advisor.backends.hf import HFBackend

    backend = HFBackend(tiny_model_dir, device="cpu")
    system = Message("system", "Classify each review as positive or negative.")
    reqs = [GenRequest((system, Message("user", t)), max_tokens=6) for t in ("zero-shot", "few-shot items")]
    first = backend.generate(reqs)
    again = backend.generate(reqs)
    assert [r.text for r in first] == [r.text for r in again]  # greedy: deterministic
    for r in first:
        assert 0 < r.completion_tokens <= 6 and r.prompt_tokens > 0 and r.latency_s >= 0
    backend.prefix_reuse = False
    assert [r.text for r in backend.generate(reqs)] == [r.text for r in first]
    # A stop sequence cuts the text before it.
    text = first[0].text
    if len(text) > 1:
        stop = text[1]
        cut = backend.generate([GenRequest(reqs[0].messages, max_tokens=6, stop=(stop,))])[0]
        assert stop not in cut.text and text.startswith(cut.text)


def test_model_id_changes_with_the_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from advisor.backends.hf import _fingerprint

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert _fingerprint(copy) == _fingerprint(tiny_model_dir)
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("16", "17", 1))
    assert _fingerprint(copy) != _fingerprint(tiny_model_dir)


# ------------------------------------------------------------------------------ the embedded model
POLAR = [
    ("A moving, beautifully acted and thoroughly delightful film.", "positive"),
    ("A masterpiece: funny, warm and wonderfully made.", "positive"),
    ("One of the best movies of the year, a triumph.", "positive"),
    ("A dull, tedious and lifeless mess.", "negative"),
    ("Awful. Boring, badly written and far too long.", "negative"),
    ("A complete waste of time and a painful bore.", "negative"),
]


@pytest.mark.realmodel
def test_embedded_model_prefers_the_right_label() -> None:
    from advisor.backends.hf import HFBackend
    from advisor.backends.model import default_model_dir

    backend = HFBackend(default_model_dir(), device="cpu")
    system = Message("system", "Classify the sentiment of the movie review. Answer positive or negative.")
    real = [
        (t, "positive" if lab == "fresh" else "negative") for _, t, lab in rotten_tomatoes_rows(6, seed=0)
    ]
    items = POLAR + real
    reqs = [
        LoglikRequest((system, Message("user", t)), lab) for t, _ in items for lab in ("positive", "negative")
    ]
    res = backend.loglikelihood(reqs)
    assert all(math.isfinite(r.logprob) and r.logprob < 0 for r in res)
    predicted = [
        "positive" if res[2 * i].logprob > res[2 * i + 1].logprob else "negative" for i in range(len(items))
    ]
    polar_right = sum(p == gold for p, (_, gold) in zip(predicted[: len(POLAR)], POLAR, strict=True))
    assert polar_right > len(POLAR) / 2, predicted


def test_prefix_kept_across_calls_matches_plain(tiny_model_dir: Path) -> None:
    """Successive calls whose shared prefix grows, shrinks or changes reuse the kept KV correctly."""
    from advisor.backends.hf import HFBackend

    reqs = _requests()
    few_shot = [r for r in reqs if len(r.messages) > 2]
    longer = [r for r in few_shot if r.messages[-1].content.startswith("paired")]
    calls = [few_shot[:6], longer, few_shot[6:], reqs[:6], longer]
    shared = HFBackend(tiny_model_dir, device="cpu", batch_size=2)
    plain = HFBackend(tiny_model_dir, device="cpu", batch_size=4, prefix_reuse=False)
    for call in calls:
        for a, b in zip(shared.loglikelihood(call), plain.loglikelihood(call), strict=True):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_get_backend_builds_a_cached_local_backend(tiny_model_dir: Path, tmp_path: Path) -> None:
    from advisor.backends import get_backend
    from advisor.errors import ConfigError

    backend = get_backend("hf", model=str(tiny_model_dir), device="cpu", cache_path=tmp_path / "c.sqlite")
    req = LoglikRequest((Message("user", "zero-shot"),), "positive")
    first = backend.loglikelihood([req])
    assert backend.loglikelihood([req]) == first
    assert backend.stats() == {"hits": 1, "calls": 1}  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="unknown backend"):
        get_backend("vllm")
    with pytest.raises(ConfigError, match="not a local Hugging Face model folder"):
        get_backend("hf", model=str(tmp_path))
