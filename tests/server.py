"""Fixture: a real llama.cpp OpenAI-compatible server serving the embedded GGUF on 127.0.0.1.

Imported by conftest.py. Started once per test session on a free port (tests/llamaserver.py, which the
served-evaluation benchmark uses too), stopped at the end. Tests that use it skip, with the reason, only
when `llama_cpp` (llama-cpp-python[server]) is not installed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from llamaserver import ServerError, start
from needs import unavailable


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server's base URL, e.g. http://127.0.0.1:PORT/v1."""
    if importlib.util.find_spec("llama_cpp") is None:
        unavailable(
            "llama_cpp is not installed: `pip install 'llama-cpp-python[server]'` (make test does it)"
        )
    from advisor.backends.model import embedded_gguf_path

    log = Path(tmp_path_factory.mktemp("llama_server")) / "server.log"
    try:
        server = start(embedded_gguf_path(), log)
    except ServerError as e:
        pytest.fail(str(e))
    try:
        yield server.base_url
    finally:
        server.stop()
