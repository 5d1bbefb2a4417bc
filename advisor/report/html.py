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

from advisor.decide.verdict import confidence_sentence
from advisor.measure.evaluate import baseline_sentence, plateau_sentence
from advisor.report import plots

VERDICT_TEXT = {
    "prompt": "Prompt the model: a zero-shot or system prompt is enough",
    "few_shot": "Use a few-shot prompt",
    "fine_tune": "Fine-tune (LoRA)",
    "collect_data": "Collect more or cleaner data first",
    "inconclusive": "Inconclusive: measure more before deciding",
}
METRIC_NAMES = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "exact_match": "exact match",
    "normalized_exact_match": "normalised exact match",
    "token_f1": "token F1",
    "chrf": "chrF",
}

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
nav { font-size: 13px; margin: 14px 0 0; }
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
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { font-size: 11pt; }
  .wrap { max-width: none; padding: 0; }
  nav { display: none; }
  a { color: inherit; text-decoration: none; }
  h2 { break-after: avoid; }
  svg, figure svg { max-width: 100%; height: auto; }
  figure, .card, .banner, tr, dl.kv { break-inside: avoid; page-break-inside: avoid; }
}
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


# ---------------------------------------------------------------- formatting


def esc(value: Any) -> str:
    """Text for HTML: every <, >, &, " and ' escaped."""
    return escape(str(value), quote=True)


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
    return f"{v:.3f}" if isinstance(v, int | float) and not isinstance(v, bool) else "–"


def _est(e: Mapping[str, Any] | None) -> str:
    if not e or not isinstance(e.get("value"), int | float):
        return '<span class="na">–</span>'
    return (
        f"<span class='est'>{_score(e['value'])} "
        f"<span class='muted'>[{_score(e.get('low'))}, {_score(e.get('high'))}]</span></span>"
    )


def _money(v: Any, currency: str) -> str:
    if not isinstance(v, int | float) or isinstance(v, bool):
        return '<span class="na">–</span>'
    a = abs(v)
    # cents for sums, two significant digits for fractions of a cent per request
    digits = 2 if a >= 1 or a == 0 else max(2, 1 - math.floor(math.log10(a)))
    return esc(f"{v:,.{digits}f} {currency}".strip())


def _n(v: Any, digits: int = 0) -> str:
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
        return '<span class="na">–</span>'
    return esc(f"{v:,.{digits}f}")


def _p(v: Any) -> str:
    if not isinstance(v, int | float) or isinstance(v, bool):
        return "–"
    return "&lt;0.001" if v < 0.001 else f"{v:.3f}"


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


def _banner(doc: Mapping[str, Any]) -> str:
    d = doc["decision"]
    verdict = str(d.get("verdict"))
    conf = d.get("confidence")
    pct = max(0.0, min(1.0, float(conf))) * 100 if isinstance(conf, int | float) else 0.0
    deciding = d.get("deciding_rules") or []
    change = d.get("what_would_change") or []
    items = "".join(f"<li>{esc(c)}</li>" for c in change) or "<li>Nothing short of different signals.</li>"
    return (
        f'<section class="banner v-{esc(verdict)}" id="verdict">'
        '<div class="label">Verdict</div>'
        f'<div class="verdict">{esc(verdict)}</div>'
        f'<div class="headline">{esc(VERDICT_TEXT.get(verdict, verdict))}</div>'
        f"<div>Confidence <strong>{fmt(conf, 2)}</strong>"
        f'<span class="meter" aria-hidden="true"><span style="width:{pct:.0f}%"></span></span>'
        f"{esc(confidence_sentence(d))}; decided by {esc(d.get('decided_by', '?'))}"
        + (f" ({', '.join(f'<code>{esc(r)}</code>' for r in deciding)})" if deciding else "")
        + "</div>"
        f"<p>{esc(d.get('summary', ''))}</p>"
        f'<div><strong>What would change the verdict</strong></div><ul class="change">{items}</ul>'
        "</section>"
    )


