"""tunegate's advisor: should we fine-tune for this task, or is prompting enough?

The Python API: `from advisor import advise; result = advise("data.jsonl")` (advisor/api.py; the result
type is `advisor.api.AdviseResult`); `import tunegate` offers it with `train` and `verify`. The recipe
`tunegate advise` runs is advisor/recipe.py. Nothing heavy is imported here, so `import advisor` and
`tunegate --help` stay instant.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from advisor.version import __version__

if TYPE_CHECKING:
    from advisor.api import AdviseResult

__all__ = ["__version__", "advise"]


def advise(
    data: str | os.PathLike[str] | Any,
    *,
    out: str | os.PathLike[str] | None = None,
    backend: Any = None,
    **settings: Any,
) -> AdviseResult:
    """Audit `data`, benchmark prompting on it, and return the verdict with its evidence.

    See `advisor.api.advise` (imported on the first call, so importing the package stays light).
    """
    from advisor import api

    return api.advise(data, out=out, backend=backend, **settings)
