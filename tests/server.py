"""Fixture: a real llama.cpp OpenAI-compatible server serving the embedded GGUF on 127.0.0.1.

Imported by conftest.py. Started once per test session on a free port (tests/llamaserver.py, which the
served-evaluation benchmark uses too), stopped at the end. Tests that use it skip, with the reason, only
when `llama_cpp` (llama-cpp-python[server]) is not installed. `serve_gguf` starts further servers (a
LoRA adapter applied, say) the same way. A server that dies during a test fails that test with the
server's exit status and log, rather than leaving the client to retry a connection that cannot come back.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from llamaserver import Server, ServerError, start
from needs import unavailable


def require_llama_cpp() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        unavailable(
            "llama_cpp is not installed: `pip install 'llama-cpp-python[server]'` (make test does it)"
        )


@contextmanager
def serve_gguf(gguf: Path, alias: str, log: Path, *extra: str) -> Iterator[str]:
    """A llama.cpp server for `gguf` known as `alias` on a free loopback port, until the block ends.

    Yields its base URL (http://127.0.0.1:PORT/v1); `extra` are more server options (`--lora_path F`).
    A failed start, or the server's death inside the block, fails the test with the server log's tail."""
    with _serving(gguf, alias, log, *extra) as server:
        try:
            yield server.base_url
        finally:
            _fail_if_dead(server)


@contextmanager
def _serving(gguf: Path, alias: str, log: Path, *extra: str) -> Iterator[Server]:
    try:
        server = start(gguf, log, alias=alias, extra=extra)
    except ServerError as e:
        pytest.fail(str(e))
    try:
        yield server
    finally:
        server.stop()


def _fail_if_dead(server: Server) -> None:
    if not server.alive():
        pytest.fail(f"the llama.cpp server died during the test: {server.died()}")


@pytest.fixture(scope="session")
def _llama_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_llama_cpp()
    from advisor.backends.model import embedded_gguf_path

    log = Path(tmp_path_factory.mktemp("llama_server")) / "server.log"
    with _serving(embedded_gguf_path(), "smollm2", log) as server:
        yield server


@pytest.fixture
def llama_server(_llama_server_process: Server) -> Iterator[str]:
    """The session's server's base URL, e.g. http://127.0.0.1:PORT/v1; checked alive before and after
    each test that uses it."""
    _fail_if_dead(_llama_server_process)
    yield _llama_server_process.base_url
    _fail_if_dead(_llama_server_process)
