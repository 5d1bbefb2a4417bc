"""The report document: schema validity, Markdown content, atomic writes, console summary."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from report_docs import facts

from advisor.audit import checks as audit_mod
from advisor.config import AdviseConfig
from advisor.decide.rules import load_rules
from advisor.decide.verdict import decide
from advisor.document import Report
from advisor.errors import FilesError
from advisor.files import write_json_atomic
from advisor.intake import data
from advisor.report import render as report
from advisor.report import summary
from advisor.report.console import print_summary
from advisor.report.markdown import to_markdown


def _data_only_doc(tmp_path: Path, snippets: list[tuple[str, str]], **signal_extra: Any) -> dict[str, Any]:
    """The document of a data-only run over real Rotten Tomatoes snippets, built step by step."""
    path = tmp_path / "reviews.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for text, label in snippets:
            fh.write(json.dumps({"prompt": f"Review: {text}\nSentiment:", "completion": label}) + "\n")
    loaded = data.load_examples(path)
    task, labels = data.detect_task(loaded.examples)
    examples = data.with_labels(loaded.examples, labels)
    split = audit_mod.make_split(examples, seed=7, eval_size=8, dev_size=4)
    audit = audit_mod.audit(examples, task, labels)
    signals: dict[str, Any] = dict(audit_mod.audit_signals(audit, split))
    signals.update({"task_kind": task.value, "prompting_measured": False, **signal_extra})
    ruleset = load_rules(overrides={"max_conflict_share": "0.1"})
    config = AdviseConfig(data=str(path), out=str(tmp_path / "run"), seed=7, backend="none")
    return report.build_report(
        config=config,
        loaded=loaded,
        task=task,
        labels=labels,
        audit=audit,
        split=split,
        signals=signals,
        decision=decide(ruleset, signals),
        ruleset=ruleset,
        created_at="2026-01-02T03:04:05+00:00",
    ).as_dict()


@pytest.fixture()
def doc(tmp_path: Path, rt_snippets: list[tuple[str, str]]) -> dict[str, Any]:
    return _data_only_doc(tmp_path, rt_snippets)


def _validator() -> jsonschema.Draft202012Validator:
    schema = report.schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_document_validates_against_the_shipped_schema(doc: dict[str, Any]) -> None:
    _validator().validate(doc)
    assert tuple(doc) == report.TOP_LEVEL_KEYS
    assert doc["schema_version"] == "1.0"
    assert doc["decision"]["verdict"] == "collect_data"
    assert doc["prompting"] is None and doc["training"] is None
    p = doc["provenance"]
    assert p["dataset_sha256"] == doc["dataset"]["sha256"] and len(p["rules_sha256"]) == 64
    assert p["seeds"] == {"split": 7}
    assert p["config"]["seed"] == 7 and p["config"]["backend"] == "none"
    assert p["threshold_overrides"] == {"max_conflict_share": 0.1}
    assert p["thresholds"]["min_examples"] == 500
    assert p["libraries"]["rich"]
    json.dumps(doc, allow_nan=False)


def test_schema_rejects_a_broken_document(doc: dict[str, Any]) -> None:
    v = _validator()
    bad = json.loads(json.dumps(doc))
    bad["decision"]["verdict"] = "maybe"
    del bad["provenance"]["rules_sha256"]
    bad["signals"]["n_examples"] = [1, 2]
    errors = list(v.iter_errors(bad))
    assert len(errors) == 3


def test_markdown_names_verdict_evidence_sources_and_skipped_rules(doc: dict[str, Any]) -> None:
    md = to_markdown(Report.model_validate(doc))
    assert "**Verdict: `collect_data`**" in md
    first, detail = md.split("\n# Engineer's detail\n")
    assert "## The options" in first and "| best prompt | not measured: no model was run |" in first
    assert "## What the verdict rests on" in first and "## What would change it" in first
    for rule in doc["decision"]["fired"] + doc["decision"]["skipped"]:
        assert rule["id"] not in first  # rule ids only in the engineer's detail
    assert "**data.min_examples**" in detail and "## Signals" in detail
    assert "**data.min_examples** (stop for collect_data, weight 10)" in md
    assert "n_examples = 40; threshold min_examples = 500" in md
    assert "https://platform.openai.com/docs/guides/fine-tuning" in md
    assert "https://cloud.google.com/vertex-ai/generative-ai/docs/models/gemini-use-supervised-tuning" in md
    assert "at least 460 more examples (n_examples 40, floor 500)" in md
    assert "## Skipped rules (signals not measured)" in md
    assert "| prompting.meets_target | prompt | prompt_meets_target |" in md
    assert "## Data audit" in md  # the audit owner's section
    assert doc["provenance"]["rules_sha256"] in md


def test_write_report_is_atomic_and_rerender_reproduces_it(tmp_path: Path, doc: dict[str, Any]) -> None:
    run_dir = tmp_path / "run"
    json_path, md_path = report.write_report(run_dir, doc)
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".tunegate-run",
        "decision.json",
        "report.html",
        "report.md",
    ]
    assert facts(json.loads(json_path.read_text(encoding="utf-8"))) == facts(doc)
    first = md_path.read_bytes()
    md_path.unlink()
    assert report.rerender(run_dir, formats=("md",)) == [md_path]
    assert md_path.read_bytes() == first


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "decision.json"
    write_json_atomic(target, {"old": True})

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(FilesError, match="the disk is full"):  # exit 8 with the path and the reason
        write_json_atomic(target, {"new": True})
    assert json.loads(target.read_text(encoding="utf-8")) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["decision.json"]
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "nan.json", {"x": float("nan")})
    assert [p.name for p in tmp_path.iterdir()] == ["decision.json"]


def test_console_summary(doc: dict[str, Any]) -> None:
    from rich.console import Console

    buf = io.StringIO()
    print_summary(Report.model_validate(doc), Console(file=buf, width=120, color_system=None))
    out = buf.getvalue()
    assert "collect_data" in out and "data.min_examples" in out
    assert "at least 460 more examples" in out
    assert "https://platform.openai.com/docs/guides/fine-tuning" in out  # the floor's source


def test_read_report_rejects_other_schema_versions(tmp_path: Path, doc: dict[str, Any]) -> None:
    from advisor.errors import DataError

    write_json_atomic(tmp_path / "decision.json", {**doc, "schema_version": "0.9"})
    with pytest.raises(DataError, match="unsupported schema_version '0.9'"):
        report.read_report(tmp_path)
    with pytest.raises(DataError, match="no decision.json"):
        report.read_report(tmp_path / "nowhere")


def test_library_versions_do_not_import_torch() -> None:
    code = (
        "import sys, advisor.report.render as r; v = r.library_versions(); "
        "print('torch' in sys.modules, 'rich' in sys.modules, v['rich'] is not None)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True"]


def test_console_summary_shows_the_measured_evidence(tmp_path) -> None:
    import io

    from report_docs import fine_tune_doc
    from rich.console import Console

    doc = fine_tune_doc(tmp_path)
    out = io.StringIO()
    print_summary(Report.model_validate(doc), Console(file=out, width=200))
    text = out.getvalue()
    prompting = doc["prompting"]
    for arm in prompting["arms"]:
        e = arm["scores"][prompting["target_metric"]]
        assert f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]" in text
    assert "k-curve" in text and "fine_tune" in text
    verified = doc["verification"]["finetune_verified"]
    assert ("Fine-tuning verified" if verified else "Fine-tuning NOT verified") in text


def test_markdown_first_screen_of_the_demo_compares_the_options_in_plain_words() -> None:
    """The demo run (no prompt beats the majority baseline, a verified fine-tune): the options side by side,
    why nothing is priced for prompting, and the engineer's detail after."""
    demo = Path(__file__).parent / "data" / "demo.decision.json"
    md = to_markdown(
        Report.model_validate_json(demo.read_text(encoding="utf-8")),
        plots={"pilot": [("t", "plots/pilot.svg")]},
    )
    first, detail = md.split("\n# Engineer's detail\n")
    assert "How sure: high (98% of 500 resamples of the 400 eval items give this verdict" in first
    assert "| majority baseline ('positive' for every item) |" in first
    assert "not priced: no honest prompt to price" in first
    assert (
        "measured: verified on the same 400 eval items" in first and "493 ms, over the 300 ms budget" in first
    )
    assert "![t](plots/pilot.svg)" in first and "plots/pilot.svg" not in detail  # the chart once, at the top
    assert "About 2,975 training examples would reach the target" in first
    for name in ("pilot.beats_prompt", "pilot_gain_low", "prompting_beats_majority"):
        assert name not in first and name in detail
    assert "The cost and latency rules cannot apply: no prompting arm beats the majority baseline" in detail
    # what the fine-tune beat is named for what it is: always answering the commonest label, not a prompt
    who = "the majority baseline, always answering \u201cpositive\u201d, on the same eval items"
    headline = first.split("\n")[2]
    assert headline.startswith("**Verdict: `fine_tune`**") and f"already beats {who}" in headline
    assert "best honest prompt" not in first
    assert "The pilot fine-tune already beats the best honest prompt" in detail  # the rule's own words


