"""The gate: training runs only when the advisor's verdict for this run is `fine_tune`.

`force=True` overrides the gate; the override is recorded in the provenance of every output so a
forced adapter can never pass for a recommended one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from advisor.errors import GateError
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


def read_verdict(decision_path: Path) -> str:
    """The verdict in a decision.json; GateError when the file or field is missing or unreadable."""
    try:
        doc = json.loads(decision_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise GateError(
            "no decision.json in the run folder: run `tunegate advise` first", file=str(decision_path)
        ) from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise GateError(f"cannot read the decision: {exc}", file=str(decision_path)) from exc
    decision = doc.get("decision") if isinstance(doc, dict) else None
    verdict = decision.get("verdict") if isinstance(decision, dict) else None
    if not isinstance(verdict, str):
        raise GateError("the decision has no verdict", file=str(decision_path), field="decision.verdict")
    return verdict


def check_gate(run_dir: str | Path, force: bool = False) -> GateResult:
    """Allow training when the verdict is `fine_tune`, or when forced; raise GateError otherwise."""
    run_dir = Path(run_dir)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        verdict: str | None = read_verdict(run_dir / "decision.json")
    except GateError:
        if not force:
            raise
        verdict = None
    if verdict == Verdict.FINE_TUNE:
        return GateResult(run_dir, verdict, False, now)
    if force:
        return GateResult(run_dir, verdict, True, now)
    raise GateError(
        f"the verdict for this run is '{verdict}', not 'fine_tune': training refused "
        "(pass --force to train anyway; the override is recorded)",
        file=str(run_dir / "decision.json"),
        field="decision.verdict",
    )
