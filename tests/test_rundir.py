"""The run folder's owner: typed decision.json round trip, one error policy, the lock, confined paths."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import report_docs
from report_docs import facts

from advisor.cli import main
from advisor.errors import ConfigError, DataError
from advisor.report.document import Report
from advisor.rundir import RunDir

DOCS = ("few_shot_doc", "fine_tune_doc", "collect_data_doc", "hostile_doc")


@pytest.mark.parametrize("name", DOCS)
def test_a_document_survives_the_round_trip(tmp_path: Path, name: str) -> None:
    doc = getattr(report_docs, name)(tmp_path)
    run = RunDir(tmp_path / "run")
    run.write_report(Report.model_validate(doc))
    back = run.read_report()
    assert facts(back.as_dict()) == facts(json.loads(json.dumps(doc)))  # every fact kept, none added
    assert back == Report.model_validate(doc)
    assert back.decision.verdict == doc["decision"]["verdict"]


def test_a_missing_section_is_named(tmp_path: Path) -> None:
    doc = report_docs.few_shot_doc(tmp_path)
    del doc["decision"]["summary"]
    run = RunDir(tmp_path)
    run.decision_path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(DataError) as err:
        run.read_report()
    assert err.value.problems[0].field == "decision.summary"
    assert err.value.exit_code == 3


@pytest.mark.parametrize(
    "text",
    ["", "{", "[1, 2]", '{"schema_version": "0.1"}', "[" * 50000, '{"schema_version": "1.0"}'],
    ids=["empty", "truncated", "not-an-object", "old-version", "deep", "no-sections"],
)
def test_a_damaged_decision_is_a_data_error(tmp_path: Path, text: str) -> None:
    run = RunDir(tmp_path)
    run.decision_path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as err:
        run.read_report()
    assert err.value.problems[0].file == str(run.decision_path)


def test_no_decision_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is this a run folder"):
        RunDir(tmp_path).read_report()
    with pytest.raises(DataError, match="missing from the run folder"):
        RunDir(tmp_path).read_config()


def test_update_replaces_a_section_and_validates(tmp_path: Path) -> None:
    doc = report_docs.fine_tune_doc(tmp_path)
    run = RunDir(tmp_path / "run")
    run.write_report(Report.model_validate({**doc, "verification": None}))
    updated = run.update_report(verification=doc["verification"])
    assert updated.verification is not None
    assert run.read_report().verification == updated.verification


def test_recorded_paths_must_stay_inside(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    (run.path / "train" / "adapter").mkdir(parents=True)
    assert run.inside("train/adapter", field="training.adapter_dir") == (run.train_dir / "adapter").resolve()
    for outside in ("/etc", "../elsewhere", "train/../../x"):
        with pytest.raises(DataError) as err:
            run.inside(outside, field="training.adapter_dir")
        assert err.value.problems[0].field == "training.adapter_dir"
    with pytest.raises(DataError):
        run.predictions_path("../../decision")


def test_predictions_round_trip_and_bad_lines(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    rows = [{"line": 1, "prediction": "a"}, {"line": 2, "prediction": "b"}]
    run.write_predictions("zero_shot", rows)
    assert run.read_predictions("zero_shot") == rows
    run.predictions_path("zero_shot").write_text('{"line": 1}\n[1]\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        run.read_predictions("zero_shot")
    assert err.value.problems[0].line == 2


def _holder(tmp_path: Path, run: RunDir) -> subprocess.Popen[str]:
    """Another process holding the run folder until it reads a line on stdin."""
    script = tmp_path / "hold.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            from advisor.rundir import RunDir
            with RunDir({str(run.path)!r}).lock():
                print("held", flush=True)
                sys.stdin.readline()
            """
        ),
        encoding="utf-8",
    )
    child = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def test_a_second_process_on_the_same_folder_fails_fast(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    child = _holder(tmp_path, run)
    try:
        with pytest.raises(ConfigError, match="another tunegate process"), run.lock():
            pass
    finally:
        child.communicate("\n", timeout=30)
    with run.lock():  # released when the holder exits
        assert (run.path / ".lock").read_text().strip().isdigit()


def test_advise_on_a_folder_another_run_holds_changes_nothing(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data.jsonl"
    rows = [
        {"prompt": f"Review {i}: {'good' if i % 2 else 'bad'} film", "completion": "x"} for i in range(30)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    run = RunDir(tmp_path / "run")
    child = _holder(tmp_path, run)
    try:
        rc = main(["advise", str(data), "--no-model", "--out", str(run.path)])
    finally:
        child.communicate("\n", timeout=30)
    assert rc == 2 and "another tunegate process" in capsys.readouterr().err
    assert sorted(p.name for p in run.path.iterdir()) == [".lock"]  # nothing of the second run written
    assert main(["advise", str(data), "--no-model", "--out", str(run.path)]) in (0, 10, 11, 12, 13)
    assert run.decision_path.is_file()


def test_train_outputs_and_the_model_card_stay_inside_the_folder(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run").create()
    (run.train_dir / "adapter").mkdir(parents=True)
    (run.train_dir / "checkpoints" / "step-2").mkdir(parents=True)
    run.train.open_metrics(keep_until_step=None).write({"step": 1})
    run.write_train_config({"train": {"r": 8}})
    card = run.write_model_card("train/adapter", "# card\n")
    assert card == (run.train_dir / "adapter" / "README.md").resolve()
    with pytest.raises(DataError, match="outside the run folder"):
        run.write_model_card(tmp_path / "elsewhere", "# card\n")
    run.train.clear()
    assert sorted(p.name for p in run.train_dir.iterdir()) == ["config.json"]  # the config is rewritten
    assert run.write_plot("loss", "<svg/>\n") == "plots/loss.svg"
    with pytest.raises(ValueError):
        run.write_plot("../x", "<svg/>")


def test_prompts_round_trip_and_a_damaged_record_is_named(tmp_path: Path) -> None:
    from advisor.errors import ExitCode
    from advisor.measure.prompt_record import PromptRecord, RecordedArm

    arm = RecordedArm(
        name="few_shot_k2",
        kind="few_shot",
        k=2,
        selection="stratified",
        instruction="Label the review.",
        format_hint="Answer with exactly one of: rotten, fresh.",
        variant="batch",
        offsets={"fresh": -0.4, "rotten": -1.1},
        demos={41: [3, 7], 42: [3, 7]},
    )
    record = PromptRecord(
        task="classify",
        labels=["fresh", "rotten"],
        seed=0,
        eval_lines=[41, 42],
        best_arm=arm.name,
        arms=[arm],
    )
    run = RunDir(tmp_path)
    run.write_prompts(record)
    assert run.read_prompts() == record  # data lines survive JSON's string keys
    data = json.loads((tmp_path / "prompts.json").read_text())
    data["arms"][0]["variant"] = "magic"
    (tmp_path / "prompts.json").write_text(json.dumps(data))
    with pytest.raises(DataError) as err:
        run.read_prompts()
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert err.value.problems[0].field == "arms.0.variant" and "prompts.json" in str(err.value)
    (tmp_path / "prompts.json").unlink()
    with pytest.raises(DataError, match="tunegate advise"):
        run.read_prompts()
