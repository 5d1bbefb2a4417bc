"""The training loop: micro-batches, completion loss, gradient accumulation, optimizer step, lr schedule,
dev evaluation with early stopping, and periodic checkpoints.

A plain torch loop rather than `Trainer`: the loss is computed only at completion positions (see
`advisor.finetune.lora.completion_loss`), batches are grouped by length so little compute goes into
padding, and a checkpoint holds everything needed to continue bit for bit. Under `torchrun` every rank
runs the same call, each on its own shard of the micro-batches, and only rank 0 writes files. `advise`'s
pilot fine-tune (advisor.finetune.pilot) trains with this same loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor.errors import DataError
from advisor.finetune.batches import EncodedSplit, collate, completion_tokens, encode_split, plan_batches
from advisor.finetune.checkpoint import (
    LoopState,
    checkpoint_payload,
    restore_checkpoint,
    rng_state,
    write_state,
)
from advisor.finetune.config import TrainConfig
from advisor.finetune.distributed import (
    Dist,
    all_reduce_sum,
    barrier,
    full_trainable_state,
    gather_objects,
    gradient_sync,
    init_distributed,
    is_sharded,
    one_process,
    wrap_ddp,
    wrap_fsdp,
)
from advisor.finetune.lora import check_qlora, completion_loss, load_model, peak_memory, preflight, use_bf16
from advisor.progress import report
from advisor.rundir import MetricsLog, TrainDir
from advisor.types import Example


class ProgressBar:
    """Training steps as a progress stage (advisor.progress), loss and tokens/s beside the bar."""

    STAGE = "training steps"

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.total, self.step, self.enabled = total, done, enabled
        if enabled:
            report(self.STAGE, done, total)

    def update(self, step: int, loss: float, tps: float) -> None:
        self.step = step
        if self.enabled:
            report(self.STAGE, step, self.total, f"loss {loss:.4f}, {tps:,.0f} tok/s")

    def close(self) -> None:
        if self.enabled and self.step < self.total:  # stopped early (or failed): the stage ends here
            report(self.STAGE, self.step, self.step)


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


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak lr for optimizer step `step` (0-based): linear warm-up, then decay to 0."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)


class BatchPlan:
    """This rank's stream of micro-batches over the epochs, and the number of optimizer steps."""

    def __init__(self, lengths: Sequence[int], cfg: TrainConfig, d: Dist) -> None:
        self.lengths, self.cfg, self.d = list(lengths), cfg, d
        self.per_epoch = len(self._epoch(0)) // d.world
        if self.per_epoch == 0:
            raise DataError(
                f"{len(lengths)} training examples do not fill one batch per process ({d.world} processes)"
            )
        self.total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * self.per_epoch / cfg.grad_accum))
        self.warmup = math.ceil(cfg.warmup_ratio * self.total_steps)
        self._plans: dict[int, list[list[int]]] = {}

    def _epoch(self, epoch: int) -> list[list[int]]:
        c = self.cfg
        return plan_batches(self.lengths, c.batch_size, c.seed, epoch, c.group_by_length)

    def micro_batches(self, step: int) -> list[list[int]]:
        """The micro-batches (example indices) this rank runs for optimizer step `step`."""
        return [self._micro(step * self.cfg.grad_accum + k) for k in range(self.cfg.grad_accum)]

    def _micro(self, i: int) -> list[int]:
        epoch, j = divmod(i, self.per_epoch)
        if epoch not in self._plans:
            self._plans.clear()
            self._plans[epoch] = self._epoch(epoch)
        return self._plans[epoch][j * self.d.world + self.d.rank]


@dataclass(frozen=True)
class Parts:
    """The model and what trains it."""

    model: Any  # the peft model (what is saved)
    loss_mod: Any  # its completion loss
    wrapped: Any  # loss_mod, DDP-wrapped under torchrun
    params: list[Any]  # the trainable (LoRA) parameters
    optimizer: Any
    scheduler: Any
    bf16: bool
    device: str

    def autocast(self) -> Any:
        import torch

        kind = "cuda" if self.device.startswith("cuda") else "cpu"
        return torch.autocast(kind, dtype=torch.bfloat16, enabled=self.bf16)


