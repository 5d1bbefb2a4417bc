"""LoRA training: gate → load → encode → pre-flight → train (resumable, DDP-aware) → export.

A plain torch loop rather than `Trainer`: the loss is computed only at completion positions (the
vocabulary projection of prompt positions is never materialised), batches are grouped by length so
little compute goes into padding, and a checkpoint holds everything needed to continue bit-for-bit.

Run it once per process; under `torchrun` every rank runs the same call, each on its own shard of
the micro-batches, and only rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advisor.errors import ConfigError, DataError, Problem
from advisor.files import write_json_atomic
from advisor.finetune_report import training_markdown as markdown_section  # noqa: F401  (re-exported)
from advisor.types import Example, TaskKind
from pipeline.config import TrainConfig
from pipeline.gate import GateResult, check_gate

if TYPE_CHECKING:
    import torch

    from advisor.prompts import Arm

IGNORE = -100  # label value cross-entropy skips: every prompt and padding position


# ---------------------------------------------------------------- pure pieces


@dataclass(frozen=True)
class Encoded:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]  # IGNORE except on the completion (target tokens + end-of-turn)
    line: int
    truncated: bool = False


def chat_messages(example: Example) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in example.messages]


def encode_example(tokenizer: Any, example: Example, max_seq_len: int) -> Encoded:
    """Prompt exactly as the model is prompted at evaluation, then target + end-of-turn as the completion.

    The prompt is the chat template with the generation prompt (what the backend renders); the
    completion is the target's tokens followed by the EOS token, which for chat models is the
    template's end-of-turn token (`<|im_end|>` for ChatML), so the model learns to stop.
    When too long, the prompt loses tokens from its left (the generation prompt stays adjacent to the
    completion) and the completion is capped at half the budget.
    """
    text = tokenizer.apply_chat_template(chat_messages(example), tokenize=False, add_generation_prompt=True)
    prompt = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    target = example.label if example.label is not None else example.target
    completion = list(tokenizer(target, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]
    truncated = False
    if len(prompt) + len(completion) > max_seq_len:
        truncated = True
        completion = (
            completion[: max(1, max_seq_len // 2)] if len(completion) > max_seq_len // 2 else completion
        )
        prompt = prompt[len(prompt) - (max_seq_len - len(completion)) :]
    ids = prompt + completion
    labels = [IGNORE] * len(prompt) + completion
    return Encoded(tuple(ids), tuple(labels), example.line, truncated)


def plan_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, group_by_length: bool
) -> list[list[int]]:
    """One epoch's micro-batches (indices), deterministic in (seed, epoch).

    Length grouping: shuffle, cut into windows of 32 batches, sort each window by length, batch it,
    then shuffle the batch order. Neighbours in a batch have similar lengths (little padding), while
    the order still changes every epoch.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    if group_by_length:
        window = batch_size * 32
        grouped: list[int] = []
        for start in range(0, len(idx), window):
            grouped += sorted(idx[start : start + window], key=lambda i: -lengths[i])
        idx = grouped
    batches = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak lr for optimizer step `step` (0-based): linear warm-up, then decay to 0."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)


@dataclass(frozen=True)
class TrainResult:
    adapter_dir: Path
    steps: int  # optimizer steps taken
    total_steps: int  # planned
    best_step: int | None
    best_dev_loss: float | None
    final_train_loss: float | None
    stopped_early: bool
    trained_tokens: int  # non-padding tokens through the model in training, all ranks
    tokens_per_s: float
    elapsed_s: float
    cpu_s: float  # CPU time of this process in the loop (robust to other load on a shared machine)
    peak_memory_bytes: int
    world_size: int
    rank: int
    resumed_from: int | None
    n_train: int
    n_dev: int
    n_truncated: int
    seen_lines: tuple[int, ...] = field(default=(), repr=False)  # training examples this rank used

    def as_dict(self) -> dict[str, Any]:
        return {
            "adapter_dir": str(self.adapter_dir),
            "steps": self.steps,
            "total_steps": self.total_steps,
            "best_step": self.best_step,
            "best_dev_loss": self.best_dev_loss,
            "final_train_loss": self.final_train_loss,
            "stopped_early": self.stopped_early,
            "trained_tokens": self.trained_tokens,
            "tokens_per_s": self.tokens_per_s,
            "elapsed_s": self.elapsed_s,
            "cpu_s": self.cpu_s,
            "peak_memory_bytes": self.peak_memory_bytes,
            "world_size": self.world_size,
            "resumed_from": self.resumed_from,
            "n_train": self.n_train,
            "n_dev": self.n_dev,
            "n_truncated": self.n_truncated,
        }


