"""How a fine-tuned model is prompted, in training, in the pilot and in verification alike, and how an
adapter is put on the advisor's local backend to be scored with the arms' harness."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from advisor.backends.hf import HFBackend
from advisor.measure.prompts import Arm, ArmKind, arm_name, format_hint, render_messages
from advisor.types import Example, TaskKind


def finetune_arm(task: TaskKind, labels: Sequence[str]) -> Arm:
    """How the fine-tuned model is prompted, in training and in verification alike: the zero-shot arm
    (the example's own turns plus the answer-format hint; no system prompt, no demonstrations), so the
    adapter is judged on exactly the prompt it learned from, at the cheapest prompt length."""
    return Arm(arm_name(ArmKind.ZERO_SHOT), ArmKind.ZERO_SHOT, format_hint=format_hint(task, labels))


def as_finetune_examples(examples: Sequence[Example], task: TaskKind, labels: Sequence[str]) -> list[Example]:
    """Examples whose messages are the fine-tuning prompt (see `finetune_arm`) and whose label is set."""
    arm = finetune_arm(task, labels)
    allowed = set(labels)
    out = []
    for ex in examples:
        label = ex.target.strip() if task is TaskKind.CLASSIFY and ex.target.strip() in allowed else None
        out.append(Example(ex.line, render_messages(arm, ex), ex.target, label))
    return out


def adapter_fingerprint(adapter_dir: str | Path) -> str:
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        digest.update((Path(adapter_dir) / name).read_bytes())
    return digest.hexdigest()[:12]


def finetuned_backend(model_dir: str | Path, adapter_dir: str | Path, **kwargs: Any) -> HFBackend:
    """The advisor's HF backend serving base + adapter, merged in memory (same outputs, no LoRA overhead)."""
    from peft import PeftModel

    backend = HFBackend(model_dir, **kwargs)
    merged = PeftModel.from_pretrained(backend.model, str(adapter_dir)).merge_and_unload()
    backend.model = merged.to(backend.device).eval()
    backend.model_id = f"{backend.model_id}+lora:{adapter_fingerprint(adapter_dir)}"
    return backend
