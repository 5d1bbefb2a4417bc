"""The console summary on a narrow terminal: every number and interval in full, never cut with "…"."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from advisor.document import Report
from advisor.report import fmt
from advisor.report.console import print_summary

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
DOCS = ("few_shot", "fine_tune", "collect_data", "hostile")


def _doc(name: str) -> dict[str, Any]:
    return json.loads((SNAPSHOTS / name / "decision.json").read_text(encoding="utf-8"))


def _summary(doc: dict[str, Any], width: int) -> str:
    from rich.console import Console

    buf = io.StringIO()
    print_summary(Report.model_validate(doc), Console(file=buf, width=width, color_system=None))
    return buf.getvalue()


def _figures(doc: dict[str, Any]) -> list[str]:
    """Every score, interval and p-value the arms table shows, as the table writes them."""
    p = doc.get("prompting")
    if not p:
        return []
    metric = p["target_metric"]
    out = []
    for arm in p["arms"]:
        e = arm["scores"][metric]
        out.append(fmt.estimate(e["value"], e["low"], e["high"]))
    for c in p["comparisons"]:
        if c["baseline"] != "zero_shot" or c["arm"] == "system":
            out += [fmt.difference(c["diff"], c["low"], c["high"]), fmt.p_value(c["p_value"])]
    return out


@pytest.mark.parametrize("width", [80, 60])
@pytest.mark.parametrize("name", DOCS)
def test_a_narrow_console_shows_every_number_in_full(name, width) -> None:
    doc = _doc(name)
    text = _summary(doc, width)
    lines = text.splitlines()
    assert "…" not in text
    assert max(len(line) for line in lines) <= width
    for figure in _figures(doc):  # each on one line, not cut and not wrapped apart
        assert any(figure in line for line in lines), figure
    for rule in doc["decision"]["fired"]:
        assert any(rule["id"] in line for line in lines), rule["id"]


def test_a_wide_console_keeps_the_tables() -> None:
    text = _summary(_doc("fine_tune"), 140)
    assert "┃ arm " in text and "┃ rule " in text  # the tables, as the snapshots hold them
    narrow = _summary(_doc("fine_tune"), 80)
    assert "┃ arm " not in narrow and "Prompting arms (200 eval items" in narrow


def test_a_long_label_does_not_push_numbers_off_a_narrow_console() -> None:
    doc = _doc("few_shot")
    label = "an extremely long label naming a product category in full detail " * 3
    doc["prompting"]["baselines"]["majority_label"] = label
    text = _summary(doc, 80)
    assert "…" not in text
    for figure in _figures(doc):
        assert any(figure in line for line in text.splitlines()), figure


def test_piped_output_follows_columns(monkeypatch) -> None:
    doc = _doc("few_shot")
    for columns, widest in (("80", 80), (None, 120)):
        buf = io.StringIO()  # not a terminal, as in `tunegate advise ... | less`
        monkeypatch.setattr(sys, "stdout", buf)
        if columns is None:
            monkeypatch.delenv("COLUMNS", raising=False)
        else:
            monkeypatch.setenv("COLUMNS", columns)
        print_summary(Report.model_validate(doc))
        monkeypatch.undo()
        width = max(len(line) for line in buf.getvalue().splitlines())
        assert width <= widest and (columns is not None or width > 80)
        assert "…" not in buf.getvalue()
