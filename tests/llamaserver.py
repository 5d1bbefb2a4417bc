"""Start and stop a real llama.cpp OpenAI-compatible server (llama-cpp-python's) on 127.0.0.1.

Plain Python, no pytest: the test fixture (tests/server.py) and the served-evaluation benchmark
(bench/served_eval.py) both start their server with `start`. The server holds one model and answers one
request at a time (llama-cpp-python's server takes a global lock per request and has no option for
parallel slots), so its slot count is 1.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

STARTUP_S = 120
SLOTS = 1  # requests the server computes at once (see the module docstring)


class ServerError(RuntimeError):
    """The server exited or did not answer in time; the message ends with its log's tail."""


@dataclass
class Server:
    base_url: str  # e.g. http://127.0.0.1:PORT/v1
    command: list[str]
    log: Path
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    gguf: Path,
    log: Path,
    *,
    threads: int = 2,
    n_ctx: int = 2048,
    alias: str = "smollm2",
    extra: Sequence[str] = (),
) -> Server:
    """Serve `gguf` on a free port, writing its output to `log`; returns once `/v1/models` answers.

    `extra`: more server options (`--lora_path ADAPTER.gguf`)."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf),
        "--model_alias", alias,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--n_threads", str(threads),
        "--n_threads_batch", str(threads),
        "--logits_all", "true",  # prompt-token log-probabilities for echo scoring
        *extra,
    ]  # fmt: skip
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}/v1", cmd, log, proc)
    deadline = time.monotonic() + STARTUP_S
    while True:
        if proc.poll() is not None:
            raise ServerError(f"llama.cpp server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{server.base_url}/models", timeout=2) as resp:
                if resp.status == 200:
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise ServerError(f"llama.cpp server not ready after {STARTUP_S} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