def _signals(doc: Mapping[str, Any]) -> str:
    signals = doc.get("signals") or {}
    used: dict[str, list[str]] = {}
    for r in doc["decision"].get("fired") or []:
        for name in (r.get("evidence") or {}).get("signals") or {}:
            used.setdefault(name, []).append(str(r.get("id")))
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


def _data(doc: Mapping[str, Any]) -> str:
    ds = doc.get("dataset") or {}
    out = ['<h2 id="data">Data</h2>']
    out.append(
        _kv(
            [
                ("file", f"<code>{esc(ds.get('path', ''))}</code>"),
                ("format", fmt(ds.get("format"))),
                ("records / examples", f"{fmt(ds.get('n_records'))} / {fmt(ds.get('n_examples'))}"),
                ("task", fmt(ds.get("task_kind"))),
                ("labels", ", ".join(f"<code>{esc(x)}</code>" for x in ds.get("labels") or []) or "–"),
            ]
        )
    )
    audit = doc.get("audit")
    if audit:
        counts = audit.get("label_counts") or {}
        total = sum(v for v in counts.values() if isinstance(v, int)) or 1
        if counts:
            out.append("<h3>Label balance</h3>")
            out.append(
                _table(
                    ["label", "examples", "share"],
                    ([f"<code>{esc(k)}</code>", _n(v), f"{v / total:.1%}"] for k, v in counts.items()),
                    numeric=(1, 2),
                    cls="data labels",
                )
            )
        it, tt = audit.get("input_tokens") or {}, audit.get("target_tokens") or {}
        out.append("<h3>Audit</h3>")
        out.append(
            _kv(
                [
                    ("imbalance ratio", fmt(audit.get("imbalance_ratio"))),
                    ("minority share", fmt(audit.get("minority_share"))),
                    (
                        "duplicates",
                        f"{fmt(audit.get('exact_duplicates'))} exact, "
                        f"{fmt(audit.get('normalised_duplicates'))} "
                        f"after normalising (share {fmt(audit.get('duplicate_share'))})",
                    ),
                    (
                        "conflicting targets",
                        f"{fmt(audit.get('conflict_groups'))} groups, {fmt(audit.get('conflict_examples'))} "
                        f"examples (share {fmt(audit.get('conflict_share'))})",
                    ),
                    ("empty targets", fmt(audit.get("empty_targets"))),
                    (
                        f"input tokens ({esc(audit.get('token_method', ''))})",
                        f"mean {_n(it.get('mean'), 1)}, p50 {_n(it.get('p50'))}, p95 {_n(it.get('p95'))}, "
                        f"max {_n(it.get('max'))}",
                    ),
                    (
                        "target tokens",
                        f"mean {_n(tt.get('mean'), 1)}, p50 {_n(tt.get('p50'))}, p95 {_n(tt.get('p95'))}, "
                        f"max {_n(tt.get('max'))}",
                    ),
                ]
            )
        )
    split = doc.get("split")
    if split:
        out.append("<h3>Split</h3>")
        out.append(
            _kv(
                [
                    (
                        "train / dev / eval",
                        f"{fmt(split.get('n_train'))} / "
                        f"{fmt(split.get('n_dev'))} / {fmt(split.get('n_eval'))}",
                    ),
                    ("seed", fmt(split.get("seed"))),
                    ("eval items also in train (leakage)", fmt(split.get("leakage_count"))),
                    ("line numbers", f"<code>{esc(split.get('file', 'split.json'))}</code>"),
                ]
            )
        )
    return "".join(out)


def _unmeasured_reason(doc: Mapping[str, Any], what: str) -> str:
    backend = ((doc.get("provenance") or {}).get("config") or {}).get("backend")
    if backend == "none":
        return f"{what}: no model was run in this run (backend none)."
    return f"{what}: not part of this run's document."


