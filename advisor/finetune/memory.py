"""Pre-flight memory estimate: will this model, method, sequence length and batch fit on the device?

The estimate is deliberately coarse (it is a refusal test, not a planner): frozen weights at their storage
width, LoRA weights with their gradients and two AdamW moments in fp32, activations kept for backward
for every layer, and the logits with their fp32 softmax. Training is refused only when the estimate is
above what the device has free.
"""

from __future__ import annotations

from dataclasses import dataclass

from advisor.errors import ConfigError

GIB = 1024**3


@dataclass(frozen=True)
class ModelShape:
    n_params: int
    hidden_size: int
    intermediate_size: int
    n_layers: int
    n_heads: int
    vocab_size: int


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    lora: int  # LoRA weights + gradients + AdamW moments
    activations: int
    logits: int

    @property
    def total(self) -> int:
        return self.weights + self.lora + self.activations + self.logits

    def as_dict(self) -> dict[str, int]:
        return {
            "weights": self.weights,
            "lora": self.lora,
            "activations": self.activations,
            "logits": self.logits,
            "total": self.total,
        }


def estimate_memory(
    shape: ModelShape, n_lora_params: int, batch_size: int, seq_len: int, weight_bytes: float, act_bytes: int
) -> MemoryEstimate:
    """Bytes needed for one training micro-batch. `weight_bytes` is 0.5 for 4-bit, 2 for bf16, 4 for fp32."""
    tokens = batch_size * seq_len
    # Per layer and token, backward keeps roughly: the attention block's inputs/outputs (q, k, v, o,
    # norms, residual: ~10 x hidden), the MLP's (gate, up, act, product: ~4 x intermediate), and the
    # attention probabilities (heads x seq_len) when the kernel materialises them.
    per_token_layer = 10 * shape.hidden_size + 4 * shape.intermediate_size + shape.n_heads * seq_len
    activations = shape.n_layers * tokens * per_token_layer * act_bytes
    # Logits in the compute dtype, their fp32 log-softmax, and its gradient.
    logits = tokens * shape.vocab_size * (act_bytes + 4 + 4)
    lora = n_lora_params * 4 * 4  # weight, grad, exp_avg, exp_avg_sq
    return MemoryEstimate(int(shape.n_params * weight_bytes), lora, int(activations), int(logits))


def available_memory(device: str) -> int:
    """Free bytes on `device` ("cuda[:n]" or "cpu")."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        import os

        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def check_fits(estimate: MemoryEstimate, available: int, device: str) -> None:
    """ConfigError naming the numbers and the knobs when the estimate is above the free memory."""
    if estimate.total <= available:
        return
    raise ConfigError(
        f"training needs about {estimate.total / GIB:.1f} GiB on {device} "
        f"(weights {estimate.weights / GIB:.1f}, activations {estimate.activations / GIB:.1f}, "
        f"logits {estimate.logits / GIB:.1f}) but only {available / GIB:.1f} GiB is free; "
        "lower batch_size (raise grad_accum to keep the effective batch) or max_seq_len, "
        "or use qlora=true on a GPU",
        field="batch_size",
    )
