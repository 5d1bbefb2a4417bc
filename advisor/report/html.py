"""The planning-review report as one self-contained HTML page, rendered from the document dict.

The page makes no network request: no scripts, no web fonts, inline CSS, plots inline as SVG
(`advisor.report.plots`), and a Content-Security-Policy that would block anything else. Every string from
the document is HTML-escaped (dataset items, labels, arm names, paths, rule text); links to rule
sources are emitted only for http(s) URLs. A section that was not measured says so, with its reason,
and shows no numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from advisor.document import (
    Comparison,
    Decision,
    Estimate,
    EvalGrowth,
    Evidence,
    Interval,
    Latency,
    Report,
    RuleSource,
    TokenStats,
)
from advisor.report import fmt as numbers
from advisor.report import pilot_view, plots, summary
from advisor.report.prose import (
    NO_LATENCY_TREND,
    NO_PROBE_TREND,
    baseline_sentence,
    confidence_sentence,
    growth_sentence,
    plateau_sentence,
    unverified_adapter_sentence,
)
from advisor.textsafe import term_safe

CSS = """
:root { --ink:#1d1d1f; --muted:#5b5b66; --line:#dcdce3; --bg:#ffffff; --soft:#f5f6f8;
  --ok:#0b7a4b; --warn:#9a6200; --bad:#b42318; --ft:#6b3fa0; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
.wrap { max-width: 980px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 36px 0 10px; padding-top: 8px; border-top: 1px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 8px; }
/* Dataset text can be one 20,000-character word: it must wrap anywhere rather than widen the page.
   Table cells wrap at words only (so columns size to their identifiers); tables of dataset text use a
   fixed layout, where "anywhere" cannot widen a column. */
p, li, dd, dt, figcaption, pre, .text { overflow-wrap: anywhere; }
td, th { overflow-wrap: break-word; }
table.data { table-layout: fixed; }
table.data td, table.data td code { overflow-wrap: anywhere; }
table.flips th:nth-child(1) { width: 4.5em; }
table.flips th:nth-child(n+3) { width: 14%; }
table.labels th:nth-child(n+2) { width: 18%; }
code, pre, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace;
  font-size: 13px; }
