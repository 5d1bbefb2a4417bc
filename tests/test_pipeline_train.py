"""LoRA training on the tiny random Llama: masking, which weights change, reload, resume, DDP, gate, QLoRA."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import report_docs

torch = pytest.importorskip("torch")

from tiny import rotten_tomatoes_examples, tiny_llama  # noqa: E402

from advisor.errors import ConfigError, ExitCode, GateError  # noqa: E402
from advisor.finetune.batches import IGNORE, collate, encode_example, plan_batches  # noqa: E402
from advisor.finetune.config import TrainConfig  # noqa: E402
from advisor.finetune.loop import lr_factor, train  # noqa: E402
from advisor.finetune.lora import completion_loss  # noqa: E402
from pipeline.run import train_run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FAST = dict(batch_size=4, max_seq_len=48, lr=5e-3, dropout=0.1, warmup_ratio=0.2)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same reduction order in every process, so runs compare exactly
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def examples():
    return rotten_tomatoes_examples(60, seed=3)


def _tok(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


# ---------------------------------------------------------------- pure pieces


def test_loss_mask_covers_only_the_completion_and_eos(model_dir, examples) -> None:
    tok = _tok(model_dir)
    ex = examples[0]
    enc = encode_example(tok, ex, max_seq_len=256)
    prompt = tok.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in ex.messages],
        tokenize=False,
        add_generation_prompt=True,
    )
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert (
        tok.decode(list(enc.input_ids[:n_prompt])) == prompt
    )  # the same rendering the model is prompted with
    assert all(label == IGNORE for label in enc.labels[:n_prompt])
    completion = [t for t in enc.labels if t != IGNORE]
    assert completion == list(enc.input_ids[n_prompt:])
    assert completion[-1] == tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id
    assert tok.decode(completion[:-1]) == ex.target


def test_truncation_keeps_the_completion_and_the_generation_prompt(model_dir, examples) -> None:
    tok = _tok(model_dir)
    long = max(examples, key=lambda e: len(e.input_text))
    enc = encode_example(tok, long, max_seq_len=20)
    assert enc.truncated and len(enc.input_ids) == 20
    assert tok.decode([t for t in enc.labels if t != IGNORE][:-1]) == long.target
    assert tok.decode(list(enc.input_ids)).find("<|im_start|>assistant\n") > 0


def test_completion_loss_equals_the_models_own_loss(model_dir, examples) -> None:
    from transformers import AutoModelForCausalLM

    tok = _tok(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    batch = collate([encode_example(tok, e, 64) for e in examples[:4]], tok.pad_token_id, "cpu")
    n = int((batch["labels"][:, 1:] != IGNORE).sum())
    ours = completion_loss(model)(**batch) / n
    theirs = model(**batch).loss
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_batches_cover_each_example_once_and_group_by_length() -> None:
    import random

    rng = random.Random(0)
    lengths = [rng.randint(5, 200) for _ in range(257)]
    grouped = plan_batches(lengths, 8, seed=1, epoch=0, group_by_length=True)
    plain = plan_batches(lengths, 8, seed=1, epoch=0, group_by_length=False)
    for plan in (grouped, plain):
        assert sorted(i for b in plan for i in b) == list(range(257))
    assert grouped == plan_batches(lengths, 8, seed=1, epoch=0, group_by_length=True)
    assert grouped != plan_batches(lengths, 8, seed=1, epoch=1, group_by_length=True)

    def padding(plan):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in plan)

    assert padding(grouped) < 0.25 * padding(plain)


def test_schedule_warms_up_then_decays() -> None:
    cos = [lr_factor(s, 10, 2, "cosine") for s in range(10)]
    lin = [lr_factor(s, 10, 2, "linear") for s in range(10)]
    for f in (cos, lin):
        assert f[0] < f[1] < f[2] == 1.0
        assert all(a >= b for a, b in zip(f[2:], f[3:], strict=False)) and f[-1] > 0


# ---------------------------------------------------------------- training


def test_only_lora_weights_change_and_adapter_reloads_with_identical_logits(
    model_dir, examples, tmp_path
) -> None:
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    base_before = load_file(model_dir / "model.safetensors")
    probe = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 8]])
    snap: dict = {}

    def at_dev(model) -> dict:
        model.eval()
        with torch.no_grad():
            snap["logits"] = model(input_ids=probe).logits.clone()
        snap["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.train()
        return {"probe": 1.0}

    cfg = TrainConfig(**FAST, max_steps=6, eval_every=0, save_every=0)
    res = train(
        model_dir, examples[:40], examples[40:], tmp_path / "out", cfg, progress=False, dev_callback=at_dev
    )
    assert res.steps == 6 and res.best_step == 6 and res.trained_tokens > 0

    changed_lora = 0
    for name, value in snap["state"].items():
        if "lora_" in name:
            if "lora_B" in name:  # B starts at zero: training must have moved it
                changed_lora += int(value.abs().sum() > 0)
            continue
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(value, base_before[key]), f"base weight {key} changed"
    assert changed_lora == 2 * 7  # 7 linear layers per block, 2 blocks: all-linear
    assert load_file(model_dir / "model.safetensors").keys() == base_before.keys()

    adapter = res.adapter_dir
    cfg_json = json.loads((adapter / "adapter_config.json").read_text())
    assert sorted(cfg_json["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )  # concrete names (what vLLM's LoRA loader reads), not "all-linear"
    assert (adapter / "adapter_model.safetensors").is_file()
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=probe).logits, snap["logits"])

    lines = [json.loads(ln) for ln in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["event"] for r in lines] == ["start"] + ["train"] * 6 + ["dev", "end"]
    assert lines[-2]["probe"] == 1.0 and all(r["tokens_per_s"] > 0 for r in lines if r["event"] == "train")


def test_early_stopping_keeps_the_best_adapter(model_dir, examples, tmp_path) -> None:
    from safetensors.torch import load_file

    cfg = TrainConfig(
        **{**FAST, "lr": 0.3}, max_steps=40, eval_every=2, early_stopping_patience=2, save_every=0
    )
    res = train(model_dir, examples[:40], examples[40:], tmp_path / "out", cfg, progress=False)
    dev = [json.loads(ln) for ln in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    dev = [r for r in dev if r["event"] == "dev"]
    best = min(dev, key=lambda r: r["dev_loss"])
    assert res.stopped_early and res.steps < 40
    assert res.best_step == best["step"] and res.best_dev_loss == best["dev_loss"]
    a, b = (
        load_file(res.adapter_dir / "adapter_model.safetensors"),
        load_file(tmp_path / "out" / "best" / "adapter_model.safetensors"),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


CHILD = """
import json, sys, time
import torch
torch.set_num_threads(1)
from tiny import rotten_tomatoes_examples
from advisor.finetune.config import TrainConfig
from advisor.finetune.loop import train
ex = rotten_tomatoes_examples(60, seed=3)
cfg = TrainConfig(**json.loads(sys.argv[3]))
train(sys.argv[1], ex[:40], ex[40:], sys.argv[2], cfg, progress=False, on_step=lambda s: time.sleep(0.4))
"""


def _env() -> dict:
    return {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_same_adapter(model_dir, examples, tmp_path) -> None:
    from safetensors.torch import load_file

    cfg = TrainConfig(**FAST, max_steps=12, eval_every=3, save_every=2, grad_accum=2)
    ref = train(model_dir, examples[:40], examples[40:], tmp_path / "ref", cfg, progress=False)

    out = tmp_path / "killed"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), str(model_dir), str(out), json.dumps(cfg.to_dict())],
        env=_env(),
        cwd=REPO,
    )
    deadline = time.time() + 600  # a guard against a hang, not a speed test (CI machines are shared)
    while not (out / "checkpoints" / "step-0000004" / "state.pt").exists():
        assert child.poll() is None, "the child ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not (out / "adapter").exists()  # it really died mid-run

    res = train(model_dir, examples[:40], examples[40:], out, cfg, resume=True, progress=False)
    assert res.resumed_from is not None and 4 <= res.resumed_from < 12 and res.steps == 12
    a = load_file(ref.adapter_dir / "adapter_model.safetensors")
    b = load_file(res.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    last_a = torch.load(tmp_path / "ref" / "checkpoints" / "step-0000012" / "state.pt", weights_only=True)
    last_b = torch.load(out / "checkpoints" / "step-0000012" / "state.pt", weights_only=True)
    assert all(torch.equal(last_a["trainable"][k], last_b["trainable"][k]) for k in last_a["trainable"])
    assert (ref.best_step, ref.best_dev_loss) == (res.best_step, res.best_dev_loss)

    def losses(p: Path) -> list:
        recs = [json.loads(ln) for ln in (p / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in recs if r["event"] == "train"]

    assert losses(tmp_path / "ref") == losses(out)  # the log has each step once, as if never interrupted


def _launch(cmd: list[str], *, timeout: float, **kw) -> subprocess.CompletedProcess:
    """`subprocess.run` for torchrun, in a session of its own: on a timeout the launcher *and* its ranks
    are killed (killing the launcher alone left the ranks running, holding the CPU and a run's lock)."""
    proc = subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


DDP_CHILD = """
import json, os, sys
import torch
torch.set_num_threads(1)
from tiny import rotten_tomatoes_examples
from advisor.finetune.config import TrainConfig
from advisor.finetune.loop import train
ex = rotten_tomatoes_examples(60, seed=3)
cfg = TrainConfig(batch_size=4, max_seq_len=48, max_steps=4, eval_every=2, save_every=2)
res = train(sys.argv[1], ex[:48], ex[48:], sys.argv[2], cfg, progress=False)
with open(os.path.join(sys.argv[3], f"rank{res.rank}.json"), "w") as fh:
    json.dump({"world": res.world_size, "lines": list(res.seen_lines), "steps": res.steps}, fh)
"""


@pytest.mark.torchrun
def test_torchrun_two_processes_on_cpu(model_dir, examples, tmp_path) -> None:
    script = tmp_path / "ddp_child.py"
    script.write_text(DDP_CHILD)
    out, shards = tmp_path / "out", tmp_path / "shards"
    shards.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = _launch(
        [*cmd, str(script), str(model_dir), str(out), str(shards)], env=_env(), cwd=REPO, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((shards / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["steps"] == r1["steps"] == 4
    assert r0["lines"] and r1["lines"] and not set(r0["lines"]) & set(r1["lines"])  # different shards
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    start = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert start["world_size"] == 2
    # rank 0 wrote alone: one record per step, no interleaved duplicates
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps.count(3) == 1


FSDP_CHILD = """
import json, os, sys
import torch
torch.set_num_threads(1)
from tiny import rotten_tomatoes_examples
import advisor.finetune.loop as loop
from advisor.finetune.config import TrainConfig
ex = rotten_tomatoes_examples(60, seed=3)
wrap = loop.wrap_fsdp
def spy(module, model, d):  # what each rank holds once sharded
    out = wrap(module, model, d)
    from torch.distributed.tensor import DTensor
    held = [p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in model.parameters()]
    full = [p.numel() for p in model.parameters()]
    with open(os.path.join(sys.argv[3], f"held{d.rank}.json"), "w") as fh:
        json.dump({"held": sum(held), "full": sum(full)}, fh)
    return out
loop.wrap_fsdp = spy
cfg = TrainConfig(batch_size=4, max_seq_len=48, max_steps=4, eval_every=2, save_every=0, dropout=0.0,
                  fsdp=sys.argv[4] == "fsdp")
res = loop.train(sys.argv[1], ex[:48], ex[48:], sys.argv[2], cfg, progress=False)
with open(os.path.join(sys.argv[3], f"rank{res.rank}.json"), "w") as fh:
    json.dump({"world": res.world_size, "steps": res.steps, "loss": res.final_train_loss}, fh)
"""


@pytest.mark.torchrun
def test_fsdp_shards_the_model_and_exports_the_adapter_ddp_trains(model_dir, tmp_path) -> None:
    """Two gloo ranks on CPU, `fsdp=true`: each rank holds half of every weight, and the adapter rank 0
    gathers and exports equals what the same two ranks export with DDP (full copies), which the
    single-process reference tests tie to one rank's training."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    script = tmp_path / "fsdp_child.py"
    script.write_text(FSDP_CHILD)
    adapters = {}
    for mode in ("ddp", "fsdp"):
        out, shards = tmp_path / f"out-{mode}", tmp_path / f"shards-{mode}"
        shards.mkdir()
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        proc = _launch(
            [*cmd, str(script), str(model_dir), str(out), str(shards), mode],
            env=_env(),
            cwd=REPO,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        r0, r1 = (json.loads((shards / f"rank{r}.json").read_text()) for r in (0, 1))
        assert r0["world"] == r1["world"] == 2 and r0["steps"] == r1["steps"] == 4
        adapters[mode] = load_file(out / "adapter" / "adapter_model.safetensors")
        if mode == "fsdp":
            held = [json.loads((shards / f"held{r}.json").read_text()) for r in (0, 1)]
            assert all(h["held"] < 0.6 * h["full"] for h in held)  # a shard each, not a copy
            assert held[0]["held"] + held[1]["held"] >= held[0]["full"]
            # rank 0 alone verifies: the exported adapter loads on the base model and runs
            base = AutoModelForCausalLM.from_pretrained(model_dir)
            tuned = PeftModel.from_pretrained(base, out / "adapter")
            assert tuned(input_ids=torch.tensor([[1, 2, 3]])).logits.shape[-1] == base.config.vocab_size
    a, b = adapters["ddp"], adapters["fsdp"]
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(float(v.abs().max()) > 0 for k, v in b.items() if "lora_B" in k)  # it trained


@pytest.mark.torchrun
def test_tunegate_run_and_train_under_torchrun_report_once_from_rank_0(model_dir, tmp_path) -> None:
    """`tunegate run`, then `tunegate train`, each launched by torchrun with 2 gloo processes: rank 0
    alone advises (rank 1 waits), both ranks train, rank 0 alone verifies, writes and prints."""
    from tiny import write_reviews_csv

    data, run = write_reviews_csv(tmp_path / "reviews.csv", 90, seed=11), tmp_path / "run"
    env = {**_env(), "TUNEGATE_CACHE_DIR": str(tmp_path / "cache")}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    settings = ["max_steps=2", "batch_size=4", "max_seq_len=64", "eval_every=0", "save_every=0"]
    train_args = ["--force", "--json", *(arg for s in settings for arg in ("--train-set", s))]
    advise = [str(data), "--input-col", "text", "--output-col", "label", "--model", str(model_dir)]
    advise += ["--eval-size", "20", "--dev-size", "16", "--k", "1", "--out", str(run)]
    # --fail-on: a verdict's own exit code would be a failed worker to torchrun; this one is not reached.
    run_cmd = [*launch, "advisor.cli", "run", *advise, *train_args, "--fail-on", "few_shot"]
    proc = _launch(run_cmd, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    # Exactly one document on stdout: rank 1 neither advised (the run folder's lock would have refused
    # it) nor printed.
    first = json.loads(proc.stdout)
    assert first["training"]["metrics"]["world_size"] == 2 and first["verification"]["finetuned"]["arm"]
    assert first["decision"]["verdict"] != "few_shot"
    assert json.loads((run / "decision.json").read_text()) == first

    # `train` shards the model over the two ranks (FSDP2) where `run` copied it to each (DDP)
    train_cmd = [*launch, "advisor.cli", "train", str(run), *train_args, "--train-set", "fsdp=true"]
    proc = _launch(train_cmd, env=env, cwd=REPO, timeout=400)
    assert proc.stdout.strip(), proc.stderr[-3000:]  # a failed launch shows its log, not a JSON error
    doc = json.loads(proc.stdout)  # exactly one document on stdout: rank 1 printed nothing
    # 0 when the adapter verified; when verification vetoed fine-tuning (two steps rarely verify) rank 0
    # exits 14, and torchrun reports that failed child in its own words (its traceback) and exits 1.
    if doc["verification"]["finetune_verified"]:
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    else:
        assert proc.returncode != 0 and "vetoed" in proc.stderr, proc.stderr[-3000:]
        assert re.search(rf"exitcode\s*:\s*{int(ExitCode.VETOED)}\b", proc.stderr), proc.stderr[-3000:]
        assert "advisor/" not in proc.stderr.partition("Traceback")[2]  # torchrun's frames, none of ours
    assert doc["training"]["metrics"]["world_size"] == 2 and doc["training"]["metrics"]["steps"] == 2
    assert doc["training"]["config"]["fsdp"] is True
    assert doc["verification"]["finetuned"]["arm"] == "fine_tuned"  # rank 0 verified the gathered adapter
    assert json.loads((run / "decision.json").read_text()) == doc
    assert (run / "report.md").is_file() and (run / "train" / "adapter" / "README.md").is_file()

    # The documented form that exits 0 on every rank whatever verification finds: the launcher runs
    # `pipeline.train` (gate, train, export), then one process verifies.
    proc = _launch(
        [*launch, "pipeline.train", str(run), *settings, "--force"], env=env, cwd=REPO, timeout=400
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    trained = json.loads((run / "decision.json").read_text())
    assert trained["training"]["metrics"]["world_size"] == 2 and trained["training"]["metrics"]["steps"] == 2
    verify = [sys.executable, "-m", "advisor.cli", "verify", str(run), "--latency-samples", "0", "--json"]
    proc = subprocess.run(verify, env=env, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert proc.returncode in (int(ExitCode.OK), int(ExitCode.VETOED)) or 10 <= proc.returncode <= 13, (
        proc.stderr[-3000:]
    )
    verified = json.loads(proc.stdout)
    assert verified["verification"]["finetuned"]["arm"] == "fine_tuned"
    assert verified["training"]["metrics"]["world_size"] == 2


def test_qlora_on_cpu_is_a_clear_config_error(tmp_path, examples) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError) as err:
        train(
            tmp_path / "no-model", examples[:8], [], tmp_path / "out", TrainConfig(qlora=True), progress=False
        )
    assert err.value.problems[0].field == "qlora" and "CUDA" in str(err.value)
    assert err.value.exit_code == ExitCode.USAGE
    assert not (tmp_path / "out").exists()


def test_preflight_refuses_when_memory_clearly_does_not_fit(
    model_dir, examples, tmp_path, monkeypatch
) -> None:
    import advisor.finetune.memory

    monkeypatch.setattr(advisor.finetune.memory, "available_memory", lambda device: 1024)
    with pytest.raises(ConfigError) as err:
        train(model_dir, examples[:8], [], tmp_path / "out", TrainConfig(**FAST, max_steps=1), progress=False)
    assert "GiB" in str(err.value) and err.value.problems[0].field == "batch_size"
    assert not (tmp_path / "out" / "adapter").exists()


# ---------------------------------------------------------------- the run-folder entry point


def _run_dir(tmp_path: Path, model_dir: Path, verdict: str) -> tuple[Path, dict]:
    from tiny import write_reviews_csv

    from advisor.intake.data import load_examples

    data = write_reviews_csv(tmp_path / "reviews.csv", 50, seed=5)
    loaded = load_examples(data, input_col="text", output_col="label")
    lines = [e.line for e in loaded.examples]
    split = {
        "seed": 0,
        "data_sha256": loaded.sha256,
        "data_path": str(data),
        "train": lines[:30],
        "dev": lines[30:40],
        "eval": lines[40:],
    }
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(
        json.dumps({"data": str(data), "input_col": "text", "output_col": "label", "model": str(model_dir)})
    )
    (run / "split.json").write_text(json.dumps(split))
    (run / "decision.json").write_text(json.dumps(report_docs.run_decision(tmp_path, verdict)))
    return run, split


def test_gate_refuses_a_prompt_verdict_and_trains_nothing(model_dir, tmp_path) -> None:
    run, _ = _run_dir(tmp_path, model_dir, "prompt")
    before = (run / "decision.json").read_bytes()
    with pytest.raises(GateError) as err:
        train_run(run, TrainConfig(**FAST, max_steps=2), progress=False)
    assert err.value.exit_code == ExitCode.GATE_REFUSED
    assert not (run / "train").exists()
    assert (run / "decision.json").read_bytes() == before


@pytest.mark.torchrun
def test_the_torchrun_entry_gives_one_line_errors_with_exit_codes(model_dir, tmp_path) -> None:
    run, _ = _run_dir(tmp_path, model_dir, "prompt")
    entry = [sys.executable, "-m", "pipeline.train"]
    refused = subprocess.run(
        [*entry, str(run), "max_steps=2"], env=_env(), cwd=REPO, capture_output=True, text=True
    )
    assert refused.returncode == ExitCode.GATE_REFUSED, refused.stderr
    assert refused.stderr.startswith("tunegate: error:") and "Traceback" not in refused.stderr
    assert not (run / "train").exists()
    usage = subprocess.run(
        [*entry, str(run), "--resum"], env=_env(), cwd=REPO, capture_output=True, text=True
    )
    assert usage.returncode == ExitCode.USAGE and "--resum" in usage.stderr


def test_forced_run_trains_on_train_split_only_and_records_the_override(model_dir, tmp_path) -> None:
    run, split = _run_dir(tmp_path, model_dir, "prompt")
    res, gate = train_run(
        run, TrainConfig(**FAST, max_steps=3, eval_every=0, save_every=0), force=True, progress=False
    )
    assert gate.forced
    assert set(res.seen_lines) <= set(split["train"]) and not set(res.seen_lines) & set(split["eval"])
    assert res.n_train == 30 and res.n_dev == 10
    start = json.loads((run / "train" / "metrics.jsonl").read_text().splitlines()[0])
    assert (
        start["provenance"]["forced"] is True and start["provenance"]["data_sha256"] == split["data_sha256"]
    )
    card = (run / "train" / "adapter" / "README.md").read_text()
    assert "forced against the verdict" in card and split["data_sha256"] in card
    doc = json.loads((run / "decision.json").read_text())
    assert doc["training"]["provenance"]["forced"] is True
    assert doc["decision"]["verdict"] == "prompt"  # the advisor's verdict itself is untouched


def test_resume_with_changed_settings_is_refused(model_dir, examples, tmp_path) -> None:
    cfg = TrainConfig(**FAST, max_steps=2, eval_every=0, save_every=2)
    train(model_dir, examples[:16], [], tmp_path / "out", cfg, progress=False)
    with pytest.raises(ConfigError) as err:
        train(
            model_dir, examples[:16], [], tmp_path / "out", cfg.replace(lr=1e-3), resume=True, progress=False
        )
    assert [p.field for p in err.value.problems] == ["lr"]


def test_activation_checkpointing_trains_the_same_adapter(model_dir, examples, tmp_path) -> None:
    from safetensors.torch import load_file

    cfg = TrainConfig(**FAST, max_steps=3, eval_every=0, save_every=0)
    a = train(model_dir, examples[:24], [], tmp_path / "a", cfg, progress=False)
    b = train(
        model_dir,
        examples[:24],
        [],
        tmp_path / "b",
        cfg.replace(activation_checkpointing=True),
        progress=False,
    )
    wa, wb = (load_file(r.adapter_dir / "adapter_model.safetensors") for r in (a, b))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


class _Payload:
    """Unpickling this runs code (it creates the marker folder): what a planted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("planted", ["pickle payload", "garbage bytes", "fields missing"])
def test_resume_refuses_a_planted_or_damaged_checkpoint(model_dir, tmp_path, capsys, planted) -> None:
    from advisor.cli import main

    run, _ = _run_dir(tmp_path, model_dir, "fine_tune")
    marker = tmp_path / "payload-ran"
    ckpt = run / "train" / "checkpoints" / "step-0000002"
    ckpt.mkdir(parents=True)
    if planted == "pickle payload":
        torch.save({"step": 2, "trainable": _Payload(marker)}, ckpt / "state.pt")
    elif planted == "garbage bytes":
        (ckpt / "state.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    else:
        torch.save({"step": 2, "rng": [torch.zeros(3)]}, ckpt / "state.pt")
    rc = main(["train", str(run), "--resume", "--train-set", "max_steps=4", "--train-set", "batch_size=4"])
    err = capsys.readouterr().err
    assert rc == ExitCode.BAD_INPUT, err
    messages = [ln for ln in err.splitlines() if ln.startswith("tunegate:")]
    assert len(messages) == 1 and str(ckpt / "state.pt") in messages[0] and "Traceback" not in err
    assert not marker.exists()
    assert not (run / "train" / "adapter").exists()
    if planted == "pickle payload":  # the planted file is live: the unsafe load it replaced runs it
        torch.load(ckpt / "state.pt", weights_only=False)
        assert marker.is_dir()


VERDICT_EXITS = {ExitCode.PROMPT, ExitCode.FEW_SHOT, ExitCode.FINE_TUNE, ExitCode.COLLECT_DATA}
VERDICT_EXITS |= {ExitCode.INCONCLUSIVE, ExitCode.VETOED}


@pytest.mark.slow
def test_a_relative_run_folder_trains_and_verifies_from_its_own_paths(
    model_dir, tmp_path, monkeypatch
) -> None:
    """`make demo` writes to runs/demo, a path relative to the working directory: what is recorded in
    decision.json must be relative to the run folder, and every reader must find it there."""
    from tiny import write_reviews_csv

    from advisor.cli import main

    write_reviews_csv(tmp_path / "reviews.csv", 90, seed=11)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNEGATE_CACHE_DIR", str(tmp_path / "cache"))
    settings = ["max_steps=2", "batch_size=4", "max_seq_len=64", "eval_every=0", "save_every=0"]
    argv = ["run", "reviews.csv", "--input-col", "text", "--output-col", "label", "--model", str(model_dir)]
    argv += ["--eval-size", "20", "--dev-size", "16", "--k", "1", "--out", "runs/x", "--force", "-q"]
    rc = main([*argv, *(x for s in settings for x in ("--train-set", s))])
    run = tmp_path / "runs" / "x"
    doc = json.loads((run / "decision.json").read_text())
    assert rc in VERDICT_EXITS, rc
    assert doc["training"]["adapter_dir"] == "train/adapter"
    assert (run / "train" / "adapter" / "README.md").is_file()  # the model card, beside the adapter
    assert doc["verification"]["finetuned"]["arm"] == "fine_tuned"
    assert not (run / "runs").exists()  # nothing written under a path joined twice
    # verification on its own reads the recorded adapter back, from another working directory
    monkeypatch.chdir(run)
    rc = main(["verify", ".", "--latency-samples", "0", "-q"])
    assert rc in VERDICT_EXITS, rc
    assert json.loads((run / "decision.json").read_text())["verification"]["finetuned"]["arm"] == "fine_tuned"
