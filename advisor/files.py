"""Atomic file writes: a temp file in the same folder, fsync, then os.replace.

A reader (or a run killed midway) sees the old file or the new one, never half of one. Every output
of tunegate goes through here.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, compact: bool = False) -> Path:
    """JSON (strict: NaN is refused) written atomically; indented unless `compact`."""
    if compact:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    else:
        text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False, default=str)
    return write_text_atomic(path, text + "\n")
