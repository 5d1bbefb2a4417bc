"""Hostile text through every renderer: report.md (and its sections), the model card, the console.

Untrusted strings (labels, inputs, file names, rule text, flags, server names) are poisoned with raw
HTML, links, images, backticks, table pipes and terminal escape sequences. The Markdown is then parsed
by a real CommonMark parser (markdown-it-py, with raw HTML *enabled*, the way GitHub-like renderers
treat it): no element, link or image may come from the data. The console renderers must emit no
control character from the data.
"""

from __future__ import annotations

import copy
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path, PurePath
from typing import Any

import pytest
import report_docs
from markdown_it import MarkdownIt

from advisor.decide import rules
from advisor.document import Report, Training
from advisor.report import finetune as finetune_report
from advisor.report import markdown
from advisor.report.console import print_summary
from advisor.textsafe import has_url_credentials, md_code, md_escape, md_link, redact_url, term_safe

PAYLOAD = (
    " <img src=x onerror=alert(1)><script>alert(2)</script> [click](javascript:alert(3))"
    " ![pixel](https://evil.example/p.png) <https://evil.example/auto> www.evil.example"
    " `tick`` a|b *em* _u_ # h \x1b[2J\x1b]8;;https://evil.example\x07osc\x1b]8;;\x07 \r\x9b31m\u202e"
)
PAYLOAD_NAME = "tickets" + PAYLOAD + ".jsonl"  # a data file's name as the model card shows it
FREE_TEXT_KEYS = {
    "path",
    "message",
    "note",
    "title",
    "citation",
    "summary",
    "reason",
    "what",
    "why",
    "domain",
    "currency",
    "source",
    "price_date",
    "base_model",
    "adapter_dir",
    "model_id",
    "input",
    "target",
    "before",
    "after",
    "method",
}


# Fields with a closed set of values (Literal in advisor/document.py): a document with anything else
# there is refused at the edge (Report.model_validate), so hostile text never reaches a renderer through them.
CLOSED_VALUES = {("method", "lora"), ("method", "qlora"), ("source", "inputs"), ("source", "targets")}


