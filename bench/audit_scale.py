"""Audit a 1,000,000-row chat JSONL file: wall time and peak memory, against pandas on the same file.

The file is built from real Rotten Tomatoes critic snippets (the demo data), cycled with a row number
appended so inputs are distinct, plus planted problems whose counts the audit must find exactly:
an exact duplicate of the previous row every 50 rows, and the previous row's input with the other label
every 1,000 rows (a conflict). Each measurement runs in its own child process; peak RSS is that
child's `ru_maxrss` from `os.wait4`.

    .venv/bin/python bench/audit_scale.py [--rows 1000000] [--out bench/results]

Measured:
- ``stream``: `audit(iter_examples(path))`, the streaming path (the acceptance bar: < 60 s, < 2 GB).
- ``parallel``: `audit_file(path, workers=2)`, the same audit with the file cut in two ranges of lines,
  one read in a forked worker; `rss_self_plus_workers_mb` adds the worker's peak to the main one's.
- ``in_memory``: `load_examples` + `detect_task` + `with_labels` + `audit` + `make_split`, what
  `tunegate advise` does with a file that fits in memory.
- ``pandas``: `pandas.read_json(lines=True)` and `duplicated()` on the messages (exact duplicates only,
  a small part of the audit), the usual alternative.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "Decide whether a film critic's review snippet is positive or negative."
DUP_EVERY, DUP_AT = 50, 10
CONFLICT_EVERY, CONFLICT_AT = 1000, 500
TIME_LIMIT_S, RSS_LIMIT_MB = 60.0, 2048.0


def write_data(path: Path, rows: int) -> dict[str, int]:
    """Write the benchmark file; return the planted counts the audit must find."""
    sys.path.insert(0, str(ROOT))
    from advisor.demo import read_rotten_tomatoes

    snippets = read_rotten_tomatoes()
    other = {"positive": "negative", "negative": "positive"}
    dups = conflicts = 0
    prev_text, prev_label = "", ""
    with path.open("w", encoding="utf-8") as fh:
        for i in range(rows):
            text, label = snippets[i % len(snippets)]
            text = f"{text} (#{i})"
            if i and i % DUP_EVERY == DUP_AT:
                text, label = prev_text, prev_label
                dups += 1
            elif i and i % CONFLICT_EVERY == CONFLICT_AT:
                text, label = prev_text, other[prev_label]
                conflicts += 1
            record = {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": label},
                ]
            }
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            prev_text, prev_label = text, label
    return {"exact_duplicates": dups, "conflict_groups": conflicts, "conflict_examples": 2 * conflicts}


def child(mode: str, path: str) -> None:
    """Run one measurement and print its findings as JSON (the parent measures time and memory)."""
    sys.path.insert(0, str(ROOT))
    if mode == "parallel":
        from advisor.audit.checks import audit_file

        a = audit_file(path, workers=2)
        out = {
            "n": a.n_examples,
            "task": a.task_kind,
            "exact_duplicates": a.exact_duplicates,
            "normalised_duplicates": a.normalised_duplicates,
            "conflict_groups": a.conflict_groups,
            "conflict_examples": a.conflict_examples,
        }
    elif mode == "stream":
        from advisor.audit.checks import audit
        from advisor.intake.data import iter_examples

        a = audit(iter_examples(path))
        out = {
            "n": a.n_examples,
            "task": a.task_kind,
            "labels": list(a.labels),
            "exact_duplicates": a.exact_duplicates,
            "normalised_duplicates": a.normalised_duplicates,
            "conflict_groups": a.conflict_groups,
            "conflict_examples": a.conflict_examples,
        }
    elif mode == "in_memory":
        from advisor.audit.checks import audit, make_split
        from advisor.intake.data import detect_task, load_examples, with_labels

        loaded = load_examples(path)
        task, labels = detect_task(loaded.examples)
        examples = with_labels(loaded.examples, labels)
        a = audit(examples, task, labels)
        split = make_split(examples, seed=0)
        out = {
            "n": a.n_examples,
            "exact_duplicates": a.exact_duplicates,
            "conflict_groups": a.conflict_groups,
            "n_eval": len(split.eval),
            "leakage": split.leakage_count,
        }
    else:
        import pandas as pd

        df = pd.read_json(path, lines=True)
        out = {"n": len(df), "exact_duplicates": int(df["messages"].astype(str).duplicated().sum())}
    import resource

    # The largest process is what wait4 reports; forked workers add theirs, so record both peaks.
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out["rss_self_plus_workers_mb"] = round((self_kb + children_kb) / 1024, 1)
    print(json.dumps(out))


def measure(mode: str, path: Path) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", mode, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = json.loads(stdout) if proc.returncode == 0 and stdout.strip() else {"error": proc.returncode}
    return {
        "mode": mode,
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "result": result,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder for audit_scale.json")
    ap.add_argument("--modes", default="stream,parallel,in_memory,pandas")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0

    with tempfile.TemporaryDirectory(prefix="tunegate-bench-") as tmp:
        path = Path(tmp) / "audit_scale.jsonl"
        t0 = time.perf_counter()
        planted = write_data(path, args.rows)
        gen_s = time.perf_counter() - t0
        size_mb = path.stat().st_size / 2**20
        load_before = os.getloadavg()[0]
        runs = [measure(mode, path) for mode in args.modes.split(",")]
        load_after = os.getloadavg()[0]

    by_mode: dict[str, dict[str, Any]] = {str(r["mode"]): r for r in runs}
    checks: dict[str, bool] = {}
    ratios: dict[str, float] = {}
    for mode in ("stream", "parallel"):
        run = by_mode.get(mode)
        if run is None:
            continue
        found = run["result"]
        rss = float(found.get("rss_self_plus_workers_mb", run["peak_rss_mb"]))
        checks.update({f"{mode}.{k}": found.get(k) == v for k, v in planted.items()})
        checks[f"{mode}.within_time"] = float(run["wall_s"]) < TIME_LIMIT_S
        checks[f"{mode}.within_memory"] = rss < RSS_LIMIT_MB
        if "pandas" in by_mode:
            pandas_run = by_mode["pandas"]
            ratios[f"pandas_over_{mode}_wall"] = round(float(pandas_run["wall_s"]) / float(run["wall_s"]), 2)
            ratios[f"pandas_over_{mode}_rss"] = round(float(pandas_run["peak_rss_mb"]) / rss, 2)

    print(
        f"{args.rows:,} rows, {size_mb:.0f} MiB of chat JSONL (written in {gen_s:.1f} s), "
        f"{os.cpu_count()} CPUs, load average {load_before:.1f} before and {load_after:.1f} after "
        "(wall time grows with other load; cpu s does not)"
    )
    print(f"{'mode':<10} {'wall s':>8} {'cpu s':>8} {'peak RSS MB':>12}  result")
    for r in runs:
        print(
            f"{r['mode']:<10} {r['wall_s']:>8} {r['cpu_s']:>8} {r['peak_rss_mb']:>12}  "
            f"{json.dumps(r['result'])}"
        )
    print("planted:", json.dumps(planted), "checks:", json.dumps(checks))
    if ratios:
        print("pandas / tunegate:", json.dumps(ratios))

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "rows": args.rows,
        "file_mib": round(size_mb, 1),
        "generate_s": round(gen_s, 1),
        "cpus": os.cpu_count(),
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "python": sys.version.split()[0],
        "runs": runs,
        "planted": planted,
        "checks": checks,
        "ratios": ratios,
        "limits": {"wall_s": TIME_LIMIT_S, "peak_rss_mb": RSS_LIMIT_MB},
    }
    (out_dir / "audit_scale.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
