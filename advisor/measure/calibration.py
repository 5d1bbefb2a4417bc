"""Label-bias correction on the label log-probabilities the harness already has (no new model calls
beyond a few content-free queries).

A small model prompted with a chat template often prefers one label whatever the input. Both
corrections divide the model's label probabilities by an estimate of that preference (its "prior"),
then take the argmax again:

- **contextual** (Zhao et al. 2021, "Calibrate Before Use", ICML): the prior is the mean label
  distribution over content-free inputs ("N/A", "", "[MASK]") rendered with the arm's own prompt;
- **batch** (Zhou et al. 2023, "Batch Calibration", ICLR 2024): the prior is the mean label distribution
  over a batch of real inputs. Here the batch is the dev split, never the eval items, so no eval input
  or label shapes the correction.

In log space: score(label) = log p(label | x) - log prior(label), with p normalised over the labels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from enum import StrEnum

CONTENT_FREE = ("N/A", "", "[MASK]")


class Variant(StrEnum):
    RAW = "raw"
    CONTEXTUAL = "contextual"
    BATCH = "batch"


def _normalised(logprobs: Mapping[str, float], labels: Sequence[str]) -> list[float]:
    """Log-softmax over the labels (each label's share of the probability the labels hold)."""
    values = [logprobs[lab] for lab in labels]
    top = max(values)
    log_z = top + math.log(sum(math.exp(v - top) for v in values))
    return [v - log_z for v in values]


def prior(rows: Sequence[Mapping[str, float]], labels: Sequence[str]) -> dict[str, float]:
    """log of the mean label distribution over `rows` (each a label -> log-prob mapping)."""
    if not rows:
        return dict.fromkeys(labels, 0.0)
    sums = [0.0] * len(labels)
    for row in rows:
        for i, lp in enumerate(_normalised(row, labels)):
            sums[i] += math.exp(lp)
    return {lab: math.log(max(s / len(rows), 1e-300)) for lab, s in zip(labels, sums, strict=True)}


def predict(logprobs: Mapping[str, float], offsets: Mapping[str, float] | None, labels: Sequence[str]) -> str:
    """The argmax label after subtracting `offsets` (None: the raw argmax); ties go to the first label."""
    scores = _normalised(logprobs, labels)
    if offsets is not None:
        scores = [s - offsets[lab] for s, lab in zip(scores, labels, strict=True)]
    best = max(range(len(labels)), key=lambda i: (scores[i], -i))
    return labels[best]
