"""Training throughput: tunegate's LoRA loop against TRL's SFTTrainer + peft on the same work.

Same model, same examples (Rotten Tomatoes critic snippets, prompted exactly as tunegate trains them),
same LoRA settings (r, alpha, dropout, all linear layers), same max sequence length, batch size and
number of steps; loss on the completion only in both. Each trainer runs in its own process so peak
memory is its own. One epoch exactly (examples = steps × batch size), so both see the same examples.

    .venv/bin/python bench/train_throughput.py            # the embedded SmolLM2-135M-Instruct
    .venv/bin/python bench/train_throughput.py --tiny     # a tiny random Llama (mechanics only)

Prints a table (trained tokens/s = non-padding tokens through the model per second of training loop,
peak memory = the process's peak RSS on CPU, peak allocated on CUDA) and writes JSON next to --out.
Needs `pip install trl` (the `bench` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def _examples(n: int, seed: int) -> list[Any]:
    from tiny import rotten_tomatoes_examples

    from advisor.finetune.prompts import as_finetune_examples
    from advisor.types import TaskKind

    return as_finetune_examples(
        rotten_tomatoes_examples(n, seed=seed), TaskKind.CLASSIFY, ("fresh", "rotten")
    )


def _peak(device: str) -> int:
    if device == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _lora_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    return {"r": a.r, "lora_alpha": 2 * a.r, "lora_dropout": 0.05, "target_modules": "all-linear"}


def worker_tunegate(a: argparse.Namespace, model_dir: str, device: str) -> dict[str, Any]:
    from advisor.finetune.config import TrainConfig
    from advisor.finetune.loop import train

    cfg = TrainConfig(
        r=a.r, alpha=2 * a.r, dropout=0.05, lr=2e-4, batch_size=a.batch_size, max_steps=a.steps,
        max_seq_len=a.seq_len, eval_every=0, save_every=0, warmup_ratio=0.1, seed=0,
        activation_checkpointing=a.checkpointing == "on",
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        res = train(model_dir, _examples(a.steps * a.batch_size, a.seed), [], tmp, cfg, progress=False)
    return {
        "tokens": res.trained_tokens,
        "seconds": res.elapsed_s,
        "cpu_seconds": res.cpu_s,
        "steps": res.steps,
        "peak_bytes": _peak(device),
    }


def worker_trl(a: argparse.Namespace, model_dir: str, device: str) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    examples = _examples(a.steps * a.batch_size, a.seed)
    rows = [
        {
            "prompt": [{"role": m.role, "content": m.content} for m in ex.messages],
            "completion": [{"role": "assistant", "content": ex.target}],
        }
        for ex in examples
    ]
    tok = AutoTokenizer.from_pretrained(model_dir)
    cuda = device == "cuda"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if cuda else torch.float32)
    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(
            output_dir=tmp,
            max_steps=a.steps,
            per_device_train_batch_size=a.batch_size,
            gradient_accumulation_steps=1,
            learning_rate=2e-4,
            lr_scheduler_type="cosine",
            warmup_steps=max(1, a.steps // 10),
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            max_length=a.seq_len,
            completion_only_loss=True,
            dataloader_num_workers=0,
            bf16=cuda,
            gradient_checkpointing=a.checkpointing == "on",  # TRL's default is on
            use_cpu=not cuda,
            seed=0,
        )
        tokens = {"n": 0}

        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
            peft_config=LoraConfig(task_type="CAUSAL_LM", **_lora_kwargs(a)),
        )
        # Non-padding tokens of the examples TRL trains on (one epoch: every example exactly once).
        tokens["n"] = int(sum(len(ids) for ids in trainer.train_dataset["input_ids"]))
        start, cpu_start = time.perf_counter(), time.process_time()
        out = trainer.train()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "tokens": tokens["n"],
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "steps": out.global_step,
        "peak_bytes": _peak(device),
    }


def _model_dir(a: argparse.Namespace) -> str:
    if a.tiny:
        from tiny import tiny_llama

        return str(tiny_llama(Path(tempfile.mkdtemp(prefix="tunegate-bench-"))))
    from advisor.backends.model import default_model_dir

    return str(default_model_dir())


def _run_worker(name: str, mode: str, model_dir: str, a: argparse.Namespace, env: dict) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", name, "--model-dir", model_dir, "--checkpointing", mode]
    cmd += ["--steps", str(a.steps), "--batch-size", str(a.batch_size), "--seq-len", str(a.seq_len)]
    cmd += ["--r", str(a.r), "--seed", str(a.seed), "--threads", str(a.threads)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"{name} ({mode}) failed:\n{proc.stderr[-4000:]}")
    r = json.loads(line[len("RESULT ") :])
    r["tokens_per_s"] = r["tokens"] / r["seconds"]
    r["tokens_per_cpu_s"] = r["tokens"] / r["cpu_seconds"]
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny random Llama instead of the embedded model")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads per trainer (1: CPU time is compute time)"
    )
    p.add_argument(
        "--checkpointing",
        choices=("off", "on", "both"),
        default="both",
        help="activation checkpointing in both trainers (TRL's SFTConfig default is on)",
    )
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "train_throughput.json"))
    p.add_argument("--worker", choices=("tunegate", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    if a.worker:
        import torch

        torch.set_num_threads(a.threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        fn = worker_tunegate if a.worker == "tunegate" else worker_trl
        print("RESULT " + json.dumps(fn(a, a.model_dir, device)), flush=True)
        return 0

    model_dir = _model_dir(a)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": str(a.threads),
        "TOKENIZERS_PARALLELISM": "false",
    }
    modes = ("off", "on") if a.checkpointing == "both" else (a.checkpointing,)
    print(
        f"model {Path(model_dir).name}: {a.steps} steps x batch {a.batch_size}, max_seq_len {a.seq_len}, "
        f"LoRA r={a.r} all-linear, {a.threads} threads"
    )
    print(
        f"{'trainer':<10} {'checkpointing':<14} {'tokens':>7} {'wall s':>8} {'tokens/s':>9} {'CPU s':>8} "
        f"{'tokens/CPU-s':>12} {'peak MiB':>9}"
    )
    runs: dict[str, Any] = {}
    for mode in modes:
        pair = {}
        for name in ("tunegate", "trl"):
            try:
                r = pair[name] = _run_worker(name, mode, model_dir, a, env)
            except RuntimeError as exc:
                print(exc, file=sys.stderr)
                return 1
            print(
                f"{name:<10} {mode:<14} {r['tokens']:>7} {r['seconds']:>8.1f} {r['tokens_per_s']:>9.1f} "
                f"{r['cpu_seconds']:>8.1f} {r['tokens_per_cpu_s']:>12.1f} {r['peak_bytes'] / 2**20:>9.0f}",
                flush=True,
            )
        t, q = pair["tunegate"], pair["trl"]
        runs[mode] = {
            **pair,
            "throughput_ratio": t["tokens_per_s"] / q["tokens_per_s"],
            "cpu_throughput_ratio": t["tokens_per_cpu_s"] / q["tokens_per_cpu_s"],
            "peak_memory_ratio": t["peak_bytes"] / q["peak_bytes"],
        }
    for mode, r in runs.items():
        print(
            f"checkpointing {mode}: tunegate / TRL = {r['throughput_ratio']:.2f}x tokens/s (wall), "
            f"{r['cpu_throughput_ratio']:.2f}x tokens per CPU-second, "
            f"{r['peak_memory_ratio']:.2f}x peak memory"
        )
    setup = {
        "model": model_dir, "steps": a.steps, "batch_size": a.batch_size, "seq_len": a.seq_len, "r": a.r,
        "threads": a.threads, "examples": a.steps * a.batch_size,
    }  # fmt: skip
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"setup": setup, "runs": runs}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
