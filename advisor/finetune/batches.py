"""From examples to tensors: encoding with the model's chat template, length-grouped batch plans, padding.

The loss is taken only at completion positions: every prompt and padding position carries the label
IGNORE, which cross-entropy skips.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advisor.errors import ConfigError
from advisor.types import Example

if TYPE_CHECKING:
    import torch

IGNORE = -100  # label value cross-entropy skips: every prompt and padding position


@dataclass(frozen=True)
class Encoded:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]  # IGNORE except on the completion (target tokens + end-of-turn)
    line: int
    truncated: bool = False


@dataclass(frozen=True)
class EncodedSplit:
    train: list[Encoded]
    dev: list[Encoded]
    pad_id: int

    @property
    def n_truncated(self) -> int:
        return sum(e.truncated for e in self.train) + sum(e.truncated for e in self.dev)


def chat_messages(example: Example) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in example.messages]


def encode_example(tokenizer: Any, example: Example, max_seq_len: int) -> Encoded:
    """Prompt exactly as the model is prompted at evaluation, then target + end-of-turn as the completion.

    The prompt is the chat template with the generation prompt (what the backend renders); the
    completion is the target's tokens followed by the EOS token, which for chat models is the
    template's end-of-turn token (`<|im_end|>` for ChatML), so the model learns to stop.
    When too long, the prompt loses tokens from its left (the generation prompt stays adjacent to the
    completion) and the completion is capped at half the budget.
    """
    text = tokenizer.apply_chat_template(chat_messages(example), tokenize=False, add_generation_prompt=True)
    prompt = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    target = example.label if example.label is not None else example.target
    completion = list(tokenizer(target, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]
    truncated = False
    if len(prompt) + len(completion) > max_seq_len:
        truncated = True
        completion = (
            completion[: max(1, max_seq_len // 2)] if len(completion) > max_seq_len // 2 else completion
        )
        prompt = prompt[len(prompt) - (max_seq_len - len(completion)) :]
    ids = prompt + completion
    labels = [IGNORE] * len(prompt) + completion
    return Encoded(tuple(ids), tuple(labels), example.line, truncated)


def encode_split(
    model_dir: str | Path, train: Sequence[Example], dev: Sequence[Example], max_seq_len: int
) -> EncodedSplit:
    """Train and dev examples encoded with the model's own tokenizer and chat template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.eos_token_id is None:
        raise ConfigError(
            f"the tokenizer in {model_dir} has no EOS token to end the completion", field="model"
        )
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return EncodedSplit(
        [encode_example(tok, ex, max_seq_len) for ex in train],
        [encode_example(tok, ex, max_seq_len) for ex in dev],
        pad_id,
    )


def plan_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, group_by_length: bool
) -> list[list[int]]:
    """One epoch's micro-batches (indices), deterministic in (seed, epoch).

    Length grouping: shuffle, cut into windows of 32 batches, sort each window by length, batch it,
    then shuffle the batch order. Neighbours in a batch have similar lengths (little padding), while
    the order still changes every epoch.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    if group_by_length:
        window = batch_size * 32
        grouped: list[int] = []
        for start in range(0, len(idx), window):
            grouped += sorted(idx[start : start + window], key=lambda i: -lengths[i])
        idx = grouped
    batches = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def collate(items: Sequence[Encoded], pad_id: int, device: str) -> dict[str, torch.Tensor]:
    """Right-padded tensors: input_ids, attention_mask, labels (IGNORE on padding)."""
    import torch

    width = max(len(e.input_ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, e in enumerate(items):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def completion_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Positions whose next token is a completion token: the terms of the summed loss."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())
