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

from advisor.backends.model import original_model_id
from advisor.files import write_json_atomic
from advisor.report.document import Training, Verification
from advisor.report.finetune import model_card_markdown
from advisor.rundir import RunDir
from pipeline.checkpoint import replace_dir
from pipeline.config import TrainConfig
from pipeline.loop import TrainResult
from pipeline.metrics import load_training_curve


def export_training(
    run_dir: Path,
    result: TrainResult,
    cfg: TrainConfig,
    model_dir: str,
    provenance: dict[str, Any],
    base_model_id: str | None = None,
) -> dict[str, Any]:
    """After training (rank 0): train/config.json, the merged model if asked, the model card, and the
    `training` section of decision.json with the loss curve from the metrics log. Returns the section.

    `model_dir` is the local folder trained on; `base_model_id` the Hub id its weights are, when known."""
    run = RunDir(run_dir)
    run.write_train_config({"train": cfg.to_dict(), "model": model_dir, "provenance": provenance})
    section = training_section(result, cfg, model_dir, provenance, base_model_id)
    section["curve"] = load_training_curve(run.metrics_path)
    name_base_model(result.adapter_dir, base_model_id or original_model_id(model_dir))
    if cfg.merge:
        section["merged_dir"] = str(merge_adapter(model_dir, result.adapter_dir, run.merged_dir))
    write_model_card(run, result.adapter_dir, section)
    update_decision(run, {"training": section})
    return section


def training_section(
    result: TrainResult,
    cfg: TrainConfig,
    model_dir: str,
    provenance: dict[str, Any],
    base_model_id: str | None = None,
) -> dict[str, Any]:
    """The `training` section of decision.json: what was trained, how, and how it went."""
    return {
        "method": "qlora" if cfg.qlora else "lora",
        "base_model": str(model_dir),
        "base_model_id": base_model_id,
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


def write_model_card(
    run: RunDir, adapter_dir: str | Path, training: dict[str, Any], verification: dict[str, Any] | None = None
) -> Path:
    card = model_card_markdown(
        Training.model_validate(training),
        None if verification is None else Verification.model_validate(verification),
    )
    return run.write_model_card(adapter_dir, card)


def update_decision(
    run_dir: RunDir | str | Path, updates: dict[str, Any], signals: dict[str, Any] | None = None
) -> None:
    """Set top-level sections (and signals) of the run's decision.json, validated, atomically."""
    run = RunDir.of(run_dir)
    if signals:
        updates = {**updates, "signals": {**run.read_report().signals, **signals}}
    run.update_report(**updates)
