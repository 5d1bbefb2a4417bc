"""`tunegate advise` end to end without a model: the data-only verdict on real Rotten Tomatoes snippets."""

from __future__ import annotations

import json

import jsonschema
import pytest

from advisor.cli import main
from advisor.demo import write_demo_data
from advisor.errors import ExitCode
from advisor.report.render import schema


def _advise(tmp_path, n: int, capsys, *extra: str) -> tuple[int, dict]:
    data = write_demo_data(str(tmp_path / "data"), n=n)
    rc = main(["advise", str(data), "--no-model", "--json", "--out", str(tmp_path / "run"), *extra])
    doc = json.loads(capsys.readouterr().out)
    return rc, doc


def test_300_rows_is_collect_data_citing_the_floor(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, doc = _advise(tmp_path, 300, capsys)
    assert rc == ExitCode.COLLECT_DATA
    decision = doc["decision"]
    assert decision["verdict"] == "collect_data"
    fired = {r["id"]: r for r in decision["fired"]}
    floor = fired["data.min_examples"]
    assert floor["evidence"]["signals"]["n_examples"] == 300
    assert any("openai" in s.get("url", "").lower() for s in floor["sources"])
    assert any("200 more examples" in text for text in decision["what_would_change"])
    jsonschema.validate(doc, schema())
    # the document on disk is the one printed
    assert json.loads((tmp_path / "run" / "decision.json").read_text()) == doc
    assert "collect_data" in (tmp_path / "run" / "report.md").read_text()


def test_data_only_lists_skipped_rules_and_never_fine_tunes(tmp_path, capsys) -> None:
    rc, doc = _advise(tmp_path, 1000, capsys, "--volume", "20000/day")
    decision = doc["decision"]
    assert decision["verdict"] != "fine_tune"
    assert rc != ExitCode.FINE_TUNE
    skipped = {r["id"] for r in decision["skipped"]}
    assert "prompting.meets_target" in skipped
    assert all(r["missing"] for r in decision["skipped"])
    assert doc["signals"]["prompting_measured"] is False
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert len(split["eval"]) == 200 and not set(split["eval"]) & set(split["train"])


def test_threshold_override_changes_the_verdict(tmp_path, capsys) -> None:
    rc, doc = _advise(tmp_path, 300, capsys, "--threshold", "min_examples=100")
    assert doc["decision"]["verdict"] != "collect_data"
    assert doc["provenance"]["config"]["thresholds"] == {"min_examples": 100.0}
