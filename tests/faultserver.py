"""A small OpenAI-compatible server on 127.0.0.1 that breaks its answers on purpose (fault-injection tier).

It serves `/v1/models`, `/v1/chat/completions` (with `logprobs`/`top_logprobs`) and `/v1/completions`
(with `echo` + `logprobs`) well enough for tunegate's `openai` backend, deterministically: the same
request body always gets the same answer. `plan` sets the fault of each coming POST; after the plan
runs out, `mode` answers. Every answered POST is counted per distinct (path, body), with the time its
answer was fully written, so a test can tell a repeated call from a new one.

Modes: ok, 429 (with Retry-After), 500, hang, bad_json, html, truncated, wrong_shape, no_logprobs, huge,
and for probes: raw (any status, headers and bytes), stall_body (half an answer, then silence),
chunked_huge (an endless chunked body with no length), trickle (a byte every 0.2 s), trickle_headers (the
status line and headers a byte every `trickle_s`, slowloris-style), redirect (`redirect`: a status and a
Location), close (the connection closed unanswered). `get_mode` applies the modes that make sense for GET
/v1/models as well (raw, redirect, hang, trickle_headers); `model_names` are the models it lists.
Whatever the mode, a POST carrying a parameter listed in `refuse` is answered HTTP 400 with the error
OpenAI gives its reasoning models (the first such parameter, in the order listed). `jitter_s` delays each
answer by a fraction of it fixed by the request body, so answers finish out of order; `peak` is the most
POSTs ever in flight at once.
The real llama.cpp server (tests/server.py) stays the feature test; this one is for faults.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

MODEL = "fault-model"
VOCAB = ("positive", "negative", "pos", "neg", "yes", "no", "spam", "ham", "The", "A", "I", " ")
MODES = (
    "ok",
    "429",
    "500",
    "hang",
    "bad_json",
    "html",
    "truncated",
    "wrong_shape",
    "no_logprobs",
    "huge",
    "raw",
    "stall_body",
    "chunked_huge",
    "close",
    "trickle_headers",
    "redirect",
)


@dataclass
class Answered:
    path: str
    key: str  # sha256 of the path and the canonical JSON body
    mode: str
    finished: float  # time.monotonic() when the answer was fully written


@dataclass
class FaultState:
    mode: str = "ok"
    plan: list[str] = field(default_factory=list)  # modes for the next POSTs, in order
    retry_after: str = "2"
    delay_s: float = 0.0  # added before every answer (makes a run last long enough to be killed)
    jitter_s: float = 0.0  # up to this much more, fixed by the request body
    refuse: tuple[str, ...] = ()  # parameters answered with OpenAI's "unsupported" HTTP 400
    in_flight: int = 0
    peak: int = 0
    huge_bytes: int = 64 * 1024 * 1024
    hang_s: float = 30.0
    wrong_shape: Any = None  # the JSON answered in mode wrong_shape
    raw: tuple[int, dict[str, str], bytes] = (200, {}, b"")  # status, headers, body in mode raw
    trickle_s: float = 0.5  # mode trickle_headers: seconds between bytes
    redirect: tuple[int, str] = (302, "/")  # mode redirect: status, Location
    get_mode: str = "ok"  # how GET /v1/models is answered
    model_names: tuple[str, ...] = (MODEL,)
    answered: list[Answered] = field(default_factory=list)
    received: list[tuple[float, str, str]] = field(default_factory=list)  # (time, path, mode)
    bodies: list[dict[str, Any]] = field(default_factory=list)  # every POST's body, in order
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def next_mode(self) -> str:
        with self.lock:
            return self.plan.pop(0) if self.plan else self.mode

    def counts(self, since: float = 0.0) -> dict[str, int]:
        """Answers per distinct request body (answers finished at or after `since`)."""
        out: dict[str, int] = {}
        with self.lock:
            for a in self.answered:
                if a.finished >= since:
                    out[a.key] = out.get(a.key, 0) + 1
        return out

    def reset(self) -> None:
        with self.lock:
            self.mode, self.plan, self.answered, self.received, self.bodies = "ok", [], [], [], []
            self.delay_s, self.retry_after, self.wrong_shape = 0.0, "2", None
            self.get_mode, self.model_names, self.trickle_s = "ok", (MODEL,), 0.5
            self.jitter_s, self.refuse, self.in_flight, self.peak = 0.0, (), 0, 0


def _seed(key: str) -> int:
    return int(key[:8], 16)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_answer(body: dict[str, Any], key: str, logprobs: bool) -> dict[str, Any]:
    seed = _seed(key)
    text = VOCAB[seed % 2]
    prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
    choice: dict[str, Any] = {
        "index": 0,
        "finish_reason": "stop",
        "message": {"role": "assistant", "content": text},
        "logprobs": None,
    }
    if logprobs and body.get("logprobs"):
        top = [
            {"token": tok, "logprob": -0.1 - ((seed >> i) % 97) / 10.0, "bytes": None}
            for i, tok in enumerate(VOCAB[: int(body.get("top_logprobs") or 1)])
        ]
        top.sort(key=lambda t: -t["logprob"])
        choice["logprobs"] = {"content": [{**top[0], "top_logprobs": top}]}
        choice["message"]["content"] = top[0]["token"]
    return {
        "id": f"chatcmpl-{key[:12]}",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [choice],
        "usage": _usage(prompt_chars // 4 + 1, 1),
    }


def completion_answer(body: dict[str, Any], key: str) -> dict[str, Any]:
    prompt = str(body.get("prompt", ""))
    tokens = [prompt[i : i + 3] for i in range(0, len(prompt), 3)] + ["."]
    lps: list[float | None] = [None] + [-0.5 - (_seed(key) >> (i % 24)) % 5 for i in range(1, len(tokens))]
    return {
        "id": f"cmpl-{key[:12]}",
        "object": "text_completion",
        "created": 0,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "text": prompt + ".",
                "logprobs": {
                    "tokens": tokens,
                    "token_logprobs": lps,
                    "top_logprobs": None,
                    "text_offset": [],
                },
            }
        ],
        "usage": _usage(len(tokens) - 1, 1),
    }


def refusal(param: str) -> dict[str, Any]:
    """OpenAI's answer (HTTP 400) to a parameter the model does not support, as its API sends it."""
    if param == "max_tokens":
        message = (
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead."
        )
        code = "unsupported_parameter"
    elif param == "temperature":
        message = (
            "Unsupported value: 'temperature' does not support 0 with this model. "
            "Only the default (1) value is supported."
        )
        code = "unsupported_value"
    else:
        message = f"Unsupported parameter: '{param}' is not supported with this model."
        code = "unsupported_parameter"
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def make_handler(state: FaultState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, raw: bytes, ctype: str = "application/json", **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(raw)))
            for k, v in headers.items():
                self.send_header(k.replace("_", "-"), v)
            self.end_headers()
            self.wfile.write(raw)
            self.wfile.flush()

        def do_GET(self) -> None:  # noqa: N802
            if state.get_mode != "ok" and not self._fault(state.get_mode, {}, "0" * 64):
                return
            if urlsplit(self.path).path.rstrip("/").endswith("/models"):  # a base URL may carry a query
                doc = {
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "t"} for m in state.model_names
                    ],
                }
                self._send(200, json.dumps(doc).encode())
            else:
                self._send(404, b'{"error": {"message": "not found"}}')

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, b'{"error": {"message": "bad request"}}')
                return
            key = hashlib.sha256(
                self.path.encode() + b"\0" + json.dumps(body, sort_keys=True).encode()
            ).hexdigest()
            mode = state.next_mode()
            with state.lock:
                state.received.append((time.monotonic(), self.path, mode))
                state.bodies.append(body)
                state.in_flight += 1
                state.peak = max(state.peak, state.in_flight)
            try:
                self._answer(mode, body, key)
            finally:
                with state.lock:
                    state.in_flight -= 1

        def _answer(self, mode: str, body: dict[str, Any], key: str) -> None:
            if state.delay_s or state.jitter_s:
                time.sleep(state.delay_s + state.jitter_s * (_seed(key) % 8) / 7)
            refused = [p for p in state.refuse if p in body]
            if refused:
                self._send(400, json.dumps(refusal(refused[0])).encode())
                return
            if not self._fault(mode, body, key):
                return
            route = urlsplit(self.path).path
            if route.endswith("/chat/completions"):
                doc = chat_answer(body, key, logprobs=mode != "no_logprobs")
            elif route.endswith("/completions"):
                if mode == "no_logprobs":
                    self._send(400, b'{"error": {"message": "echo is not supported"}}')
                    return
                doc = completion_answer(body, key)
            else:
                self._send(404, b'{"error": {"message": "not found"}}')
                return
            self._send(200, json.dumps(doc).encode())
            with state.lock:
                state.answered.append(Answered(self.path, key, mode, time.monotonic()))

        def _fault(self, mode: str, body: dict[str, Any], key: str) -> bool:
            """Answer with the fault of `mode`; True when the normal answer should follow."""
            if mode in ("ok", "no_logprobs"):
                return True
            if mode == "429":
                self._send(429, b'{"error": {"message": "slow down"}}', Retry_After=state.retry_after)
            elif mode == "500":
                self._send(500, b'{"error": {"message": "internal error"}}')
            elif mode == "hang":
                state.stop.wait(state.hang_s)
                self.close_connection = True
            elif mode == "bad_json":
                self._send(200, b'{"id": "x", "choices": [{"message": {"content": "pos')
            elif mode == "html":
                self._send(200, b"<html><body>502 Bad Gateway</body></html>", ctype="text/html")
            elif mode == "truncated":
                full = json.dumps(chat_answer(body, key, logprobs=True)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(full)))
                self.end_headers()
                self.wfile.write(full[: len(full) // 2])
                self.wfile.flush()
                self.close_connection = True
            elif mode == "wrong_shape":
                self._send(200, json.dumps(state.wrong_shape or {"choices": "none"}).encode())
            elif mode == "huge":
                text = "x" * state.huge_bytes
                doc = chat_answer(body, key, logprobs=False)
                doc["choices"][0]["message"]["content"] = text
                self._send(200, json.dumps(doc).encode())
            elif mode == "raw":
                status, headers, raw = state.raw
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
                self.wfile.flush()
            elif mode == "stall_body":
                full = json.dumps(chat_answer(body, key, logprobs=True)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(full)))
                self.end_headers()
                self.wfile.write(full[: len(full) // 2])
                self.wfile.flush()
                state.stop.wait(state.hang_s)
                self.close_connection = True
            elif mode == "chunked_huge":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                piece = b'{"choices": [{"message": {"content": "' + b"x" * 65536
                try:
                    for _ in range(state.huge_bytes // len(piece) + 1):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        piece = b"x" * 65536
                except OSError:
                    pass  # the client hung up: expected
                self.close_connection = True
            elif mode == "trickle":
                full = json.dumps(chat_answer(body, key, logprobs=True)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(full)))
                self.end_headers()
                try:
                    for byte in full:
                        if state.stop.wait(0.2):
                            break
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                except OSError:
                    pass
                self.close_connection = True
            elif mode == "trickle_headers":
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"X-Slow: " + b"z" * 400
                try:
                    for byte in head:
                        if state.stop.wait(state.trickle_s):
                            break
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                except OSError:
                    pass  # the client gave up: expected
                self.close_connection = True
            elif mode == "redirect":
                status, location = state.redirect
                self._send(status, b"", Location=location)
            elif mode == "close":
                self.close_connection = True
            else:
                raise AssertionError(f"unknown mode {mode}")
            return False

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up on a huge or hanging answer is part of the test


@contextlib.contextmanager
def serving(host: str = "127.0.0.1") -> Iterator[tuple[str, FaultState]]:
    """A fault server on a free port of `host` (127.0.0.1, or another loopback address for a second origin):
    (base URL ending in /v1, the server's state)."""
    state = FaultState()
    server = _Server((host, 0), make_handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/v1", state
    finally:
        state.stop.set()  # releases hanging handlers
        server.shutdown()
        server.server_close()


@pytest.fixture
def fault_server() -> Iterator[tuple[str, FaultState]]:
    """(base URL ending in /v1, the server's state), on a free port of 127.0.0.1."""
    with serving() as served:
        yield served