# ---------------------------------------------------------------- file helpers (rank 0 only)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_dir(tmp: Path, final: Path) -> None:
    """Swap a fully written folder into place; a reader sees the old or the new one, never half."""
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    old = final.with_name(f".{final.name}.old{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)


class MetricsLog:
    """Append-only JSONL, flushed per line; on resume, lines past the checkpoint are dropped first."""

    def __init__(self, path: Path, enabled: bool, keep_until_step: int | None) -> None:
        self.path = path
        self.enabled = enabled
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if keep_until_step is None:
            path.write_text("", encoding="utf-8")
        elif path.exists():
            kept = [
                ln
                for ln in path.read_text(encoding="utf-8").splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= keep_until_step
            ]
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")
            os.replace(tmp, path)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\n")
            fh.flush()


# ---------------------------------------------------------------- distributed set-up


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: str

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Single process, or DDP when launched by torchrun (gloo on CPU, NCCL on CUDA)."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = f"cuda:{local}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(local)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Dist(rank, world, local, device)


def _all_reduce_sum(values: list[float], d: Dist) -> list[float]:
    if d.world == 1:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


# ---------------------------------------------------------------- model pieces


def _loss_module(model: Any) -> Any:
    """Wrap a (peft) causal LM so forward returns the summed completion loss: what DDP should wrap.

    The backbone's hidden states are projected through the output layer only at positions whose next
    token is a completion token; for classification targets of 2-3 tokens that skips almost all of the
    vocabulary matmul and the large logits tensor.
    """
    import torch
    import torch.nn.functional as F

    class CompletionLoss(torch.nn.Module):
        def __init__(self, lm: Any) -> None:
            super().__init__()
            self.lm = lm
            base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
            self.backbone = getattr(base, base.base_model_prefix)
            self.head = base.get_output_embeddings()
            self.softcap = getattr(base.config, "final_logit_softcapping", None)

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
        ) -> torch.Tensor:
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            targets = labels[:, 1:]
            keep = targets != IGNORE
            logits = self.head(hidden[:, :-1][keep]).float()
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            return F.cross_entropy(logits, targets[keep], reduction="sum")

    return CompletionLoss(model)


def _collate(items: Sequence[Encoded], pad_id: int, device: str) -> dict[str, torch.Tensor]:
    import torch

    width = max(len(e.input_ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, e in enumerate(items):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def _use_bf16(cfg: TrainConfig, device: str) -> bool:
    import torch

    if cfg.bf16 == "auto":
        return device.startswith("cuda") and torch.cuda.is_bf16_supported()
    return bool(cfg.bf16)


def check_qlora(cfg: TrainConfig) -> None:
    """QLoRA needs CUDA and bitsandbytes; say so before anything is loaded."""
    if not cfg.qlora:
        return
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            "qlora=true needs a CUDA GPU (4-bit bitsandbytes kernels); this machine has none. "
            "Use qlora=false to train LoRA in full precision on the CPU",
            field="qlora",
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            "qlora=true needs the bitsandbytes package: pip install bitsandbytes", field="qlora"
        )


def lora_config(cfg: TrainConfig) -> Any:
    from peft import LoraConfig

    targets = cfg.target_modules if cfg.target_modules == "all-linear" else list(cfg.target_modules)
    return LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )


