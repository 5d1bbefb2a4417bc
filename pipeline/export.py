"""Export: the peft adapter (standard format, loadable by transformers/peft and vLLM), an optional merged
model, the model card in the adapter folder, and the run's decision.json updated with the results.

The adapter itself is written by peft's `save_pretrained` (adapter_config.json +
adapter_model.safetensors): with `target_modules="all-linear"` peft records the concrete module names,
which is what vLLM's LoRA loader expects, and no `modules_to_save` are used.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from advisor.files import write_json_atomic, write_text_atomic
from advisor.finetune_report import verification_markdown
from advisor.model import EMBEDDED_ORIGIN, original_model_id
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
    name_base_model(result.adapter_dir, original_model_id(model_dir))
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


def name_base_model(adapter_dir: str | Path, base_id: str) -> None:
    """Write `base_id` as the adapter's base_model_name_or_path (peft records the folder it loaded, which
    for the embedded model is a converted copy in one user's cache), so a server finds the base."""
    path = Path(adapter_dir) / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_id
    write_json_atomic(path, config)


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


def model_card_markdown(training: dict[str, Any], verification: dict[str, Any] | None = None) -> str:
    """The adapter folder's README.md: provenance, data hash, config, metrics, before/after comparison."""
    prov = training.get("provenance", {})
    m = training.get("metrics", {})
    # A JSON string is a valid YAML (front matter) and Python (usage snippet) string literal: the model
    # name cannot end the line, the front matter or the code block it sits in.
    # Markdown and HTML punctuation as \u escapes too: a renderer that shows the front matter as
    # Markdown sees no HTML, link or image in it.
    trained_on = str(training.get("base_model"))
    base_id = original_model_id(trained_on)
    base_literal = "".join(
        f"\\u{ord(c):04x}" if c in "<>&[]()!`*_|#~" else c
        for c in json.dumps(term_safe(base_id, single_line=True))
    )
    lines = [
        "---",
        "library_name: peft",
        f"base_model: {base_literal}",
        "tags: [lora, tunegate]",
        "---",
        "",
        "# LoRA adapter trained by tunegate",
        "",
        f"- Base model: {md_code(base_id)}"
        + (f" (trained on {md_code(trained_on)})" if base_id != trained_on else ""),
        *(
            [
                "  The embedded model is the Q4_1 GGUF quantisation of this base, dequantised: a server "
                "loading the Hub checkpoint serves a base close to, not identical with, the one this "
                "adapter was trained and verified on."
            ]
            if base_id == EMBEDDED_ORIGIN
            else []
        ),
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
        f"vLLM: {md_code(f'vllm serve {base_id} --enable-lora --lora-modules tuned=<this folder>')}, "
        "then `tunegate verify RUN --backend openai --base-url http://HOST:8000/v1 --model tuned`.",
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