def build_parts(model_dir: str | Path, cfg: TrainConfig, d: Dist, plan: BatchPlan) -> Parts:
    import torch

    model = load_model(model_dir, cfg, d.device)
    torch.manual_seed(cfg.seed + d.rank)  # dropout masks differ per rank, reproducibly
    loss_mod = completion_loss(model)
    wrapped = wrap_fsdp(loss_mod, model, d) if cfg.fsdp else wrap_ddp(loss_mod, d)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, plan.total_steps, plan.warmup, cfg.schedule)
    )
    return Parts(model, loss_mod, wrapped, params, optimizer, scheduler, use_bf16(cfg, d.device), d.device)


@dataclass(frozen=True)
class _Run:
    """Everything the loop reads and never changes."""

    cfg: TrainConfig
    d: Dist
    data: EncodedSplit
    plan: BatchPlan
    parts: Parts
    out: TrainDir
    log: MetricsLog | None  # rank 0 only


@dataclass
class _Tally:
    """What this process saw in its loop; not checkpointed."""

    seen: set[int] = field(default_factory=set)
    last_loss: float | None = None
    stopped_early: bool = False
    tokens_run: int = 0
    t0: float = field(default_factory=time.perf_counter)
    c0: float = field(default_factory=time.process_time)

    def wall(self) -> float:
        return time.perf_counter() - self.t0


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
    alone: bool = False,
) -> TrainResult:
    """Train LoRA adapters on `train_examples`, evaluating on `dev_examples`; outputs under `out_dir`.

    Writes (rank 0): metrics.jsonl, checkpoints/step-N/, best/ (best dev loss), adapter/ (the result:
    the best adapter when there is a dev set, else the last). `on_step(step)` runs after every
    optimizer step; `dev_callback(model)` adds its metrics (e.g. dev accuracy) to each dev record.
    `alone`: this process trains by itself even under torchrun (the pilot, trained by rank 0 alone).
    """
    out = TrainDir(out_dir)
    check_qlora(cfg)
    d = one_process() if alone else init_distributed()
    if not train_examples:
        raise DataError("no training examples in the train split")
    data = encode_split(model_dir, train_examples, dev_examples, cfg.max_seq_len)  # the chat template
    plan = BatchPlan([len(e.input_ids) for e in data.train], cfg, d)  # this rank's micro-batches
    estimate = preflight(model_dir, cfg, max(len(e.input_ids) for e in data.train), d.device)
    parts = build_parts(model_dir, cfg, d, plan)  # model, loss, optimizer, schedule
    ckpt = out.latest_checkpoint() if resume else None
    state = LoopState()
    if ckpt is not None:  # continue where the interrupted run left off, bit for bit
        state = restore_checkpoint(ckpt, parts.model, parts.optimizer, parts.scheduler, cfg, d)
    log = out.open_metrics(keep_until_step=state.resumed_from if resume else None) if d.main else None
    _log(
        log,
        {
            "event": "start",
            "step": state.step,
            "resumed_from": state.resumed_from,
            "provenance": provenance or {},
            "config": cfg.to_dict(),
            "model": str(model_dir),
            "n_train": len(data.train),
            "n_dev": len(data.dev),
            "n_truncated": data.n_truncated,
            "world_size": d.world,
            "total_steps": plan.total_steps,
            "memory_estimate": estimate,
            "bf16": parts.bf16,
            "device": d.device,
        },
    )
    run = _Run(cfg, d, data, plan, parts, out, log)
    tally = _loop(run, state, progress=progress, on_step=on_step, dev_callback=dev_callback)
    return _finish(run, state, tally)


