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
    doc = redecide(report.read_report(run_dir))
    report.write_json(run_dir / report.DECISION_FILE, doc)
    report.rerender_doc(run_dir, doc, ("md", "html"))
    return doc


def redecide(doc: dict[str, Any]) -> dict[str, Any]:
    """The decision again, now with the verification signals, under the rules the advise run used.

    Before training the `verification.*` rules were skipped; now they fire: a verified gain adds its
    vote for fine_tune, an unverified one vetoes it, and the verdict says so.
    """
    from advisor import decide, rules

    config = doc["provenance"]["config"]
    ruleset = rules.load_rules(
        [Path(d) for d in config.get("rules_dirs") or ()], overrides=config.get("thresholds")
    )
    doc = dict(doc)
    doc["decision"] = decide.decide(ruleset, doc["signals"]).to_dict()
    return doc