def preflight(model_dir: str | Path, cfg: TrainConfig, seq_len: int, device: str) -> dict[str, int]:
    """Estimate memory from the model's config (built on the meta device, no weights read) and refuse
    when it clearly does not fit the free memory of `device`."""
    import torch
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from pipeline.memory import ModelShape, available_memory, check_fits, estimate_memory

    mcfg = AutoConfig.from_pretrained(model_dir)
    text = getattr(mcfg, "text_config", None) or mcfg
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(mcfg)
        n_params = sum(p.numel() for p in meta.parameters())
        peft_meta = get_peft_model(meta, lora_config(cfg))
        n_lora = sum(p.numel() for p in peft_meta.parameters() if p.requires_grad)
    shape = ModelShape(
        n_params=n_params,
        hidden_size=text.hidden_size,
        intermediate_size=getattr(text, "intermediate_size", 4 * text.hidden_size),
        n_layers=text.num_hidden_layers,
        n_heads=text.num_attention_heads,
        vocab_size=text.vocab_size,
    )
    bf16 = _use_bf16(cfg, device)
    weight_bytes = 0.5 if cfg.qlora else (2 if bf16 else 4)
    est = estimate_memory(shape, n_lora, cfg.batch_size, seq_len, weight_bytes, 2 if bf16 else 4)
    check_fits(est, available_memory(device), device)
    return {**est.as_dict(), "n_params": n_params, "n_lora_params": n_lora}


def load_model(model_dir: str | Path, cfg: TrainConfig, device: str) -> Any:
    """The base model (fp32, bf16, or 4-bit for QLoRA) with fresh LoRA adapters, seeded."""
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if _use_bf16(cfg, device) else torch.float32}
    if cfg.qlora:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if cfg.qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model.to(device)  # type: ignore[arg-type]  # transformers types .to narrowly
    model.config.use_cache = False
    if cfg.activation_checkpointing:
        # Non-reentrant checkpointing works with frozen inputs (no enable_input_require_grads needed).
        model.activation_checkpointing_enable({"use_reentrant": False})
    torch.manual_seed(cfg.seed)  # LoRA A matrices are drawn here: same seed, same start
    return get_peft_model(model, lora_config(cfg))


def _peak_memory(device: str) -> int:
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated(torch.device(device)))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


# ---------------------------------------------------------------- checkpoints


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    done = sorted(p for p in ckpt_root.glob("step-*") if (p / "state.pt").is_file())
    return done[-1] if done else None


def _rng_state(device: str) -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def _set_rng_state(state: dict[str, Any], device: str) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and device.startswith("cuda"):
        torch.cuda.set_rng_state(state["cuda"], torch.device(device))


