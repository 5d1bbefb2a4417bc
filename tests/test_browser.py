"""The HTML report in a real browser: Debian's headless Chromium, driven by Playwright.

Playwright drives the system Chromium (`executable_path`); it never downloads a browser. Each page is
written by `report.write_report` into a run folder and opened from disk. Checked: no console error,
no request but the page itself, the verdict on screen, no horizontal overflow at laptop width, plots
inside the printable width of A4, a screenshot and a PDF written. In CI (CI=true) a missing Chromium
or Playwright fails the test; locally it skips.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import report_docs
from needs import unavailable

from advisor.document import Report
from advisor.report import plots
from advisor.report import render as report

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAPTOP = {"width": 1366, "height": 768}
WIDE, PHONE = 1280, 390
FIRST_SCREEN_PX = 1000
DEMO = Path(__file__).parent / "data" / "demo.decision.json"  # decision.json of a real `tunegate demo` run
A4_PRINTABLE_PX = 703  # 210 mm - 2 x 12 mm margins at 96 px per inch


def _unavailable(why: str) -> None:
    unavailable(f"browser test: {why}")


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        _unavailable("Chromium not found on PATH (Debian: apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install playwright; no browser download)")
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport=LAPTOP,
            offline=True,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    base = tmp_path_factory.mktemp("docs")
    return {
        "few_shot": report_docs.few_shot_doc(base),
        "fine_tune": report_docs.fine_tune_doc(base),
        "collect_data": report_docs.collect_data_doc(base),
        "hostile": report_docs.hostile_doc(base),
        "demo": json.loads(DEMO.read_text(encoding="utf-8")),
    }


def _open(context: Any, path: Path) -> tuple[Any, list[str], list[str]]:
    """Open a file page; returns (page, console errors and page errors, every requested URL)."""
    page = context.new_page()
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_timeout(200)  # let any late request or console message arrive before checking
    return page, errors, requests


@pytest.mark.parametrize("verdict", ["few_shot", "fine_tune", "collect_data"])
def test_report_page_in_chromium(
    browser_context: Any, docs: dict[str, dict[str, Any]], verdict: str, tmp_path: Path
) -> None:
    doc = docs[verdict]
    run = tmp_path / "run"
    report.write_report(run, doc)
    page_path = run / "report.html"
    page, errors, requests = _open(browser_context, page_path)
    try:
        assert errors == []
        assert requests == [page_path.as_uri()]  # the file itself and nothing else
        banner = page.inner_text("#verdict")
        assert verdict in banner and doc["decision"]["summary"] in banner
        assert page.title().startswith(f"tunegate: {verdict}")
        assert page.evaluate("document.scripts.length") == 0
        # laptop width: nothing wider than the window
        sw, cw = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert sw <= cw
        n_svg = page.evaluate("document.querySelectorAll('figure svg').length")
        assert n_svg == len(page.query_selector_all("figure"))
        if verdict != "collect_data":
            assert n_svg >= 4
            box = page.evaluate(
                "(() => { const r = document.querySelector('figure svg')"
                ".getBoundingClientRect(); return [r.width, r.height]; })()"
            )
            assert 500 <= box[0] <= 780 and box[1] > 150  # drawn at a readable size
        shot = tmp_path / f"{verdict}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
        # print: at the printable width of A4 every plot fits, and the PDF renders
        page.emulate_media(media="print")
        page.set_viewport_size({"width": A4_PRINTABLE_PX, "height": 1000})
        overflow = page.evaluate(
            "Array.from(document.querySelectorAll('svg')).filter("
            "s => s.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5).length"
        )
        assert overflow == 0
        # the folded engineer's detail prints unfolded: a closed section's table is laid out on paper
        hidden = page.evaluate(
            "Array.from(document.querySelectorAll('details.section:not([open]) table'))"
            ".filter(t => t.getBoundingClientRect().height === 0).length"
        )
        folded = page.evaluate("document.querySelectorAll('details.section:not([open]) table').length")
        assert folded > 0 and hidden == 0
        pdf = tmp_path / f"{verdict}.pdf"
        page.pdf(path=str(pdf), format="A4")
        assert pdf.read_bytes()[:5] == b"%PDF-"
    finally:
        page.close()


def test_hostile_text_renders_as_text_without_overflow(
    browser_context: Any, docs: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    report.write_report(tmp_path / "run", docs["hostile"])
    page_path = tmp_path / "run" / "report.html"
    page, errors, requests = _open(browser_context, page_path)
    try:
        assert errors == [] and requests == [page_path.as_uri()]
        assert page.evaluate("document.scripts.length") == 0
        assert page.evaluate("document.images.length") == 0
        page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
        body = page.inner_text("body")
        for s in report_docs.HOSTILE_INPUTS[:3]:
            assert s in body
        for label in report_docs.HOSTILE_LABELS.values():
            assert label in body
        sw, cw = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert sw <= cw  # the 20,000-character line wraps inside its cell
        page.screenshot(path=str(tmp_path / "hostile.png"), full_page=False)
    finally:
        page.close()


def test_the_checks_see_requests_and_console_errors(browser_context: Any, tmp_path: Path) -> None:
    """The listeners above would catch a page that fetches something (a guard for the guard)."""
    page_path = tmp_path / "leaky.html"
    page_path.write_text(
        '<!DOCTYPE html><html><head><link rel="stylesheet" href="http://192.0.2.1/a.css"></head>'
        '<body><img src="http://192.0.2.1/x.png"><p>leaky</p></body></html>',
        encoding="utf-8",
    )
    page, errors, requests = _open(browser_context, page_path)
    try:
        assert "http://192.0.2.1/x.png" in requests and "http://192.0.2.1/a.css" in requests
        assert errors  # the failed loads are console errors
    finally:
        page.close()


# Every drawn element of every SVG (opened <details> included) against its SVG's box: [svg index, tag, side].
OUTSIDE_SVG = """() => {
  const out = [];
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  document.querySelectorAll('svg').forEach((svg, i) => {
    const box = svg.getBoundingClientRect();
    if (box.width === 0) return;
    svg.querySelectorAll('line, polyline, path, circle, polygon, rect, text').forEach(el => {
      const r = el.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) return;
      const sides = [['left', r.left < box.left - 1], ['right', r.right > box.right + 1],
                     ['top', r.top < box.top - 1], ['bottom', r.bottom > box.bottom + 1]];
      const what = (el.textContent || '').slice(0, 40);
      sides.filter(s => s[1]).forEach(s => out.push([i, el.tagName, s[0], what]));
    });
  });
  return out;
}"""


@pytest.mark.parametrize("name", ["demo", "collect_data", "few_shot"])
def test_first_screen_answers_the_review(
    browser_context: Any, docs: dict[str, dict[str, Any]], name: str, tmp_path: Path
) -> None:
    """At 1280 px the verdict, the options and the comparison chart are on the first screen; at 390 px the
    page does not scroll sideways; no plot draws outside its frame."""
    run = tmp_path / "run"
    report.write_report(run, docs[name])
    page, errors, _ = _open(browser_context, run / "report.html")
    try:
        assert errors == []
        page.set_viewport_size({"width": WIDE, "height": FIRST_SCREEN_PX})
        bottoms = page.evaluate(
            "['#verdict', 'table.options', '#compare svg'].map(s => document.querySelector(s))"
            ".map(e => e && e.getBoundingClientRect().bottom)"
        )
        has_chart = plots.comparison({f.name: f for f in plots.figures(Report.model_validate(docs[name]))})
        if not has_chart:  # a data-only run (no model): nothing to compare on a chart
            assert name == "collect_data" and bottoms[2] is None
            bottoms = bottoms[:2]
        assert all(b is not None and b <= FIRST_SCREEN_PX for b in bottoms), bottoms
        first = page.inner_text("#verdict") + page.inner_text("#options") + page.inner_text("#why")
        assert docs[name]["decision"]["verdict"] in first
        for rule in docs[name]["decision"]["fired"]:
            assert rule["id"] not in first  # rule ids only in the engineer's part
        page.screenshot(path=str(tmp_path / f"{name}-{WIDE}.png"))
        page.set_viewport_size({"width": PHONE, "height": 844})
        sw, cw = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert sw <= cw
        page.screenshot(path=str(tmp_path / f"{name}-{PHONE}.png"), full_page=True)
        for width in (WIDE, PHONE):
            page.set_viewport_size({"width": width, "height": FIRST_SCREEN_PX})
            assert page.evaluate(OUTSIDE_SVG) == []
            sw, cw = page.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
            )
            assert sw <= cw  # with every section open, too
    finally:
        page.close()
