"""Fixture: a real llama.cpp OpenAI-compatible server serving the embedded GGUF on 127.0.0.1.

Imported by conftest.py. Started once per test session on a free port, stopped at the end. Tests that
use it skip, with the reason, only when `llama_cpp` (llama-cpp-python[server]) is not installed.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from needs import unavailable

STARTUP_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server's base URL, e.g. http://127.0.0.1:PORT/v1."""
    if importlib.util.find_spec("llama_cpp") is None:
        unavailable(
            "llama_cpp is not installed: `pip install 'llama-cpp-python[server]'` (make test does it)"
        )
    from advisor.backends.model import embedded_gguf_path

    gguf = embedded_gguf_path()
    port = _free_port()
    log = Path(tmp_path_factory.mktemp("llama_server")) / "server.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf),
        "--model_alias", "smollm2",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", "2048",
        "--n_threads", "2",
        "--logits_all", "true",  # prompt-token log-probabilities for echo scoring
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