def _trainable_state(model: Any) -> dict[str, Any]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _load_trainable(model: Any, state: dict[str, Any]) -> None:
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def save_checkpoint(ckpt_root: Path, step: int, payload: dict[str, Any], keep: int = 2) -> Path:
    """Write `step-NNNNNNN/state.pt` through a temp folder and a rename; keep the newest `keep`."""
    import torch

    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step-{step:07d}"
    tmp = ckpt_root / f".tmp-step-{step:07d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    torch.save(payload, tmp / "state.pt")
    replace_dir(tmp, final)
    olds = sorted(p for p in ckpt_root.glob("step-*") if p.name < final.name)
    for old in olds[: max(0, len(olds) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_adapter_atomic(model: Any, out_dir: Path) -> None:
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    # peft records "all-linear" as full module paths (model.layers.0.self_attn.q_proj, ...). The short
    # names select the same modules under peft's suffix matching, and are what vLLM's LoRA loader checks
    # against its list of supported modules.
    conf_path = tmp / "adapter_config.json"
    conf = json.loads(conf_path.read_text(encoding="utf-8"))
    if isinstance(conf.get("target_modules"), list):
        conf["target_modules"] = sorted({m.rsplit(".", 1)[-1] for m in conf["target_modules"]})
        conf_path.write_text(json.dumps(conf, indent=2) + "\n", encoding="utf-8")
    replace_dir(tmp, out_dir)


# ---------------------------------------------------------------- the loop


def train(
    model_dir: str | Path,
    train_examples: Sequence[Example],
    dev_examples: Sequence[Example],
    out_dir: str | Path,
    cfg: TrainConfig,
    *,
    provenance: dict[str, Any] | None = None,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
    dev_callback: Callable[[Any], dict[str, float]] | None = None,
) -> TrainResult:
    """Train LoRA adapters on `train_examples`, evaluating on `dev_examples`; outputs under `out_dir`.

    Writes (rank 0): metrics.jsonl, checkpoints/step-N/, best/ (best dev loss), adapter/ (the result:
    the best adapter when there is a dev set, else the last). `on_step(step)` runs after every
    optimizer step; `dev_callback(model)` adds its metrics (e.g. dev accuracy) to each dev record.
    """
    import torch
    from transformers import AutoTokenizer

    out = Path(out_dir)
    check_qlora(cfg)
    d = init_distributed()
    if not train_examples:
        raise DataError("no training examples in the train split")

    # 1. encode with the model's own chat template
    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.eos_token_id is None:
        raise ConfigError(
            f"the tokenizer in {model_dir} has no EOS token to end the completion", field="model"
        )
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    enc_train = [encode_example(tok, ex, cfg.max_seq_len) for ex in train_examples]
    enc_dev = [encode_example(tok, ex, cfg.max_seq_len) for ex in dev_examples]
    lengths = [len(e.input_ids) for e in enc_train]
    n_truncated = sum(e.truncated for e in enc_train) + sum(e.truncated for e in enc_dev)

    # 2. plan: the stream of micro-batches of this rank, and the number of optimizer steps
    per_epoch = len(plan_batches(lengths, cfg.batch_size, cfg.seed, 0, cfg.group_by_length)) // d.world
    if per_epoch == 0:
        raise DataError(
            f"{len(enc_train)} training examples do not fill one batch per process ({d.world} processes)"
        )
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch / cfg.grad_accum))
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    plans: dict[int, list[list[int]]] = {}

    def micro_batch(i: int) -> list[int]:
        epoch, j = divmod(i, per_epoch)
        if epoch not in plans:
            plans.clear()
            plans[epoch] = plan_batches(lengths, cfg.batch_size, cfg.seed, epoch, cfg.group_by_length)
        return plans[epoch][j * d.world + d.rank]

    # 3. pre-flight memory check, then the model
    seq_len = max(lengths)
    estimate = preflight(model_dir, cfg, seq_len, d.device)
    model = load_model(model_dir, cfg, d.device)
    torch.manual_seed(cfg.seed + d.rank)  # dropout masks differ per rank, reproducibly
    loss_mod = _loss_module(model)
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapped: Any = DDP(loss_mod, device_ids=[d.local_rank] if d.device.startswith("cuda") else None)
    else:
        wrapped = loss_mod
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup, cfg.schedule)
    )
    use_bf16 = _use_bf16(cfg, d.device)
    autocast_device = "cuda" if d.device.startswith("cuda") else "cpu"

    # 4. resume
    ckpt_root = out / "checkpoints"
    step, best_loss, best_step, bad_evals, tokens_done, elapsed_before = 0, None, None, 0, 0, 0.0
    resumed_from = None
    ckpt = latest_checkpoint(ckpt_root) if resume else None
    if ckpt is not None:
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)
        _check_resumable(state, cfg, d, ckpt)
        _load_trainable(model, state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"][d.rank], d.device)
        step, best_loss, best_step = state["step"], state["best_dev_loss"], state["best_step"]
        bad_evals, tokens_done, elapsed_before = (
            state["bad_evals"],
            state["trained_tokens"],
            state["elapsed_s"],
        )
        resumed_from = step

    log = MetricsLog(out / "metrics.jsonl", d.main, resumed_from if resume else None)
    log.write(
        {
            "event": "start",
            "step": step,
            "resumed_from": resumed_from,
            "provenance": provenance or {},
            "config": cfg.to_dict(),
            "model": str(model_dir),
            "n_train": len(enc_train),
            "n_dev": len(enc_dev),
            "n_truncated": n_truncated,
            "world_size": d.world,
            "total_steps": total_steps,
            "memory_estimate": estimate,
            "bf16": use_bf16,
            "device": d.device,
        }
    )

    def dev_loss() -> float | None:
        if not enc_dev:
            return None
        order = sorted(range(len(enc_dev)), key=lambda i: len(enc_dev[i].input_ids))
        batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        total, count = 0.0, 0.0
        loss_mod.eval()
        with torch.no_grad(), torch.autocast(autocast_device, dtype=torch.bfloat16, enabled=use_bf16):
            for b in batches[d.rank :: d.world]:
                batch = _collate([enc_dev[i] for i in b], pad_id, d.device)
                total += float(loss_mod(**batch))
                count += float((batch["labels"][:, 1:] != IGNORE).sum())
        loss_mod.train()
        total, count = _all_reduce_sum([total, count], d)
        return total / max(count, 1.0)

    bar = _Progress(total_steps, step, enabled=progress and d.main)
    seen: set[int] = set()
    stopped_early = False
    last_loss = None
    t0 = time.perf_counter()
    c0 = time.process_time()
    tokens_run = 0
    loss_mod.train()
    try:
        while step < total_steps:
            micro = [micro_batch(step * cfg.grad_accum + k) for k in range(cfg.grad_accum)]
            batches = [_collate([enc_train[i] for i in b], pad_id, d.device) for b in micro]
            for b in micro:
                seen.update(enc_train[i].line for i in b)
            # Normalise by the completion tokens of the whole accumulation window on all ranks, so the
            # gradient is the per-token mean over the effective batch however the tokens are spread.
            n_local = float(sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches))
            n_tok_local = float(sum(int(b["attention_mask"].sum()) for b in batches))
            n_global, n_tok_global = _all_reduce_sum([n_local, n_tok_local], d)
            loss_sum = 0.0
            for k, batch in enumerate(batches):
                sync = k == len(batches) - 1 or d.world == 1
                ctx = wrapped.no_sync() if (d.world > 1 and not sync) else _null()
                with ctx, torch.autocast(autocast_device, dtype=torch.bfloat16, enabled=use_bf16):
                    loss = wrapped(**batch)
                    # DDP averages gradients over ranks; multiply back so the result is sum / n_global.
                    (loss * d.world / max(n_global, 1.0)).backward()
                loss_sum += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            lr_now = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_done += int(n_tok_global)
            tokens_run += int(n_tok_global)
            (loss_total,) = _all_reduce_sum([loss_sum], d)
            last_loss = loss_total / max(n_global, 1.0)
            wall = time.perf_counter() - t0
            tps = tokens_run / wall if wall > 0 else 0.0
            log.write(
                {
                    "event": "train",
                    "step": step,
                    "loss": last_loss,
                    "lr": lr_now,
                    "tokens": int(n_tok_global),
                    "tokens_per_s": tps,
                    "elapsed_s": elapsed_before + wall,
                }
            )
            bar.update(step, last_loss, tps)

            if (cfg.eval_every and step % cfg.eval_every == 0) or step == total_steps:
                dl = dev_loss()
                if dl is not None:
                    improved = best_loss is None or dl < best_loss
                    if improved:
                        best_loss, best_step, bad_evals = dl, step, 0
                        if d.main:
                            save_adapter_atomic(model, out / "best")
                    else:
                        bad_evals += 1
                    extra = dev_callback(model) if (dev_callback and d.main) else {}
                    log.write(
                        {
                            "event": "dev",
                            "step": step,
                            "dev_loss": dl,
                            "best_dev_loss": best_loss,
                            "improved": improved,
                        }
                        | extra
                    )
                    if cfg.early_stopping_patience and bad_evals >= cfg.early_stopping_patience:
                        stopped_early = True
            if (cfg.save_every and step % cfg.save_every == 0) or stopped_early or step == total_steps:
                rngs = _gather_objects(_rng_state(d.device), d)
                if d.main and cfg.save_every:
                    save_checkpoint(
                        ckpt_root,
                        step,
                        {
                            "step": step,
                            "trainable": _trainable_state(model),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "rng": rngs,
                            "best_dev_loss": best_loss,
                            "best_step": best_step,
                            "bad_evals": bad_evals,
                            "trained_tokens": tokens_done,
                            "elapsed_s": elapsed_before + (time.perf_counter() - t0),
                            "config": cfg.to_dict(),
                            "world_size": d.world,
                        },
                    )
            if on_step is not None:
                on_step(step)
            if stopped_early:
                break
    finally:
        bar.close()

    # 5. the result adapter: best on dev if measured, else the last weights
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    adapter_dir = out / "adapter"
    if d.main:
        if best_step is not None and (out / "best").is_dir():
            tmp = out / f".adapter.tmp{os.getpid()}"
            if tmp.exists():
                shutil.rmtree(tmp)
            shutil.copytree(out / "best", tmp)
            replace_dir(tmp, adapter_dir)
        else:
            save_adapter_atomic(model, adapter_dir)
    result = TrainResult(
        adapter_dir=adapter_dir,
        steps=step,
        total_steps=total_steps,
        best_step=best_step,
        best_dev_loss=best_loss,
        final_train_loss=last_loss,
        stopped_early=stopped_early,
        trained_tokens=tokens_done,
        tokens_per_s=tokens_run / elapsed if elapsed > 0 else 0.0,
        elapsed_s=elapsed_before + elapsed,
        cpu_s=cpu,
        peak_memory_bytes=_peak_memory(d.device),
        world_size=d.world,
        rank=d.rank,
        resumed_from=resumed_from,
        n_train=len(enc_train),
        n_dev=len(enc_dev),
        n_truncated=n_truncated,
        seen_lines=tuple(sorted(seen)),
    )
    log.write({"event": "end", "step": step, **result.as_dict()})
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()
    return result


