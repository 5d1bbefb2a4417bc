"""Every renderer (Markdown, HTML, console, SVG plots, model card) gives the stored text for stored documents.

The documents under tests/snapshots/ were built by tests/render_snapshots.py from real data (real audit,
rules, decide, cost model and probe); their renderings were recorded before the renderers moved into
advisor/report/ and began reading the typed `Report`. A difference is either a regression or a deliberate
change of output: then re-run `python tests/render_snapshots.py` and name the change in the commit.
"""

from __future__ import annotations

import difflib
import json

import pytest
from render_snapshots import NAMES, SNAPSHOTS, renderings


@pytest.mark.parametrize("name", NAMES)
def test_renderings_match_the_snapshots(name: str) -> None:
    folder = SNAPSHOTS / name
    doc = json.loads((folder / "decision.json").read_text(encoding="utf-8"))
    got = renderings(doc)
    stored = {
        str(p.relative_to(folder)): p.read_text(encoding="utf-8")
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "decision.json"
    }
    assert sorted(got) == sorted(stored)
    assert "report.md" in got and "report.html" in got and "console.txt" in got
    for rel, text in stored.items():
        if got[rel] != text:
            diff = "".join(
                list(difflib.unified_diff(text.splitlines(True), got[rel].splitlines(True), rel, rel))[:60]
            )
            pytest.fail(f"{name}/{rel} differs from the snapshot:\n{diff}")
