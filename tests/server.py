"""Fixture: a real llama.cpp OpenAI-compatible server serving the embedded GGUF on 127.0.0.1.

Imported by conftest.py. Started once per test session on a free port, stopped at the end. Tests that
use it skip, with the reason, only when `llama_cpp` (llama-cpp-python[server]) is not installed.
`serve_gguf` starts further servers (a LoRA adapter applied, say) the same way.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from needs import unavailable

STARTUP_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_llama_cpp() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        unavailable(
            "llama_cpp is not installed: `pip install 'llama-cpp-python[server]'` (make test does it)"
        )


@contextmanager
def serve_gguf(gguf: Path, alias: str, log: Path, *extra: str) -> Iterator[str]:
    """A llama.cpp server for `gguf` known as `alias` on a free loopback port, until the block ends.

    Yields its base URL (http://127.0.0.1:PORT/v1); `extra` are more server options (`--lora_path F`).
    Its output goes to `log`, whose tail a failed start shows."""
    port = _free_port()
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf),
        "--model_alias", alias,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", "2048",
        "--n_threads", "2",
        "--logits_all", "true",  # prompt-token log-probabilities for echo scoring
        *extra,
    ]  # fmt: skip
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama.cpp server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama.cpp server not ready after {STARTUP_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server's base URL, e.g. http://127.0.0.1:PORT/v1."""
    require_llama_cpp()
    from advisor.backends.model import embedded_gguf_path

    log = Path(tmp_path_factory.mktemp("llama_server")) / "server.log"
    with serve_gguf(embedded_gguf_path(), "smollm2", log) as base_url:
        yield base_url
