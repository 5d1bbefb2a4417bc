"""Missing test prerequisites: a skip on a developer's machine, a failure in CI.

CI installs everything (`make test`), so a missing package there is a broken set-up, never a reason to
pass quietly.
"""

from __future__ import annotations

import os

import pytest


def unavailable(why: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"cannot run in CI: {why}", pytrace=False)
    pytest.skip(why)
