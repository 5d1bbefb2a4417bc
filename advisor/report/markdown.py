"""The Markdown report (report.md) from the typed report: every section, in one module.

Numbers and names come from `advisor.report.fmt`, shared sentences from `advisor.report.prose`, and every
string that came from the data or the user goes through `md_escape` / `md_code`, so no dataset text can
start a block, a link or HTML. The fine-tuning sections (also in the model card) are in
`advisor.report.finetune`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from advisor.document import (
    ArmScores,
    Audit,
    Comparison,
    Decision,
    EvalGrowth,
    Evidence,
    Pilot,
    Prompting,
    Report,
    RuleSource,
    SignalValue,
    Split,
)
from advisor.report import fmt, pilot_view, summary
from advisor.report.finetune import training_markdown, verification_markdown
from advisor.report.plots import COMPARISON, latency_trend, probe_trend
from advisor.report.prose import (
    NO_LATENCY_TREND,
    NO_PROBE_TREND,
    baseline_sentence,
    confidence_sentence,
    growth_sentence,
    plateau_sentence,
)
from advisor.textsafe import md_code, md_escape, md_link

SPLIT_FILE = "split.json"  # where the split's line numbers are (advisor.audit.checks.SPLIT_FILE)


def to_markdown(report: Report, plots: Mapping[str, Sequence[tuple[str, str]]] | None = None) -> str:
    """The Markdown report; `plots` (section -> [(title, relative path)]) embeds images after sections.

    The first screen answers a planning review in plain words (`summary_section`); the engineer's detail
    (rules with their ids, signals, audit, measurements, provenance) follows under its own heading."""
    d = report.decision
    plots = plots or {}
    chart = plot_path(plots, COMPARISON)
    out = ["# tunegate report", "", summary_section(report, chart).rstrip(), ""]
    out += ["# Engineer's detail", ""]
    out += _decision(
        d, summary.no_prompt_to_price(report), report.split.eval_growth if report.split else None
    )
    out += [audit_section(report.audit, report.split).rstrip(), ""]
    sections = {
        "prompting": prompting_section(report.prompting),
        "evidence": evidence_section(report.evidence),
        "pilot": pilot_section(report.pilot, report.prompting.target_metric if report.prompting else ""),
        "training": training_markdown(report.training),
        "verification": verification_markdown(report.verification, report.training is not None),
    }
    for key, text in sections.items():
        out += [text.rstrip(), ""]
        out += [
            line
            for title, rel in plots.get(key, ())
            if chart is None or rel != chart[1]
            for line in (f"![{md_escape(title)}]({rel})", "")
        ]
    out += _signals(report.signals)
    out += _provenance(report)
    return "\n".join(out).rstrip() + "\n"


def plot_path(plots: Mapping[str, Sequence[tuple[str, str]]], names: Sequence[str]) -> tuple[str, str] | None:
    """The first of the named plots (file stems, in order of preference) that was written: (title, path)."""
    written = {Path(rel).stem: (title, rel) for entries in plots.values() for title, rel in entries}
    return next((written[n] for n in names if n in written), None)


def summary_section(report: Report, chart: tuple[str, str] | None = None) -> str:
    """The first screen: the verdict and how sure it is, the options side by side, the comparison chart,
    the facts the verdict rests on and what would change it. Plain words: no rule id, no signal name."""
    d = report.decision
    out = [
        f"**Verdict: {md_code(d.verdict)}**. {md_escape(summary.headline(report))}",
        "",
        md_escape(summary.sureness(d)),
        "",
        "## The options",
        "",
        "| " + " | ".join(summary.HEADER) + " |",
        "|---|---|---|---|---|",
    ]
    for o in summary.options(report):
        cells = (o.name, o.how, o.quality, o.cost, o.latency)
        out.append("| " + " | ".join(md_escape(c) for c in cells) + " |")
    target = summary.target_line(report)
    out += ["", md_escape(target)] if target else []
    if chart is not None:
        out += ["", f"![{md_escape(chart[0])}]({chart[1]})"]
    out += ["", "## What the verdict rests on", ""]
    out += [f"- {md_escape(f)}" for f in summary.facts(report)]
    out += ["", "## What would change it", ""]
    out += [f"- {md_escape(c)}" for c in summary.changes(report)]
    return "\n".join(out) + "\n"


def pilot_section(p: Pilot | None, metric: str) -> str:
    """The "Pilot fine-tune" section: what the pilots measured and what their curve predicts."""
    out = ["## Pilot fine-tune", ""]
    if p is None:
        return "\n".join(out + ["Not measured: this run folder predates the pilot.", ""])
    out += [" ".join(md_escape(s) for s in pilot_view.sentences(p, metric)), ""]
    table = pilot_view.rows(p)
    if table:
        out += ["| " + " | ".join(pilot_view.HEADER) + " |", "|" + "---|" * len(pilot_view.HEADER)]
        out += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in table]
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- the decision


def _decision(d: Decision, why_unpriced: str | None = None, growth: EvalGrowth | None = None) -> list[str]:
    out = ["## Why", "", f"Decided by {md_escape(d.decided_by)}; {md_escape(confidence_sentence(d))}.", ""]
    if (scored := growth_sentence(growth)) is not None:
        out += [md_escape(scored), ""]
    if not d.fired:
        out += ["No rule fired.", ""]
    for r in d.fired:
        role = f"vetoes {r.vetoes}" if r.kind == "veto" else f"{r.kind} for {r.verdict}"
        weight = f", weight {r.weight:g}" if r.kind != "veto" else ""
        out.append(f"- **{md_escape(r.id)}** ({md_escape(role)}{weight}): {md_escape(r.message)}")
        facts = [f"{k} = {fmt.value(v)}" for k, v in r.evidence.signals.items()]
        facts += [f"threshold {k} = {fmt.value(v)}" for k, v in r.evidence.thresholds.items()]
        when = " and ".join(r.conditions)
        out.append(f"  - Evidence: {md_escape('; '.join(facts))} (when {md_escape(when)})")
        if r.note:
            out.append(f"  - Note: {md_escape(r.note)}")
        out.append(f"  - Source: {'; '.join(_source(s) for s in r.sources)}")
    if d.fired:
        out.append("")
    if d.scores:
        out += [
            "Weighted votes: "
            + ", ".join(f"{md_escape(v)} {s:g}" for v, s in d.scores.items())
            + f" (vote margin {d.vote_margin:.2f}: the rules' own strength figure, not a probability).",
            "",
        ]
    if d.vetoed:
        out += ["## Ruled out", ""]
        out += [f"- {md_code(v.verdict)} by {md_escape(v.rule_id)}: {md_escape(v.message)}" for v in d.vetoed]
        out.append("")
    out += ["## What would change the verdict", ""]
    out += [f"- {md_escape(c)}" for c in d.what_would_change] or ["- Nothing short of different signals."]
    out.append("")
    out += ["## Skipped rules (signals not measured)", ""]
    if d.skipped and why_unpriced is not None:
        out += [f"The cost and latency rules cannot apply: {md_escape(why_unpriced)}.", ""]
    if d.skipped:
        out += ["| rule | argues for | missing signals |", "|---|---|---|"]
        for s in d.skipped:
            arg = f"not {s.verdict}" if s.kind == "veto" else str(s.verdict)
            out.append(f"| {md_escape(s.id)} | {md_escape(arg)} | {md_escape(', '.join(s.missing))} |")
    else:
        out.append("None: every rule could be checked.")
    out.append("")
    if d.not_fired:
        out += ["Checked and not fired: " + md_escape(", ".join(d.not_fired)) + ".", ""]
    return out


def _source(s: RuleSource) -> str:
    text = md_link(s.title, s.url) if s.url else md_escape(s.title)
    return f"{text} ({md_escape(s.citation)})" if s.citation else text


def _signals(signals: Mapping[str, SignalValue]) -> list[str]:
    missing = sorted(k for k, v in signals.items() if v is None)
    out = ["## Signals", "", "| signal | value |", "|---|---|"]
    out += [f"| {md_escape(k)} | {md_escape(fmt.value(v))} |" for k, v in signals.items() if v is not None]
    out.append("")
    if missing:
        out += ["Not measured: " + md_escape(", ".join(missing)) + ".", ""]
    return out


def _provenance(report: Report) -> list[str]:
    p = report.provenance
    libs = ", ".join(f"{k} {v}" for k, v in p.libraries.items() if v)
    out = [
        "## Provenance",
        "",
        f"- tunegate {p.tool_version}, report schema {report.schema_version}, created {report.created_at}",
        f"- Data: {md_code(report.dataset.path)} (sha256 {md_code(p.dataset_sha256)})",
        f"- Rules: {', '.join(md_code(f) for f in p.rules_files)} (sha256 {md_code(p.rules_sha256)})",
    ]
    if p.threshold_overrides:
        out.append(
            "- Threshold overrides: "
            + md_escape(", ".join(f"{k}={fmt.value(v)}" for k, v in p.threshold_overrides.items()))
        )
    out.append("- Seeds: " + (md_escape(", ".join(f"{k}={v}" for k, v in p.seeds.items())) or "none"))
    if p.backend:
        out.append(f"- Backend: {md_escape(p.backend.get('name'))} {md_code(p.backend.get('model_id'))}")
    out += [
        f"- Python {p.python} on {p.platform}",
        f"- Libraries: {libs}",
        "- Resolved config: in `config.json` and under provenance.config in `decision.json`",
        "",
    ]
    return out


# --------------------------------------------------------------------------- the data audit


def audit_section(a: Audit, split: Split | None = None) -> str:
    """The "Data audit" section (and the split's sizes, if given)."""
    n = a.n_examples
    method = "model tokenizer" if a.token_method == "tokenizer" else "approximation: ceil(characters / 4)"
    lines = [
        "## Data audit",
        "",
        f"{n:,} examples, task: **{md_escape(a.task_kind)}**"
        + (f" with {a.n_labels} labels." if a.n_labels else "."),
        "",
    ]
    if a.label_counts:
        lines += ["| label | examples | share |", "|---|---:|---:|"]
        total = sum(a.label_counts.values()) or 1
        for label, count in a.label_counts.items():
            lines.append(f"| {md_escape(label)} | {count:,} | {fmt.share(count / total)} |")
        lines += [
            "",
            f"Imbalance (largest / smallest label): {fmt.fixed(a.imbalance_ratio, 2)}; "
            f"minority share: {fmt.share(a.minority_share)}.",
            "",
        ]
    lines += [
        "| check | count | share |",
        "|---|---:|---:|",
        f"| exact duplicates | {a.exact_duplicates:,} | {_share(a.exact_duplicates, n)} |",
        f"| normalised duplicates | {a.normalised_duplicates:,} | {fmt.share(a.duplicate_share)} |",
        f"| conflicting duplicates (same input, different target) | {a.conflict_examples:,} "
        f"in {a.conflict_groups:,} groups | {fmt.share(a.conflict_share)} |",
        f"| empty targets | {a.empty_targets:,} | {_share(a.empty_targets, n)} |",
        "",
    ]
    if a.conflict_pairs:
        shown = ", ".join(f"lines {x} and {y}" for x, y in a.conflict_pairs)
        lines += [f"Conflicting examples, for instance: {shown}.", ""]
    i, t = a.input_tokens, a.target_tokens
    lines += [
        f"Lengths in tokens ({method}):",
        "",
        "| | mean | p50 | p95 | max |",
        "|---|---:|---:|---:|---:|",
        f"| input | {i.mean:.1f} | {i.p50:.0f} | {i.p95:.0f} | {i.max:,} |",
        f"| target | {t.mean:.1f} | {t.p50:.0f} | {t.p95:.0f} | {t.max:,} |",
        "",
    ]
    if split is not None:
        leak = "not checked" if split.leakage_count is None else split.leakage_count
        lines += [
            f"Split (seed {split.seed}, in {md_code(split.file or SPLIT_FILE)}): "
            f"{fmt.count(split.n_train)} train, {fmt.count(split.n_dev)} dev, "
            f"{fmt.count(split.n_eval)} eval; "
            f"held-out items whose input is also in an earlier split: {leak}.",
            "",
        ]
    return "\n".join(lines)


def _share(count: int, n: int) -> str:
    return fmt.share(count / n) if n else fmt.DASH


# --------------------------------------------------------------------------- prompting


def prompting_section(p: Prompting | None) -> str:
    """The "Prompting" section: arms, paired differences, variants tried, the k-curve and the plateau."""
    if p is None:
        return "## Prompting\n\nNot measured: no model was run, so no arm scores exist.\n"
    metric = p.target_metric
    metrics = list(p.arms[0].scores)
    classify = p.baselines is not None
    # The first comparison listed for an arm is the one with its next cheaper arm.
    vs_prev: dict[str, Comparison] = {}
    for comparison in p.comparisons:
        vs_prev.setdefault(comparison.arm, comparison)
    out = [
        "## Prompting",
        "",
        f"Model {md_code(p.model_id)} ({md_escape(p.backend)} backend), {p.n_eval} eval items. "
        f"Target: {fmt.metric_name(metric)} ≥ {p.quality_target:.3f}. "
        "Intervals are 95% percentile-bootstrap; differences are paired over the same items "
        "(p: exact McNemar for accuracy, paired bootstrap otherwise).",
    ]
    if p.metric_reason:
        out += ["", f"Metric: {md_escape(p.metric_reason)}."]
    line = baseline_sentence(p, code=md_code)
    if line:
        out += ["", line]
    extra = " | Top label | Variant | Status" if classify else ""
    out += [
        "",
        "| Arm | Prompt tokens | "
        + " | ".join(fmt.metric_name(m) for m in metrics)
        + f" | Δ vs cheaper arm | p{extra} |",
        "|---|---:|" + "---:|" * len(metrics) + "---:|---:|" + ("---:|---|---|" if classify else ""),
    ]
    for a in p.arms:
        c = vs_prev.get(a.name)
        delta = f"{fmt.difference(c.diff, c.low, c.high)} vs {md_escape(c.baseline)}" if c else fmt.DASH
        p_value = fmt.p_value(c.p_value) if c else fmt.DASH
        cells = " | ".join(fmt.estimate(e.value, e.low, e.high) for e in (a.scores[m] for m in metrics))
        tail = f" | {md_escape(_top(a))} | {a.variant} | {_status(a)}" if classify else ""
        out.append(
            f"| {md_escape(a.name)} | {a.mean_prompt_tokens:.0f} | {cells} | {delta} | {p_value}{tail} |"
        )
    degenerate = [a for a in p.arms if a.degeneracy is not None and a.degeneracy.degenerate]
    if degenerate:
        out += [
            "",
            "Degenerate arms (never the best arm, never meeting the target, never anchoring a plateau):",
            "",
        ]
        out += [
            f"- {md_code(a.name)}: {md_escape(a.degeneracy.reason if a.degeneracy else None)}"
            for a in degenerate
        ]
    tried = [(a.name, t) for a in p.arms for t in a.tried]
    if tried:
        out += [
            "",
            "Variants tried on the dev split (the best dev score per arm was then scored on eval):",
            "",
            f"| Arm | Variant | Selection | Dev {fmt.metric_name(metric)} | Dev items |",
            "|---|---|---|---:|---:|",
        ]
        for name, t in tried:
            out.append(
                f"| {md_escape(name)} | {t.variant} | {t.selection or fmt.DASH} "
                f"| {t.dev_score:.3f} | {t.n_dev} |"
            )
    else:
        out += ["", "No dev split: each arm was scored as prompted, without variants."]
    if p.k_curve:
        name = fmt.metric_name(metric)
        out += ["", f"k-curve ({name}; k=0 is the system arm):", "", f"| k | Arm | {name} | Prompt tokens |"]
        out.append("|---:|---|---:|---:|")
        for r in p.k_curve:
            est = fmt.estimate(r.value, r.low, r.high)
            out.append(f"| {r.k} | {md_escape(r.arm)} | {est} | {r.mean_prompt_tokens:.0f} |")
    out += ["", f"**{plateau_sentence(p, code=md_code, text=md_escape)}**"]
    if p.plateau.items_needed is not None:
        out.append(
            f"Detecting a gain of {p.min_gain:.3f} with 80% power at α={p.alpha} "
            f"would need about {p.plateau.items_needed} eval items (this run has {p.n_eval})."
        )
    return "\n".join(out) + "\n"


def _top(a: ArmScores) -> str:
    d = a.degeneracy
    return fmt.DASH if d is None else f"{d.top_share:.0%} {d.top_label}"


def _status(a: ArmScores) -> str:
    d = a.degeneracy
    return fmt.DASH if d is None else ("**degenerate**" if d.degenerate else "ok")


# --------------------------------------------------------------------------- evidence beyond accuracy


def evidence_section(e: Evidence | None) -> str:
    """The "Evidence beyond accuracy" section: tokens, latency, cost, learning curve, domain language."""
    out = ["## Evidence beyond accuracy", ""]
    if e is None:
        return "\n".join([*out, "Not measured.", ""])
    cost = e.cost
    cur = md_escape(cost.currency) if cost else ""
    facts = [
        f"Volume: {fmt.fixed(e.volume_per_day)} requests/day"
        if e.volume_per_day is not None
        else "Volume: not declared",
        f"latency budget: {fmt.fixed(e.latency_budget_ms)} ms"
        if e.latency_budget_ms is not None
        else "latency budget: none",
    ]
    if cost:
        facts.append(
            f"prices: {md_escape(fmt.serving(cost.serving, cost.finetuned_serving))} from "
            f"{md_escape(cost.source or 'flags')}"
            + (f" (dated {md_escape(cost.price_date)})" if cost.price_date else "")
        )
    out += ["; ".join(facts) + ".", ""]

    if e.arms:
        out += [
            "| Arm | Score | Prompt tokens | Output tokens | p50 ms | p95 ms | Cost/request | Cost/month |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for a in e.arms:
            mark = " (best)" if a.name == e.best_arm else ""
            out.append(
                f"| {md_escape(a.name)}{mark} | {fmt.fixed(a.score, 3)} | {fmt.fixed(a.prompt_tokens, 1)} "
                f"| {fmt.fixed(a.completion_tokens, 1)} | {fmt.fixed(a.p50_ms)} "
                f"| {fmt.fixed(a.p95_ms)} | {fmt.money(a.cost_per_request, cur)} "
                f"| {fmt.money(a.monthly_cost, cur)} |"
            )
        out.append("")
    model = e.latency_model
    if model:
        r2 = f", R² {model.r2:.2f}" if model.r2 is not None else ""
        out.append(
            f"Latency model (n={model.n}{r2}): {model.a * 1000:.1f} ms "
            f"+ {model.b * 1000:.3f} ms per prompt token + {model.c * 1000:.2f} ms per output token"
            + ("." if latency_trend(model) else f". {NO_LATENCY_TREND}.")
        )
    if e.finetuned_latency_ms is not None:
        out.append(
            f"A fine-tuned model with a zero-shot-length prompt is projected at "
            f"{fmt.fixed(e.finetuned_latency_ms)} ms per request."
        )
    if cost:
        out.append(
            f"Fine-tuned model: {fmt.money(cost.finetuned_cost_per_request, cur)} per request, "
            f"{fmt.money(cost.finetuned_monthly_cost, cur)} per month; one-time fine-tuning cost "
            f"{fmt.money(cost.finetune_cost, cur)}; "
            f"saving {fmt.money(cost.monthly_saving, cur)} per month."
        )
        if cost.break_even_days is not None:
            within = "within" if cost.break_even_days <= (e.horizon_days or math.inf) else "beyond"
            out.append(
                f"Break-even after {fmt.fixed(cost.break_even_requests)} requests: "
                f"{fmt.fixed(cost.break_even_days, 1)} days at the declared volume ({within} the "
                f"{fmt.fixed(e.horizon_days)}-day horizon)."
            )
        elif cost.reason:
            out.append(f"Break-even: none ({cost.reason}).")
        if cost.throughput_source == "measured single-request":
            out.append("Self-hosted throughput taken from single-request timings: an upper bound on cost.")
    out.append("")

    curve = e.learning_curve
    if curve:
        out += [
            "### Learning curve (TF-IDF + logistic-regression probe)",
            "",
            f"| Train examples | {curve.metric} | 95% CI |",
            "|---:|---:|---|",
        ]
        for pt in curve.points:
            out.append(f"| {pt.n:,} | {pt.score:.3f} | {pt.ci_low:.3f}–{pt.ci_high:.3f} |")
        n_max = curve.points[-1].n
        lo, hi = curve.b_interval
        if not probe_trend(curve):
            out += ["", NO_PROBE_TREND]
        out += [
            "",
            f"Power law: error ≈ {curve.a:.3g}·n^{-curve.b:+.3f} (exponent b = {curve.b:.3f}, "
            f"95% CI {lo:.3f}–{hi:.3f}); "
            "no floor term, so extrapolations are optimistic.",
        ]
        for iv, factor in ((curve.score_at_2x, 2), (curve.score_at_4x, 4)):
            out.append(
                f"- Predicted at {factor}× the data ({factor * n_max:,} examples): {fmt.fixed(iv.value, 3)} "
                f"(95% CI {fmt.fixed(iv.low, 3)}–{fmt.fixed(iv.high, 3)})"
            )
        need = curve.examples_needed
        if curve.target is None:
            out.append("- Examples needed: no quality target given.")
        elif need.value is None:
            out.append(f"- Examples needed for {curve.target}: not reached within 100× the current data.")
        else:
            more = max(0, int(need.value) - n_max)
            high = "unbounded" if need.high is None else fmt.fixed(need.high)
            out.append(
                f"- Examples needed for {curve.target}: {fmt.fixed(need.value)} ({more:,} more than now; "
                f"95% CI {fmt.fixed(need.low)}–{high})"
            )
        out.append("")

    dm = e.domain_measure
    if dm or e.domain:
        out += ["### Domain language", ""]
        if dm:
            out.append(
                f"Perplexity per word on the task's {dm.source}: {fmt.fixed(dm.task_word_ppl, 1)}; on the "
                f"general-English reference: {fmt.fixed(dm.reference_word_ppl, 1)}; "
                f"ratio {fmt.fixed(dm.ratio, 2)} "
                f"(per token: {fmt.fixed(dm.task_ppl, 1)} vs {fmt.fixed(dm.reference_ppl, 1)}, ratio "
                f"{fmt.fixed(dm.token_ratio, 2)}). Tokens per word: {fmt.fixed(dm.tokens_per_word, 2)} "
                f"(reference {fmt.fixed(dm.reference_tokens_per_word, 2)})."
            )
        if e.domain:
            out.append(f"Declared domain: {md_escape(e.domain)}.")
        out.append("")
    if e.needs_consistent_style:
        out += ["A consistent output style was declared as a requirement.", ""]
    if e.not_measured:
        out += (
            ["Not measured:", ""]
            + [f"- {md_escape(m.what)}: {md_escape(m.why)}" for m in e.not_measured]
            + [""]
        )
    return "\n".join(out)