def poison(node: Any) -> Any:
    """A copy of a report document with the payload appended to every free-text field and label."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if isinstance(v, str) and k in FREE_TEXT_KEYS and (k, v) not in CLOSED_VALUES:
                out[k] = v + PAYLOAD
            elif k == "label_counts" and isinstance(v, dict):
                out = {**out, k: {lab + PAYLOAD: n for lab, n in v.items()}}
            elif k in ("what_would_change", "rules_files") and isinstance(v, list):
                out[k] = [x + PAYLOAD for x in v]
            else:
                out[k] = poison(v)
        return out
    if isinstance(node, list):
        return [poison(x) for x in node]
    return node


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


ALLOWED_TAGS = {
    "h1", "h2", "h3", "p", "strong", "em", "code", "ul", "ol", "li", "table", "thead", "tbody", "tr",
    "th", "td", "a", "img", "pre", "hr", "blockquote", "br",
}  # fmt: skip


def assert_safe_markdown(md: str) -> None:
    """Render like a GitHub-style renderer (raw HTML on) and check nothing came from the payload."""
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]", md), "a control character reached report.md"
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(md)
    page = _Html()
    page.feed(html)
    for tag, attrs in page.tags:
        assert tag in ALLOWED_TAGS, f"raw <{tag}> from the data reached the rendered report"
        if tag == "a":
            assert (attrs.get("href") or "").startswith("https://"), attrs
            assert "evil.example" not in (attrs.get("href") or "")
        if tag == "img":
            assert (attrs.get("src") or "").startswith("plots/"), attrs
        assert not any(k.startswith("on") for k in attrs), attrs
    assert "<script" not in html and "<img src=x" not in html
    # The payload is shown as text, not dropped: the escaped forms are in the rendered page.
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert "\\x1b" in html


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    base = tmp_path_factory.mktemp("docs")
    return {
        "few_shot": poison(report_docs.few_shot_doc(base)),
        "fine_tune": poison(report_docs.fine_tune_doc(base)),
        "collect_data": poison(report_docs.collect_data_doc(base)),
    }


# --------------------------------------------------------------------------- the helpers themselves


@pytest.mark.parametrize(
    "text", ["plain", "a`b", "``x``", "`", "ends with `", " spaced ", "|pipe|", "<b>x</b>", "run`s/x`y.jsonl"]
)
def test_md_code_holds_any_text_exactly(text: str) -> None:
    html = MarkdownIt("commonmark", {"html": True}).renderInline(md_code(text))
    assert html.startswith("<code>") and html.endswith("</code>") and html.count("<code>") == 1
    from html import unescape

    assert unescape(html[len("<code>") : -len("</code>")]) == text


@pytest.mark.parametrize(
    "text",
    [
        "<script>alert(1)</script>",
        "[x](javascript:alert(1))",
        "![i](https://evil.example/i.png)",
        "<https://evil.example>",
        "see https://evil.example/a and www.evil.example",
        "*bold* _it_ ~~s~~ `c`",
        "- list",
        "1. ordered",
        "> quote",
        "# heading",
        "&lt;script&gt;",
        "a\nb\r\nc",
    ],
)
def test_md_escape_renders_as_the_literal_text(text: str) -> None:
    html = MarkdownIt("commonmark", {"html": True}).render(md_escape(text))
    page = _Html()
    page.feed(html)
    assert {t for t, _ in page.tags} <= {"p", "code"}
    from html import unescape

    shown = re.sub(r"</?(p|code)>", "", html).strip()
    assert unescape(shown) == " ".join(text.replace("\r\n", "\n").split("\n"))


def test_md_link_only_for_http_urls() -> None:
    assert md_link("Paper", "https://example.org/a(b)") == "[Paper](<https://example.org/a%28b%29>)"
    assert "](" not in md_link("x", "javascript:alert(1)")


@pytest.mark.parametrize(
    "text,shown",
    [
        ("\x1b[2J", "\\x1b[2J"),
        ("\x1b]8;;http://e\x07link", "\\x1b]8;;http://e\\x07link"),
        ("a\rb", "a\\rb"),
        ("\x9b31m", "\\x9b31m"),
        ("\u202eevil", "\\u202eevil"),
        ("tab\tand\nnewline", "tab\tand\nnewline"),
        ("lone \ud800", "lone \\ud800"),
    ],
)
def test_term_safe_makes_controls_visible(text: str, shown: str) -> None:
    assert term_safe(text) == shown
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", term_safe(text, single_line=True))


def test_url_credentials_found_and_redacted() -> None:
    assert has_url_credentials("http://user:pass@host:8000/v1")
    assert has_url_credentials("https://token@host/v1")
    assert not has_url_credentials("http://host:8000/v1?email=a@b")
    assert redact_url("http://user:pass@host/v1") == "http://***@host/v1"


@pytest.mark.parametrize(
    "url,shown",
    [
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
        ("https://api.example.com/v1?key=sk-abc", "https://api.example.com/v1?key=***"),
        ("https://h/v1?api-version=2024-02-01&api_key=abc", "https://h/v1?api-version=***&api_key=***"),
        ("https://h/v1?sk-bare", "https://h/v1?***"),
        ("https://h/v1#token", "https://h/v1#***"),
        ("https://h/key/sk-proj-abc123/v1", "https://h/key/***/v1"),
        ("https://h/token/abc/v1", "https://h/token/***/v1"),
        ("https://h/v1/sk-proj-abc123", "https://h/v1/***"),
        ("https://h/v1/hf_abcdef", "https://h/v1/***"),
        ("https://gw.example/v1/0123456789abcdef0123456789abcdef/gw", "https://gw.example/v1/***/gw"),
        ("https://x.azure.com/openai/deployments/gpt-4o", "https://x.azure.com/openai/deployments/gpt-4o"),
        ("http://u:p@h:1/v1?key=k#f", "http://***@h:1/v1?key=***#***"),
        ("at http://h/key/abc/v1 (model m): refused", "at http://h/key/***/v1 (model m): refused"),
    ],
)
def test_redact_url_hides_every_secret_of_a_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_url(shown) == shown  # idempotent


def test_redact_url_hides_a_given_secret_anywhere() -> None:
    assert redact_url("http://h/v1/x?a=1 and sk-1 again", ("sk-1",)) == "http://h/v1/x?a=*** and *** again"


def test_preview_cuts_untrusted_text_short_and_visible() -> None:
    from advisor.textsafe import preview, preview_list

    assert preview("text") == "text"
    assert preview("OPENAI_API_KEY=sk-proj-abcdefghijkl") == "OPENAI_API_KEY=s... (35 characters)"
    assert preview("a\x1b[2J\u202e") == "a\\x1b[2J\\u202e"
    assert preview_list([f"c{i}" for i in range(20)]) == "c0, c1, c2, c3, c4, c5, c6, c7 and 12 more"
    assert preview_list([]) == "(none)"


def test_a_data_file_linked_to_a_dotfile_shows_only_a_prefix_of_its_first_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from advisor.cli import main

    secret = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
    (tmp_path / ".env").write_text(f"OPENAI_API_KEY={secret}\nOTHER=1\n", encoding="utf-8")
    (tmp_path / "data.csv").symlink_to(tmp_path / ".env")
    code = main(["advise", str(tmp_path / "data.csv"), "--no-model", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 3 and "available columns: OPENAI_API_KEY=s..." in err
    assert secret[:6] not in err and len(err.splitlines()) == 1


# --------------------------------------------------------------------------- every renderer


@pytest.mark.parametrize("name", ["few_shot", "fine_tune", "collect_data"])
def test_report_markdown_is_safe_with_hostile_text_everywhere(docs: dict[str, Any], name: str) -> None:
    assert_safe_markdown(
        markdown.to_markdown(
            Report.model_validate(docs[name]), plots={"prompting": [("k-curve" + PAYLOAD, "plots/k.svg")]}
        )
    )


@pytest.mark.parametrize(
    "render,section",
    [
        (lambda r: markdown.audit_section(r.audit, r.split), "audit"),
        (lambda r: markdown.prompting_section(r.prompting), "prompting"),
        (lambda r: markdown.evidence_section(r.evidence), "evidence"),
        (lambda r: finetune_report.training_markdown(r.training), "training"),
        (lambda r: finetune_report.verification_markdown(r.verification), "verification"),
        (
            lambda r: finetune_report.model_card_markdown(r.training, r.verification, dataset=PAYLOAD_NAME),
            "model card",
        ),
    ],
)
def test_each_section_renderer_is_safe(docs: dict[str, Any], render: Any, section: str) -> None:
    doc = copy.deepcopy(docs["fine_tune"])
    doc["audit"]["label_counts"] = {"<script>alert(2)</script>\x1b[2J": 3}
    if doc.get("split"):
        doc["split"]["file"] = "split`<script>alert(2)</script>\x1b.json"
    for key in ("prompting", "training"):
        for field in ("model_id", "base_model"):
            if doc.get(key) and field in doc[key]:
                doc[key][field] += "<script>alert(2)</script>\x1b[2J"
    if doc.get("evidence"):
        doc["evidence"]["domain"] = "<script>alert(2)</script> \x1b[2J"
    md = render(Report.model_validate(doc))
    assert_safe_markdown(md)


def test_model_card_front_matter_and_code_cannot_be_broken(docs: dict[str, Any]) -> None:
    training = copy.deepcopy(docs["fine_tune"]["training"])
    training["base_model"] = 'evil"\n---\nlicense: x\n```\nimport os <b>[l](https://e.example)'
    lines = finetune_report.model_card_markdown(Training.model_validate(training), None).splitlines()
    assert lines[0] == "---"
    front = lines[1 : lines.index("---", 1)]
    # not a Hub id: no base_model in the metadata at all, only the library and the tags
    assert [ln.split(":")[0] for ln in front] == ["library_name", "tags", "- lora", "- tunegate"]
    snippet = next(ln for ln in lines if ln.startswith("base = "))
    literal = snippet[len("base = AutoModelForCausalLM.from_pretrained(") : -1]
    # a local folder is named by its name only (never its path)
    assert json.loads(literal) == term_safe(PurePath(training["base_model"]).name, single_line=True)
    assert not re.search(r"[<>\[\]()`]", literal)
    assert "license: x" not in lines and "import os" not in lines
    assert sum(ln.startswith("```") for ln in lines) == 2  # the usage block opens and closes, nothing else


def test_file_name_with_a_backtick_stays_in_its_code_span(docs: dict[str, Any]) -> None:
    doc = copy.deepcopy(docs["few_shot"])
    doc["dataset"]["path"] = "data/a`b``<img src=x onerror=alert(1)>.jsonl"
    md = markdown.to_markdown(Report.model_validate(doc))
    html = MarkdownIt("commonmark", {"html": True}).render(md)
    assert "<code>data/a`b``&lt;img src=x onerror=alert(1)&gt;.jsonl</code>" in html


def _console() -> tuple[Any, io.StringIO]:
    from rich.console import Console

    buf = io.StringIO()
    return Console(file=buf, width=200, color_system=None, force_terminal=False), buf


@pytest.mark.parametrize("name", ["few_shot", "fine_tune", "collect_data"])
def test_console_summary_shows_no_control_characters(docs: dict[str, Any], name: str) -> None:
    doc = copy.deepcopy(docs[name])
    if doc.get("prompting"):
        doc["prompting"]["plateau"]["reason"] += PAYLOAD
    console, buf = _console()
    print_summary(Report.model_validate(doc), console=console)
    out = buf.getvalue()
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]", out)
    assert "\\x1b" in out  # shown, not dropped


def test_rules_list_shows_no_control_characters(tmp_path: Path) -> None:
    (tmp_path / "evil.toml").write_text(
        "[[rule]]\n"
        'id = "evil"\nkind = "vote"\nverdict = "prompt"\nweight = 1\n'
        'message = "hi \\u001b[2J \\u001b]8;;https://evil.example\\u0007x\\u001b]8;;\\u0007 \\r"\n'
        '[rule.source]\ntitle = "T \\u001b[31m"\nurl = "https://example.org"\n'
        '[[rule.when]]\nsignal = "n_examples"\nop = "gt"\nvalue = 0\n',
        encoding="utf-8",
    )
    ruleset = rules.load_rules([tmp_path])
    console, buf = _console()
    rules.print_rules(ruleset, console=console)
    out = buf.getvalue()
    assert "evil" in out and "\\x1b[31m" in out
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", out)


@pytest.mark.parametrize("name", ["few_shot", "fine_tune", "collect_data"])
def test_plots_stay_well_formed_svg_without_markup_from_data(docs: dict[str, Any], name: str) -> None:
    import xml.etree.ElementTree as ET

    from advisor.report.plots import figures

    svgs = [fig.svg for fig in figures(Report.model_validate(docs[name]))]
    assert svgs
    for svg in svgs:
        root = ET.fromstring(svg)  # control characters from the data would make this raise
        tags = {el.tag.split("}")[-1] for el in root.iter()}
        assert not tags & {"script", "img", "image", "a", "foreignObject"}