.text { white-space: pre-wrap; }
pre { white-space: pre-wrap; background: var(--soft); padding: 8px 10px; border-radius: 6px; margin: 0; }
.muted { color: var(--muted); }
.est { white-space: nowrap; }
.na { color: var(--muted); font-style: italic; }
.sub { color: var(--muted); margin: 0 0 18px; }
nav { font-size: 13px; margin: 14px 0 0; display: flex; flex-wrap: wrap; }
nav a { margin-right: 12px; white-space: nowrap; }
a { color: #0b5cad; }
.banner { border-radius: 10px; padding: 18px 22px; margin: 18px 0 8px; border: 2px solid var(--vc);
  background: var(--vbg); -webkit-print-color-adjust: exact; print-color-adjust: exact; }
.banner .label { font-size: 13px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); }
.banner .verdict { font-size: 28px; font-weight: 700; color: var(--vc); margin: 2px 0; }
.banner .headline { font-size: 17px; font-weight: 600; margin-bottom: 8px; }
.v-prompt, .v-few_shot { --vc: var(--ok); --vbg: #eef8f2; }
.v-fine_tune { --vc: var(--ft); --vbg: #f4effa; }
.v-collect_data { --vc: var(--warn); --vbg: #fdf6e7; }
.v-inconclusive { --vc: var(--bad); --vbg: #fdf0ef; }
.meter { display: inline-block; width: 160px; height: 10px; background: #e4e4ea; border-radius: 5px;
  vertical-align: middle; margin: 0 8px; overflow: hidden; }
.meter > span { display: block; height: 100%; background: var(--vc); }
.change { margin: 10px 0 0; padding-left: 20px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 14px; font-size: 14px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.used td { background: #fffbe6; }
.flips td { font-size: 13px; }
table.config { font-size: 13px; }
figure { margin: 14px 0 18px; }
figure svg { display: block; width: 100%; max-width: 760px; height: auto; border: 1px solid var(--line);
  border-radius: 6px; }
figcaption { font-size: 13px; color: var(--muted); margin-top: 4px; max-width: 760px; }
.card { border: 1px solid var(--line); border-left: 4px solid var(--muted); border-radius: 6px;
  padding: 10px 14px; margin: 10px 0; }
.card.deciding { border-left-color: var(--vc); }
.card h4 { margin: 0 0 4px; font-size: 15px; }
.card .role { font-size: 13px; color: var(--muted); }
.card table { font-size: 13px; margin: 6px 0; }
.tag { display: inline-block; font-size: 12px; padding: 0 6px; border-radius: 4px; background: var(--soft);
  border: 1px solid var(--line); margin-left: 6px; }
.notmeasured { background: var(--soft); border-radius: 6px; padding: 10px 14px; }
dl.kv { display: grid; grid-template-columns: minmax(140px, 220px) 1fr; gap: 4px 14px; margin: 8px 0; }
dl.kv dt { color: var(--muted); }
dl.kv dd { margin: 0; min-width: 0; }
ul.sources { margin: 4px 0 0; padding-left: 18px; font-size: 13px; }
h2.first { border-top: 0; margin-top: 22px; }
table.options td:nth-child(1) { font-weight: 600; }
table.options td:nth-child(3) { white-space: nowrap; }
#compare svg { max-width: 680px; }
.cols { display: grid; grid-template-columns: 1fr 1fr; gap: 0 28px; }
.cols h3 { margin-top: 10px; }
.cols ul { padding-left: 20px; margin: 4px 0; }
h2.detail { margin-top: 40px; }
details.section { border-top: 1px solid var(--line); }
details.section > summary { cursor: pointer; padding: 6px 0; }
details.section > summary h2 { display: inline; border: 0; margin: 0; padding: 0; font-size: 17px; }
@media (max-width: 640px) {
  .wrap { padding: 16px 14px 48px; }
  .cols { grid-template-columns: 1fr; }
  table { display: block; overflow-x: auto; }
  table.options, table.options tbody, table.options tr, table.options td { display: block; width: 100%; }
  table.options thead { display: none; }
  table.options tr { border-bottom: 2px solid var(--line); padding: 6px 0; }
  table.options td { border: 0; padding: 2px 0; }
  table.options td::before { content: attr(data-label) ": "; color: var(--muted); font-weight: normal; }
  .meter { display: none; }
  .est { white-space: normal; }
  dl.kv { grid-template-columns: 1fr; }
}
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { font-size: 11pt; }
  .wrap { max-width: none; padding: 0; }
  nav { display: none; }
  a { color: inherit; text-decoration: none; }
  h2 { break-after: avoid; }
  svg, figure svg { max-width: 100%; height: auto; }
  figure, .card, .banner, tr, dl.kv { break-inside: avoid; page-break-inside: avoid; }
  /* A printed or PDF report carries the engineer's detail too: folded sections print unfolded. */
  details::details-content { content-visibility: visible; display: block; }
}
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


# ---------------------------------------------------------------- formatting


def esc(value: Any, *, lines: bool = False) -> str:
    """Untrusted text for HTML, element or attribute: control characters, bidirectional overrides and
    lone surrogates made visible (``\\x1b``, ``\\u202e``: `textsafe.term_safe`, the same as report.md and
    the console; a numeric character reference would still be obeyed), then every <, >, &, " and '
    escaped. Line breaks are shown as ``\\n`` too, unless `lines` (text shown with its line breaks)."""
    return escape(term_safe(value, single_line=not lines), quote=True)


def _float(v: float, digits: int) -> str:
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v):,}"
    if abs(v) >= 10**digits:
        return f"{v:,.0f}"
    if abs(v) >= 1e-3:
        return f"{v:.{digits}g}"
    return f"{v:.3g}"


def fmt(value: Any, digits: int = 4, none: str = "not measured") -> str:
    """A value as escaped text; None reads `none` ('not measured')."""
    if value is None:
        return f'<span class="na">{esc(none)}</span>'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return '<span class="na">not finite</span>'
        return esc(_float(value, digits))
    if isinstance(value, int):
        return esc(f"{value:,}")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(fmt(v, digits) for v in value) + "]"
    if isinstance(value, Mapping):
        return "<code>" + esc(json.dumps(value, ensure_ascii=False, sort_keys=True)) + "</code>"
    return esc(value)


def _score(v: Any) -> str:
    return numbers.score(v)


def _est(e: Estimate | Interval | None) -> str:
    if e is None or e.value is None:
        return '<span class="na">–</span>'
    return (
        f"<span class='est'>{_score(e.value)} "
        f"<span class='muted'>[{_score(e.low)}, {_score(e.high)}]</span></span>"
    )


def _money(v: Any, currency: str) -> str:
    text = numbers.money(v, currency)
    return '<span class="na">–</span>' if text == numbers.DASH else esc(text)


def _n(v: Any, digits: int = 0) -> str:
    text = numbers.fixed(v, digits)
    return '<span class="na">–</span>' if text == numbers.DASH else esc(text)


def _p(v: Any) -> str:
    return esc(numbers.p_value(v))


def safe_href(url: Any) -> str | None:
    """The URL when it is plain http(s) with a host; None otherwise (javascript:, data:, relative ...)."""
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    if term_safe(url, single_line=True) != url or any(c.isspace() for c in url.strip()):
        return None  # a control or bidi character, or a space, in an address: shown as text, not linked
    return url.strip()


def _table(
    head: Sequence[str], rows: Iterable[Sequence[str]], *, cls: str = "", numeric: Sequence[int] = ()
) -> str:
    """A table from already-escaped cells; `numeric` columns are right-aligned."""
    th = "".join(f"<th{' class=n' if i in numeric else ''}>{h}</th>" for i, h in enumerate(head))
    body = []
    for row in rows:
        row_cls = ""
        if row and isinstance(row, _Row):
            row_cls = f' class="{row.cls}"'
        tds = "".join(f"<td{' class=n' if i in numeric else ''}>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{row_cls}>{tds}</tr>")
    c = f' class="{cls}"' if cls else ""
    return f"<table{c}><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class _Row(list):
    """A table row with a CSS class."""

    def __init__(self, cells: Iterable[str], cls: str) -> None:
        super().__init__(cells)
        self.cls = cls


def _kv(pairs: Iterable[tuple[str, str]]) -> str:
    return '<dl class="kv">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in pairs) + "</dl>"


def _not_measured(reason: str) -> str:
    return f'<p class="notmeasured">Not measured: {esc(reason)}</p>'


def _figure(fig: plots.Figure | None, caption: str = "") -> str:
    if fig is None:
        return ""
    cap = f"<figcaption>{esc(caption or fig.title)}</figcaption>"
    return f'<figure id="fig-{esc(fig.name)}">{fig.svg}{cap}</figure>'


# ---------------------------------------------------------------- sections


def _summary(report: Report, chart: plots.Figure | None) -> str:
    """The first screen: the verdict, the options side by side, one chart, the facts and what would change.
    Plain words only: rule ids and signal names are in the engineer's detail below."""
    d = report.decision
    verdict = str(d.verdict)
    conf = d.confidence
    pct = max(0.0, min(1.0, float(conf))) * 100 if conf is not None else 0.0
    head = "".join(f"<th>{esc(h)}</th>" for h in summary.HEADER)
    rows = "".join(
        "<tr>"
        + "".join(
            f'<td data-label="{esc(h)}">{esc(c)}</td>'
            for h, c in zip(summary.HEADER, (o.name, o.how, o.quality, o.cost, o.latency), strict=True)
        )
        + "</tr>"
        for o in summary.options(report)
    )
    target = summary.target_line(report)
    facts = "".join(f"<li>{esc(f)}</li>" for f in summary.facts(report))
    changes = "".join(f"<li>{esc(c)}</li>" for c in summary.changes(report))
    figure = (
        f'<figure id="compare">{chart.svg}<figcaption>{esc(chart.title)}</figcaption></figure>'
        if chart is not None
        else ""
    )
    return (
        f'<section class="banner v-{esc(verdict)}" id="verdict">'
        '<div class="label">Verdict</div>'
        f'<div class="verdict">{esc(verdict)}</div>'
        f'<div class="headline">{esc(summary.headline(report))}</div>'
        f'<div>{esc(summary.sureness(d))}<span class="meter" aria-hidden="true">'
        f'<span style="width:{pct:.0f}%"></span></span></div>'
        "</section>"
        '<section id="options"><h2 class="first">The options</h2>'
        + f'<table class="options"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
        + (f"<p class='muted'>{esc(target)}</p>" if target else "")
        + "</section>"
        + figure
        + f'<section id="why" class="v-{esc(verdict)}"><div class="cols"><div>'
        f"<h3>What the verdict rests on</h3><ul>{facts}</ul></div>"
        f"<div><h3>What would change it</h3><ul>{changes}</ul></div></div></section>"
    )


def _signals(report: Report) -> str:
    signals = report.signals
    used: dict[str, list[str]] = {}
    for r in report.decision.fired:
        for name in r.evidence.signals:
            used.setdefault(name, []).append(r.id)
    rows = []
    for name, value in signals.items():
        if value is None:
            continue
        by = ", ".join(f"<code>{esc(r)}</code>" for r in used.get(name, []))
        rows.append(_Row([f"<code>{esc(name)}</code>", fmt(value), by], "used" if name in used else ""))
    missing = sorted(k for k, v in signals.items() if v is None)
    out = [
        '<h2 id="signals">Evidence: the signals the rules read</h2>',
        "<p class='muted'>Highlighted rows are cited by a rule that fired.</p>",
        _table(["signal", "value", "cited by"], rows)
        if rows
        else "<p class='na'>No signal was measured.</p>",
    ]
    if missing:
        out.append(
            "<p><strong>Not measured</strong> (rules that need them are listed as skipped): "
            + ", ".join(f"<code>{esc(m)}</code>" for m in missing)
            + ".</p>"
        )
    return "".join(out)


def _tokens(t: TokenStats) -> str:
    return f"mean {_n(t.mean, 1)}, p50 {_n(t.p50)}, p95 {_n(t.p95)}, max {_n(t.max)}"


def _data(report: Report) -> str:
    ds, audit, split = report.dataset, report.audit, report.split
    out = ['<h2 id="data">Data</h2>']
    out.append(
        _kv(
            [
                ("file", f"<code>{esc(ds.path)}</code>"),
                ("format", fmt(ds.format)),
                ("records / examples", f"{fmt(ds.n_records)} / {fmt(ds.n_examples)}"),
                ("task", fmt(ds.task_kind)),
                ("labels", ", ".join(f"<code>{esc(x)}</code>" for x in ds.labels or []) or "–"),
            ]
        )
    )
    counts = audit.label_counts
    total = sum(counts.values()) or 1
    if counts:
        out.append("<h3>Label balance</h3>")
        out.append(
            _table(
                ["label", "examples", "share"],
                ([f"<code>{esc(k)}</code>", _n(v), numbers.share(v / total)] for k, v in counts.items()),
                numeric=(1, 2),
                cls="data labels",
            )
        )
    out.append("<h3>Audit</h3>")
    out.append(
        _kv(
            [
                ("imbalance ratio", fmt(audit.imbalance_ratio)),
                ("minority share", fmt(audit.minority_share)),
                (
                    "duplicates",
                    f"{fmt(audit.exact_duplicates)} exact, {fmt(audit.normalised_duplicates)} "
                    f"after normalising (share {fmt(audit.duplicate_share)})",
                ),
                (
                    "conflicting targets",
                    f"{fmt(audit.conflict_groups)} groups, {fmt(audit.conflict_examples)} "
                    f"examples (share {fmt(audit.conflict_share)})",
                ),
                ("empty targets", fmt(audit.empty_targets)),
                (f"input tokens ({esc(audit.token_method)})", _tokens(audit.input_tokens)),
                ("target tokens", _tokens(audit.target_tokens)),
            ]
        )
    )
    if split is not None:
        out.append("<h3>Split</h3>")
        out.append(
            _kv(
                [
                    (
                        "train / dev / eval",
                        f"{fmt(split.n_train)} / {fmt(split.n_dev)} / {fmt(split.n_eval)}",
                    ),
                    ("seed", fmt(split.seed)),
                    ("eval items also in train (leakage)", fmt(split.leakage_count)),
                    ("line numbers", f"<code>{esc(split.file or 'split.json')}</code>"),
                ]
            )
        )
    return "".join(out)


def _unmeasured_reason(report: Report, what: str) -> str:
    if report.provenance.config.get("backend") == "none":
        return f"{what}: no model was run in this run (backend none)."
    return f"{what}: not part of this run's document."


def _prompting(report: Report, figs: Mapping[str, plots.Figure]) -> str:
    s = report.prompting
    out = ['<h2 id="prompting">Prompting baselines</h2>']
    if s is None:
        out.append(_not_measured(_unmeasured_reason(report, "no arm was scored")))
        return "".join(out)
    mname = numbers.metric_name(s.target_metric)
    out.append(
        f"<p>Model <code>{esc(s.model_id)}</code> ({esc(s.backend)} backend), "
        f"{fmt(s.n_eval)} eval items. Target: {esc(mname)} ≥ {_score(s.quality_target)}. "
        "Intervals are 95% percentile-bootstrap; differences are paired over the same items.</p>"
    )
    out.append(
        _figure(
            figs.get("arms"),
            "Score per arm, cheapest first (zero-shot → system "
            "prompt → k-shot), with 95% intervals; the dashed "
            "line is the quality target."
            + (" The fine-tuned model, when trained, is the last point." if report.verification else ""),
        )
    )
    if s.metric_reason:
        out.append(f"<p>Metric: {esc(_sentence(s.metric_reason))}</p>")
    base = s.baselines
    if base is not None:
        out.append(f"<p>{esc(str(baseline_sentence(s)).replace('`', ''))}</p>")
    arms = plots.ordered_arms(s.arms)
    metrics = list(arms[0].scores)
    vs_prev: dict[str, Comparison] = {}
    for comparison in s.comparisons:
        vs_prev.setdefault(comparison.arm, comparison)
    rows = []
    if base is not None:
        maj = base.majority
        rows.append(
            [f"majority baseline <code>{esc(base.majority_label)}</code>", "–"]
            + [_score(getattr(maj, m, None)) for m in metrics]
            + ["–", f"{_pct(base.majority_share)} {esc(base.majority_label)}", "–", "baseline"]
        )
    for a in arms:
        c = vs_prev.get(a.name)
        delta = (
            f"{numbers.difference(c.diff, c.low, c.high)} vs <code>{esc(c.baseline)}</code>, "
            f"p {_p(c.p_value)}; {fmt(c.improved)} fixed, {fmt(c.regressed)} broken"
            if c
            else "–"
        )
        row = [f"<code>{esc(a.name)}</code>", _n(a.mean_prompt_tokens)]
        row += [_est(a.scores.get(m)) for m in metrics] + [delta]
        if base is not None:
            d = a.degeneracy
            status = f'<span class="tag">degenerate</span> {esc(d.reason)}' if d and d.degenerate else "ok"
            top = f"{_pct(d.top_share)} {esc(d.top_label)}" if d else f"{_pct(None)} {esc(None)}"
            row += [top, esc(a.variant), status]
        rows.append(row)
    heads = ["arm", "prompt tokens", *[esc(numbers.metric_name(m)) for m in metrics], "Δ vs cheaper arm"]
    heads += ["top label", "variant", "status"] if base is not None else []
    out.append(_table(heads, rows, numeric=(1,)))
    copiers = [a for a in arms if base is None and a.degeneracy is not None and a.degeneracy.degenerate]
    if copiers:  # generation has no label columns: the degenerate arms and why, under the table
        out.append(
            "<p><strong>Degenerate arms</strong> (never the best arm): "
            + "; ".join(
                f"<code>{esc(a.name)}</code> {esc(a.degeneracy.reason)}" for a in copiers if a.degeneracy
            )
            + ".</p>"
        )
    tried = [(a.name, t) for a in arms for t in a.tried]
    if tried:
        out.append(
            "<p>Variants tried on the dev split; the best dev score per arm was then scored on eval:</p>"
        )
        out.append(
            _table(
                ["arm", "variant", "selection", f"dev {esc(mname)}", "dev items"],
                [
                    [
                        f"<code>{esc(n)}</code>",
                        esc(t.variant),
                        esc(t.selection or "–"),
                        _score(t.dev_score),
                        fmt(t.n_dev),
                    ]
                    for n, t in tried
                ],
                numeric=(3, 4),
            )
        )
    pl = s.plateau
    out.append(f"<p><strong>{esc(plateau_sentence(s).replace('`', ''))}</strong></p>")
    if pl.items_needed is not None:
        out.append(
            f"<p>Detecting a gain of {_score(s.min_gain)} "
            f"with 80% power at α={esc(s.alpha)} "
            f"would need about {fmt(pl.items_needed)} eval "
            f"items (this run has {fmt(s.n_eval)}).</p>"
        )
    return "".join(out)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def _sentence(text: Any) -> str:
    t = str(text or "").strip()
    return (t[:1].upper() + t[1:] + ("" if t.endswith(".") else ".")) if t else ""


def _evidence(report: Report, figs: Mapping[str, plots.Figure]) -> str:
    s = report.evidence
    out = ['<h2 id="evidence">Evidence beyond accuracy: data, cost, latency</h2>']
    if s is None:
        out.append(_not_measured(_unmeasured_reason(report, "no cost, latency or learning-curve evidence")))
        return "".join(out)
    cost = s.cost
    cur = cost.currency if cost else ""
    volume, budget = s.volume_per_day, s.latency_budget_ms
    out.append(
        _kv(
            [
                ("volume", f"{_n(volume)} requests/day" if volume is not None else "not declared"),
                ("latency budget", f"{_n(budget)} ms (p95)" if budget is not None else "none declared"),
                ("horizon", f"{_n(s.horizon_days)} days"),
                (
                    "prices",
                    (
                        f"{esc(numbers.serving(cost.serving, cost.finetuned_serving))}, from "
                        f"<code>{esc(cost.source or 'flags')}</code>"
                        + (f", dated {esc(cost.price_date)}" if cost.price_date else "")
                    )
                    if cost
                    else '<span class="na">not given</span>',
                ),
            ]
        )
    )
    if s.arms:
        rows = []
        for a in plots.ordered_arms(s.arms):
            best = ' <span class="tag">best</span>' if a.name == s.best_arm else ""
            rows.append(
                [
                    f"<code>{esc(a.name)}</code>{best}",
                    _score(a.score),
                    _n(a.prompt_tokens, 1),
                    _n(a.completion_tokens, 1),
                    _n(a.p50_ms),
                    _n(a.p95_ms),
                    _money(a.cost_per_request, cur),
                    _money(a.monthly_cost, cur),
                ]
            )
        heads = ["arm", "score", "prompt tokens", "output tokens", "p50 ms", "p95 ms", "cost/request"]
        out.append(_table([*heads, "cost/month"], rows, numeric=(1, 2, 3, 4, 5, 6, 7)))
    out.append("<h3>Learning curve</h3>")
    curve = s.learning_curve
    if curve:
        out.append(
            _figure(
                figs.get("learning_curve"),
                "A TF-IDF + logistic-regression probe trained on "
                "nested subsets of the train split, scored on the "
                "eval items (95% bootstrap intervals). The power "
                "law has no floor, so the dashed extrapolation is "
                "optimistic.",
            )
        )
        if not plots.probe_trend(curve):
            out.append(f"<p>{esc(NO_PROBE_TREND)}</p>")
        need = curve.examples_needed
        n_max = curve.points[-1].n if curve.points else None
        lo, hi = curve.b_interval
        facts = [
            (
                "fit",
                f"error ≈ {_n(curve.a, 3)}·n<sup>−{_n(curve.b, 3)}</sup> "
                f"(exponent 95% CI {_n(lo, 3)}–{_n(hi, 3)})",
            )
        ]
        for iv, factor in ((curve.score_at_2x, 2), (curve.score_at_4x, 4)):
            at = f" ({_n(factor * n_max)} examples)" if n_max is not None else ""
            facts.append((f"predicted at {factor}× the data", f"{_est(iv)}{at}"))
        if curve.target is None:
            facts.append(("examples needed", "no quality target given"))
        elif need.value is None:
            facts.append(
                ("examples needed", f"target {_score(curve.target)} not reached within 100× the data")
            )
        else:
            high = "unbounded" if need.high is None else _n(need.high)
            facts.append(
                (
                    f"examples needed for {_score(curve.target)}",
                    f"{_n(need.value)} (95% CI {_n(need.low)}–{high})",
                )
            )
        out.append(_kv(facts))
    else:
        out.append(_not_measured(_evidence_reason(s, "learning curve")))
    out.append("<h3>Cost against volume</h3>")
    if figs.get("cost") is not None:
        out.append(
            _figure(
                figs["cost"],
                "Cumulative cost of serving the best prompting arm against fine-tuning once and serving the "
                "fine-tuned model with a zero-shot-length prompt; the lines cross at the break-even point.",
            )
        )
    if cost:
        out.append(
            _kv(
                [
                    ("one-time fine-tuning cost", _money(cost.finetune_cost, cur)),
                    (
                        "fine-tuned model",
                        f"{_money(cost.finetuned_cost_per_request, cur)} per request, "
                        f"{_money(cost.finetuned_monthly_cost, cur)} per month",
                    ),
                    ("saving", f"{_money(cost.monthly_saving, cur)} per month"),
                    (
                        "break-even",
                        f"{_n(cost.break_even_requests)} requests, {_n(cost.break_even_days, 1)} days"
                        if cost.break_even_days is not None
                        else f"none ({esc(cost.reason or 'not computed')})",
                    ),
                ]
            )
        )
        if cost.throughput_source == "measured single-request":
            out.append(
                "<p class='muted'>Self-hosted throughput taken "
                "from single-request timings: an upper bound.</p>"
            )
    else:
        out.append(_not_measured(_evidence_reason(s, "cost")))
    out.append("<h3>Latency against prompt length</h3>")
    if figs.get("latency") is not None:
        out.append(
            _figure(
                figs["latency"],
                "Measured p50 and p95 per arm (single requests, one at a time); the line, when drawn, is the "
                "fitted latency model at the mean output length; the diamond, when drawn, is the fine-tuned "
                "model (measured, or projected at a zero-shot-length prompt when a fine-tune was trained).",
            )
        )
    model = s.latency_model
    if model:
        r2 = f", R² {model.r2:.2f}" if model.r2 is not None else ""
        out.append(
            f"<p>Latency model (n={fmt(model.n)}{r2}): {_n(model.a * 1000, 1)} ms + "
            f"{_n(model.b * 1000, 3)} ms per prompt token + "
            f"{_n(model.c * 1000, 2)} ms per output token"
            + ("" if plots.latency_trend(model) else f". {esc(NO_LATENCY_TREND)}")
            + ".</p>"
        )
    elif figs.get("latency") is None:
        out.append(_not_measured(_evidence_reason(s, "latency")))
    dm = s.domain_measure
    if dm or s.domain:
        out.append("<h3>Domain language</h3>")
        facts = []
        if dm:
            facts += [
                (
                    f"perplexity per word ({esc(dm.source)})",
                    f"task {_n(dm.task_word_ppl, 1)}, reference {_n(dm.reference_word_ppl, 1)}, "
                    f"ratio {_n(dm.ratio, 2)}",
                ),
                (
                    "tokens per word",
                    f"task {_n(dm.tokens_per_word, 2)}, reference {_n(dm.reference_tokens_per_word, 2)}",
                ),
            ]
        if s.domain:
            facts.append(("declared domain", esc(s.domain)))
        out.append(_kv(facts))
    if s.not_measured:
        out.append("<h3>Not measured</h3><ul>")
        out += [f"<li><strong>{esc(m.what)}</strong>: {esc(m.why)}</li>" for m in s.not_measured]
        out.append("</ul>")
    return "".join(out)


def _evidence_reason(section: Evidence, what: str) -> str:
    for m in section.not_measured:
        if what.split()[0] in m.what.lower():
            return f"{what}: {m.why}"
    return f"{what}: not in this run's evidence."


def _pilot(report: Report, figs: Mapping[str, plots.Figure]) -> str:
    """The pilot fine-tune: what it measured, what its curve predicts, the plot against prompting."""
    p = report.pilot
    out = ['<h2 id="pilot">Pilot fine-tune</h2>']
    if p is None:
        out.append(_not_measured("this run folder predates the pilot."))
        return "".join(out)
    metric = report.prompting.target_metric if report.prompting is not None else ""
    out += [f"<p>{esc(s)}</p>" for s in pilot_view.sentences(p, metric)]
    table = pilot_view.rows(p)
    if table:
        out.append(_table(list(pilot_view.HEADER), ([esc(c) for c in row] for row in table)))
    out.append(_figure(figs.get("pilot")))
    return "".join(out)


def _training(report: Report, figs: Mapping[str, plots.Figure]) -> str:
    t = report.training
    out = ['<h2 id="training">Training</h2>']
    if t is None:
        out.append(_not_measured("no adapter was trained in this run."))
        return "".join(out)
    m, prov = t.metrics, t.provenance
    out.append(
        _kv(
            [
                ("method", esc(t.method)),
                ("base model", f"<code>{esc(t.base_model)}</code>"),
                ("adapter", f"<code>{esc(t.adapter_dir)}</code>"),
                (
                    "gate",
                    f"verdict {fmt(prov.gate_verdict)}" + (" — forced (--force)" if prov.forced else ""),
                ),
                (
                    "steps",
                    f"{fmt(m.steps)} of {fmt(m.total_steps)} planned"
                    + (" (stopped early)" if m.stopped_early else ""),
                ),
                ("best dev loss", f"{fmt(m.best_dev_loss)} at step {fmt(m.best_step)}"),
                ("final train loss", fmt(m.final_train_loss)),
                ("examples", f"{fmt(m.n_train)} train, {fmt(m.n_dev)} dev"),
                (
                    "throughput",
                    f"{_n(m.tokens_per_s)} tokens/s over {fmt(m.world_size)} process(es); "
                    f"{fmt(m.trained_tokens)} tokens",
                ),
            ]
        )
    )
    if figs.get("training_loss") is not None or figs.get("training_metrics") is not None:
        out.append(_figure(figs.get("training_loss")))
        out.append(_figure(figs.get("training_metrics")))
    else:
        out.append(
            _not_measured(
                "the per-step loss curve is not in this document (see train/metrics.jsonl in the run folder)."
            )
        )
    if t.config:
        out.append("<h3>Training configuration</h3>")
        out.append(_config_table(t.config))
    return "".join(out)


def _config_table(cfg: Mapping[str, Any]) -> str:
    rows = ([f"<code>{esc(k)}</code>", fmt(v, none="unset")] for k, v in cfg.items())
    return _table(["option", "value"], rows, cls="config")


def _latency(x: Latency | None) -> str:
    return "–" if x is None else f"{_n(x.p50_ms)} / {_n(x.p95_ms)}"


def _verification(report: Report, figs: Mapping[str, plots.Figure]) -> str:
    v = report.verification
    out = ['<h2 id="verification">Before and after fine-tuning</h2>']
    if v is None and report.training is not None:
        out.append(_not_measured(unverified_adapter_sentence(code=str)))
        return "".join(out)
    if v is None:
        out.append(_not_measured("no fine-tuned model was compared with the prompting arms in this run."))
        return "".join(out)
    metric = v.metric
    base, ft, d, flips = v.baseline, v.finetuned, v.difference, v.flips
    out.append(
        f"<p>Same {fmt(v.n_eval)} eval items and scoring as the prompting arms; metric {esc(metric)}.</p>"
    )
    out.append(_figure(figs.get("before_after")))
    out.append(
        _table(
            ["model", f"{esc(metric)} (95% CI)", "prompt tokens", "latency p50 / p95 ms"],
            [
                [
                    f"best prompting arm <code>{esc(base.arm)}</code>",
                    _est(base.scores.get(metric)),
                    _n(base.mean_prompt_tokens),
                    _latency(base.latency),
                ],
                [
                    "fine-tuned (LoRA)",
                    _est(ft.scores.get(metric)),
                    _n(ft.mean_prompt_tokens),
                    _latency(ft.latency),
                ],
            ],
            numeric=(2, 3),
        )
    )
    out.append(
        f"<p>Paired difference (fine-tuned − <code>{esc(base.arm)}</code>): "
        f"{numbers.signed(d.diff)} [{_score(d.low)}, {_score(d.high)}], p {_p(d.p_value)} "
        f"(McNemar p {_p(d.mcnemar_p_value)}). Flips: {fmt(flips.improved)} items fixed, "
        f"{fmt(flips.regressed)} broken.</p>"
    )
    if v.majority is not None:
        m = v.majority.difference
        out.append(
            f"<p>Against always answering <code>{esc(v.majority.label)}</code> (the majority baseline): "
            f"{numbers.signed(m.diff)} [{_score(m.low)}, {_score(m.high)}], p {_p(m.p_value)}.</p>"
        )
    if v.degeneracy is not None and v.degeneracy.degenerate:
        out.append(f"<p><strong>The fine-tuned model is degenerate</strong>: {esc(v.degeneracy.reason)}.</p>")
    out.append(
        "<p><strong>Fine-tuning verified</strong>: the paired "
        "95% intervals against the best honest prompting arm and the majority baseline lie above zero.</p>"
        if v.finetune_verified
        else "<p><strong>Fine-tuning not verified</strong>: a "
        "paired 95% interval includes zero or lies below "
        "it, or the model is degenerate.</p>"
    )
    if v.provenance.forced:
        out.append("<p>Training was forced against the advisor's verdict (--force).</p>")
    for title, examples in (
        ("Fixed by fine-tuning", flips.improved_examples),
        ("Broken by fine-tuning", flips.regressed_examples),
    ):
        if not examples:
            continue
        out.append(f"<h3>{esc(title)} (a sample of real eval items)</h3>")
        rows = [
            [
                _n(x.line),
                f"<div class='text'>{esc(x.input, lines=True)}</div>",
                f"<code>{esc(x.target)}</code>",
                f"<code>{esc(x.before)}</code>",
                f"<code>{esc(x.after)}</code>",
            ]
            for x in examples
        ]
        out.append(
            _table(["line", "input", "target", "before", "after"], rows, cls="data flips", numeric=(0,))
        )
    return "".join(out)


def _source(s: RuleSource) -> str:
    title = esc(s.title)
    href = safe_href(s.url)
    text = f'<a href="{esc(href)}" rel="noopener noreferrer">{title}</a>' if href else title
    if s.url and not href:
        text += f" <span class='muted'>({esc(s.url)})</span>"
    if s.citation:
        text += f" <span class='muted'>— {esc(s.citation)}</span>"
    return f"<li>{text}</li>"


def _rules(d: Decision, why_unpriced: str | None = None, growth: EvalGrowth | None = None) -> str:
    """The rules: fired, vetoed, skipped; `why_unpriced` says why the economics signals are missing."""
    verdict = str(d.verdict)
    deciding = set(d.deciding_rules)
    out = [f'<h2 id="rules">Rules: fired, vetoed, skipped</h2><div class="v-{esc(verdict)}">']
    deciding_ids = ", ".join(f"<code>{esc(r)}</code>" for r in d.deciding_rules)
    out.append(
        f"<p>Verdict <code>{esc(verdict)}</code>, decided by {esc(d.decided_by)}"
        + (f" ({deciding_ids})" if deciding_ids else "")
        + f"; {esc(confidence_sentence(d))}.</p>"
    )
    if (scored := growth_sentence(growth)) is not None:
        out.append(f"<p>{esc(scored)}</p>")
    out.append(f"<h3>Fired ({len(d.fired)})</h3>")
    if not d.fired:
        out.append("<p>No rule fired.</p>")
    for r in d.fired:
        if r.kind == "veto":
            role = f"vetoes {esc(r.vetoes)}"
        else:
            role = f"{esc(r.kind)} for {esc(r.verdict)}, weight {fmt(r.weight)}"
        rows = [[f"<code>{esc(k)}</code>", fmt(v)] for k, v in r.evidence.signals.items()]
        rows += [[f"threshold <code>{esc(k)}</code>", fmt(v)] for k, v in r.evidence.thresholds.items()]
        conds = " and ".join(f"<code>{esc(c)}</code>" for c in r.conditions)
        cls = "card deciding" if r.id in deciding else "card"
        tag = '<span class="tag">deciding</span>' if r.id in deciding else ""
        out.append(
            f'<div class="{cls}"><h4><code>{esc(r.id)}</code>{tag}</h4>'
            f'<div class="role">{role}; when {conds}</div>'
            f"<p>{esc(r.message)}</p>"
            + (_table(["evidence", "value"], rows) if rows else "")
            + (f"<p class='muted'>{esc(r.note)}</p>" if r.note else "")
            + "<div><strong>Sources</strong></div><ul class='sources'>"
            + "".join(_source(s) for s in r.sources)
            + "</ul></div>"
        )
    if d.scores:
        out.append(
            "<p>Weighted votes: "
            + ", ".join(f"{esc(k)} {fmt(v, 3)}" for k, v in d.scores.items())
            + f" (vote margin {fmt(d.vote_margin, 2)}: "
            "the rules' own strength figure, not a probability)."
            "</p>"
        )
    if d.vetoed:
        out.append("<h3>Ruled out</h3><ul>")
        out += [
            f"<li><code>{esc(x.verdict)}</code> by <code>{esc(x.rule_id)}</code>: {esc(x.message)}</li>"
            for x in d.vetoed
        ]
        out.append("</ul>")
    out.append(f"<h3>Skipped: signals not measured ({len(d.skipped)})</h3>")
    if d.skipped and why_unpriced is not None:
        out.append(f"<p>The cost and latency rules cannot apply: {esc(why_unpriced)}.</p>")
    if d.skipped:
        rows = [
            [
                f"<code>{esc(s.id)}</code>",
                "<code>" + esc(f"not {s.verdict}" if s.kind == "veto" else s.verdict) + "</code>",
                ", ".join(f"<code>{esc(m)}</code>" for m in s.missing),
                esc(s.message),
            ]
            for s in d.skipped
        ]
        out.append(_table(["rule", "argues for", "missing signals", "rule says"], rows))
    else:
        out.append("<p>None: every rule could be checked.</p>")
    if d.not_fired:
        out.append(
            "<p>Checked and not fired: " + ", ".join(f"<code>{esc(x)}</code>" for x in d.not_fired) + ".</p>"
        )
    out.append("</div>")
    return "".join(out)


def _provenance(report: Report) -> str:
    p = report.provenance
    overrides = p.threshold_overrides
    backend = p.backend or {}
    out = ['<h2 id="provenance">Provenance</h2>']
    out.append(
        _kv(
            [
                (
                    "tool",
                    f"tunegate {esc(p.tool_version)}, report schema "
                    f"{esc(report.schema_version)}, created {esc(report.created_at)}",
                ),
                ("data", f"<code>{esc(report.dataset.path)}</code>"),
                ("data sha256", f"<code>{esc(p.dataset_sha256)}</code>"),
                ("rules", ", ".join(f"<code>{esc(f)}</code>" for f in p.rules_files)),
                ("rules sha256", f"<code>{esc(p.rules_sha256)}</code>"),
                ("seeds", ", ".join(f"{esc(k)}={fmt(v)}" for k, v in p.seeds.items()) or "none"),
                (
                    "backend",
                    ", ".join(f"{esc(k)}: {fmt(v)}" for k, v in backend.items())
                    if backend
                    else "<span class='na'>none</span>",
                ),
                ("python / platform", f"{esc(p.python)} on {esc(p.platform)}"),
                ("libraries", ", ".join(f"{esc(k)} {esc(v)}" for k, v in p.libraries.items() if v) or "–"),
            ]
        )
    )
    if p.thresholds:
        out.append("<h3>Thresholds</h3>")
        rows = [
            _Row(
                [f"<code>{esc(k)}</code>", fmt(v), "override" if k in overrides else "rules file"],
                "used" if k in overrides else "",
            )
            for k, v in p.thresholds.items()
        ]
        out.append(_table(["threshold", "value", "from"], rows))
    if p.config:
        out.append("<h3>Resolved configuration</h3>")
        out.append(_config_table(p.config))
    return "".join(out)


# ---------------------------------------------------------------- the page


def _fold(section: str) -> str:
    """A section (it opens with its <h2 id=...>) folded into a <details> whose summary is that heading."""
    head, sep, rest = section.partition("</h2>")
    anchor, _, title = head.partition(">")
    ident = anchor.removeprefix("<h2 ").strip()
    return f'<details class="section" {ident}><summary><h2>{title}</h2></summary>{rest}</details>'


def to_html(report: Report) -> str:
    """The whole report as one HTML page (UTF-8 text; no external resources)."""
    figs = {f.name: f for f in plots.figures(report)}
    ds = report.dataset
    title = f"tunegate: {report.decision.verdict} — {Path(ds.path).name}"
    nav = "".join(
        f'<a href="#{k}">{esc(t)}</a>'
        for k, t in (
            ("signals", "Signals"),
            ("data", "Data"),
            ("prompting", "Prompting"),
            ("evidence", "Cost & latency"),
            ("pilot", "Pilot fine-tune"),
            ("training", "Training"),
            ("verification", "Before/after"),
            ("rules", "Rules"),
            ("provenance", "Provenance"),
        )
    )
    chart = plots.comparison(figs)
    detail_figs = {k: f for k, f in figs.items() if f is not chart}
    sections = [
        _signals(report),
        _data(report),
        _prompting(report, detail_figs),
        _evidence(report, detail_figs),
        _pilot(report, detail_figs),
        _training(report, detail_figs),
        _verification(report, detail_figs),
        _rules(
            report.decision,
            summary.no_prompt_to_price(report),
            report.split.eval_growth if report.split else None,
        ),
        _provenance(report),
    ]
    body = [
        "<h1>tunegate report</h1>",
        f'<p class="sub"><code>{esc(ds.path)}</code> · {fmt(ds.n_examples)} examples · '
        f"{esc(ds.task_kind)} · created {esc(report.created_at)}</p>",
        _summary(report, chart),
        '<h2 class="detail" id="detail">Engineer\'s detail</h2>',
        "<p class='muted'>The signals, the rules with their ids, the data audit, every measurement and the "
        "provenance. Each section opens on a click.</p>",
        f"<nav>{nav}</nav>",
        *(_fold(x) for x in sections),
    ]
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f'<body><main class="wrap">{"".join(body)}</main></body></html>\n'
    )
    # Every piece of input text went through `esc`; this keeps the guarantee for any that did not (the page's
    # own text holds no control character, so it is unchanged).
    return term_safe(page)