def _prompting(doc: Mapping[str, Any], figs: Mapping[str, plots.Figure]) -> str:
    s = doc.get("prompting")
    out = ['<h2 id="prompting">Prompting baselines</h2>']
    if not s:
        out.append(_not_measured(_unmeasured_reason(doc, "no arm was scored")))
        return "".join(out)
    metric = str(s.get("target_metric"))
    mname = METRIC_NAMES.get(metric, metric)
    out.append(
        f"<p>Model <code>{esc(s.get('model_id', ''))}</code> ({esc(s.get('backend', ''))} backend), "
        f"{fmt(s.get('n_eval'))} eval items. Target: {esc(mname)} ≥ {_score(s.get('quality_target'))}. "
        "Intervals are 95% percentile-bootstrap; differences are paired over the same items.</p>"
    )
    out.append(
        _figure(
            figs.get("arms"),
            "Score per arm, cheapest first (zero-shot → system "
            "prompt → k-shot), with 95% intervals; the dashed "
            "line is the quality target."
            + (" The fine-tuned model, when trained, is the last point." if doc.get("verification") else ""),
        )
    )
    if s.get("metric_reason"):
        out.append(f"<p>Metric: {esc(_sentence(s['metric_reason']))}</p>")
    base = s.get("baselines")
    if base:
        out.append(f"<p>{esc(str(baseline_sentence(s)).replace('`', ''))}</p>")
    arms = plots.ordered_arms(s.get("arms") or [])
    metrics = list((arms[0].get("scores") or {}) if arms else [metric])
    vs_prev: dict[str, Mapping[str, Any]] = {}
    for c in s.get("comparisons") or []:
        vs_prev.setdefault(str(c.get("arm")), c)
    rows = []
    if base:
        maj = base.get("majority") or {}
        rows.append(
            [f"majority baseline <code>{esc(base.get('majority_label'))}</code>", "–"]
            + [_score(maj.get(m)) for m in metrics]
            + ["–", f"{_pct(base.get('majority_share'))} {esc(base.get('majority_label'))}", "–", "baseline"]
        )
    for a in arms:
        c = vs_prev.get(str(a.get("name")))
        delta = (
            f"{c['diff']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] vs <code>{esc(c['baseline'])}</code>, "
            f"p {_p(c.get('p_value'))}; {fmt(c.get('improved'))} fixed, {fmt(c.get('regressed'))} broken"
            if c
            else "–"
        )
        row = [f"<code>{esc(a.get('name'))}</code>", _n(a.get("mean_prompt_tokens"))]
        row += [_est((a.get("scores") or {}).get(m)) for m in metrics] + [delta]
        if base:
            d = a.get("degeneracy") or {}
            status = (
                f'<span class="tag">degenerate</span> {esc(d.get("reason"))}' if d.get("degenerate") else "ok"
            )
            row += [
                f"{_pct(d.get('top_share'))} {esc(d.get('top_label'))}",
                esc(a.get("variant", "raw")),
                status,
            ]
        rows.append(row)
    heads = ["arm", "prompt tokens", *[esc(METRIC_NAMES.get(m, m)) for m in metrics], "Δ vs cheaper arm"]
    heads += ["top label", "variant", "status"] if base else []
    out.append(_table(heads, rows, numeric=(1,)))
    tried = [(a.get("name"), t) for a in arms for t in a.get("tried") or []]
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
                        esc(t.get("variant")),
                        esc(t.get("selection") or "–"),
                        _score(t.get("dev_score")),
                        fmt(t.get("n_dev")),
                    ]
                    for n, t in tried
                ],
                numeric=(3, 4),
            )
        )
    pl = s.get("plateau") or {}
    if pl:
        out.append(f"<p><strong>{esc(plateau_sentence(s).replace('`', ''))}</strong></p>")
        if pl.get("items_needed") is not None:
            out.append(
                f"<p>Detecting a gain of {_score(s.get('min_gain'))} "
                f"with 80% power at α={esc(s.get('alpha'))} "
                f"would need about {fmt(pl.get('items_needed'))} eval "
                f"items (this run has {fmt(s.get('n_eval'))}).</p>"
            )
    return "".join(out)


def _pct(x: Any) -> str:
    return f"{x:.0%}" if isinstance(x, int | float) else "–"


def _sentence(text: Any) -> str:
    t = str(text or "").strip()
    return (t[:1].upper() + t[1:] + ("" if t.endswith(".") else ".")) if t else ""