def test_a_fine_tuned_model_served_otherwise_is_named_in_the_options_and_the_prices() -> None:
    """A prompted through an API, B self-hosted: the options row and the cost facts say so."""
    snapshot = Path(__file__).parent / "snapshots" / "fine_tune" / "decision.json"
    doc = json.loads(snapshot.read_text(encoding="utf-8"))
    doc["evidence"]["cost"]["finetuned_serving"] = "self_hosted"
    md = to_markdown(Report.model_validate(doc))
    first, detail = md.split("\n# Engineer's detail\n")
    row = next(line for line in first.splitlines() if line.startswith("| fine-tuned model"))
    assert "USD, self-hosted serving (+ 24.00 USD once, to train)" in row, row
    assert "prompted model: API serving; fine-tuned model: self-hosted serving" in detail


def test_the_first_screen_names_a_real_prompt_when_one_is_honest() -> None:
    """Where a prompting arm beats the majority, the rules' words stand: it is a real prompt."""
    snapshot = Path(__file__).parent / "snapshots" / "fine_tune" / "decision.json"
    report = Report.model_validate_json(snapshot.read_text(encoding="utf-8"))
    assert report.prompting is not None and report.prompting.plateau.best_arm == "few_shot_k4"
    assert summary.headline(report) == report.decision.summary
    assert "the best honest prompt" in summary.headline(report)
