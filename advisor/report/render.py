"""The report document (decision.json): built from the measurements, written with its renderings.

Every renderer takes the typed `Report` (advisor.document), so `tunegate report RUN_DIR` renders
exactly what `advise` rendered: Markdown (advisor.report.markdown), HTML (advisor.report.html), SVG plots
(advisor.report.plots) and the console summary (advisor.report.console). The document is versioned
(`schema_version`); its JSON Schema ships at advisor/schema/decision.schema.json.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from advisor.audit.checks import split_section
from advisor.document import SCHEMA_VERSION, Report
from advisor.errors import DataError
from advisor.report.html import to_html
from advisor.report.markdown import to_markdown
from advisor.report.plots import figures
from advisor.rundir import HTML_FILE, MARKDOWN_FILE, RunDir
from advisor.version import __version__

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
    "model",
    "prompting",
    "evidence",
    "training",
    "verification",
    "pilot",
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
    pilot: Any = None,
    backend_info: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    seeds: Mapping[str, int] | None = None,
    created_at: str | None = None,
) -> Report:
    """Assemble the typed report (what decision.json will hold).

    `config`, `audit`, `split` and `decision` may be the objects (with `to_dict()`; a `Split` goes
    through `advisor.audit.checks.split_section`) or their dict forms. `loaded` is the loaded data
    (path, fmt, sha256, n_records). `model` is the local model's `ModelSource.to_dict()` (None: no local
    model). `seeds` defaults to {"split": config seed}.
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
        "thresholds": dict(ruleset.thresholds),
        "threshold_overrides": dict(ruleset.overrides),
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
        "signals": dict(signals),
        "decision": decision_d,
        "provenance": provenance,
        "model": dict(model) if model is not None else None,
        "prompting": prompting,
        "evidence": evidence,
        "training": training,
        "verification": verification,
        "pilot": pilot.model_dump() if hasattr(pilot, "model_dump") else pilot,
    }
    # The report as decision.json holds it: read back from its JSON text, so a non-finite float is
    # null here too and every rendering of this report matches a re-rendering of the file.
    return Report.model_validate_json(Report.model_validate(doc).to_json())


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


# --------------------------------------------------------------------------- writing


def write_report(run_dir: RunDir | Path, doc: Report | Mapping[str, Any]) -> tuple[Path, Path]:
    """Write decision.json, report.md (with its plots/*.svg) and report.html into the run folder atomically.

    Returns the decision.json and report.md paths; report.html is `run_dir / HTML_FILE`.
    """
    run = RunDir.of(run_dir).create()
    report = doc if isinstance(doc, Report) else Report.model_validate(doc)
    json_path = run.write_report(report)
    md_path, _ = rerender_doc(run, report, ("md", "html"))
    return json_path, md_path


def write_plots(run_dir: RunDir | Path, report: Report) -> dict[str, list[tuple[str, str]]]:
    """The document's plots as run_dir/plots/<name>.svg; returns section -> [(title, relative path)]."""
    run = RunDir.of(run_dir)
    out: dict[str, list[tuple[str, str]]] = {}
    for fig in figures(report):
        rel = run.write_plot(fig.name, fig.svg + "\n")
        out.setdefault(fig.section, []).append((fig.title, rel))
    return out


def rerender_doc(run_dir: RunDir | Path, report: Report, formats: Sequence[str]) -> list[Path]:
    """Write the requested renderings ("md": report.md + plots/, "html": report.html) of `report`."""
    run = RunDir.of(run_dir)
    written = []
    for fmt in formats:
        if fmt == "md":
            written.append(
                run.write_rendering(MARKDOWN_FILE, to_markdown(report, plots=write_plots(run, report)))
            )
        elif fmt == "html":
            written.append(run.write_rendering(HTML_FILE, to_html(report)))
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
    report = RunDir(Path(run_dir)).read_report()
    try:
        return rerender_doc(Path(run_dir), report, formats)
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