def _evidence(doc: Mapping[str, Any], figs: Mapping[str, plots.Figure]) -> str:
    s = doc.get("evidence")
    out = ['<h2 id="evidence">Evidence beyond accuracy: data, cost, latency</h2>']
    if not s:
        out.append(_not_measured(_unmeasured_reason(doc, "no cost, latency or learning-curve evidence")))
        return "".join(out)
    cost = s.get("cost") or {}
    cur = str(cost.get("currency") or "")
    volume, budget = s.get("volume_per_day"), s.get("latency_budget_ms")
    out.append(
        _kv(
            [
                ("volume", f"{_n(volume)} requests/day" if volume is not None else "not declared"),
                ("latency budget", f"{_n(budget)} ms (p95)" if budget is not None else "none declared"),
                ("horizon", f"{_n(s.get('horizon_days'))} days"),
                (
                    "prices",
                    (
                        f"{esc(cost.get('serving'))} serving, from "
                        f"<code>{esc(cost.get('source') or 'flags')}</code>"
                        + (f", dated {esc(cost['price_date'])}" if cost.get("price_date") else "")
                    )
                    if cost
                    else '<span class="na">not given</span>',
                ),
            ]
        )
    )
    arms = s.get("arms") or []
    if arms:
        rows = []
        for a in plots.ordered_arms(arms):
            best = ' <span class="tag">best</span>' if a.get("name") == s.get("best_arm") else ""
            rows.append(
                [
                    f"<code>{esc(a.get('name'))}</code>{best}",
                    _score(a.get("score")),
                    _n(a.get("prompt_tokens"), 1),
                    _n(a.get("completion_tokens"), 1),
                    _n(a.get("p50_ms")),
                    _n(a.get("p95_ms")),
                    _money(a.get("cost_per_request"), cur),
                    _money(a.get("monthly_cost"), cur),
                ]
            )
        out.append(
            _table(
                [
                    "arm",
                    "score",
                    "prompt tokens",
                    "output tokens",
                    "p50 ms",
                    "p95 ms",
                    "cost/request",
                    "cost/month",
                ],
                rows,
                numeric=(1, 2, 3, 4, 5, 6, 7),
            )
        )
    out.append("<h3>Learning curve</h3>")
    curve = s.get("learning_curve")
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
        need = curve.get("examples_needed") or {}
        pts = curve.get("points") or []
        n_max = pts[-1]["n"] if pts else None
        lo, hi = (list(curve.get("b_interval") or []) + [None, None])[:2]
        facts = [
            (
                "fit",
                f"error ≈ {_n(curve.get('a'), 3)}·n<sup>−{_n(curve.get('b'), 3)}</sup> "
                f"(exponent 95% CI {_n(lo, 3)}–{_n(hi, 3)})",
            )
        ]
        for key, factor in (("score_at_2x", 2), ("score_at_4x", 4)):
            iv = curve.get(key) or {}
            at = f" ({_n(factor * n_max)} examples)" if isinstance(n_max, int | float) else ""
            facts.append((f"predicted at {factor}× the data", f"{_est(iv)}{at}"))
        if curve.get("target") is None:
            facts.append(("examples needed", "no quality target given"))
        elif need.get("value") is None:
            facts.append(
                ("examples needed", f"target {_score(curve['target'])} not reached within 100× the data")
            )
        else:
            high = "unbounded" if need.get("high") is None else _n(need["high"])
            facts.append(
                (
                    f"examples needed for {_score(curve['target'])}",
                    f"{_n(need['value'])} (95% CI {_n(need.get('low'))}–{high})",
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
                    ("one-time fine-tuning cost", _money(cost.get("finetune_cost"), cur)),
                    (
                        "fine-tuned model",
                        f"{_money(cost.get('finetuned_cost_per_request'), cur)} per request, "
                        f"{_money(cost.get('finetuned_monthly_cost'), cur)} per month",
                    ),
                    ("saving", f"{_money(cost.get('monthly_saving'), cur)} per month"),
                    (
                        "break-even",
                        f"{_n(cost.get('break_even_requests'))} requests, "
                        f"{_n(cost.get('break_even_days'), 1)} days"
                        if cost.get("break_even_days") is not None
                        else f"none ({esc(cost.get('reason') or 'not computed')})",
                    ),
                ]
            )
        )
        if cost.get("throughput_source") == "measured single-request":
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
                "Measured p50 and p95 per arm (single requests, one at a time); the line is the fitted "
                "latency model at the mean output length; the diamond is the fine-tuned model projected at a "
                "zero-shot-length prompt.",
            )
        )
    model = s.get("latency_model")
    if model:
        r2 = f", R² {model['r2']:.2f}" if isinstance(model.get("r2"), int | float) else ""
        out.append(
            f"<p>Latency model (n={fmt(model.get('n'))}{r2}): {_n((model.get('a') or 0) * 1000, 1)} ms + "
            f"{_n((model.get('b') or 0) * 1000, 3)} ms per prompt token + "
            f"{_n((model.get('c') or 0) * 1000, 2)} ms per output token.</p>"
        )
    elif figs.get("latency") is None:
        out.append(_not_measured(_evidence_reason(s, "latency")))
    dm = s.get("domain_measure")
    if dm or s.get("domain"):
        out.append("<h3>Domain language</h3>")
        facts = []
        if dm:
            facts += [
                (
                    f"perplexity per word ({esc(dm.get('source'))})",
                    f"task {_n(dm.get('task_word_ppl'), 1)}, reference "
                    f"{_n(dm.get('reference_word_ppl'), 1)}, "
                    f"ratio {_n(dm.get('ratio'), 2)}",
                ),
                (
                    "tokens per word",
                    f"task {_n(dm.get('tokens_per_word'), 2)}, reference "
                    f"{_n(dm.get('reference_tokens_per_word'), 2)}",
                ),
            ]
        if s.get("domain"):
            facts.append(("declared domain", esc(s["domain"])))
        out.append(_kv(facts))
    missing = s.get("not_measured") or []
    if missing:
        out.append("<h3>Not measured</h3><ul>")
        out += [f"<li><strong>{esc(m.get('what'))}</strong>: {esc(m.get('why'))}</li>" for m in missing]
        out.append("</ul>")
    return "".join(out)


