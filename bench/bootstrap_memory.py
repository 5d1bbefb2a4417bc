"""Peak memory of the paired bootstrap at 100,000 eval items: chunked (tunegate now) against all-at-once.

Until this change `advisor.measure.stats` drew the whole ``n_resamples x n`` index matrix at once: at 100,000
items and 2,000 resamples that is 1.6 GB of int64 indices, plus as much again for the gathered values.
It now draws the matrix a block of rows at a time (`stats.CHUNK_ELEMENTS` indices per block) from the
same generator, which gives the same rows, so the intervals and p-values are identical.

Each variant runs in a fresh child process (so one variant's peak cannot hide another's) and reports
its peak resident set size (``resource.getrusage``, after the data is built, minus the RSS before the
bootstrap) and the peak traced by ``tracemalloc`` (numpy reports its buffers to it). The parent prints a
table, checks that both variants give the same result, and writes JSON to bench/results/.

Run: ``.venv/bin/python bench/bootstrap_memory.py`` (about a minute; the old variant needs ~3.5 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GOAL_MB = 500.0  # the chunked bootstrap of 100,000 paired items must stay under this peak
VARIANTS = ("chunked_mean", "all_at_once_mean", "chunked_macro_f1", "all_at_once_macro_f1")


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _old_paired_mean(a, b, seed, n_resamples):  # type: ignore[no-untyped-def]
    """What advisor.measure.stats.paired_bootstrap_mean did before: the whole index matrix at once."""
    import numpy as np

    from advisor.measure import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    idx = np.random.default_rng(seed).integers(0, d.size, size=(n_resamples, d.size))
    samples = d[idx].mean(axis=1)
    lo, hi = stats._percentiles(samples, stats.CONFIDENCE)
    return stats.PairedDiff(float(d.mean()), lo, hi, stats._paired_p(samples), int(d.size))


def _old_paired_macro_f1(t, pa, pb, n_labels, seed, n_resamples):  # type: ignore[no-untyped-def]
    import numpy as np

    from advisor.measure import stats

    idx_all = np.random.default_rng(seed).integers(0, t.size, size=(n_resamples, t.size))
    f = stats._macro_f1_codes_over
    point = f(t, pa, n_labels) - f(t, pb, n_labels)
    samples = np.array([f(t[i], pa[i], n_labels) - f(t[i], pb[i], n_labels) for i in idx_all])
    lo, hi = stats._percentiles(samples, stats.CONFIDENCE)
    return stats.PairedDiff(float(point), lo, hi, stats._paired_p(samples), int(t.size))


def child(variant: str, items: int, seed: int) -> dict[str, object]:
    """Run one variant in this process and measure it."""
    import numpy as np

    from advisor.measure import stats

    rng = np.random.default_rng(seed)
    labels = ["a", "b", "c"]
    truth = rng.integers(0, 3, items)
    pred_a = np.where(rng.random(items) < 0.8, truth, rng.integers(0, 3, items))
    pred_b = np.where(rng.random(items) < 0.7, truth, rng.integers(0, 3, items))
    correct_a = (pred_a == truth).astype(float)
    correct_b = (pred_b == truth).astype(float)
    y, ya, yb = ([labels[i] for i in arr] for arr in (truth, pred_a, pred_b))
    t, pa = stats._encode(y, ya, labels)
    _, pb = stats._encode(y, yb, labels)

    base = _rss_mb()
    tracemalloc.start()
    start = time.perf_counter()
    if variant == "chunked_mean":
        result = stats.paired_bootstrap_mean(correct_a, correct_b, seed=seed)
    elif variant == "all_at_once_mean":
        result = _old_paired_mean(correct_a, correct_b, seed, stats.N_RESAMPLES)
    elif variant == "chunked_macro_f1":
        result = stats.paired_bootstrap_macro_f1(y, ya, yb, labels, seed=seed)
    else:
        result = _old_paired_macro_f1(t, pa, pb, len(labels), seed, stats.N_RESAMPLES)
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "variant": variant,
        "items": items,
        "resamples": stats.N_RESAMPLES,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "rss_before_mb": round(base, 1),
        "peak_rss_added_mb": round(_peak_rss_mb() - base, 1),
        "tracemalloc_peak_mb": round(traced_peak / 2**20, 1),
        "result": result.to_dict(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=100_000, help="paired eval items (default 100,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS)
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "bootstrap_memory.json"))
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.items, args.seed)))
        return 0

    rows = []
    for variant in args.variants.split(","):
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                variant,
                "--items",
                str(args.items),
                "--seed",
                str(args.seed),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            print(
                f"{variant}: failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}", file=sys.stderr
            )
            rows.append({"variant": variant, "items": args.items, "failed": proc.returncode})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    header = (
        f"{'variant':<22} {'items':>8} {'seconds':>8} {'peak RSS MB':>12} {'added MB':>9} {'traced MB':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        if "failed" in r:
            print(f"{r['variant']:<22} {r['items']:>8,} {'failed':>8}")
            continue
        print(
            f"{r['variant']:<22} {r['items']:>8,} {r['seconds']:>8.2f} {r['peak_rss_mb']:>12.1f} "
            f"{r['peak_rss_added_mb']:>9.1f} {r['tracemalloc_peak_mb']:>10.1f}"
        )
    by = {r["variant"]: r for r in rows if "failed" not in r}
    same = {
        kind: by[f"chunked_{kind}"]["result"] == by[f"all_at_once_{kind}"]["result"]
        for kind in ("mean", "macro_f1")
        if f"chunked_{kind}" in by and f"all_at_once_{kind}" in by
    }
    for kind, ok in same.items():
        print(f"{kind}: chunked and all-at-once results {'identical' if ok else 'DIFFER'}")
    chunked_peaks = [r["peak_rss_mb"] for v, r in by.items() if v.startswith("chunked")]
    under = bool(chunked_peaks) and max(chunked_peaks) < GOAL_MB
    print(
        f"chunked peak RSS {max(chunked_peaks, default=float('nan')):.1f} MB: goal < {GOAL_MB:.0f} MB "
        f"{'met' if under else 'NOT met'}"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"goal_mb": GOAL_MB, "rows": rows, "identical": same, "goal_met": under}
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0 if under and all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
