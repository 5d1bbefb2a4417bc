"""The report document (decision.json) and its renderings: Markdown and the console summary.

Every renderer takes the document dict (the JSON form), so `tunegate report RUN_DIR` renders
exactly what `advise` rendered. The document is versioned (`schema_version`); its JSON Schema
ships at advisor/schema/decision.schema.json. Section owners provide `markdown_section(section)`
in their own modules; `to_markdown` calls them when they are importable and falls back to the raw
JSON of the section otherwise.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import platform
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from advisor import __version__
from advisor.audit.checks import markdown_section, split_section
from advisor.decide.verdict import confidence_sentence
from advisor.errors import DataError
from advisor.measure.evaluate import baseline_sentence, plateau_sentence
from advisor.report.document import SCHEMA_VERSION, Report
from advisor.report.html import to_html
from advisor.report.plots import figures
from advisor.report.textsafe import md_code, md_escape, md_link, term_safe
from advisor.rundir import HTML_FILE, MARKDOWN_FILE, RunDir

TOP_LEVEL_KEYS = (
    "schema_version",
    "tool_version",
    "created_at",
    "dataset",
    "audit",
    "split",
    "signals",
    "decision",
    "provenance",
    "prompting",
    "evidence",
    "training",
    "verification",
)
# Distributions whose versions go into provenance, read from package metadata (nothing is imported).
LIBRARIES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "tokenizers",
    "gguf",
    "numpy",
    "pandas",
    "scikit-learn",
    "openai",
    "rich",
)
# Which module renders which section of the document (each has `markdown_section(section)`).
SECTION_RENDERERS = {
    "prompting": "advisor.measure.evaluate:markdown_section",
    "evidence": "advisor.measure.evidence:markdown_section",
    "training": "advisor.report.finetune:training_markdown",
    "verification": "advisor.report.finetune:verification_markdown",
}


# --------------------------------------------------------------------------- building


def build_report(
    *,
    config: Any,
    loaded: Any,
    task: Any,
    labels: Sequence[str],
    audit: Any,
    split: Any,
    signals: Mapping[str, Any],
    decision: Any,
    ruleset: Any,
    prompting: Mapping[str, Any] | None = None,
    evidence: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    verification: Mapping[str, Any] | None = None,
    backend_info: Mapping[str, Any] | None = None,
    seeds: Mapping[str, int] | None = None,
    created_at: str | None = None,
) -> dict[str, Any]:
    """Assemble the decision.json document.

    `config`, `audit`, `split` and `decision` may be the objects (with `to_dict()`; a `Split` goes
    through `advisor.audit.checks.split_section`) or their dict forms. `loaded` is the loaded data
    (path, fmt, sha256, n_records). `seeds` defaults to {"split": config seed}.
    """
    config_d = _as_dict(config)
    audit_d = _as_dict(audit)
    split_d = _split_dict(split)
    decision_d = _as_dict(decision)
    dataset = {
        "path": str(_get(loaded, "path")),
        "format": _get(loaded, "fmt"),
        "sha256": _get(loaded, "sha256"),
        "n_records": _get(loaded, "n_records"),
        "n_examples": len(_get(loaded, "examples") or ()),
        "task_kind": str(task),
        "labels": list(labels),
    }
    if seeds is None:
        seeds = {"split": config_d["seed"]} if "seed" in config_d else {}
    provenance = {
        "tool_version": __version__,
        "dataset_sha256": dataset["sha256"],
        "rules_sha256": ruleset.sha256,
        "rules_files": list(ruleset.files),
        "thresholds": {k: _jsonable(v) for k, v in ruleset.thresholds.items()},
        "threshold_overrides": {k: _jsonable(v) for k, v in ruleset.overrides.items()},
        "config": config_d,
        "seeds": dict(seeds),
        "backend": dict(backend_info) if backend_info is not None else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": library_versions(),
    }
    doc = {
        "schema_version": SCHEMA_VERSION,
        "tool_version": __version__,
        "created_at": created_at or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "dataset": dataset,
        "audit": audit_d,
        "split": split_d,
        "signals": {k: _jsonable(v) for k, v in signals.items()},
        "decision": decision_d,
        "provenance": provenance,
        "prompting": _jsonable(prompting) if prompting is not None else None,
        "evidence": _jsonable(evidence) if evidence is not None else None,
        "training": _jsonable(training) if training is not None else None,
        "verification": _jsonable(verification) if verification is not None else None,
    }
    return Report.model_validate(doc).as_dict()  # the typed shape: every key present, null when absent


def library_versions(names: Sequence[str] = LIBRARIES) -> dict[str, str | None]:
    """Installed versions from package metadata; None when not installed. Imports nothing."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def schema() -> dict[str, Any]:
    """The shipped JSON Schema of the document."""
    text = resources.files("advisor").joinpath("schema/decision.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def _as_dict(obj: Any) -> Any:
    if obj is None or isinstance(obj, Mapping):
        return dict(obj) if obj is not None else None
    return obj.to_dict()


def _split_dict(split: Any) -> dict[str, Any] | None:
    if split is None or isinstance(split, Mapping):
        return dict(split) if split is not None else None
    return split_section(split)


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


# --------------------------------------------------------------------------- writing


def write_report(run_dir: RunDir | Path, doc: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write decision.json, report.md (with its plots/*.svg) and report.html into the run folder atomically.

    Returns the decision.json and report.md paths; report.html is `run_dir / HTML_FILE`.
    """
    run = RunDir.of(run_dir).create()
    report = Report.model_validate(doc)
    json_path = run.write_report(report)
    md_path, _ = rerender_doc(run, report.as_dict(), ("md", "html"))
    return json_path, md_path


def write_plots(run_dir: RunDir | Path, doc: Mapping[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """The document's plots as run_dir/plots/<name>.svg; returns section -> [(title, relative path)]."""
    run = RunDir.of(run_dir)
    out: dict[str, list[tuple[str, str]]] = {}
    for fig in figures(doc):
        rel = run.write_plot(fig.name, fig.svg + "\n")
        out.setdefault(fig.section, []).append((fig.title, rel))
    return out


def rerender_doc(run_dir: RunDir | Path, doc: Mapping[str, Any], formats: Sequence[str]) -> list[Path]:
    """Write the requested renderings ("md": report.md + plots/, "html": report.html) of `doc`."""
    run = RunDir.of(run_dir)
    written = []
    for fmt in formats:
        if fmt == "md":
            written.append(run.write_rendering(MARKDOWN_FILE, to_markdown(doc, plots=write_plots(run, doc))))
        elif fmt == "html":
            written.append(run.write_rendering(HTML_FILE, to_html(doc)))
    return written


def read_report(run_dir: RunDir | Path) -> dict[str, Any]:
    """decision.json as validated plain data (a damaged or foreign file: DataError, exit 3)."""
    return RunDir.of(run_dir).read_report().as_dict()


def rerender(run_dir: Path, formats: Sequence[str] = ("md", "html")) -> list[Path]:
    """Render a run folder's decision.json again: report.md (+ plots/) and/or report.html.

    The file on disk may have been edited or cut short: a field the renderers need that is missing or
    of the wrong type is reported (exit 3) instead of crashing. The renderers themselves are tested on
    every document `advise` and `train` write, so such a failure here means a malformed file.
    """
    doc = read_report(Path(run_dir))
    try:
        return rerender_doc(Path(run_dir), doc, formats)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        what = (
            f"the field {exc.args[0]!r} is missing"
            if isinstance(exc, KeyError)
            else f"a field is malformed ({exc})"
        )
        raise DataError(
            f"cannot render this decision.json: {what}; re-run advise to write a complete one",
            file=str(RunDir(run_dir).decision_path),
        ) from None


# --------------------------------------------------------------------------- Markdown


def to_markdown(doc: Mapping[str, Any], plots: Mapping[str, Sequence[tuple[str, str]]] | None = None) -> str:
    """The Markdown report; `plots` (section -> [(title, relative path)]) embeds images after sections."""
    d = doc["decision"]
    out = [
        "# tunegate report",
        "",
        f"**Verdict: {md_code(d['verdict'])}**, {md_escape(confidence_sentence(d))}",
        "",
        md_escape(d["summary"]),
        "",
    ]
    out += _md_decision(d)
    if doc.get("audit") is not None:
        out += [_section("audit", doc), ""]
    for key in ("prompting", "evidence", "training", "verification"):
        if doc.get(key) is not None or key in SECTION_RENDERERS:
            out += [_section(key, doc), ""]
            out += [
                line
                for title, rel in (plots or {}).get(key, ())
                for line in (f"![{md_escape(title)}]({rel})", "")
            ]
    out += _md_signals(doc.get("signals") or {})
    out += _md_provenance(doc)
    return "\n".join(out).rstrip() + "\n"


def _md_decision(d: Mapping[str, Any]) -> list[str]:
    out = ["## Why", ""]
    if not d["fired"]:
        out += ["No rule fired.", ""]
    for r in d["fired"]:
        role = f"vetoes {r['vetoes']}" if r["kind"] == "veto" else f"{r['kind']} for {r['verdict']}"
        weight = f", weight {r['weight']:g}" if r["kind"] != "veto" else ""
        out.append(f"- **{md_escape(r['id'])}** ({md_escape(role)}{weight}): {md_escape(r['message'])}")
        ev = r["evidence"]
        facts = [f"{k} = {_v(v)}" for k, v in ev["signals"].items()]
        facts += [f"threshold {k} = {_v(v)}" for k, v in ev["thresholds"].items()]
        when = " and ".join(r["conditions"])
        out.append(f"  - Evidence: {md_escape('; '.join(facts))} (when {md_escape(when)})")
        if r.get("note"):
            out.append(f"  - Note: {md_escape(r['note'])}")
        out.append(f"  - Source: {'; '.join(_md_source(s) for s in r['sources'])}")
    if d["fired"]:
        out.append("")
    if d.get("scores"):
        out += [
            "Weighted votes: "
            + ", ".join(f"{md_escape(v)} {s:g}" for v, s in d["scores"].items())
            + f" (vote margin {d['vote_margin']:.2f}: the rules' own strength figure, not a probability).",
            "",
        ]
    if d["vetoed"]:
        out += ["## Ruled out", ""]
        out += [
            f"- {md_code(v['verdict'])} by {md_escape(v['rule_id'])}: {md_escape(v['message'])}"
            for v in d["vetoed"]
        ]
        out.append("")
    out += ["## What would change the verdict", ""]
    out += [f"- {md_escape(c)}" for c in d["what_would_change"]] or ["- Nothing short of different signals."]
    out.append("")
    out += ["## Skipped rules (signals not measured)", ""]
    if d["skipped"]:
        out += ["| rule | argues for | missing signals |", "|---|---|---|"]
        for s in d["skipped"]:
            arg = f"not {s['verdict']}" if s["kind"] == "veto" else s["verdict"]
            out.append(f"| {md_escape(s['id'])} | {md_escape(arg)} | {md_escape(', '.join(s['missing']))} |")
    else:
        out.append("None: every rule could be checked.")
    out.append("")
    if d["not_fired"]:
        out += ["Checked and not fired: " + md_escape(", ".join(d["not_fired"])) + ".", ""]
    return out


def _md_source(s: Mapping[str, str]) -> str:
    text = md_link(s["title"], s["url"]) if s.get("url") else md_escape(s["title"])
    return f"{text} ({md_escape(s['citation'])})" if s.get("citation") else text


def _section(key: str, doc: Mapping[str, Any]) -> str:
    section = doc.get(key)
    if key == "audit":  # the audit renderer also describes the split
        return str(markdown_section(dict(section or {}), doc.get("split"))).rstrip()
    module, _, function = SECTION_RENDERERS[key].partition(":")
    render = getattr(importlib.import_module(module), function)
    return str(render(section)).rstrip()


def _md_signals(signals: Mapping[str, Any]) -> list[str]:
    measured = {k: v for k, v in signals.items() if v is not None}
    missing = sorted(k for k, v in signals.items() if v is None)
    out = ["## Signals", "", "| signal | value |", "|---|---|"]
    out += [f"| {md_escape(k)} | {md_escape(_v(v))} |" for k, v in measured.items()]
    out.append("")
    if missing:
        out += ["Not measured: " + md_escape(", ".join(missing)) + ".", ""]
    return out


def _md_provenance(doc: Mapping[str, Any]) -> list[str]:
    p = doc["provenance"]
    libs = ", ".join(f"{k} {v}" for k, v in p["libraries"].items() if v)
    out = [
        "## Provenance",
        "",
        f"- tunegate {p['tool_version']}, report schema {doc['schema_version']}, created {doc['created_at']}",
        f"- Data: {md_code(doc['dataset']['path'])} (sha256 {md_code(p['dataset_sha256'])})",
        f"- Rules: {', '.join(md_code(f) for f in p['rules_files'])} (sha256 {md_code(p['rules_sha256'])})",
    ]
    if p["threshold_overrides"]:
        out.append(
            "- Threshold overrides: "
            + md_escape(", ".join(f"{k}={_v(v)}" for k, v in p["threshold_overrides"].items()))
        )
    out.append("- Seeds: " + (md_escape(", ".join(f"{k}={v}" for k, v in p["seeds"].items())) or "none"))
    if p.get("backend"):
        backend = p["backend"]
        out.append(f"- Backend: {md_escape(backend.get('name'))} {md_code(backend.get('model_id'))}")
    out += [
        f"- Python {p['python']} on {p['platform']}",
        f"- Libraries: {libs}",
        "- Resolved config: in `config.json` and under provenance.config in `decision.json`",
        "",
    ]
    return out


def _v(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(_v(x) for x in v) + "]"
    return str(v)


# --------------------------------------------------------------------------- console


def print_summary(doc: Mapping[str, Any], console: Any = None) -> None:
    """A verdict panel, the fired rules and what would change, printed with rich to stdout."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    # Piped output (CI logs) gets a fixed, roomy width instead of rich's 80-column default.
    console = console or Console(file=sys.stdout, width=None if sys.stdout.isatty() else 120)
    d = doc["decision"]
    colour = {
        "prompt": "green",
        "few_shot": "green",
        "fine_tune": "magenta",
        "collect_data": "yellow",
        "inconclusive": "red",
    }.get(d["verdict"], "white")
    body = Text()
    body.append(f"{d['verdict']}", style=f"bold {colour}")
    body.append(f"   {term_safe(confidence_sentence(d))}\n")
    body.append(term_safe(d["summary"]))
    deciding = [r for r in d["fired"] if r["id"] in d["deciding_rules"]]
    for r in deciding[:1]:  # the strongest deciding rule: what backs it
        if r.get("note"):
            body.append(f"\n{term_safe(r['note'])}", style="dim")
        for s in r["sources"]:
            where = s.get("url") or s.get("citation") or ""
            body.append(f"\nSource: {term_safe(s['title'])} {term_safe(where)}", style="dim")
    console.print(Panel(body, title="tunegate verdict", expand=False))
    _print_measurements(doc, console)

    if d["fired"]:
        table = Table(title="Fired rules", show_lines=False)
        for col in ("rule", "role", "evidence"):
            table.add_column(col)
        for r in d["fired"]:
            role = f"vetoes {r['vetoes']}" if r["kind"] == "veto" else f"{r['kind']} {r['verdict']}"
            ev = r["evidence"]
            facts = [f"{k}={_v(v)}" for k, v in ev["signals"].items()]
            facts += [f"{k}={_v(v)}" for k, v in ev["thresholds"].items()]
            table.add_row(Text(term_safe(r["id"])), Text(term_safe(role)), Text(term_safe(", ".join(facts))))
        console.print(table)
    if d["what_would_change"]:
        console.print("[bold]What would change the verdict[/bold]")
        for c in d["what_would_change"]:
            console.print(f"  • {term_safe(c)}", markup=False, highlight=False)
    if d["skipped"]:
        console.print(
            f"{len(d['skipped'])} rules skipped (signals not measured); see report.md.",
            style="dim",
        )


def _print_measurements(doc: Mapping[str, Any], console: Any) -> None:
    """The measured evidence under the verdict: data, prompting arms, cost/latency, fine-tuning, calls."""
    from rich.table import Table

    audit = doc.get("audit") or {}
    if audit:
        labels = audit.get("label_counts") or {}
        kinds = f", {len(labels)} labels" if labels else ""
        console.print(f"Data: {audit.get('n_examples', 0):,} examples ({audit.get('task_kind', '')}{kinds}).")
    prompting = doc.get("prompting")
    if prompting:
        metric = prompting["target_metric"]
        by_arm = {
            c["arm"]: c
            for c in prompting.get("comparisons", [])
            if c.get("baseline") != "zero_shot" or c["arm"] == "system"
        }
        table = Table(
            title=f"Prompting arms ({prompting['n_eval']} eval items, target {metric} "
            f">= {prompting['quality_target']:g})"
        )
        classify = prompting.get("baselines") is not None
        columns = ["arm", "tokens", f"{metric} [95% CI]", "Δ vs cheaper arm", "p"]
        columns += ["macro-F1", "top label", "variant", "status"] if classify else []
        for col in columns:
            table.add_column(col, justify="left" if col in ("arm", "status") else "right", no_wrap=True)
        if classify:
            b = prompting["baselines"]
            table.add_row(
                f"majority ({b['majority_label']})",
                "–",
                f"{b['majority'][metric]:.3f}",
                "–",
                "–",
                f"{b['majority']['macro_f1']:.3f}",
                f"{b['majority_share']:.0%} {b['majority_label']}",
                "–",
                "baseline",
                style="dim",
            )
        for arm in prompting["arms"]:
            e = arm["scores"][metric]
            c = by_arm.get(arm["name"])
            delta = f"{c['diff']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]" if c else "–"
            p_value = f"{c['p_value']:.3f}" if c else "–"
            cells = [
                term_safe(arm["name"]),
                f"{arm['mean_prompt_tokens']:.0f}",
                f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]",
                delta,
                p_value,
            ]
            d = arm.get("degeneracy")
            if classify:
                cells += [
                    f"{arm['scores']['macro_f1']['value']:.3f}",
                    term_safe(f"{d['top_share']:.0%} {d['top_label']}") if d else "–",
                    str(arm.get("variant", "raw")),
                    "DEGENERATE" if d and d["degenerate"] else "ok",
                ]
            table.add_row(*cells)
        console.print(table)
        if prompting.get("metric_reason"):
            console.print(f"Metric: {term_safe(prompting['metric_reason'])}.", markup=False, highlight=False)
        line = baseline_sentence(prompting)
        if line:
            console.print(term_safe(line.replace("`", "")), markup=False, highlight=False)
        curve = prompting.get("k_curve") or []
        if curve:
            points = "  ".join(f"k={pt['k']}: {pt['value']:.3f}" for pt in curve)
            console.print(f"k-curve ({metric}; k=0 is the system arm): {points}")
        if (prompting.get("plateau") or {}).get("reason"):
            console.print(
                term_safe(plateau_sentence(prompting).replace("`", "")), markup=False, highlight=False
            )
    evidence = doc.get("evidence") or {}
    cost = evidence.get("cost") or {}
    best = next((a for a in evidence.get("arms", []) if a["name"] == evidence.get("best_arm")), None)
    if best:
        facts = [f"best arm {best['name']}: {best['prompt_tokens']:.0f} prompt tokens"]
        if best.get("p95_ms") is not None:
            facts.append(f"p95 {best['p95_ms']:.0f} ms")
        if best.get("monthly_cost") is not None:
            facts.append(f"{best['monthly_cost']:,.2f} {cost.get('currency', '')}/month")
        if cost.get("break_even_days") is not None:
            facts.append(f"fine-tuning breaks even in {cost['break_even_days']:.1f} days")
        console.print(term_safe("Evidence: " + "; ".join(facts) + "."), markup=False, highlight=False)
    verification = doc.get("verification")
    if verification:
        d = verification["difference"]
        degenerate = (verification.get("degeneracy") or {}).get("degenerate")
        ok = "verified" if verification["finetune_verified"] else "NOT verified"
        ok += " (the fine-tuned model is degenerate)" if degenerate else ""
        console.print(
            f"Fine-tuning {ok}: {term_safe(verification['finetuned']['arm'])} vs "
            f"{term_safe(verification['baseline']['arm'])}: "
            f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] ({verification['metric']}, paired); "
            f"flips {verification['flips']['improved']} fixed / {verification['flips']['regressed']} broken.",
            markup=False,
            highlight=False,
        )
    backend = (doc.get("provenance") or {}).get("backend") or {}
    if backend.get("cache"):
        c = backend["cache"]
        console.print(
            f"Model calls: {c.get('calls', 0)} made, {c.get('hits', 0)} answered from the cache.", style="dim"
        )