def _loop(
    run: _Run,
    state: LoopState,
    *,
    progress: bool,
    on_step: Callable[[int], None] | None,
    dev_callback: Callable[[Any], dict[str, float]] | None,
) -> _Tally:
    cfg, total = run.cfg, run.plan.total_steps
    bar = ProgressBar(total, state.step, enabled=progress and run.d.main)
    tally = _Tally()
    run.parts.loss_mod.train()
    try:
        while state.step < total:
            micro = run.plan.micro_batches(state.step)
            for b in micro:
                tally.seen.update(run.data.train[i].line for i in b)
            lr_now = run.parts.optimizer.param_groups[0]["lr"]
            loss, n_tokens = _optimizer_step(run, micro)
            state.step += 1
            state.tokens_done += n_tokens
            tally.tokens_run += n_tokens
            tally.last_loss = loss
            wall = tally.wall()
            tps = tally.tokens_run / wall if wall > 0 else 0.0
            _log(
                run.log,
                {
                    "event": "train",
                    "step": state.step,
                    "loss": loss,
                    "lr": lr_now,
                    "tokens": n_tokens,
                    "tokens_per_s": tps,
                    "elapsed_s": state.elapsed_before + wall,
                },
            )
            bar.update(state.step, loss, tps)
            at_end = state.step == total
            if (cfg.eval_every and state.step % cfg.eval_every == 0) or at_end:
                _evaluate(run, state, tally, dev_callback)
            if (cfg.save_every and state.step % cfg.save_every == 0) or tally.stopped_early or at_end:
                _checkpoint(run, state, tally)
            if on_step is not None:
                on_step(state.step)
            if tally.stopped_early:
                break
    finally:
        bar.close()
    return tally


def _optimizer_step(run: _Run, micro: list[list[int]]) -> tuple[float, int]:
    """One optimizer step over the accumulation window. Returns the mean completion loss and the
    number of (non-padding) tokens of the window, both over all ranks."""
    import torch

    d, parts = run.d, run.parts
    batches = [collate([run.data.train[i] for i in b], run.data.pad_id, d.device) for b in micro]
    # Normalise by the completion tokens of the whole accumulation window on all ranks, so the
    # gradient is the per-token mean over the effective batch however the tokens are spread.
    n_local = float(sum(completion_tokens(b) for b in batches))
    n_tok_local = float(sum(int(b["attention_mask"].sum()) for b in batches))
    n_global, n_tok_global = all_reduce_sum([n_local, n_tok_local], d)
    loss_sum = 0.0
    for k, batch in enumerate(batches):
        # DDP and FSDP reduce gradients in backward; only the window's last micro-batch needs to.
        with gradient_sync(parts.wrapped, d, sync=k == len(batches) - 1), parts.autocast():
            loss = parts.wrapped(**batch)
            # DDP and FSDP average gradients over ranks; multiply back so the result is sum / n_global.
            (loss * d.world / max(n_global, 1.0)).backward()
        loss_sum += float(loss.detach())
    torch.nn.utils.clip_grad_norm_(parts.params, run.cfg.max_grad_norm)
    parts.optimizer.step()
    parts.scheduler.step()
    parts.optimizer.zero_grad(set_to_none=True)
    (loss_total,) = all_reduce_sum([loss_sum], d)
    return loss_total / max(n_global, 1.0), int(n_tok_global)


