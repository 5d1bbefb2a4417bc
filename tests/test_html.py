"""The HTML report: self-contained, every section or its reason, escaped dataset text, plots as SVG."""

from __future__ import annotations

import copy
import math
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import report_docs

from advisor.document import Report
from advisor.report import html, plots
from advisor.report import render as report


@pytest.fixture(scope="session")
def docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    base = tmp_path_factory.mktemp("docs")
    return {
        "few_shot": report_docs.few_shot_doc(base),
        "fine_tune": report_docs.fine_tune_doc(base),
        "collect_data": report_docs.collect_data_doc(base),
    }


@pytest.fixture(scope="session")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return report_docs.hostile_doc(tmp_path_factory.mktemp("hostile"))


class _Page(HTMLParser):
    """Tags, attributes and text nodes of a page, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    p.close()
    return p


def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(report.schema(), format_checker=jsonschema.FormatChecker())


def test_fixture_documents_are_valid_and_decide_as_named(docs: dict[str, dict[str, Any]], hostile) -> None:
    for verdict, doc in docs.items():
        _validator().validate(doc)
        assert doc["decision"]["verdict"] == verdict
    _validator().validate(hostile)


@pytest.mark.parametrize("verdict", ["few_shot", "fine_tune", "collect_data"])
def test_page_is_self_contained(docs: dict[str, dict[str, Any]], verdict: str) -> None:
    page = html.to_html(Report.model_validate(docs[verdict]))
    p = parse(page)
    tags = [t for t, _ in p.tags]
    assert "script" not in tags and "iframe" not in tags and "object" not in tags and "img" not in tags
    for tag, attrs in p.tags:
        assert "src" not in attrs, tag
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
        href = attrs.get("href")
        if href is not None:
            ok = href.startswith("#") or href.startswith(("http://", "https://")) or href == "data:,"
            assert ok and tag in ("a", "link"), (tag, href)
            if tag == "link":
                assert attrs.get("rel") == "icon" and href == "data:,"  # no favicon request
    assert "@import" not in page and "url(" not in page and "@font-face" not in page
    csp = next(
        a["content"] for t, a in p.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    )
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page


def test_fine_tune_page_has_every_section_plot_rule_and_provenance(docs: dict[str, dict[str, Any]]) -> None:
    doc = docs["fine_tune"]
    page = html.to_html(Report.model_validate(doc))
    text = " ".join("".join(parse(page).text).split())
    assert re.search(r'<div class="verdict">fine_tune</div>', page)
    conf = doc["decision"]["confidence"]
    assert (f"How sure: {conf:.0%}" if conf is not None else "How sure: not measured") in text
    for fig in (
        "arms",
        "learning_curve",
        "cost",
        "latency",
        "training_loss",
        "training_metrics",
        "before_after",
    ):
        assert f'id="fig-{fig}"' in page, fig
    assert '<figure id="compare"><svg' in page and "Fine-tuning curve (LoRA pilots)" in page  # the pilot's
    assert "fine-tuned model, verified on the eval items" in page  # the verified fine-tune on that chart
    assert page.count("<svg ") == 8
    for rule in doc["decision"]["fired"]:
        assert rule["id"] in text and rule["message"] in text
        for s in rule["sources"]:
            assert s["title"] in text
            if s.get("url"):
                assert f'href="{s["url"]}"' in page
    for rule in doc["decision"]["skipped"]:
        assert rule["id"] in text
    for name in doc["decision"]["not_fired"]:
        assert name in text
    prov = doc["provenance"]
    assert prov["dataset_sha256"] in text and prov["rules_sha256"] in text
    assert "split=2" in text  # seeds
    assert prov["libraries"]["numpy"] in text
    for ex in doc["verification"]["flips"]["improved_examples"]:
        assert " ".join(ex["input"].split()) in text  # the real items, shown as text
    cost = doc["evidence"]["cost"]
    assert f"{cost['break_even_days']:.1f} days" in text
    # the signals table marks what fired rules cite
    assert '<tr class="used"><td><code>volume_per_day</code>' in page


def test_collect_data_page_says_not_measured_with_reasons(docs: dict[str, dict[str, Any]]) -> None:
    doc = docs["collect_data"]
    page = html.to_html(Report.model_validate(doc))
    text = " ".join("".join(parse(page).text).split())
    assert '<div class="verdict">collect_data</div>' in page
    # Without a model only the probe's learning curve is measured: one plot, no invented arm, cost or latency.
    assert page.count("<svg ") == 1 and 'id="fig-learning_curve"' in page
    assert "Not measured: no arm was scored: no model was run in this run (backend none)." in text
    for m in doc["evidence"]["not_measured"]:
        assert f"{m['what']}: {m['why']}" in text
    assert "cost/request" not in text and "Latency model" not in text
    assert "Not measured: no adapter was trained in this run." in text
    assert "Not measured: no fine-tuned model was compared" in text
    assert "data.min_examples" in text and doc["decision"]["summary"] in text
    assert "prompting_measured" in text


def test_hostile_dataset_text_is_shown_as_text(hostile: dict[str, Any]) -> None:
    page = html.to_html(Report.model_validate(hostile))
    p = parse(page)
    tags = [t for t, _ in p.tags]
    # The only tables are the page's own: every hostile </table> or <script> is text.
    assert "script" not in tags and "img" not in tags and "b" not in tags and "i" not in tags
    assert page.count("<table") == page.count("</table>")
    assert "<script" not in page.lower() and "alert(1)</script>" not in page
    text = "".join(p.text)
    for s in report_docs.HOSTILE_INPUTS:
        assert s in text, s[:40]
    for label in report_docs.HOSTILE_LABELS.values():
        assert label in text
        assert html.esc(label) in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;double&quot; &amp; &#x27;single&#x27;" in page
    assert "W" * 20_000 in page  # whole, not truncated; wrapped by CSS:
    assert "overflow-wrap: anywhere" in html.CSS
    # the long input sits in a fixed-layout table cell, where "anywhere" keeps the column narrow
    assert re.search(r'<table class="data flips">.*?<div class=\'text\'>WWWW', page, re.S)


def test_source_links_only_for_http(docs: dict[str, dict[str, Any]]) -> None:
    doc = copy.deepcopy(docs["collect_data"])
    rule = doc["decision"]["fired"][0]
    rule["sources"] = [
        {"title": "evil", "url": "javascript:alert(1)"},
        {"title": "data", "url": "data:text/html,<script>alert(1)</script>"},
        {"title": 'quote"break', "url": 'https://example.org/a?b="><script>alert(1)</script>'},
        {"title": "relative", "url": "/etc/passwd"},
    ]
    page = html.to_html(Report.model_validate(doc))
    hrefs = [a.get("href") for t, a in parse(page).tags if t == "a"]
    assert all(h.startswith(("#", "https://", "http://")) for h in hrefs)
    assert 'https://example.org/a?b="><script>alert(1)</script>' in hrefs  # intact after unescaping
    assert "javascript:alert" not in " ".join(hrefs) and "<script" not in page


def test_svgs_are_standalone_scalable_xml_with_escaped_text(docs: dict[str, dict[str, Any]]) -> None:
    doc = copy.deepcopy(docs["fine_tune"])
    for arm in doc["prompting"]["arms"]:
        if arm["kind"] == "few_shot":
            arm["kind"] = 'custom</text><script>alert("x")</script>'
    figs = plots.figures(Report.model_validate(doc))
    assert [f.name for f in figs] == [
        "arms",
        "learning_curve",
        "cost",
        "latency",
        "training_loss",
        "training_metrics",
        "pilot",
        "before_after",
    ]
    for f in figs:
        root = ET.fromstring(f.svg)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert root.get("viewBox", "").startswith("0 0 ") and root.get("width") is None
        assert "<script" not in f.svg
        numbers = re.findall(r'\s(?:x|y|cx|cy|x1|x2|y1|y2)="([^"]+)"', f.svg)
        assert all(math.isfinite(float(v)) for v in numbers)
    arms_svg = ET.fromstring(figs[0].svg)
    texts = [t.text for t in arms_svg.iter("{http://www.w3.org/2000/svg}text")]
    assert any(t and t.startswith("few_shot_k") for t in texts)  # unknown kinds show their (escaped) name


def test_plots_need_their_numbers(docs: dict[str, dict[str, Any]]) -> None:
    evidence = Report.model_validate(docs["fine_tune"]).evidence
    assert evidence is not None and evidence.learning_curve is not None and evidence.cost is not None
    assert plots.arm_curve_svg(None) is None
    assert plots.learning_curve_svg(evidence.learning_curve.model_copy(update={"points": []})) is None
    no_cost = evidence.cost.model_copy(update={"finetune_cost": None})
    assert plots.cost_svg(evidence.model_copy(update={"cost": no_cost})) is None
    arm = evidence.arms[0].model_copy(update={"p95_ms": None})
    assert plots.latency_svg(evidence.model_copy(update={"arms": [arm]})) is None
    assert plots.training_loss_svg([{"event": "start", "step": 0}]) is None
    assert plots.before_after_svg(None) is None
    assert plots.nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert plots.log_ticks(80, 5000) == [100, 200, 500, 1000, 2000, 5000]


def test_training_without_curve_says_where_it_is(docs: dict[str, dict[str, Any]]) -> None:
    doc = copy.deepcopy(docs["fine_tune"])
    del doc["training"]["curve"]
    page = html.to_html(Report.model_validate(doc))
    assert 'id="fig-training_loss"' not in page
    assert "the per-step loss curve is not in this document (see train/metrics.jsonl" in page
    assert "0.4691" in page or str(doc["training"]["metrics"]["best_dev_loss"])[:5] in page


def test_print_and_laptop_css() -> None:
    css = html.CSS
    assert ".wrap { max-width: 980px" in css
    assert "@page { size: A4" in css
    print_block = css[css.index("@media print") :]
    assert "max-width: 100%" in print_block and "break-inside: avoid" in print_block


def test_write_report_writes_html_markdown_and_plot_files(tmp_path: Path, docs) -> None:
    doc = docs["fine_tune"]
    run = tmp_path / "run"
    report.write_report(run, doc)
    names = sorted(p.name for p in run.iterdir())
    assert names == [".tunegate-run", "decision.json", "plots", "report.html", "report.md"]
    svgs = sorted(p.name for p in (run / "plots").iterdir())
    assert svgs == sorted(f"{f.name}.svg" for f in plots.figures(Report.model_validate(doc)))
    md = (run / "report.md").read_text(encoding="utf-8")
    for name in svgs:
        assert f"](plots/{name})" in md
        ET.parse(run / "plots" / name)  # well-formed standalone files
    # the plots sit under their sections: the arm curve after the prompting table, before the signals
    assert md.index("](plots/arms.svg)") < md.index("## Signals")
    first = (run / "report.html").read_bytes()
    (run / "report.html").unlink()
    assert report.rerender(run, formats=("html",)) == [run / "report.html"]
    assert (run / "report.html").read_bytes() == first
    assert first.decode("utf-8") == html.to_html(
        Report.model_validate_json((run / "decision.json").read_text("utf-8"))
    )


def test_plateau_at_the_cheapest_arm_names_no_previous_arm(docs: dict[str, dict[str, Any]]) -> None:
    doc = copy.deepcopy(docs["few_shot"])
    doc["prompting"]["plateau"].update(best_arm="zero_shot", previous_arm=None, gain=0.0, p_value=1.0)
    page = html.to_html(Report.model_validate(doc))
    assert "Prompting meets the target at zero_shot (0.865)" in page
    assert "<code>None</code>" not in page


# Raw characters report.html must never carry from the input: C0 controls (but line feed and tab), DEL, C1
# controls, bidirectional marks, overrides and isolates, line and paragraph separators.
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


@pytest.mark.parametrize("name", ["few_shot", "fine_tune", "collect_data"])
def test_no_control_or_bidi_character_from_any_input_in_the_page(docs: dict[str, Any], name: str) -> None:
    from test_textsafe import poison  # every free-text field and label, poisoned

    doc = poison(copy.deepcopy(docs[name]))
    labels = doc["dataset"]["labels"] or []
    doc["dataset"]["labels"] = [f"{x}\x1b]8;;https://evil.example\x07\u2066" for x in labels]
    page = html.to_html(Report.model_validate(doc))
    found = UNSAFE.search(page)
    assert found is None, f"{found.group(0)!r} reached the page: {page[found.start() - 80 : found.end()]!r}"
    # shown, not dropped: the visible escapes are on the page (a numeric reference would be obeyed)
    assert "\\x1b]8;;https://evil.example\\x07" in page and "\\u202e" in page and "\\x9b31m" in page
    assert "&#x1b;" not in page.lower() and "&#27;" not in page and "&#8238;" not in page
    assert 'href="https://evil.example' not in page
    assert all(t not in ("script", "img") for t, _ in parse(page).tags)


def test_esc_is_the_shared_text_safety_function() -> None:
    from advisor.textsafe import term_safe

    text = "a\x1b[2Jb\u202ec\r\nd<e>"
    assert html.esc(text) == "a\\x1b[2Jb\\u202ec\\r\\nd&lt;e&gt;"
    assert html.esc(text) == html.escape(term_safe(text, single_line=True))
    assert html.esc("line 1\nline 2\x07", lines=True) == "line 1\nline 2\\x07"
    assert html.esc("\ud800") == "\\ud800"  # a lone surrogate could not even be written as UTF-8


def test_source_links_with_a_control_or_bidi_character_are_text(docs: dict[str, dict[str, Any]]) -> None:
    doc = copy.deepcopy(docs["collect_data"])
    doc["decision"]["fired"][0]["sources"] = [
        {"title": "rlo", "url": "https://example.org/\u202eexe.txt"},
        {"title": "osc", "url": "https://example.org/\x1b]8;;https://evil.example\x07"},
        {"title": "space", "url": "https://example.org/a b"},
    ]
    page = html.to_html(Report.model_validate(doc))
    hrefs = [a.get("href") or "" for t, a in parse(page).tags if t == "a"]
    assert not any("example.org/" in h for h in hrefs)
    assert "https://example.org/\\u202eexe.txt" in page and UNSAFE.search(page) is None


DEMO = Path(__file__).parent / "data" / "demo.decision.json"  # decision.json of a real `tunegate demo` run


def _first_screen(page: str) -> str:
    """The page's text before the engineer's detail."""
    return " ".join("".join(parse(page.split('id="detail"')[0]).text).split())


def test_first_screen_is_plain_words_and_the_rest_is_folded(docs: dict[str, dict[str, Any]]) -> None:
    doc = docs["fine_tune"]
    page = html.to_html(Report.model_validate(doc))
    first = _first_screen(page)
    assert "fine_tune" in first and doc["decision"]["summary"] in first
    assert "The options" in first and '<table class="options">' in page.split('id="detail"')[0]
    assert "best prompt (few_shot_k4)" in first and "fine-tuned model (LoRA)" in first
    assert f"verified on the same {doc['verification']['n_eval']} eval items" in first
    assert "What the verdict rests on" in first and "What would change it" in first
    for rule in doc["decision"]["fired"] + doc["decision"]["skipped"]:
        assert rule["id"] not in first
    for name in doc["signals"]:
        if "_" in name:
            assert name not in first, name
    deciding = next(r for r in doc["decision"]["fired"] if r["id"] in doc["decision"]["deciding_rules"])
    assert deciding["message"] in first
    # everything else follows, folded: one <details> per section, the rules with their ids inside
    detail = page.split('id="detail"')[1]
    assert detail.count('<details class="section"') == 9
    assert '<details class="section" id="rules">' in detail and deciding["id"] in detail


def test_first_screen_of_the_demo_says_why_nothing_is_priced() -> None:
    report_ = Report.model_validate_json(DEMO.read_text(encoding="utf-8"))
    first = _first_screen(html.to_html(report_))
    assert "majority baseline ('positive' for every item)" in first
    assert "not priced: no honest prompt to price" in first
    assert "no prompting arm beats the majority baseline, so there is no prompt to price" in first
    assert "493 ms, over the 300 ms budget" in first  # the verified fine-tune, timed
    assert "How sure: high (98% of 500 resamples" in first


def test_inconclusive_with_a_high_probability_is_not_called_high_confidence() -> None:
    report_ = Report.model_validate_json(DEMO.read_text(encoding="utf-8"))
    d = report_.decision.model_copy(update={"verdict": "inconclusive"})
    first = _first_screen(html.to_html(report_.model_copy(update={"decision": d})))
    assert "inconclusive, and that is a firm finding (98% of 500 resamples" in first
    assert "How sure: high" not in first


def test_plots_draw_no_fit_the_data_contradict_and_nothing_outside_the_frame(
    docs: dict[str, dict[str, Any]],
) -> None:
    ev = Report.model_validate(docs["fine_tune"]).evidence
    assert ev is not None and ev.learning_curve is not None and ev.latency_model is not None
    lc = ev.learning_curve
    points = [p.model_copy(update={"score": 0.8 - 0.1 * i}) for i, p in enumerate(lc.points)]
    points[-1] = points[-1].model_copy(update={"ci_low": -0.45})  # a whisker far below the frame
    falling = lc.model_copy(update={"points": points})
    assert not plots.probe_trend(falling) and plots.probe_trend(lc)
    svg = plots.learning_curve_svg(falling)
    assert svg is not None and "no trend" in svg and "power-law fit" not in svg
    root = ET.fromstring(svg)
    height = float(root.attrib["viewBox"].split()[3])
    for el in root.iter():
        if el.tag.endswith("path"):
            moves = re.findall(r"([MVH])([\d.-]+)(?:,([\d.-]+))?", el.attrib["d"])
            ys = [float(b if cmd == "M" else a) for cmd, a, b in moves if cmd != "H"]
            assert ys and all(0 <= y <= height for y in ys), el.attrib["d"]
    # a latency model with a negative intercept and a poor fit is "no trend", not a line
    poor = ev.latency_model.model_copy(update={"a": -0.193, "r2": 0.18})
    assert not plots.latency_trend(poor) and plots.latency_trend(ev.latency_model)
    lat = plots.latency_svg(ev.model_copy(update={"latency_model": poor}), trained=True)
    assert lat is not None and "no trend" in lat and "latency model (mean)" not in lat
    # the fine-tuned model's latency is drawn only when one was trained or measured
    assert "fine-tuned (projected)" in str(plots.latency_svg(ev, trained=True))
    assert "fine-tuned" not in str(plots.latency_svg(ev, trained=False))
