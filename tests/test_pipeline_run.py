"""After verification the decision is taken again: the verification rules now fire."""

from __future__ import annotations

import copy

import jsonschema
import pytest
from report_docs import fine_tune_doc

from advisor.document import Report
from advisor.report.render import schema
from pipeline.run import redecide


@pytest.mark.parametrize("verified", [True, False])
def test_verification_updates_the_decision(tmp_path, verified: bool) -> None:
    doc = copy.deepcopy(fine_tune_doc(tmp_path))
    doc["signals"]["finetune_verified"] = None  # as at advise time: not measured yet
    at_advise = redecide(Report.model_validate(doc)).decision
    assert {"verification.verified", "verification.not_verified_blocks_fine_tune"} <= {
        r.id for r in at_advise.skipped
    }

    doc["signals"]["finetune_verified"] = verified
    new = redecide(Report.model_validate(doc))
    decision = new.decision
    fired = {r.id for r in decision.fired}
    if verified:
        assert decision.verdict == "fine_tune"
        assert "verification.verified" in fired
    else:
        assert decision.verdict != "fine_tune"
        assert "verification.not_verified_blocks_fine_tune" in fired
    jsonschema.validate(new.as_dict(), schema())