def _dev_loss(run: _Run) -> float | None:
    """Mean completion loss over the dev set (each rank scores a share), or None without a dev set."""
    import torch

    dev, d = run.data.dev, run.d
    if not dev:
        return None
    order = sorted(range(len(dev)), key=lambda i: len(dev[i].input_ids))
    batches = [order[i : i + run.cfg.batch_size] for i in range(0, len(order), run.cfg.batch_size)]
    total, count = 0.0, 0.0
    mine = batches[d.rank :: d.world]
    # Sharded weights are gathered by every rank together: each runs as many forwards as the busiest
    # (the short ones repeat their first batch and count nothing).
    rounds = -(-len(batches) // d.world) if is_sharded(run.parts.wrapped) else len(mine)
    run.parts.loss_mod.eval()
    with torch.no_grad(), run.parts.autocast():
        for r in range(rounds):
            b = mine[r] if r < len(mine) else batches[0]
            batch = collate([dev[i] for i in b], run.data.pad_id, d.device)
            loss = float(run.parts.loss_mod(**batch))
            if r < len(mine):
                total += loss
                count += float(completion_tokens(batch))
    run.parts.loss_mod.train()
    total, count = all_reduce_sum([total, count], d)
    return total / max(count, 1.0)


def _evaluate(
    run: _Run, state: LoopState, tally: _Tally, dev_callback: Callable[[Any], dict[str, float]] | None
) -> None:
    """Dev loss; keep the best adapter; count evaluations without improvement for early stopping."""
    dl = _dev_loss(run)
    if dl is None:
        return
    improved = state.best_loss is None or dl < state.best_loss
    if improved:
        state.best_loss, state.best_step, state.bad_evals = dl, state.step, 0
        whole = full_trainable_state(run.parts.model, run.d)  # under FSDP a collective
        if run.d.main:
            run.out.write_adapter("best", run.parts.model, whole)
    else:
        state.bad_evals += 1
    extra = dev_callback(run.parts.model) if (dev_callback and run.d.main) else {}
    record = {
        "event": "dev",
        "step": state.step,
        "dev_loss": dl,
        "best_dev_loss": state.best_loss,
        "improved": improved,
    }
    _log(run.log, record | extra)
    if run.cfg.early_stopping_patience and state.bad_evals >= run.cfg.early_stopping_patience:
        tally.stopped_early = True


def _checkpoint(run: _Run, state: LoopState, tally: _Tally) -> None:
    if not run.cfg.save_every:
        return
    rngs = gather_objects(rng_state(run.d.device), run.d)  # a collective: every rank takes part
    if run.d.main:
        p = run.parts
        payload = checkpoint_payload(
            state, state.elapsed_before + tally.wall(), p.model, p.optimizer, p.scheduler, rngs, run.cfg
        )
        run.out.write_checkpoint(state.step, lambda file: write_state(file, payload))


def _finish(run: _Run, state: LoopState, tally: _Tally) -> TrainResult:
    """The result adapter (best on dev if measured, else the last weights), the result, the end record."""
    elapsed = tally.wall()
    cpu = time.process_time() - tally.c0
    adapter_dir = run.out.adapter
    # rank 0's view, on every rank (another rank can get here before rank 0 has written best/)
    mine = float(run.d.main and state.best_step is not None and run.out.best.is_dir())
    keep_best = all_reduce_sum([mine], run.d)[0] > 0
    whole = None if keep_best else full_trainable_state(run.parts.model, run.d)  # under FSDP a collective
    if run.d.main:
        if keep_best:
            run.out.keep_best_as_adapter()
        else:
            run.out.write_adapter("adapter", run.parts.model, whole)
    result = TrainResult(
        adapter_dir=adapter_dir,
        steps=state.step,
        total_steps=run.plan.total_steps,
        best_step=state.best_step,
        best_dev_loss=state.best_loss,
        final_train_loss=tally.last_loss,
        stopped_early=tally.stopped_early,
        trained_tokens=state.tokens_done,
        tokens_per_s=tally.tokens_run / elapsed if elapsed > 0 else 0.0,
        elapsed_s=state.elapsed_before + elapsed,
        cpu_s=cpu,
        peak_memory_bytes=peak_memory(run.d.device),
        world_size=run.d.world,
        rank=run.d.rank,
        resumed_from=state.resumed_from,
        n_train=len(run.data.train),
        n_dev=len(run.data.dev),
        n_truncated=run.data.n_truncated,
        seen_lines=tuple(sorted(tally.seen)),
    )
    _log(run.log, {"event": "end", "step": state.step, **result.as_dict()})
    barrier(run.d)
    return result


def _log(log: MetricsLog | None, record: dict[str, Any]) -> None:
    if log is not None:  # rank 0 writes the log
        log.write(record)
