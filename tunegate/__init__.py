"""tunegate: should we fine-tune for this task, or is prompting enough? Measured evidence, then gated LoRA.

The public Python API, one import for both halves:

    import tunegate

    result = tunegate.advise(df)               # a path, a pandas DataFrame or a datasets Dataset
    result.verdict, result.arms, result.predictions
    tunegate.train("runs/x")                    # only on a fine_tune verdict (or force=True)
    tunegate.verify("runs/x", adapter="other/adapter")

`advise` is `advisor.api.advise`; `train` and `verify` are `pipeline.api`'s. Each is imported on its first
call, so `import tunegate` stays as light as `import advisor`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from advisor.version import __version__

if TYPE_CHECKING:
    from advisor.api import AdviseResult

__all__ = ["__version__", "advise", "train", "verify"]


def advise(
    data: str | os.PathLike[str] | Any,
    *,
    out: str | os.PathLike[str] | None = None,
    backend: Any = None,
    **settings: Any,
) -> AdviseResult:
    """Audit `data`, benchmark prompting on it, and return the verdict with its evidence.

    See `advisor.api.advise`."""
    from advisor import api

    return api.advise(data, out=out, backend=backend, **settings)


def train(run_dir: str | os.PathLike[str], **options: Any) -> AdviseResult:
    """Train, verify and decide again for the advise run in `run_dir`; refused unless its verdict is
    fine_tune (or `force=True`). See `pipeline.api.train`."""
    from pipeline import api

    return api.train(run_dir, **options)


def verify(run_dir: str | os.PathLike[str], **options: Any) -> AdviseResult:
    """Score a fine-tuned model against the run's best prompting arm, then decide again. See
    `pipeline.api.verify`."""
    from pipeline import api

    return api.verify(run_dir, **options)
