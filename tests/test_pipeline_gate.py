"""The gate: only a `fine_tune` verdict trains; --force overrides and is recorded."""

from __future__ import annotations

import json

import pytest
import report_docs

from advisor.errors import DataError, ExitCode, GateError
from pipeline.gate import check_gate


def _run(tmp_path, verdict: str | None):
    """A real run's decision.json with the verdict replaced (None: the verdict is missing)."""
    doc = report_docs.few_shot_doc(tmp_path)
    doc["decision"].pop("verdict")
    if verdict is not None:
        doc["decision"]["verdict"] = verdict
    (tmp_path / "decision.json").write_text(json.dumps(doc))
    return tmp_path


def test_fine_tune_verdict_passes(tmp_path) -> None:
    g = check_gate(_run(tmp_path, "fine_tune"))
    assert g.verdict == "fine_tune" and not g.forced
    assert g.provenance["forced"] is False


@pytest.mark.parametrize("verdict", ["prompt", "few_shot", "collect_data", "inconclusive"])
def test_other_verdicts_are_refused_with_the_gate_exit_code(tmp_path, verdict: str) -> None:
    with pytest.raises(GateError) as err:
        check_gate(_run(tmp_path, verdict))
    assert err.value.exit_code == ExitCode.GATE_REFUSED == 5
    assert verdict in str(err.value) and "--force" in str(err.value)


def test_force_overrides_and_is_recorded(tmp_path) -> None:
    g = check_gate(_run(tmp_path, "prompt"), force=True)
    assert g.forced and g.verdict == "prompt"
    assert g.provenance == {"gate_verdict": "prompt", "forced": True, "gate_checked_at": g.checked_at}


def test_missing_or_broken_decision_is_refused(tmp_path) -> None:
    with pytest.raises(GateError):
        check_gate(tmp_path)
    _run(tmp_path, None)
    with pytest.raises(DataError) as damaged:  # the run folder's one policy: a damaged file is exit 3
        check_gate(tmp_path)
    assert damaged.value.problems[0].field == "decision.verdict"
