"""What a checkpoint holds, and how a resumed run is restored from one.

A checkpoint (`checkpoints/step-NNNNNNN/state.pt`, laid out and swapped into place by
`advisor.rundir.TrainDir`) holds the trainable weights, the optimizer and
scheduler state, every rank's RNG state and the loop's counters: enough to continue bit for bit. It holds
only tensors and plain containers, and is read back with torch's weights-only unpickler, so a planted or
damaged `state.pt` is refused instead of executed.
"""

from __future__ import annotations

import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor.errors import ConfigError, DataError, Problem
from advisor.finetune.config import TrainConfig
from advisor.finetune.distributed import Dist
from advisor.rundir import TrainDir

STATE_KEYS = (
    "step",
    "trainable",
    "optimizer",
    "scheduler",
    "rng",
    "best_dev_loss",
    "best_step",
    "bad_evals",
    "trained_tokens",
    "elapsed_s",
    "config",
    "world_size",
)


@dataclass
class LoopState:
    """The loop's counters: what a checkpoint carries besides weights, optimizer, scheduler and RNG."""

    step: int = 0
    best_loss: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    tokens_done: int = 0
    elapsed_before: float = 0.0  # training seconds before this process started (a resumed run)
    resumed_from: int | None = None


# ---------------------------------------------------------------- checkpoints


def write_state(file: Path, payload: dict[str, Any]) -> None:
    """A checkpoint's state file (the run folder's `TrainDir.write_checkpoint` hands the path)."""
    import torch

    torch.save(payload, file)


def checkpoint_payload(
    state: LoopState,
    elapsed_s: float,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    rngs: list[dict[str, Any]],
    cfg: TrainConfig,
) -> dict[str, Any]:
    """What `state.pt` holds: tensors, numbers, strings, lists, tuples and dicts only. `rngs`: every
    rank's RNG state, in rank order."""
    return {
        "step": state.step,
        "trainable": {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rngs,
        "best_dev_loss": state.best_loss,
        "best_step": state.best_step,
        "bad_evals": state.bad_evals,
        "trained_tokens": state.tokens_done,
        "elapsed_s": elapsed_s,
        "config": cfg.to_dict(),
        "world_size": len(rngs),
    }


def load_checkpoint(ckpt: Path) -> dict[str, Any]:
    """`state.pt` read with the weights-only unpickler: tensors and plain data, never code.

    Anything else in the file (a pickled object, which could run code when loaded) is refused, as is a
    file torch cannot read or one without the fields a checkpoint has.
    """
    import torch

    path = TrainDir.checkpoint_state(ckpt)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DataError(
            "refusing to resume: the checkpoint holds objects other than tensors and plain data, which are "
            "never loaded (it was not written by tunegate); remove it, or start again without --resume",
            file=str(path),
        ) from exc
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise DataError(
            f"cannot read the checkpoint ({type(exc).__name__}); start again without --resume", file=str(path)
        ) from exc
    missing = [k for k in STATE_KEYS if k not in state] if isinstance(state, dict) else list(STATE_KEYS)
    if missing:
        raise DataError(f"not a tunegate checkpoint: no {', '.join(missing)}", file=str(path))
    return state


def check_resumable(state: dict[str, Any], cfg: TrainConfig, d: Dist, ckpt: Path) -> None:
    """A checkpoint continues only the run that wrote it: same settings, same number of processes."""
    if state["world_size"] != d.world:
        raise ConfigError(
            f"the checkpoint was written by {state['world_size']} process(es); resume with the same number "
            f"(this run has {d.world})",
            file=str(ckpt),
        )
    now, then = cfg.to_dict(), state["config"]
    if not isinstance(then, dict):
        raise DataError(
            "not a tunegate checkpoint: its config is not a table",
            file=str(TrainDir.checkpoint_state(ckpt)),
        )
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


def restore_checkpoint(
    ckpt: Path, model: Any, optimizer: Any, scheduler: Any, cfg: TrainConfig, d: Dist
) -> LoopState:
    """Load `ckpt` into the model, optimizer, scheduler and this rank's RNG; the loop's counters."""
    state = load_checkpoint(ckpt)
    check_resumable(state, cfg, d, ckpt)
    try:
        _load_trainable(model, state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"][d.rank], d.device)
        return LoopState(
            step=int(state["step"]),
            best_loss=state["best_dev_loss"],
            best_step=state["best_step"],
            bad_evals=int(state["bad_evals"]),
            tokens_done=int(state["trained_tokens"]),
            elapsed_before=float(state["elapsed_s"]),
            resumed_from=int(state["step"]),
        )
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        raise DataError(
            f"the checkpoint does not fit this model and optimizer ({type(exc).__name__}: {exc})",
            file=str(TrainDir.checkpoint_state(ckpt)),
        ) from exc


def _load_trainable(model: Any, state: dict[str, Any]) -> None:
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def rng_state(device: str) -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def set_rng_state(state: dict[str, Any], device: str) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and device.startswith("cuda"):
        torch.cuda.set_rng_state(state["cuda"], torch.device(device))
