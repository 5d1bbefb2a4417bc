"""The console summary `advise` and `tunegate report` print: the verdict panel, the measurements under it,
the fired rules and what would change the verdict, from the typed report.

Every string from the data or the user goes through `term_safe`, so no dataset text can move the cursor,
clear the screen or forge a link in the terminal. rich is imported when a summary is printed.

A table is printed as a table only when it fits the console's width; on a narrower console (80 columns)
the same facts are printed one arm or rule at a time, so no number or interval is ever cut short.
"""

from __future__ import annotations

import shutil
import sys
from typing import Any

from advisor.document import Prompting, Report
from advisor.report import fmt, pilot_view, summary
from advisor.report.prose import baseline_sentence, confidence_sentence, plateau_sentence
from advisor.textsafe import term_safe

VERDICT_COLOURS = {
    "prompt": "green",
    "few_shot": "green",
    "fine_tune": "magenta",
    "collect_data": "yellow",
    "inconclusive": "red",
}


def print_summary(report: Report, console: Any = None) -> None:
    """A verdict panel, the fired rules and what would change, printed with rich to stdout."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    console = console or Console(file=sys.stdout, width=_width())
    d = report.decision
    colour = VERDICT_COLOURS.get(d.verdict, "white")
    body = Text()
    body.append(f"{d.verdict}", style=f"bold {colour}")
    body.append(f"   {term_safe(confidence_sentence(d))}\n")
    body.append(term_safe(summary.headline(report)))
    deciding = [r for r in d.fired if r.id in d.deciding_rules]
    for r in deciding[:1]:  # the strongest deciding rule: what backs it
        if r.note:
            body.append(f"\n{term_safe(r.note)}", style="dim")
        for s in r.sources:
            where = s.url or s.citation or ""
            body.append(f"\nSource: {term_safe(s.title)} {term_safe(where)}", style="dim")
    console.print(Panel(body, title="tunegate verdict", expand=False))
    _print_measurements(report, console)

    if d.fired:
        table = Table(title="Fired rules", show_lines=False)
        for col in ("rule", "role", "evidence"):
            table.add_column(col)
        rows = []
        for r in d.fired:
            role = f"vetoes {r.vetoes}" if r.kind == "veto" else f"{r.kind} {r.verdict}"
            facts = [f"{k}={fmt.value(v)}" for k, v in r.evidence.signals.items()]
            facts += [f"{k}={fmt.value(v)}" for k, v in r.evidence.thresholds.items()]
            rows.append((term_safe(r.id), term_safe(role), term_safe(", ".join(facts))))
            table.add_row(*(Text(cell) for cell in rows[-1]))
        if _fits(table, console, wrapped=2):
            console.print(table)
        else:
            from rich.padding import Padding

            console.print(Text("Fired rules", style="bold"))
            for rule, role, evidence in rows:
                console.print(Text(f"  {rule} ({role})"))
                console.print(Padding(Text(evidence), (0, 0, 0, 4)))
    if d.what_would_change:
        console.print("[bold]What would change the verdict[/bold]")
        for c in d.what_would_change:
            console.print(f"  • {term_safe(c)}", markup=False, highlight=False)
    if d.skipped:
        console.print(f"{len(d.skipped)} rules skipped (signals not measured); see report.md.", style="dim")


MIN_WIDTH = 20
"""Narrower than this (`COLUMNS=0`, a mistyped value) is not a console: the summary uses this width."""


def _width() -> int:
    """A positive COLUMNS, else the terminal's width, else (piped: CI logs) a roomy 120 columns."""
    return max(MIN_WIDTH, shutil.get_terminal_size((120, 24)).columns)


def _fits(table: Any, console: Any, wrapped: int = -1) -> bool:
    """Whether `table` fits the console with every cell on one line; `wrapped` names a column that may
    wrap at its spaces instead (it then needs room for its longest word)."""
    from rich.measure import Measurement

    wide = console.options.update_width(100_000)
    widths = []
    for i, column in enumerate(table.columns):
        cells = [column.header, *column.cells]
        measures = [Measurement.get(console, wide, cell) for cell in cells]
        widths.append(max(m.minimum if i == wrapped else m.maximum for m in measures))
    borders = 3 * len(widths) + 1  # a space either side of each cell, a rule between and around
    return sum(widths) + borders <= console.width


def _print(console: Any, text: str) -> None:
    """One line of plain text (no rich markup, no highlighting), control characters made visible."""
    console.print(term_safe(text), markup=False, highlight=False)


