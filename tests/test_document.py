"""The typed report model: the shipped JSON Schema is generated from it, and it rejects what it must."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import report_docs
from report_docs import facts

import advisor
from advisor.document import Report, json_schema

SHIPPED = Path(advisor.__file__).parent / "schema" / "decision.schema.json"


def test_the_shipped_schema_is_the_generated_one() -> None:
    shipped = json.loads(SHIPPED.read_text(encoding="utf-8"))
    assert shipped == json_schema(), "stale schema: run `python -m advisor.document > " + str(SHIPPED) + "`"


@pytest.mark.parametrize("name", ["few_shot_doc", "fine_tune_doc", "collect_data_doc", "hostile_doc"])
def test_model_and_schema_agree_on_real_documents(tmp_path: Path, name: str) -> None:
    doc = json.loads(json.dumps(getattr(report_docs, name)(tmp_path)))
    jsonschema.Draft202012Validator(json_schema()).validate(doc)
    assert facts(Report.model_validate(doc).as_dict()) == facts(doc)


def test_unknown_keys_and_wrong_types_are_refused(tmp_path: Path) -> None:
    doc = json.loads(json.dumps(report_docs.few_shot_doc(tmp_path)))
    with pytest.raises(ValueError):
        Report.model_validate({**doc, "surprise": 1})
    doc["decision"]["confidence"] = 1.5
    with pytest.raises(ValueError):
        Report.model_validate(doc)
