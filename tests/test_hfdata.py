"""`datasets` as task data: a save_to_disk folder of real Rotten Tomatoes snippets with a ClassLabel
column, read with the class names as labels, by advise and by the training side alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from advisor.cli import main
from advisor.errors import ConfigError, DataError, ExitCode
from advisor.intake.data import detect_task, load_examples
from advisor.types import TaskKind

NAMES = ["negative", "positive"]  # ClassLabel index 0 and 1
LABEL_OF = {"rotten": "negative", "fresh": "positive"}


@pytest.fixture(scope="module")
def rt_rows() -> list[tuple[str, str]]:
    """600 real snippets (text, positive|negative): enough for an advise run's split."""
    from tiny import rotten_tomatoes_rows

    return [(" ".join(text.split()), LABEL_OF[label]) for _, text, label in rotten_tomatoes_rows(600, seed=1)]


def _table(rows: list[tuple[str, str]], extra: bool = False):
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    columns = {"text": [t for t, _ in rows], "label": [NAMES.index(label) for _, label in rows]}
    features = {"text": Value("string"), "label": ClassLabel(names=NAMES)}
    if extra:
        columns["tokens"] = [t.split()[:3] for t, _ in rows]
        features["tokens"] = Sequence(Value("string"))
    return Dataset.from_dict(columns, features=Features(features))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, rt_rows) -> Path:
    """A DatasetDict folder (train: 540 rows, test: 60) as `save_to_disk` writes it."""
    from datasets import DatasetDict

    folder = tmp_path_factory.mktemp("ds") / "rt"
    DatasetDict({"train": _table(rt_rows[:540], extra=True), "test": _table(rt_rows[540:])}).save_to_disk(
        str(folder)
    )
    return folder


def test_classlabel_integers_are_read_as_their_names(saved: Path, rt_rows) -> None:
    loaded = load_examples(saved)
    assert loaded.fmt == "datasets" and loaded.n_records == 540
    assert [(ex.messages[-1].content, ex.target) for ex in loaded.examples] == rt_rows[:540]
    assert detect_task(loaded.examples) == (TaskKind.CLASSIFY, ("negative", "positive"))
    test = load_examples(saved, split="test")
    assert [ex.target for ex in test.examples] == [label for _, label in rt_rows[540:]]
    assert test.sha256 != loaded.sha256 and load_examples(saved).sha256 == loaded.sha256


def test_a_single_saved_dataset_loads_too(tmp_path: Path, rt_rows) -> None:
    _table(rt_rows[:50]).save_to_disk(str(tmp_path / "one"))
    loaded = load_examples(tmp_path / "one")
    assert {ex.target for ex in loaded.examples} == {"negative", "positive"} and loaded.n_records == 50


@pytest.mark.parametrize(
    ("kwargs", "error", "says"),
    [
        ({"split": "validation"}, DataError, "split 'validation' not found; available splits: train, test"),
        (
            {"output_col": "stars"},
            DataError,
            "output column 'stars' not found; available columns: text, label",
        ),
        ({"input_col": "tokens"}, DataError, "column 'tokens' holds List values"),
        ({"fmt": "chat"}, ConfigError, "format 'chat' does not apply to a `datasets` dataset"),
    ],
)
def test_malformed_requests_name_the_dataset_split_and_column(saved: Path, kwargs, error, says) -> None:
    with pytest.raises(error) as info:
        load_examples(saved, **kwargs)
    text = str(info.value)
    assert says in text and str(saved) in text and "\n" not in text
    if "split" not in kwargs and error is DataError:
        assert f"{saved}[train]" in text  # the split read is named with the dataset


def test_advise_reads_the_folder_and_training_reads_it_back(
    tmp_path: Path, saved: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.examples import load_split_examples

    run = tmp_path / "run"
    rc = main(["advise", str(saved), "--no-model", "--json", "--out", str(run), "--eval-size", "100"])
    doc = json.loads(capsys.readouterr().out)
    assert rc in (ExitCode.PROMPT, ExitCode.FEW_SHOT, ExitCode.COLLECT_DATA, ExitCode.INCONCLUSIVE)
    assert doc["dataset"]["format"] == "datasets" and doc["dataset"]["labels"] == NAMES
    assert doc["dataset"]["n_examples"] == 540
    assert json.loads((run / "split.json").read_text())["data_path"] == str(saved.resolve())
    train, dev, _ = load_split_examples(run)  # the training side, through load_run_data's sha256 check
    assert {ex.target for ex in train + dev} == set(NAMES)

    rc = main(["advise", str(saved), "--no-model", "--split", "dev", "--out", str(tmp_path / "r2")])
    err = capsys.readouterr().err
    assert rc == ExitCode.BAD_INPUT and err.count("\n") == 1 and "split 'dev' not found" in err


def test_a_hub_dataset_id_offline_and_not_cached_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from datasets import config
    from huggingface_hub import constants

    monkeypatch.setattr(config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    rc = main(
        ["advise", "cornell-movie-review-data/rotten_tomatoes", "--no-model", "--out", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err
    assert rc == ExitCode.BAD_INPUT and err.count("\n") == 1 and "Traceback" not in err
    assert (
        "cornell-movie-review-data/rotten_tomatoes: no such file or folder, and no Hugging Face dataset"
        in err
    )
    assert "HF_HUB_OFFLINE" in err
    # A missing data *file* is still "no such file", never looked up on the Hub.
    assert main(["advise", str(tmp_path / "typo.jsonl"), "--no-model", "--out", str(tmp_path / "r")]) == 3
    assert "no such file" in capsys.readouterr().err


def _overwrite(path: Path, at: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[at : at + len(data)] = data
    path.write_bytes(bytes(raw))


ARROW_DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:100]),
    "not Arrow": lambda p: p.write_bytes(b"garbage\n"),
    "empty": lambda p: p.write_bytes(b""),
    "flatbuffers overwritten": lambda p: _overwrite(p, 200, b"\xff" * 40),  # was exit 8, unnamed
    "offsets overwritten": lambda p: _overwrite(p, p.stat().st_size // 2, b"\xff" * 40),  # was exit 70
}


@pytest.mark.parametrize("damage", ARROW_DAMAGE)
def test_a_damaged_arrow_file_is_exit_3_naming_it(damage, tmp_path: Path, rt_rows, capsys) -> None:
    folder = tmp_path / "ds"
    _table(rt_rows[:60]).save_to_disk(str(folder))
    (arrow,) = folder.glob("*.arrow")
    ARROW_DAMAGE[damage](arrow)
    rc = main(["advise", str(folder), "--no-model", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == ExitCode.BAD_INPUT, err
    assert arrow.name in err and "Traceback" not in err
