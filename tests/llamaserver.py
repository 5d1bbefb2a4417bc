"""Start and stop a real llama.cpp OpenAI-compatible server (llama-cpp-python's) on 127.0.0.1.

Plain Python, no pytest: the test fixture (tests/server.py) and the served-evaluation benchmark
(bench/served_eval.py) both start their server with `start`. The server holds one model and answers one
request at a time (llama-cpp-python's server takes a global lock per request and has no option for
parallel slots), so its slot count is 1.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

STARTUP_S = 120
FIRST_COMPLETION_S = 120  # the first completion loads the model's weights into the compute buffers
SLOTS = 1  # requests the server computes at once (see the module docstring)


class ServerError(RuntimeError):
    """The server exited or did not answer in time; the message ends with its log's tail."""


@dataclass
class Server:
    base_url: str  # e.g. http://127.0.0.1:PORT/v1
    command: list[str]
    log: Path
    proc: subprocess.Popen[bytes]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        return _tail(self.log, chars)

    def died(self) -> ServerError:
        """The error for a server that exited: its exit status and its log's tail."""
        return ServerError(
            f"llama.cpp server exited with {self.proc.returncode}{_signal_hint(self.proc.returncode)}:\n"
            f"{self.log_tail()}"
        )

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
    """Serve `gguf` on a free port, writing its output to `log`; returns once `/v1/models` answers and
    the server has computed one completion (ServerError with the log's tail otherwise).

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
    while not _answers_models(server):
        if not server.alive():
            raise server.died()
        if time.monotonic() > deadline:
            server.stop()
            raise ServerError(f"llama.cpp server not ready after {STARTUP_S} s:\n{server.log_tail()}")
        time.sleep(0.5)
    _complete_once(server, alias)
    return server


def _answers_models(server: Server) -> bool:
    try:
        with urllib.request.urlopen(f"{server.base_url}/models", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _complete_once(server: Server, alias: str) -> None:
    """One real completion before anyone relies on the server.

    A server that answers /v1/models can still die on its first completion (a llama.cpp built for CPU
    features the process may not use, such as AMX tiles): the suite should fail here, once, with the
    server's log, instead of in every test with retried connection errors."""
    body = json.dumps({"model": alias, "prompt": "Hello", "max_tokens": 1, "temperature": 0}).encode()
    req = urllib.request.Request(
        f"{server.base_url}/completions", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=FIRST_COMPLETION_S) as resp:
            answer = json.loads(resp.read())
    except (OSError, ValueError) as exc:
        time.sleep(0.5)  # let a crashing server finish exiting, so its status and log are complete
        failure = server.died() if not server.alive() else None
        server.stop()
        raise failure or ServerError(
            f"llama.cpp server did not complete a first request ({exc}):\n{server.log_tail()}"
        ) from None
    if not answer.get("choices"):
        server.stop()
        raise ServerError(f"llama.cpp server answered a completion without choices: {answer!r:.300}")


def _tail(log: Path, chars: int) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"(no log: {exc.strerror})"


def _signal_hint(returncode: int | None) -> str:
    """Why a server killed by a signal died: SIGSEGV/SIGILL usually mean CPU instructions it may not run."""
    if returncode is not None and returncode < 0:
        import signal

        name = signal.Signals(-returncode).name
        if name in ("SIGSEGV", "SIGILL", "SIGBUS"):
            return (
                f" ({name}: a llama.cpp built for other CPU features? scripts/bootstrap.sh builds it "
                "portable; see dmesg)"
            )
        return f" ({name})"
    return ""
