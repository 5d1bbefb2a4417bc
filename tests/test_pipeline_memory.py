"""Pre-flight memory estimate: arithmetic, and a clear refusal when it clearly does not fit."""

from __future__ import annotations

import pytest

from advisor.errors import ConfigError
from advisor.finetune.memory import GIB, MemoryEstimate, ModelShape, check_fits, estimate_memory

SMOLLM2 = ModelShape(
    n_params=134_515_008, hidden_size=576, intermediate_size=1536, n_layers=30, n_heads=9, vocab_size=49152
)


def test_estimate_scales_with_batch_and_precision() -> None:
    fp32 = estimate_memory(SMOLLM2, 4_884_480, batch_size=8, seq_len=256, weight_bytes=4, act_bytes=4)
    assert fp32.weights == 4 * SMOLLM2.n_params
    assert fp32.lora == 16 * 4_884_480
    double = estimate_memory(SMOLLM2, 4_884_480, batch_size=16, seq_len=256, weight_bytes=4, act_bytes=4)
    assert double.activations == 2 * fp32.activations and double.logits == 2 * fp32.logits
    q4 = estimate_memory(SMOLLM2, 4_884_480, batch_size=8, seq_len=256, weight_bytes=0.5, act_bytes=2)
    assert q4.total < fp32.total
    assert 0.5 * GIB < fp32.total < 8 * GIB  # a 135M model with batch 8x256 fits a laptop


def test_check_fits_refuses_with_numbers_and_knobs() -> None:
    est = MemoryEstimate(weights=2 * GIB, lora=0, activations=3 * GIB, logits=1 * GIB)
    check_fits(est, 7 * GIB, "cpu")
    with pytest.raises(ConfigError) as err:
        check_fits(est, 4 * GIB, "cuda:0")
    msg = str(err.value)
    assert "6.0 GiB" in msg and "4.0 GiB" in msg and "batch_size" in msg and "max_seq_len" in msg
