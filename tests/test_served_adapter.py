"""The served adapter, end to end: a LoRA adapter trained by `tunegate run` on the demo data, converted to
GGUF by llama.cpp's own converter, served by the llama.cpp server on top of the embedded GGUF, and verified
through `tunegate verify --backend openai`. It must score what the local verification scored, within its
interval, item by item for the most part, and be really applied (its label log-probabilities are not the
served base model's).

The server runs the 4-bit (Q4_1) GGUF; the adapter was trained, and verified locally, on its fp32
dequantisation: close, not identical. The converter comes from the llama-cpp-python source distribution
(`scripts/bootstrap.sh test` unpacks it into the venv's share/llama.cpp; TUNEGATE_LLAMA_CPP_DIR names
another folder holding convert_lora_to_gguf.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from needs import unavailable
from server import require_llama_cpp, serve_gguf

pytestmark = [pytest.mark.server, pytest.mark.realmodel]

N_ROWS, N_EVAL, N_DEV = 120, 20, 20
# `verify` exits with the code of the verdict it reaches (0, 10-13) or 14 when verification vetoes.
VERDICTS = (0, 10, 11, 12, 13, 14)
# Enough to move the model off its prompted behaviour in about a minute on two cores (the loss falls from
# ~3.6 to ~0.4 in 8 steps at this rate), little enough to stay a CI test.
TRAINING = ("lr=2e-3", "max_steps=12", "batch_size=8", "max_seq_len=128", "eval_every=0", "save_every=0")


def llama_cpp_converter() -> Path:
    folder = os.environ.get("TUNEGATE_LLAMA_CPP_DIR") or str(Path(sys.prefix) / "share" / "llama.cpp")
    script = Path(folder) / "convert_lora_to_gguf.py"
    if not script.is_file():
        unavailable(
            f"{script} is missing: llama.cpp's LoRA converter, unpacked from the llama-cpp-python source "
            "distribution by `scripts/bootstrap.sh test` (or set TUNEGATE_LLAMA_CPP_DIR)"
        )
    return script


def _verification(run: Path) -> dict:
    return json.loads((run / "decision.json").read_text())["verification"]


def test_the_adapter_served_by_llama_cpp_scores_as_verified_locally(tmp_path) -> None:
    from advisor.backends.model import default_model_dir, embedded_gguf_path
    from advisor.cli import main
    from advisor.demo import DESCRIPTION, write_demo_data
    from advisor.measure.evaluate import read_predictions
    from pipeline.verify import FINETUNED

    require_llama_cpp()
    converter = llama_cpp_converter()
    model_dir = default_model_dir()

    # Trained by `tunegate run` on a sample of the demo data, and verified locally (the hf backend).
    run = tmp_path / "run"
    data = write_demo_data(str(run), n=N_ROWS)
    argv = ["run", str(data), "--out", str(run), "--description", DESCRIPTION, "--k", "1",
            "--eval-size", str(N_EVAL), "--dev-size", str(N_DEV), "--set", "latency_samples=1", "--force",
            # the adapter is what this test serves: no pilot, and no eval growth for a settled verdict
            "--no-pilot", "--threshold", "min_verdict_probability=0",
            *(a for s in TRAINING for a in ("--train-set", s))]  # fmt: skip
    main(argv)
    local = _verification(run)
    assert local is not None and local["finetuned"]["prompted_as"] == "finetune"
    local_items = read_predictions(run, FINETUNED)
    local_acc = local["finetuned"]["scores"]["accuracy"]
    adapter = run / "train" / "adapter"

    # llama.cpp's converter, offline: --base names the local folder holding the base model's config.
    adapter_gguf = tmp_path / "adapter.gguf"
    conv = subprocess.run(
        [sys.executable, str(converter), str(adapter), "--base", str(model_dir),
         "--outfile", str(adapter_gguf), "--outtype", "f16"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert conv.returncode == 0 and adapter_gguf.is_file(), conv.stderr[-3000:]

    # The same eval items and prompts scored by the base model without the adapter (locally: each served
    # request costs seconds on two cores), for the adapter's effect.
    base_run = tmp_path / "base_run"
    shutil.copytree(run, base_run)
    base_argv = ["verify", str(base_run), "--model", str(model_dir), "--latency-samples", "0", "-q"]
    assert main(base_argv) in VERDICTS
    base_items = read_predictions(base_run, FINETUNED)
    served_argv = ["--backend", "openai", "--tokenizer", str(model_dir), "--timeout", "900",
                   "--latency-samples", "0", "-q"]  # fmt: skip

    with serve_gguf(
        embedded_gguf_path(), "tuned", tmp_path / "server.log", "--lora_path", str(adapter_gguf)
    ) as url:
        assert main(["verify", str(run), "--base-url", url, "--model", "tuned", *served_argv]) in VERDICTS
    served = _verification(run)
    served_items = read_predictions(run, FINETUNED)
    assert served["finetuned"]["model_id"] == f"tuned@{url}"

    value = served["finetuned"]["scores"]["accuracy"]["value"]
    base_value = _verification(base_run)["finetuned"]["scores"]["accuracy"]["value"]
    figures = (
        f"accuracy: local {local_acc['value']:.3f} [{local_acc['low']:.3f}, {local_acc['high']:.3f}], "
        f"served {value:.3f}, base without the adapter {base_value:.3f}"
    )
    assert local_acc["low"] <= value <= local_acc["high"], figures
    lines = [it.line for it in local_items]
    assert [it.line for it in served_items] == lines == [it.line for it in base_items]
    agree = sum(a.prediction == b.prediction for a, b in zip(served_items, local_items, strict=True))
    assert agree >= 0.85 * len(local_items), (agree, figures)

    # Applied: on each item the served adapter's label log-probabilities lie nearer the local adapter's
    # than the base model's without it, for all but a few items.
    def gap(a, b) -> float:
        return max(abs(a.label_logprobs[k] - b.label_logprobs[k]) for k in a.label_logprobs)

    nearer = sum(
        gap(s, loc) < gap(s, base) for s, loc, base in zip(served_items, local_items, base_items, strict=True)
    )
    assert nearer >= 0.9 * len(local_items), (nearer, figures)