def _check_resumable(state: dict[str, Any], cfg: TrainConfig, d: Dist, ckpt: Path) -> None:
    """A checkpoint continues only the run that wrote it: same settings, same number of processes."""
    if state["world_size"] != d.world:
        raise ConfigError(
            f"the checkpoint was written by {state['world_size']} process(es); resume with the same number "
            f"(this run has {d.world})",
            file=str(ckpt),
        )
    now, then = cfg.to_dict(), state["config"]
    changed = sorted(k for k in now if k != "merge" and now[k] != then.get(k))
    if changed:
        raise ConfigError(
            problems=[
                Problem(
                    f"differs from the interrupted run ({then.get(k)!r}); resume with the same settings "
                    "or start again without --resume",
                    file=str(ckpt),
                    field=k,
                )
                for k in changed
            ]
        )


def _gather_objects(obj: Any, d: Dist) -> list[Any]:
    if d.world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _Progress:
    """A rich progress bar on stderr (loss, tokens/s, ETA); nothing when disabled or not a terminal."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.p = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.p = Progress(
            TextColumn("training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.task = self.p.add_task("train", total=total, completed=done, loss="-", tps="-")
        self.p.start()

    def update(self, step: int, loss: float, tps: float) -> None:
        if self.p is not None:
            self.p.update(self.task, completed=step, loss=f"{loss:.4f}", tps=f"{tps:,.0f}")

    def close(self) -> None:
        if self.p is not None:
            self.p.stop()


# ---------------------------------------------------------------- the run-folder entry point


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError("missing from the run folder (run `tunegate advise` first)", file=str(path)) from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON: {exc}", file=str(path), line=exc.lineno) from exc


def load_split_examples(run_dir: Path) -> tuple[list[Example], list[Example], dict[str, Any]]:
    """The run's train and dev examples (never eval), from the data file named in config.json."""
    from advisor.data import load_examples

    config = _read_json(run_dir / "config.json")
    split = _read_json(run_dir / "split.json")
    data_path = split.get("data_path") or config.get("data")
    loaded = load_examples(
        data_path,
        fmt=config.get("fmt"),
        input_col=config.get("input_col"),
        output_col=config.get("output_col"),
    )
    by_line = {ex.line: ex for ex in loaded.examples}
    missing = [ln for ln in list(split["train"]) + list(split["dev"]) if ln not in by_line]
    if missing:
        raise DataError(
            f"{len(missing)} line(s) of the split are not in the data any more (first: {missing[0]}); "
            "the file changed since `advise`",
            file=str(data_path),
        )
    return [by_line[ln] for ln in split["train"]], [by_line[ln] for ln in split["dev"]], {**config, **split}


