"""Snapshots of every renderer's output for real report documents, to prove a refactor changes no text.

`python tests/render_snapshots.py` rebuilds the documents with tests/report_docs.py (real data, real audit,
rules, decide, cost model and probe), fixes the fields that vary per machine and per run (paths, clock,
platform, library versions) and writes, under tests/snapshots/: each document as <name>.decision.json and
its renderings (report.md, report.html, the console summary, each SVG plot, the model card).
tests/test_render_snapshots.py renders the stored documents again and compares the text.
Re-run this script only for a deliberate change of output, and say which in the commit.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SNAPSHOTS = HERE / "snapshots"
NAMES = ("few_shot", "fine_tune", "collect_data", "hostile")


def renderings(doc: dict[str, Any]) -> dict[str, str]:
    """Every rendering of one document, by file name."""
    from rich.console import Console

    from advisor.document import Report
    from advisor.report.console import print_summary
    from advisor.report.finetune import model_card_markdown
    from advisor.report.html import to_html
    from advisor.report.markdown import to_markdown
    from advisor.report.plots import figures

    report = Report.model_validate(doc)
    out: dict[str, str] = {}
    plots: dict[str, list[tuple[str, str]]] = {}
    for fig in figures(report):
        rel = f"plots/{fig.name}.svg"
        out[rel] = fig.svg + "\n"
        plots.setdefault(fig.section, []).append((fig.title, rel))
    out["report.md"] = to_markdown(report, plots=plots)
    out["report.html"] = to_html(report)
    buf = io.StringIO()
    print_summary(report, console=Console(file=buf, width=140, color_system=None, force_terminal=False))
    out["console.txt"] = buf.getvalue()
    if report.training is not None:
        out["model_card.md"] = model_card_markdown(report.training, report.verification)
    return out


def normalise(doc: dict[str, Any], base: Path) -> dict[str, Any]:
    text = json.dumps(doc).replace(str(base), "/run")
    doc = json.loads(text)
    doc["created_at"] = "2026-01-01T00:00:00+00:00"
    doc["tool_version"] = doc["provenance"]["tool_version"] = "0.0.0"
    p = doc["provenance"]
    p["python"], p["platform"] = "3.12.0", "Linux-x86_64"
    p["libraries"] = {k: ("1.0" if v else None) for k, v in p["libraries"].items()}
    return doc


def build() -> None:
    sys.path.insert(0, str(HERE))
    import report_docs

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        for sub in "abcd":
            (base / sub).mkdir()
        built = {
            "few_shot": report_docs.few_shot_doc(base / "a"),
            "fine_tune": report_docs.fine_tune_doc(base / "b"),
            "collect_data": report_docs.collect_data_doc(base / "c"),
            "hostile": report_docs.hostile_doc(base / "d"),
        }
        for name, doc in built.items():
            doc = normalise(doc, base)
            folder = SNAPSHOTS / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "decision.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
            for rel, text in renderings(doc).items():
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                (folder / rel).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    build()
