"""The gate: training runs only when the advisor's verdict for this run is `fine_tune`.

`force=True` overrides the gate; the override is recorded in the provenance of every output so a
forced adapter can never pass for a recommended one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from advisor.errors import GateError
from advisor.rundir import RunDir
from advisor.types import Verdict


@dataclass(frozen=True)
class GateResult:
    run_dir: Path
    verdict: str | None  # None when decision.json has none (only possible with force)
    forced: bool  # True when training goes ahead against the verdict
    checked_at: str

    @property
    def provenance(self) -> dict[str, Any]:
        """The record every training output carries."""
        return {
            "gate_verdict": self.verdict,
            "forced": self.forced,
            "gate_checked_at": self.checked_at,
        }


def read_verdict(run: RunDir) -> str | None:
    """The run's verdict; None when the folder has no decision.json (a damaged one: DataError, exit 3)."""
    if not run.decision_path.exists():
        return None
    return str(run.read_report().decision.verdict)


def check_gate(run_dir: str | Path, force: bool = False) -> GateResult:
    """Allow training when the verdict is `fine_tune`, or when forced; raise GateError otherwise."""
    run = RunDir(run_dir)
    run_dir = run.path
    now = datetime.now(UTC).isoformat(timespec="seconds")
    verdict = read_verdict(run)
    if verdict is None and not force:
        raise GateError("no decision.json in the run folder: run `tunegate advise` first", file=str(run.path))
    if verdict == Verdict.FINE_TUNE:
        return GateResult(run_dir, verdict, False, now)
    if force:
        return GateResult(run_dir, verdict, True, now)
    raise GateError(
        f"the verdict for this run is '{verdict}', not 'fine_tune': training refused "
        "(pass --force to train anyway; the override is recorded)",
        file=str(run.decision_path),
        field="decision.verdict",
    )