def finetune_arm(task: TaskKind, labels: Sequence[str]) -> Arm:
    """How the fine-tuned model is prompted, in training and in verification alike: the zero-shot arm
    (the example's own turns plus the answer-format hint; no system prompt, no demonstrations), so the
    adapter is judged on exactly the prompt it learned from, at the cheapest prompt length."""
    from advisor.prompts import Arm, ArmKind, arm_name, format_hint

    return Arm(arm_name(ArmKind.ZERO_SHOT), ArmKind.ZERO_SHOT, format_hint=format_hint(task, labels))


def run_task(run_dir: Path, examples: Sequence[Example]) -> tuple[TaskKind, tuple[str, ...]]:
    """The task and label order the advisor measured (decision.json), else detected from the examples."""
    from advisor.data import detect_task

    try:
        doc = json.loads((run_dir / "decision.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        doc = {}
    prompting = doc.get("prompting") if isinstance(doc, dict) else None
    if isinstance(prompting, dict) and prompting.get("task"):
        return TaskKind(prompting["task"]), tuple(prompting.get("labels") or ())
    return detect_task(examples)


def as_finetune_examples(examples: Sequence[Example], task: TaskKind, labels: Sequence[str]) -> list[Example]:
    """Examples whose messages are the fine-tuning prompt (see `finetune_arm`) and whose label is set."""
    from advisor.prompts import render_messages

    arm = finetune_arm(task, labels)
    allowed = set(labels)
    out = []
    for ex in examples:
        label = ex.target.strip() if task is TaskKind.CLASSIFY and ex.target.strip() in allowed else None
        out.append(Example(ex.line, render_messages(arm, ex), ex.target, label))
    return out


def resolve_model_dir(cfg: TrainConfig, run_config: dict[str, Any]) -> str:
    model = cfg.model or run_config.get("model")
    if model:
        return str(model)
    from advisor.model import resolve_model_dir as advisor_model_dir

    return str(advisor_model_dir(None))


def train_run(
    run_dir: str | Path,
    cfg: TrainConfig,
    *,
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> tuple[TrainResult, GateResult]:
    """`tunegate train RUN_DIR`: gate, train on the run's train/dev split, export to RUN_DIR/train/adapter."""
    from pipeline.export import training_section, update_decision, write_model_card

    run_dir = Path(run_dir)
    gate = check_gate(run_dir, force=force)
    train_ex, dev_ex, run_info = load_split_examples(run_dir)
    task, labels = run_task(run_dir, train_ex + dev_ex)
    train_ex, dev_ex = (
        as_finetune_examples(train_ex, task, labels),
        as_finetune_examples(dev_ex, task, labels),
    )
    model_dir = resolve_model_dir(cfg, run_info)
    provenance = {
        **gate.provenance,
        "data_sha256": run_info.get("data_sha256"),
        "split_seed": run_info.get("seed"),
    }
    out = run_dir / "train"
    if out.exists() and not resume and init_distributed().main:
        for stale in ("checkpoints", "best", "adapter", "metrics.jsonl"):
            p = out / stale
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    result = train(
        model_dir, train_ex, dev_ex, out, cfg, provenance=provenance, resume=resume, progress=progress
    )
    if result.rank == 0:
        write_json_atomic(
            out / "config.json", {"train": cfg.to_dict(), "model": model_dir, "provenance": provenance}
        )
        section = training_section(result, cfg, model_dir, provenance)
        from advisor.html import load_training_curve

        section["curve"] = load_training_curve(out / "metrics.jsonl")
        if cfg.merge:
            from pipeline.export import merge_adapter

            section["merged_dir"] = str(merge_adapter(model_dir, result.adapter_dir, out / "merged"))
        write_model_card(result.adapter_dir, section)
        update_decision(run_dir, {"training": section})
    return result, gate


if __name__ == "__main__":  # `torchrun --nproc_per_node 2 -m pipeline.train RUN_DIR [key=value ...]`
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    flags = {a for a in sys.argv[1:] if a.startswith("--")}
    train_run(
        args[0],
        TrainConfig.from_toml(None, args[1:]),
        force="--force" in flags,
        resume="--resume" in flags,
    )
