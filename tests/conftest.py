"""Shared fixtures. Keep them small and generic; append yours."""

from __future__ import annotations

import pytest
from tiny import rotten_tomatoes_rows


@pytest.fixture(scope="session")
def rt_snippets() -> list[tuple[str, str]]:
    """40 real Rotten Tomatoes critic snippets as (text, fresh|rotten), whitespace collapsed, seeded."""
    return [(" ".join(text.split()), label) for _, text, label in rotten_tomatoes_rows(40, seed=0)]


from faultserver import fault_server  # noqa: E402, F401  (a fault-injecting server, tests/faultserver.py)
from server import _llama_server_process, llama_server  # noqa: E402, F401  (a real llama.cpp server, tests/server.py)
