"""Served evaluation on llama.cpp's native `llama-server` with several slots: tunegate against lm-eval.

bench/served_eval.py measures the two engines against llama-cpp-python's Python server, which answers one
request at a time, so its concurrency scaling is flat by construction. This benchmark starts llama.cpp's
own C++ server (`llama-server`, continuous batching over `--parallel N` slots), built from the llama.cpp
sources vendored in the llama-cpp-python source distribution that `scripts/bootstrap.sh test` already
uses, and scores the same SMS spam items at concurrency 1, 2, 4 and 8 (tunegate in rounds, the order of the
levels alternating; lm-eval once per level afterwards, see (b)):

  (a) tunegate: `get_backend("openai", base_url=..., tokenizer=DIR, concurrency=N)`, what
      `tunegate advise --backend openai --base-url URL --tokenizer DIR --concurrency N` builds, driven by
      `advisor.measure.evaluate.evaluate_arm`, a fresh response cache per run. The backend probes echo
      scoring first; `llama-server` returns log-probabilities for generated tokens only (no prompt-token
      log-probabilities: llama.cpp issue #27174, open), so the probe finds the label's tokens missing and
      the backend falls back to `chat_logprobs` (`/v1/chat/completions`, one generated token with
      `top_logprobs`): one request per item scores every label whose first token is listed. The
      benchmark records which method the backend chose and why.
  (b) lm-eval: `local-completions` (`LocalCompletionsAPI`), `loglikelihood` over the same (context,
      label) pairs, one `/v1/completions` request per item and label, at the same `num_concurrent`.
      Against this server its scores are not log-likelihoods: the echo it asks for is ignored, the
      response's `token_logprobs` holds the one generated token, and lm-eval's slice of the continuation
      comes out empty or wrong (the issue above reports chance accuracy on every loglikelihood task). It
      is timed where it finishes and flagged; where it fails (lm-eval 0.4.13: `KeyError: 'token_logprobs'`,
      the server answers in the chat-style `logprobs.content` shape) the failure is recorded. It runs
      after tunegate's rounds because a failed run leaves its retrying requests in flight.

Both engines are timed on the scoring call alone. Requests are counted from the server's log, not assumed.
Items/s is the figure a user waits on; tokens per CPU-second (prompt tokens / (client + server CPU)) is
printed beside it.

    .venv/bin/python bench/native_server.py --server PATH/llama-server        # 60 items, 3 rounds
    .venv/bin/python bench/native_server.py --server PATH --items 100 --parallel 4 --rounds 3

Build the server (once, several minutes on two cores) from the sources the bootstrap downloads:
    cmake -S vendor/llama.cpp -B build -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF && \
        cmake --build build --target llama-server -j2

Prints one table and writes bench/results/native_server.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from bench.served_eval import LABELS, _cpu, _lm_eval, _sms_spam, _tunegate, write_result  # noqa: E402

ENGINES = ("tunegate", "lm_eval")
STARTUP_S = 120


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", required=True, help="the llama-server binary")
    ap.add_argument("--items", type=int, default=60)
    ap.add_argument("--concurrency", default="1,2,4,8")
    ap.add_argument("--parallel", type=int, default=4, help="the server's slots (--parallel, default 4)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "native_server.json"))
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    if importlib.util.find_spec("lm_eval") is None:
        print("lm-eval is not installed: run `make bench` first.", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)

    import llamaserver

    from advisor.backends import get_backend
    from advisor.backends.model import default_model_dir, embedded_gguf_path
    from advisor.measure import prompts
    from advisor.types import TaskKind

    tokenizer_dir = default_model_dir()
    train, items = _sms_spam(args.items, args.seed)
    arm = prompts.Arm(
        name="zero_shot",
        kind=prompts.ArmKind.ZERO_SHOT,
        format_hint=prompts.format_hint(TaskKind.CLASSIFY, LABELS),
    )
    selector = prompts.DemoSelector(train, args.seed)
    messages = [prompts.render_messages(arm, ex, selector.select(arm, ex)) for ex in items]
    golds = [ex.label for ex in items]

    work = Path(tempfile.mkdtemp(prefix="native_server-"))
    port = llamaserver.free_port()
    # -c is the context of all slots together: 1,024 tokens a slot holds any of these prompts. --cache-ram 0
    # turns off the server's host-memory cache of earlier prompts, which would answer a later round's
    # identical prompts from memory; each slot still reuses the prefix its last prompt shares with the next
    # (the chat template and the instructions), as it does in any deployment.
    command = [args.server, "-m", str(embedded_gguf_path()), "--host", "127.0.0.1", "--port", str(port),
               "-t", str(args.threads), "-tb", str(args.threads), "--parallel", str(args.parallel),
               "-c", str(1024 * args.parallel), "--alias", "smollm2", "--cache-ram", "0"]  # fmt: skip
    log = work / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait(base_url, proc, log)
        renderer = get_backend("openai", base_url=base_url, tokenizer=tokenizer_dir, cache=False)
        contexts = [renderer.render(m) for m in messages]
        tokens = sum(renderer.count_tokens(contexts))
        runs: list[dict[str, Any]] = []
        # tunegate in interleaved rounds; lm-eval after it, one run per concurrency: when it fails against
        # this server its client keeps retrying in the background, which would slow whatever runs beside it.
        plan = [
            ("tunegate", r, c) for r in range(args.rounds) for c in (levels if r % 2 == 0 else levels[::-1])
        ]
        plan += [("lm_eval", 0, c) for c in levels]
        for engine, r, c in plan:
            before = (_posts(log), _cpu(proc.pid), time.process_time())
            if engine == "tunegate":
                seconds, lps, _, method = _tunegate(
                    base_url, tokenizer_dir, c, work / f"c-{r}-{c}", arm, items, selector, require=None
                )
            else:
                method = "lm-eval local-completions loglikelihood"
                try:
                    seconds, lps, _ = _lm_eval(base_url, tokenizer_dir, c, contexts)
                except Exception as exc:  # noqa: BLE001 - what lm-eval does with this server
                    failed = f"{type(exc).__name__}: {exc}"
                    print(f"c={c} lm_eval failed: {failed}", file=sys.stderr)
                    runs.append({"round": r, "concurrency": c, "engine": engine, "error": failed,
                                 "requests": _posts(log) - before[0]})  # fmt: skip
                    continue
            posts = _posts(log) - before[0]
            cpu = (_cpu(proc.pid) - before[1]) + (time.process_time() - before[2])
            preds = [LABELS[max(range(len(LABELS)), key=row.__getitem__)] for row in lps]
            runs.append({
                "round": r, "concurrency": c, "engine": engine, "method": method,
                "seconds": seconds, "items_per_s": len(items) / seconds, "requests": posts,
                "cpu_s": cpu, "tokens_per_cpu_s": tokens / cpu,
                "accuracy": sum(p == g for p, g in zip(preds, golds, strict=True)) / len(items),
                "predictions": preds, "logprobs": lps,
            })  # fmt: skip
            rate = len(items) / seconds
            print(f"round {r + 1}/{args.rounds} c={c} {engine:8} {seconds:6.2f} s "
                  f"{rate:6.2f} items/s {posts} requests", file=sys.stderr)  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    doc = _summary(runs, levels, items, args, tokens, command, golds)
    shutil.rmtree(work)
    return write_result(doc, args.out, _print)


def _summary(
    runs: list[dict[str, Any]],
    levels: list[int],
    items: list[Any],
    args: argparse.Namespace,
    tokens: int,
    command: list[str],
    golds: list[str],
) -> dict[str, Any]:
    ok = [x for x in runs if "error" not in x]

    def figure(engine: str, c: int, key: str) -> dict[str, float] | None:
        xs = [x[key] for x in ok if x["engine"] == engine and x["concurrency"] == c]
        return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)} if xs else None

    def rate(engine: str, c: int) -> float | None:
        f = figure(engine, c, "items_per_s")
        return None if f is None else f["median"]

    rows = []
    for c in levels:
        row: dict[str, Any] = {"concurrency": c}
        for engine in ENGINES:
            first, here = rate(engine, levels[0]), rate(engine, c)
            tried = [x for x in runs if x["engine"] == engine and x["concurrency"] == c]
            done = [x for x in tried if "error" not in x]
            row[engine] = {
                "items_per_s": figure(engine, c, "items_per_s"),
                "tokens_per_cpu_s": figure(engine, c, "tokens_per_cpu_s"),
                "scaling": None if first is None or here is None else here / first,
                "requests": sorted({x["requests"] for x in tried}),
                "accuracy": done[0]["accuracy"] if done else None,
                "errors": sorted({x["error"] for x in tried if "error" in x}),
            }
        rows.append(row)
    tg_runs = [x for x in ok if x["engine"] == "tunegate"]
    same = bool(tg_runs) and all(x["predictions"] == tg_runs[0]["predictions"] for x in tg_runs)
    majority = max(LABELS, key=golds.count)
    return {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "server_command": [Path(command[0]).name, *command[1:]],
        "server_slots": args.parallel,
        "items": len(items),
        "labels": list(LABELS),
        "majority_share": golds.count(majority) / len(golds),
        "rounds": args.rounds,
        "concurrency": levels,
        "prompt_tokens_per_run": tokens,
        "tunegate_method": sorted({x["method"] for x in tg_runs}),
        "rows": rows,
        "runs": runs,
        "tunegate_same_predictions_at_every_concurrency": same,
        # one request per item, plus the echo probe that finds this server gives no prompt log-probabilities
        "checks_passed": same and all(x["requests"] <= len(items) + 1 for x in tg_runs),
    }


def _print(doc: dict[str, Any]) -> None:
    print(
        f"SMS spam, {doc['items']} items x {len(doc['labels'])} labels (majority share "
        f"{doc['majority_share']:.3f}), zero-shot; llama.cpp's llama-server with {doc['server_slots']} "
        f"slots, {doc['rounds']} interleaved rounds: median [min, max]"
    )
    print(f"tunegate's scoring method: {'; '.join(doc['tunegate_method'])}")
    print(f"{'conc':>4} {'engine':>8} {'items/s':>22} {'scaling':>8} {'requests':>9} {'accuracy':>9}")
    for row in doc["rows"]:
        for engine in ENGINES:
            e = row[engine]
            if e["items_per_s"] is None:
                print(f"{row['concurrency']:>4} {engine:>8} failed: {'; '.join(e['errors'])[:160]}")
                continue
            v = e["items_per_s"]
            print(
                f"{row['concurrency']:>4} {engine:>8} {v['median']:>7.2f} [{v['min']:.2f}, {v['max']:.2f}] "
                f"{e['scaling']:>8.2f} {'/'.join(map(str, e['requests'])):>9} {e['accuracy']:>9.3f}"
            )
    same = doc["tunegate_same_predictions_at_every_concurrency"]
    print(f"tunegate predicts the same at every concurrency: {same}")


def _wait(base_url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"llama-server did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)


def _posts(log: Path) -> int:
    """Completion requests the server has taken so far (its log: one `processing task` line each)."""
    return log.read_text(errors="replace").count("| processing task")


if __name__ == "__main__":
    sys.exit(main())
