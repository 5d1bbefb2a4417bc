"""The README is a short door into docs/: its length, its links, and that nothing it once held is lost.

Pure text checks (no model, no network): every relative link in README.md and docs/*.md points at a file
that exists and, for a `#fragment` into a Markdown file, at a heading there, with anchors computed the
way GitHub computes them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]

# The section headings the README had before it was split: each must still exist, in the README
# or on a docs page the README links to.
FORMER_README_HEADINGS = (
    "Two commands",
    "What it does",
    "Input formats",
    "Exit codes",
    "Progress and output",
    "Dry run: what a run will spend, before it spends it",
    "Gating CI on the verdict",
    "Backends",
    "The prompting arms and the statistics",
    "Evidence beyond accuracy",
    "Rules",
    "Fine-tuning",
    "Outputs",
    "Python API",
    "Configuration",
    "Benchmarks",
    "Development",
)

# Pages that say what the tool does; dated measurements belong in docs/benchmarks.md.
MANUAL_PAGES = (
    "user-guide.md",
    "backends.md",
    "statistics.md",
    "rules.md",
    "fine-tuning.md",
    "development.md",
)

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")


def prose(text: str) -> str:
    """The text without fenced code blocks (links and headings inside code are not links or headings)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text without markup, lower case, no punctuation, spaces as -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for m in HEADING.finditer(prose(path.read_text(encoding="utf-8"))):
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    text = CODE_SPAN.sub(lambda m: "", prose(path.read_text(encoding="utf-8")))
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def target(page: Path, link: str) -> tuple[Path, str]:
    file, _, fragment = link.partition("#")
    return ((page.parent / file).resolve() if file else page), fragment


def test_docs_pages_exist() -> None:
    assert DOCS, "docs/*.md is missing"


def test_readme_is_short() -> None:
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= 220, f"README.md has {n} lines; the limit is 220 (move the detail to docs/)"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for link in links(page):
        path, fragment = target(page, link)
        if not path.exists():
            broken.append(f"{link}: no such file")
        elif fragment and path.suffix == ".md" and fragment not in anchors(path):
            broken.append(f"{link}: no heading with anchor #{fragment} in {path.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {target(README, link)[0] for link in links(README)}
    missing = [p.name for p in DOCS if p.resolve() not in linked]
    assert not missing, f"docs pages the README does not link to: {missing}"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_docs_page_opens_with_a_title_a_line_and_the_way_back(page: Path) -> None:
    lines = page.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# "), "a page starts with its title"
    assert lines[1] == "" and lines[2], "then one line saying what the page holds"
    assert "](../README.md)" in lines[2], "and a link back to the README"


def test_every_former_readme_section_is_one_click_away() -> None:
    linked = {target(README, link)[0] for link in links(README)} | {README.resolve()}
    where = {p.resolve(): anchors(p) for p in PAGES}
    lost = []
    for heading in FORMER_README_HEADINGS:
        homes = [p for p, a in where.items() if slug(heading) in a]
        if not any(p in linked for p in homes):
            lost.append(f"{heading!r}: {'on no page' if not homes else 'on a page the README does not link'}")
    assert not lost, "\n".join(lost)


@pytest.mark.parametrize("name", MANUAL_PAGES)
def test_manual_pages_keep_dated_measurements_in_benchmarks(name: str) -> None:
    text = (ROOT / "docs" / name).read_text(encoding="utf-8")
    dated = [line for line in text.splitlines() if DATE.search(line)]
    assert not dated, f"dated measurements belong in docs/benchmarks.md: {dated}"


def test_ci_runs_the_readmes_test_command() -> None:
    # The README shows `make test` on a line of its own in a code block, and CI runs exactly that.
    assert re.search(r"^make test$", README.read_text(encoding="utf-8"), re.M)
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(encoding="utf-8"), re.M)


def test_slug_follows_github() -> None:
    assert slug("Dry run: what a run will spend, before it spends it") == (
        "dry-run-what-a-run-will-spend-before-it-spends-it"
    )
    assert slug("Faults of an `openai` server") == "faults-of-an-openai-server"
    assert slug("What `make test` installs") == "what-make-test-installs"
    assert slug("Several GPUs (or processes)") == "several-gpus-or-processes"
    assert slug("The demo's dry run") == "the-demos-dry-run"
