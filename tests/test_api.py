"""The Python API (`from advisor import advise`): the CLI's recipe, a typed report, DataFrames, and no
files in the current directory unless a run folder is given."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeBackend

from advisor.demo import write_demo_data
from advisor.document import Report
from advisor.errors import ConfigError, DataError, ExitCode

REPO = Path(__file__).resolve().parents[1]
KEYWORDS = {"positive": {"good", "great", "fun"}, "negative": {"bad", "dull", "boring"}}
SMALL = {"eval_size": 40, "dev_size": 20, "k_ladder": (1, 2), "latency_samples": 2}


@pytest.fixture()
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TUNEGATE_CACHE_DIR", str(tmp_path / "cache"))
    return cwd


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[Path]]:
    """One API run with the fake model (the recipe's confidence resampling takes most of a minute),
    from an empty current directory; returns the result and what that directory held afterwards."""
    from advisor import advise

    tmp = tmp_path_factory.mktemp("api")
    data = write_demo_data(str(tmp / "data"), n=600)
    (tmp / "cwd").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp / "cwd")
        mp.setenv("TUNEGATE_CACHE_DIR", str(tmp / "cache"))
        result = advise(data, backend=FakeBackend(KEYWORDS), **SMALL)
        return result, list((tmp / "cwd").iterdir())


def test_advise_returns_the_report_arms_and_predictions_and_writes_nothing_here(measured) -> None:
    result, left_in_cwd = measured
    assert isinstance(result.report, Report)
    assert result.verdict == result.report.decision.verdict.value
    assert result.run_dir is None
    assert left_in_cwd == []  # a temporary run folder, deleted
    prompting = result.report.prompting
    assert prompting is not None
    arms = result.arms.set_index("name")
    assert list(arms.index) == [a.name for a in prompting.arms]
    for arm in prompting.arms:
        assert arms.loc[arm.name, "accuracy"] == pytest.approx(arm.scores["accuracy"].value)
        assert arms.loc[arm.name, "accuracy_low"] <= arms.loc[arm.name, "accuracy_high"]
    assert arms["best"].sum() == (prompting.plateau.best_arm is not None)
    # One prediction per arm and eval item, and each arm's accuracy is the mean of its `correct` column.
    preds = result.predictions
    assert len(preds) == len(prompting.arms) * prompting.n_eval
    by_arm = preds.groupby("arm")["correct"].mean()
    for arm in prompting.arms:
        if arm.variant == "raw":
            assert by_arm[arm.name] == pytest.approx(arm.scores["accuracy"].value)
    assert set(preds["target"]) == {"positive", "negative"}


def test_with_a_run_folder_the_api_writes_what_the_cli_writes(
    tmp_path: Path, empty_cwd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from advisor import advise
    from advisor.cli import main

    data = write_demo_data(str(tmp_path / "data"), n=1000)
    out = tmp_path / "run"
    result = advise(data, out=out, backend="none", volume_per_day=20000.0)
    assert result.run_dir == out
    on_disk = Report.model_validate_json((out / "decision.json").read_text())
    assert on_disk == result.report
    assert {p.name for p in out.iterdir()} >= {"decision.json", "split.json", "config.json", "report.md"}
    assert list(empty_cwd.iterdir()) == []
    # The CLI with the same settings decides the same way, on the same split.
    main(
        ["advise", str(data), "--no-model", "--volume", "20000/day", "--json", "--out", str(tmp_path / "cli")]
    )
    cli = json.loads(capsys.readouterr().out)
    assert cli["decision"] == result.report.decision.model_dump(mode="json")
    split = json.loads((out / "split.json").read_text())
    assert json.loads((tmp_path / "cli" / "split.json").read_text())["eval"] == split["eval"]


def test_data_only_advice_and_setting_errors(tmp_path: Path, empty_cwd: Path) -> None:
    from advisor import advise

    data = write_demo_data(str(tmp_path / "data"), n=300)
    result = advise(data, backend="none")
    assert result.verdict == "collect_data"  # 300 rows is under the data floor
    assert result.report.prompting is None and result.arms.empty and result.predictions.empty
    with pytest.raises(ConfigError, match="eval_sise") as info:
        advise(data, backend="none", eval_sise=10)
    assert info.value.exit_code == ExitCode.USAGE
    with pytest.raises(DataError, match="no such file"):
        advise(tmp_path / "missing.jsonl", backend="none")
    assert list(empty_cwd.iterdir()) == []


def test_importing_the_package_stays_light_until_advise_is_called() -> None:
    """`from advisor import advise` is a plain function; the API and the recipe load on the first call."""
    code = (
        "import sys\n"
        "from advisor import advise\n"
        "loaded = [m for m in ('advisor.api', 'advisor.recipe', 'pandas', 'pydantic') if m in sys.modules]\n"
        "print(callable(advise), loaded)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True []"


@pytest.mark.slow
def test_the_notebook_example_runs(
    tmp_path: Path, empty_cwd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeBackend(KEYWORDS)
    namespace = runpy.run_path(str(REPO / "examples" / "python_api.py"), init_globals={"BACKEND": fake})
    result = namespace["result"]
    printed = capsys.readouterr().out
    assert printed.startswith(f"{result.verdict} - ")
    assert all(rule.id in printed for rule in result.report.decision.fired)
    assert fake.loglik_requests  # the example ran the model it was given
    assert list(empty_cwd.iterdir()) == []
    json.dumps(result.report.as_dict())  # the report is plain JSON data


# --------------------------------------------------------------------------- in-memory data


def _table_rows(path: str) -> Any:
    """The demo file's rows as a two-column table (text, label), as a team's DataFrame would hold them."""
    import pandas as pd

    chat = pd.read_json(path, lines=True)
    return pd.DataFrame(
        {
            "text": [m[0]["content"] for m in chat["messages"]],
            "label": [m[1]["content"] for m in chat["messages"]],
        }
    )


@pytest.mark.slow
def test_a_dataframe_and_a_dataset_give_the_file_verdict(measured, tmp_path: Path, empty_cwd: Path) -> None:
    """The same rows as `measured`'s file, from a chat-shaped DataFrame and from a `datasets` DatasetDict
    of their table form (text, label): the same split, arms, scores and verdict."""
    import datasets
    import pandas as pd

    from advisor import advise

    from_file, _ = measured
    data = write_demo_data(str(tmp_path / "data"), n=600)
    chat = pd.read_json(data, lines=True)  # one column, `messages`: the chat shape
    from_frame = advise(chat, backend=FakeBackend(KEYWORDS), **SMALL)
    table = datasets.Dataset.from_pandas(_table_rows(data))
    by_dataset = advise(datasets.DatasetDict({"train": table}), backend=FakeBackend(KEYWORDS), **SMALL)
    for result in (from_frame, by_dataset):
        assert result.verdict == from_file.verdict
        assert result.report.decision.scores == from_file.report.decision.scores
        assert result.arms.equals(from_file.arms)
        assert result.report.dataset.n_examples == from_file.report.dataset.n_examples == 600
    assert from_frame.predictions.equals(from_file.predictions)
    assert list(empty_cwd.iterdir()) == []
    text = repr(by_dataset)
    assert text.startswith(f"<AdviseResult verdict={from_file.verdict} ") and "\n" not in text
    assert len(text) < 200 and "run_dir=None" in text


def test_a_kept_run_folder_holds_the_rows_for_train(tmp_path: Path, empty_cwd: Path) -> None:
    from advisor import advise
    from advisor.api import IN_MEMORY_FILE

    table = _table_rows(write_demo_data(str(tmp_path / "data"), n=300))
    result = advise(table, out=tmp_path / "run", backend="none")
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["data_path"] == str(tmp_path / "run" / IN_MEMORY_FILE)  # what `train` reads the rows from
    assert len((tmp_path / "run" / IN_MEMORY_FILE).read_text().splitlines()) == 300
    assert result.report.dataset.n_examples == 300


def test_bad_frames_name_the_row_and_column(tmp_path: Path, empty_cwd: Path) -> None:
    import datasets
    import numpy as np
    import pandas as pd

    from advisor import advise
    from advisor.errors import TunegateError

    table = _table_rows(write_demo_data(str(tmp_path / "data"), n=300))
    table.index = table.index + 1000  # rows are named by their index label, as df.loc takes them
    table.loc[1003, "text"] = None
    table.loc[1005, "text"] = np.nan
    chat = pd.DataFrame(
        {"messages": [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": 3}]]}
    )
    cases = [
        (table, ["DataFrame row 1003: column 'text': missing value", "DataFrame row 1005: column 'text'"]),
        (
            table.rename(columns={"text": "review"}),
            ["DataFrame: field 'input': no input column", "input_col="],
        ),
        (chat, ["DataFrame row 0: column 'messages' (messages[1].content): wrong type"]),
        (
            pd.DataFrame({"text": [pd.Timestamp(0)], "label": ["a"]}),
            ["DataFrame row 0: column 'text': a Timestamp"],
        ),
        (pd.DataFrame({0: ["a"], 1: ["b"]}), ["DataFrame: column names must be text"]),
        (table.iloc[:0], ["DataFrame: no rows"]),
    ]
    for frame, expected in cases:
        with pytest.raises(TunegateError) as info:
            advise(frame, backend="none")
        assert info.value.exit_code == ExitCode.BAD_INPUT
        for part in expected:
            assert part in str(info.value)
        assert "rows.jsonl" not in str(info.value)  # the written file is never named
    two = datasets.DatasetDict({s: datasets.Dataset.from_dict({"text": ["x"], "label": ["y"]}) for s in "ab"})
    with pytest.raises(DataError, match=r"DatasetDict: field 'dataset_split': several splits.*one of a, b"):
        advise(two, backend="none")
    with pytest.raises(ConfigError, match="data must be a file path, a pandas DataFrame"):
        advise([{"text": "x", "label": "y"}], backend="none")
    assert list(empty_cwd.iterdir()) == []


# --------------------------------------------------------------------------- import tunegate: train, verify


def test_import_tunegate_is_light_and_offers_the_three_steps() -> None:
    code = (
        "import sys\n"
        "import tunegate\n"
        "heavy = ('advisor.api', 'pipeline.api', 'pipeline.run', 'pandas', 'torch', 'datasets')\n"
        "print([f for f in ('advise', 'train', 'verify') if callable(getattr(tunegate, f))],"
        " [m for m in heavy if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert done.stdout.strip() == "['advise', 'train', 'verify'] []"


def test_train_keeps_the_gate_and_checks_its_settings(tmp_path: Path, empty_cwd: Path) -> None:
    import tunegate
    from advisor.errors import GateError

    data = write_demo_data(str(tmp_path / "data"), n=300)
    run = tmp_path / "run"
    assert tunegate.advise(data, out=run, backend="none").verdict == "collect_data"
    with pytest.raises(ConfigError, match="max_stepz") as bad:
        tunegate.train(run, max_stepz=3)
    assert bad.value.problems[0].file == "train()"  # the keyword's source, as a flag's would be named
    with pytest.raises(GateError, match="fine_tune") as refused:
        tunegate.train(run, max_steps=3)
    assert refused.value.exit_code == ExitCode.GATE_REFUSED
    assert not (run / "train").exists()


@pytest.mark.slow
def test_train_and_verify_from_python_on_the_tiny_model(tmp_path: Path, empty_cwd: Path) -> None:
    """advise → train (forced) → verify another adapter, all from `import tunegate`, on the tiny model."""
    pytest.importorskip("torch")
    from tiny import tiny_llama, write_reviews_csv

    import tunegate

    model_dir = tiny_llama(tmp_path)
    data = write_reviews_csv(tmp_path / "reviews.csv", 80, seed=7)
    run = tmp_path / "run"
    advised = tunegate.advise(
        data, out=run, input_col="text", output_col="label", model=str(model_dir), eval_size=20,
        dev_size=10, k_ladder=(1,), latency_samples=1, thresholds={"min_verdict_probability": 0.0},
    )  # fmt: skip
    trained = tunegate.train(run, force=True, max_steps=2, batch_size=4, max_seq_len=64, save_every=0)
    assert trained.report.training is not None and trained.report.training.metrics.steps == 2
    assert trained.report.training.provenance.forced is True
    verification = trained.report.verification
    assert verification is not None and verification.n_eval == advised.report.prompting.n_eval
    assert "fine_tuned" in repr(trained) and trained.run_dir == run
    assert list(trained.arms["name"]) == list(advised.arms["name"])
    again = tunegate.verify(run, adapter=run / "train" / "adapter", latency_samples=0)
    assert again.report.verification is not None
    assert again.report.verification.finetuned.scores == verification.finetuned.scores  # same adapter
    assert list(empty_cwd.iterdir()) == []
