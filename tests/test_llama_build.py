"""The llama.cpp server the suite starts runs on every x86-64 CPU these machines may have.

llama.cpp's default build compiles for the build machine's CPU. On a CPU that reports AMX (and AVX-512),
that server answered /v1/models and then died on its first completion (a general protection fault at the
AMX instruction `ldtilecfg`), failing every server test on such machines while CI passed elsewhere.
scripts/bootstrap.sh builds it portable (GGML_NATIVE=OFF). These tests read the installed CPU library's
machine code, so they hold on any build machine, whether or not its CPU has AMX.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from needs import unavailable

pytestmark = pytest.mark.server

# AMX tile instructions, and any use of the 512-bit zmm registers (AVX-512).
FORBIDDEN = re.compile(
    r"\b(ldtilecfg|sttilecfg|tileloadd\w*|tilestored|tdpb\w+|tilezero|tilerelease)\b|%zmm\d+"
)


def _cpu_libraries() -> list[Path]:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        unavailable("llama_cpp is not installed: `make test` installs it")
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    found = sorted(p for p in lib.glob("libggml*.so*") if p.is_file())
    if not found:
        pytest.fail(f"no ggml library under {lib}")
    return found


def test_installed_server_has_no_amx_or_avx512_code() -> None:
    objdump = shutil.which("objdump")
    if objdump is None:
        unavailable("objdump (binutils) is not installed")
    libs = _cpu_libraries()
    assert any("cpu" in p.name for p in libs), f"no CPU backend among {[p.name for p in libs]}"
    for lib in libs:
        asm = subprocess.run(
            [objdump, "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True, check=True
        ).stdout
        assert len(asm) > 10_000, f"objdump read nothing from {lib}"
        hits = sorted({m.group(0) for m in FORBIDDEN.finditer(asm)})
        assert not hits, f"{lib.name} holds instructions some CPUs here cannot run: {hits[:10]}"


def test_server_build_flags_recorded() -> None:
    """bootstrap.sh records the flags it built with; a venv whose server was built otherwise is rebuilt."""
    import sys

    mark = Path(sys.prefix) / "share" / "llama.cpp" / "server-build-flags"
    if not mark.is_file():
        unavailable(f"{mark} is missing: run `make test` (scripts/bootstrap.sh test)")
    assert "-DGGML_NATIVE=OFF" in mark.read_text().split()


def test_server_computes_a_completion(llama_server: str) -> None:
    """The session's server completed one request at start-up (tests/llamaserver.py) and still answers."""
    from openai import OpenAI

    client = OpenAI(base_url=llama_server, api_key="unused", max_retries=0, timeout=120)
    out = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=3)
    assert out.choices and isinstance(out.choices[0].text, str) and out.choices[0].text.strip()


def test_a_server_that_dies_fails_the_test_with_its_log(tmp_path: Path) -> None:
    """A server killed mid-test (here by SIGSEGV, as the AMX fault did) fails with its status and log."""
    import signal

    from server import _fail_if_dead, _serving

    from advisor.backends.model import embedded_gguf_path

    _cpu_libraries()  # skips (or fails in CI) without llama_cpp
    with _serving(embedded_gguf_path(), "smollm2", tmp_path / "server.log") as server:
        server.proc.send_signal(signal.SIGSEGV)
        server.proc.wait(timeout=30)
        with pytest.raises(pytest.fail.Exception) as failed:
            _fail_if_dead(server)
    message = str(failed.value)
    assert "SIGSEGV" in message and "died during the test" in message
    assert "llama" in message.lower()  # the log's tail is in the message