def _print_measurements(report: Report, console: Any) -> None:
    """The measured evidence under the verdict: data, prompting arms, cost/latency, fine-tuning, calls."""
    audit = report.audit
    kinds = f", {len(audit.label_counts)} labels" if audit.label_counts else ""
    console.print(f"Data: {audit.n_examples:,} examples ({audit.task_kind}{kinds}).")
    if report.prompting is not None:
        _print_prompting(report.prompting, console)
    evidence = report.evidence
    best = next((a for a in evidence.arms if a.name == evidence.best_arm), None) if evidence else None
    if evidence is not None and best is not None:
        cost = evidence.cost
        facts = [f"best arm {best.name}: {fmt.fixed(best.prompt_tokens)} prompt tokens"]
        if best.p95_ms is not None:
            facts.append(f"p95 {fmt.ms(best.p95_ms)}")
        if best.monthly_cost is not None:
            facts.append(f"{fmt.money(best.monthly_cost, cost.currency if cost else '')}/month")
        if cost is not None and cost.break_even_days is not None:
            facts.append(f"fine-tuning breaks even in {cost.break_even_days:.1f} days")
        _print(console, "Evidence: " + "; ".join(facts) + ".")
    if report.pilot is not None:
        metric = report.prompting.target_metric if report.prompting is not None else ""
        lines = pilot_view.sentences(report.pilot, metric)
        _print(console, "Pilot fine-tune: " + " ".join(lines))
        for row in pilot_view.rows(report.pilot):
            _print(console, "  " + " | ".join(c for c in row if c))
    v = report.verification
    if v is not None:
        d = v.difference
        ok = "verified" if v.finetune_verified else "NOT verified"
        ok += (
            " (the fine-tuned model is degenerate)"
            if v.degeneracy is not None and v.degeneracy.degenerate
            else ""
        )
        console.print(
            f"Fine-tuning {ok}: {term_safe(v.finetuned.arm)} vs {term_safe(v.baseline.arm)}: "
            f"{fmt.difference(d.diff, d.low, d.high)} ({v.metric}, paired); "
            f"flips {v.flips.improved} fixed / {v.flips.regressed} broken.",
            markup=False,
            highlight=False,
        )
    cache = (report.provenance.backend or {}).get("cache")
    if cache:
        console.print(
            f"Model calls: {cache.get('calls', 0)} made, {cache.get('hits', 0)} answered from the cache.",
            style="dim",
        )


def _print_prompting(p: Prompting, console: Any) -> None:
    """The arms table with the majority baseline, the metric's reason, the k-curve and the plateau."""
    from rich.table import Table
    from rich.text import Text

    metric = p.target_metric
    by_arm = {c.arm: c for c in p.comparisons if c.baseline != "zero_shot" or c.arm == "system"}
    title = f"Prompting arms ({p.n_eval} eval items, target {metric} >= {p.quality_target:g})"
    table = Table(title=title)
    b = p.baselines
    columns = ["arm", "tokens", f"{metric} [95% CI]", "Δ vs cheaper arm", "p"]
    columns += ["macro-F1", "top label", "variant", "status"] if b is not None else []
    for col in columns:
        table.add_column(col, justify="left" if col in ("arm", "status") else "right", no_wrap=True)
    lines: list[str] = []  # the same facts, a few a line, for a console too narrow for the table
    if b is not None:
        majority = fmt.score(getattr(b.majority, metric, None))
        top = f"{b.majority_share:.0%} {b.majority_label}"
        cells = [f"majority ({b.majority_label})", fmt.DASH, majority, fmt.DASH, fmt.DASH]
        cells += [fmt.score(b.majority.macro_f1), top, fmt.DASH, "baseline"]
        table.add_row(*(Text(term_safe(c)) for c in cells), style="dim")
        lines += [f"{cells[0]}: baseline", f"    {metric} {majority}; macro-F1 {cells[5]}; top label {top}"]
    for arm in p.arms:
        e = arm.scores[metric]
        c = by_arm.get(arm.name)
        cells = [
            arm.name,
            f"{arm.mean_prompt_tokens:.0f}",
            fmt.estimate(e.value, e.low, e.high),
            fmt.difference(c.diff, c.low, c.high) if c else fmt.DASH,
            fmt.p_value(c.p_value) if c else fmt.DASH,
        ]
        lines += [f"{arm.name}: {cells[1]} prompt tokens", f"    {metric} {cells[2]}"]
        d = arm.degeneracy
        if b is not None:
            macro = arm.scores.get("macro_f1")
            cells += [
                fmt.score(macro.value if macro else None),
                f"{d.top_share:.0%} {d.top_label}" if d else fmt.DASH,
                arm.variant,
                "DEGENERATE" if d and d.degenerate else "ok",
            ]
            lines[-1] += f"; macro-F1 {cells[5]}"
            lines.append(f"    top label {cells[6]}; variant {cells[7]}; {cells[8]}")
        if c:
            lines.append(f"    Δ vs cheaper arm {cells[3]} (p {cells[4]})")
        table.add_row(*(Text(term_safe(cell)) for cell in cells))
    if _fits(table, console):
        console.print(table)
    else:
        console.print(Text(title, style="bold"))
        for fact in lines:
            _print(console, f"  {fact}")
    if p.metric_reason:
        _print(console, f"Metric: {p.metric_reason}.")
    if b is None:  # generation: no label columns, so the degenerate arms are named here
        for arm in p.arms:
            if arm.degeneracy is not None and arm.degeneracy.degenerate:
                _print(console, f"DEGENERATE {arm.name}: {arm.degeneracy.reason}.")
    line = baseline_sentence(p)
    if line:
        _print(console, line.replace("`", ""))
    if p.k_curve:
        points = "  ".join(f"k={pt.k}: {pt.value:.3f}" for pt in p.k_curve)
        console.print(f"k-curve ({metric}; k=0 is the system arm): {points}")
    if p.plateau.reason:
        _print(console, plateau_sentence(p).replace("`", ""))
