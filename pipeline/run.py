"""`tunegate train` and the training half of `tunegate run`: gate → load → train → export → verify →
decide again → report.

Under torchrun every rank runs `train_run` (each trains its shard of the micro-batches); rank 0 alone
writes the run folder, verifies, decides again and returns the document. The other ranks return None
once training is done, and their command exits 0 printing nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from advisor import decide, report, rules
from advisor.model import resolve_model_dir as advisor_model_dir
from pipeline.config import TrainConfig
from pipeline.distributed import launched_rank, shutdown
from pipeline.examples import training_split
from pipeline.export import export_training
from pipeline.gate import GateResult, check_gate
from pipeline.loop import TrainResult, train
from pipeline.verify import verify_run

STALE_OUTPUTS = ("checkpoints", "best", "adapter", "metrics.jsonl")  # of an earlier run, unless resuming


def train_and_verify(
    run_dir: str | Path,
    *,
    force: bool = False,
    resume: bool = False,
    config_file: str | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any] | None:
    """Train a LoRA adapter for an advise run, verify it with the advisor's harness, re-render the report.

    Returns the updated report document on rank 0, None on the other ranks of a torchrun job. Raises
    GateError (exit 5) when the run's verdict is not fine_tune and `force` is False: nothing is trained.
    """
    run_dir = Path(run_dir)
    cfg = TrainConfig.from_toml(config_file, list(overrides))
    result, _gate = train_run(run_dir, cfg, force=force, resume=resume)
    if result.rank != 0:
        return None
    verify_run(run_dir)
    report.write_report(run_dir, redecide(report.read_report(run_dir)))
    return report.read_report(run_dir)  # what is on disk is what the caller prints


def train_run(
    run_dir: str | Path,
    cfg: TrainConfig,
    *,
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> tuple[TrainResult, GateResult]:
    """Gate, train on the run's train/dev split, export to RUN_DIR/train/adapter (rank 0 writes)."""
    run_dir = Path(run_dir)
    gate = check_gate(run_dir, force=force)
    split = training_split(run_dir)
    model_dir = resolve_model_dir(cfg, split.run_info)
    provenance = {
        **gate.provenance,
        "data_sha256": split.run_info.get("data_sha256"),
        "split_seed": split.run_info.get("seed"),
    }
    out = run_dir / "train"
    if not resume and launched_rank() == 0:
        _remove_stale_outputs(out)
    result = train(
        model_dir, split.train, split.dev, out, cfg, provenance=provenance, resume=resume, progress=progress
    )
    shutdown()
    if result.rank == 0:
        export_training(run_dir, result, cfg, model_dir, provenance)
    return result, gate


def resolve_model_dir(cfg: TrainConfig, run_config: dict[str, Any]) -> str:
    """The training config's model, else the advise run's, else the advisor's default model."""
    model = cfg.model or run_config.get("model")
    return str(model) if model else str(advisor_model_dir(None))


def _remove_stale_outputs(out: Path) -> None:
    for name in STALE_OUTPUTS:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def redecide(doc: dict[str, Any]) -> dict[str, Any]:
    """The decision again, now with the verification signals, under the rules the advise run used.

    Before training the `verification.*` rules were skipped; now they fire: a verified gain adds its
    vote for fine_tune, an unverified one vetoes it, and the verdict says so.
    """
    config = doc["provenance"]["config"]
    ruleset = rules.load_rules(
        [Path(d) for d in config.get("rules_dirs") or ()], overrides=config.get("thresholds")
    )
    doc = dict(doc)
    doc["decision"] = decide.decide(ruleset, doc["signals"]).to_dict()
    return doc