def _evidence_reason(section: Mapping[str, Any], what: str) -> str:
    for m in section.get("not_measured") or []:
        if what.split()[0] in str(m.get("what", "")).lower():
            return f"{what}: {m.get('why')}"
    return f"{what}: not in this run's evidence."


def _training(doc: Mapping[str, Any], figs: Mapping[str, plots.Figure]) -> str:
    t = doc.get("training")
    out = ['<h2 id="training">Training</h2>']
    if not t:
        out.append(_not_measured("no adapter was trained in this run."))
        return "".join(out)
    m = t.get("metrics") or {}
    prov = t.get("provenance") or {}
    out.append(
        _kv(
            [
                ("method", esc(t.get("method"))),
                ("base model", f"<code>{esc(t.get('base_model'))}</code>"),
                ("adapter", f"<code>{esc(t.get('adapter_dir'))}</code>"),
                (
                    "gate",
                    f"verdict {fmt(prov.get('gate_verdict'))}"
                    + (" — forced (--force)" if prov.get("forced") else ""),
                ),
                (
                    "steps",
                    f"{fmt(m.get('steps'))} of {fmt(m.get('total_steps'))} planned"
                    + (" (stopped early)" if m.get("stopped_early") else ""),
                ),
                ("best dev loss", f"{fmt(m.get('best_dev_loss'))} at step {fmt(m.get('best_step'))}"),
                ("final train loss", fmt(m.get("final_train_loss"))),
                ("examples", f"{fmt(m.get('n_train'))} train, {fmt(m.get('n_dev'))} dev"),
                (
                    "throughput",
                    f"{_n(m.get('tokens_per_s'))} tokens/s over {fmt(m.get('world_size'))} process(es); "
                    f"{fmt(m.get('trained_tokens'))} tokens",
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
    cfg = t.get("config") or {}
    if cfg:
        out.append("<h3>Training configuration</h3>")
        out.append(_config_table(cfg))
    return "".join(out)


def _config_table(cfg: Mapping[str, Any]) -> str:
    rows = ([f"<code>{esc(k)}</code>", fmt(v, none="unset")] for k, v in cfg.items())
    return _table(["option", "value"], rows, cls="config")


def _verification(doc: Mapping[str, Any], figs: Mapping[str, plots.Figure]) -> str:
    v = doc.get("verification")
    out = ['<h2 id="verification">Before and after fine-tuning</h2>']
    if not v:
        out.append(_not_measured("no fine-tuned model was compared with the prompting arms in this run."))
        return "".join(out)
    metric = str(v.get("metric"))
    base, ft = v.get("baseline") or {}, v.get("finetuned") or {}
    d, flips = v.get("difference") or {}, v.get("flips") or {}

    def lat(x: Mapping[str, Any] | None) -> str:
        return "–" if not x else f"{_n(x.get('p50_ms'))} / {_n(x.get('p95_ms'))}"

    out.append(
        f"<p>Same {fmt(v.get('n_eval'))} eval items and scoring "
        f"as the prompting arms; metric {esc(metric)}.</p>"
    )
    out.append(_figure(figs.get("before_after")))
    out.append(
        _table(
            ["model", f"{esc(metric)} (95% CI)", "prompt tokens", "latency p50 / p95 ms"],
            [
                [
                    f"best prompting arm <code>{esc(base.get('arm'))}</code>",
                    _est((base.get("scores") or {}).get(metric)),
                    _n(base.get("mean_prompt_tokens")),
                    lat(base.get("latency")),
                ],
                [
                    "fine-tuned (LoRA)",
                    _est((ft.get("scores") or {}).get(metric)),
                    _n(ft.get("mean_prompt_tokens")),
                    lat(ft.get("latency")),
                ],
            ],
            numeric=(2, 3),
        )
    )
    if isinstance(d.get("diff"), int | float):
        out.append(
            f"<p>Paired difference (fine-tuned − <code>{esc(base.get('arm'))}</code>): "
            f"{d['diff']:+.3f} [{_score(d.get('low'))}, {_score(d.get('high'))}], p {_p(d.get('p_value'))} "
            f"(McNemar p {_p(d.get('mcnemar_p_value'))}). Flips: {fmt(flips.get('improved'))} items fixed, "
            f"{fmt(flips.get('regressed'))} broken.</p>"
        )
    maj = v.get("majority") or {}
    if maj.get("difference"):
        m = maj["difference"]
        out.append(
            f"<p>Against always answering <code>{esc(maj.get('label'))}</code> (the majority baseline): "
            f"{m['diff']:+.3f} [{_score(m.get('low'))}, {_score(m.get('high'))}], "
            f"p {_p(m.get('p_value'))}.</p>"
        )
    deg = v.get("degeneracy") or {}
    if deg.get("degenerate"):
        out.append(f"<p><strong>The fine-tuned model is degenerate</strong>: {esc(deg.get('reason'))}.</p>")
    verified = v.get("finetune_verified")
    out.append(
        "<p><strong>Fine-tuning verified</strong>: the paired "
        "95% intervals against the best honest prompting arm and the majority baseline lie above zero.</p>"
        if verified
        else "<p><strong>Fine-tuning not verified</strong>: a "
        "paired 95% interval includes zero or lies below "
        "it, or the model is degenerate.</p>"
    )
    if (v.get("provenance") or {}).get("forced"):
        out.append("<p>Training was forced against the advisor's verdict (--force).</p>")
    for title, key in (
        ("Fixed by fine-tuning", "improved_examples"),
        ("Broken by fine-tuning", "regressed_examples"),
    ):
        ex = flips.get(key) or []
        if not ex:
            continue
        out.append(f"<h3>{esc(title)} (a sample of real eval items)</h3>")
        rows = [
            [
                _n(x.get("line")),
                f"<div class='text'>{esc(x.get('input', ''))}</div>",
                f"<code>{esc(x.get('target', ''))}</code>",
                f"<code>{esc(x.get('before', ''))}</code>",
                f"<code>{esc(x.get('after', ''))}</code>",
            ]
            for x in ex
        ]
        out.append(
            _table(["line", "input", "target", "before", "after"], rows, cls="data flips", numeric=(0,))
        )
    return "".join(out)


def _source(s: Mapping[str, Any]) -> str:
    title = esc(s.get("title", ""))
    href = safe_href(s.get("url"))
    text = f'<a href="{esc(href)}" rel="noopener noreferrer">{title}</a>' if href else title
    if s.get("url") and not href:
        text += f" <span class='muted'>({esc(s['url'])})</span>"
    if s.get("citation"):
        text += f" <span class='muted'>— {esc(s['citation'])}</span>"
    return f"<li>{text}</li>"


def _rules(doc: Mapping[str, Any]) -> str:
    d = doc["decision"]
    verdict = str(d.get("verdict"))
    deciding = set(d.get("deciding_rules") or [])
    out = [f'<h2 id="rules">Rules: fired, vetoed, skipped</h2><div class="v-{esc(verdict)}">']
    fired = d.get("fired") or []
    out.append(f"<h3>Fired ({len(fired)})</h3>")
    if not fired:
        out.append("<p>No rule fired.</p>")
    for r in fired:
        kind = r.get("kind")
        if kind == "veto":
            role = f"vetoes {esc(r.get('vetoes'))}"
        else:
            role = f"{esc(kind)} for {esc(r.get('verdict'))}, weight {fmt(r.get('weight'))}"
        ev = r.get("evidence") or {}
        rows = [[f"<code>{esc(k)}</code>", fmt(v)] for k, v in (ev.get("signals") or {}).items()]
        rows += [
            [f"threshold <code>{esc(k)}</code>", fmt(v)] for k, v in (ev.get("thresholds") or {}).items()
        ]
        conds = " and ".join(f"<code>{esc(c)}</code>" for c in r.get("conditions") or [])
        cls = "card deciding" if r.get("id") in deciding else "card"
        tag = '<span class="tag">deciding</span>' if r.get("id") in deciding else ""
        out.append(
            f'<div class="{cls}"><h4><code>{esc(r.get("id"))}</code>{tag}</h4>'
            f'<div class="role">{role}; when {conds}</div>'
            f"<p>{esc(r.get('message', ''))}</p>"
            + (_table(["evidence", "value"], rows) if rows else "")
            + (f"<p class='muted'>{esc(r['note'])}</p>" if r.get("note") else "")
            + "<div><strong>Sources</strong></div><ul class='sources'>"
            + "".join(_source(s) for s in r.get("sources") or [])
            + "</ul></div>"
        )
    scores = d.get("scores") or {}
    if scores:
        out.append(
            "<p>Weighted votes: "
            + ", ".join(f"{esc(k)} {fmt(v, 3)}" for k, v in scores.items())
            + f" (vote margin {fmt(d.get('vote_margin'), 2)}: "
            "the rules' own strength figure, not a probability)."
            "</p>"
        )
    vetoed = d.get("vetoed") or []
    if vetoed:
        out.append("<h3>Ruled out</h3><ul>")
        out += [
            f"<li><code>{esc(x.get('verdict'))}</code> by <code>{esc(x.get('rule_id'))}</code>: "
            f"{esc(x.get('message', ''))}</li>"
            for x in vetoed
        ]
        out.append("</ul>")
    skipped = d.get("skipped") or []
    out.append(f"<h3>Skipped: signals not measured ({len(skipped)})</h3>")
    if skipped:
        rows = [
            [
                f"<code>{esc(s.get('id'))}</code>",
                "<code>"
                + esc(f"not {s.get('verdict')}" if s.get("kind") == "veto" else s.get("verdict"))
                + "</code>",
                ", ".join(f"<code>{esc(m)}</code>" for m in s.get("missing") or []),
                esc(s.get("message", "")),
            ]
            for s in skipped
        ]
        out.append(_table(["rule", "argues for", "missing signals", "rule says"], rows))
    else:
        out.append("<p>None: every rule could be checked.</p>")
    if d.get("not_fired"):
        out.append(
            "<p>Checked and not fired: "
            + ", ".join(f"<code>{esc(x)}</code>" for x in d["not_fired"])
            + ".</p>"
        )
    out.append("</div>")
    return "".join(out)


def _provenance(doc: Mapping[str, Any]) -> str:
    p = doc.get("provenance") or {}
    ds = doc.get("dataset") or {}
    overrides = p.get("threshold_overrides") or {}
    backend = p.get("backend") or {}
    out = ['<h2 id="provenance">Provenance</h2>']
    out.append(
        _kv(
            [
                (
                    "tool",
                    f"tunegate {esc(p.get('tool_version', doc.get('tool_version')))}, report schema "
                    f"{esc(doc.get('schema_version'))}, created {esc(doc.get('created_at'))}",
                ),
                ("data", f"<code>{esc(ds.get('path', ''))}</code>"),
                ("data sha256", f"<code>{esc(p.get('dataset_sha256'))}</code>"),
                ("rules", ", ".join(f"<code>{esc(f)}</code>" for f in p.get("rules_files") or [])),
                ("rules sha256", f"<code>{esc(p.get('rules_sha256'))}</code>"),
                (
                    "seeds",
                    ", ".join(f"{esc(k)}={fmt(v)}" for k, v in (p.get("seeds") or {}).items()) or "none",
                ),
                (
                    "backend",
                    ", ".join(f"{esc(k)}: {fmt(v)}" for k, v in backend.items())
                    if backend
                    else "<span class='na'>none</span>",
                ),
                ("python / platform", f"{esc(p.get('python'))} on {esc(p.get('platform'))}"),
                (
                    "libraries",
                    ", ".join(f"{esc(k)} {esc(v)}" for k, v in (p.get("libraries") or {}).items() if v)
                    or "–",
                ),
            ]
        )
    )
    thresholds = p.get("thresholds") or {}
    if thresholds:
        out.append("<h3>Thresholds</h3>")
        rows = [
            _Row(
                [f"<code>{esc(k)}</code>", fmt(v), "override" if k in overrides else "rules file"],
                "used" if k in overrides else "",
            )
            for k, v in thresholds.items()
        ]
        out.append(_table(["threshold", "value", "from"], rows))
    cfg = p.get("config") or {}
    if cfg:
        out.append("<h3>Resolved configuration</h3>")
        out.append(_config_table(cfg))
    return "".join(out)


# ---------------------------------------------------------------- the page


def to_html(doc: Mapping[str, Any]) -> str:
    """The whole report as one HTML page (UTF-8 text; no external resources)."""
    figs = {f.name: f for f in plots.figures(doc)}
    d = doc["decision"]
    ds = doc.get("dataset") or {}
    title = f"tunegate: {d.get('verdict')} — {Path(str(ds.get('path', ''))).name}"
    nav = "".join(
        f'<a href="#{k}">{esc(t)}</a>'
        for k, t in (
            ("verdict", "Verdict"),
            ("signals", "Signals"),
            ("data", "Data"),
            ("prompting", "Prompting"),
            ("evidence", "Cost & latency"),
            ("training", "Training"),
            ("verification", "Before/after"),
            ("rules", "Rules"),
            ("provenance", "Provenance"),
        )
    )
    body = [
        "<h1>tunegate report</h1>",
        f'<p class="sub"><code>{esc(ds.get("path", ""))}</code> · {fmt(ds.get("n_examples"))} examples · '
        f"{esc(ds.get('task_kind', ''))} · created {esc(doc.get('created_at', ''))}</p>",
        f"<nav>{nav}</nav>",
        _banner(doc),
        _signals(doc),
        _data(doc),
        _prompting(doc, figs),
        _evidence(doc, figs),
        _training(doc, figs),
        _verification(doc, figs),
        _rules(doc),
        _provenance(doc),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f'<body><main class="wrap">{"".join(body)}</main></body></html>\n'
    )
