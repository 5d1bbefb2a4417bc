"""`tunegate train` and the training half of `tunegate run`: gate → load → train → verify → report.

Each step lives in its own module; this is the recipe. Only rank 0 verifies and writes the report
when the training ran under torchrun.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.config import TrainConfig


def train_and_verify(
    run_dir: str | Path,
    *,
    force: bool = False,
    resume: bool = False,
    config_file: str | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Train a LoRA adapter for an advise run, verify it with the advisor's harness, re-render the report.

    Returns the updated report document. Raises GateError (exit 5) when the run's verdict is not
    fine_tune and `force` is False: nothing is trained then.
    """
    from advisor import report
    from pipeline.train import train_run
    from pipeline.verify import verify_run

    run_dir = Path(run_dir)
    cfg = TrainConfig.from_toml(config_file, list(overrides))
    result, _gate = train_run(run_dir, cfg, force=force, resume=resume)  # gate, load, train, export
    if result.rank != 0:
        return {}
    verify_run(run_dir)
    doc = report.read_report(run_dir)
    report.rerender_doc(run_dir, doc, ("md", "html"))
    return doc
