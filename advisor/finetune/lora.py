"""The model being trained: the base model with LoRA adapters, a memory pre-flight, and the completion loss.

The loss module projects the backbone's hidden states through the output layer only at positions whose
next token is a completion token; for classification targets of 2-3 tokens that skips almost all of the
vocabulary matmul and the large logits tensor.
"""

from __future__ import annotations

import importlib.util
import resource
from pathlib import Path
from typing import Any

from advisor.errors import ConfigError
from advisor.finetune import memory
from advisor.finetune.batches import IGNORE
from advisor.finetune.config import TrainConfig


def check_qlora(cfg: TrainConfig) -> None:
    """QLoRA needs CUDA and bitsandbytes; say so before anything is loaded."""
    if not cfg.qlora:
        return
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


def use_bf16(cfg: TrainConfig, device: str) -> bool:
    import torch

    if cfg.bf16 == "auto":
        return device.startswith("cuda") and torch.cuda.is_bf16_supported()
    return bool(cfg.bf16)


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

    mcfg = AutoConfig.from_pretrained(model_dir)
    text = getattr(mcfg, "text_config", None) or mcfg
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(mcfg)
        n_params = sum(p.numel() for p in meta.parameters())
        peft_meta = get_peft_model(meta, lora_config(cfg))
        n_lora = sum(p.numel() for p in peft_meta.parameters() if p.requires_grad)
    shape = memory.ModelShape(
        n_params=n_params,
        hidden_size=text.hidden_size,
        intermediate_size=getattr(text, "intermediate_size", 4 * text.hidden_size),
        n_layers=text.num_hidden_layers,
        n_heads=text.num_attention_heads,
        vocab_size=text.vocab_size,
    )
    bf16 = use_bf16(cfg, device)
    weight_bytes = 0.5 if cfg.qlora else (2 if bf16 else 4)
    est = memory.estimate_memory(shape, n_lora, cfg.batch_size, seq_len, weight_bytes, 2 if bf16 else 4)
    memory.check_fits(est, memory.available_memory(device), device)
    return {**est.as_dict(), "n_params": n_params, "n_lora_params": n_lora}


def load_model(model_dir: str | Path, cfg: TrainConfig, device: str) -> Any:
    """The base model (fp32, bf16, or 4-bit for QLoRA) with fresh LoRA adapters, seeded."""
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if use_bf16(cfg, device) else torch.float32}
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


def completion_loss(model: Any) -> Any:
    """Wrap a (peft) causal LM so forward returns the summed completion loss: what DDP should wrap."""
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


def peak_memory(device: str) -> int:
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated(torch.device(device)))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB
