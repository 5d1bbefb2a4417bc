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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses the session's llama.cpp server is a `server` test, marked or not, so the fast tier
    (`make test-fast`: no real model, server, browser or torchrun) never starts one."""
    for item in items:
        if "llama_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.server)
