"""The run folder's owner: typed decision.json round trip, one error policy, the lock, confined paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import report_docs
from report_docs import facts
from test_probes_contain import snapshot

from advisor.cli import main
from advisor.document import Report
from advisor.errors import ConfigError, DataError, FilesError
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
            with RunDir({str(run.path)!r}).lock(create=True):
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
        with pytest.raises(ConfigError, match="another tunegate process"), run.lock(create=True):
            pass
    finally:
        child.communicate("\n", timeout=30)
    assert not (run.path / ".lock").exists()  # the holder removed its lock when it ended
    with run.lock():  # released when the holder exits
        assert (run.path / ".lock").read_text().strip().isdigit()
    assert sorted(p.name for p in run.path.iterdir()) == [".tunegate-run"]


def test_advise_on_a_folder_another_run_holds_changes_nothing(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data.jsonl"
    rows = [
        {"prompt": f"Review {i}: {'good' if i % 2 else 'bad'} film", "completion": "x"} for i in range(30)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    run = RunDir(tmp_path / "run")
    child = _holder(tmp_path, run)
    try:
        held = snapshot(run.path)
        rc = main(["advise", str(data), "--no-model", "--out", str(run.path)])
        assert snapshot(run.path) == held  # nothing of the second run written
    finally:
        child.communicate("\n", timeout=30)
    assert rc == 2 and "another tunegate process" in capsys.readouterr().err
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
    assert run.read_prompts(PromptRecord) == record  # data lines survive JSON's string keys
    data = json.loads((tmp_path / "prompts.json").read_text())
    data["arms"][0]["variant"] = "magic"
    (tmp_path / "prompts.json").write_text(json.dumps(data))
    with pytest.raises(DataError) as err:
        run.read_prompts(PromptRecord)
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert err.value.problems[0].field == "arms.0.variant" and "prompts.json" in str(err.value)
    (tmp_path / "prompts.json").unlink()
    with pytest.raises(DataError, match="tunegate advise"):
        run.read_prompts(PromptRecord)


# --------------------------------------------------------------------------- containment (issue 20, part 1)

SECRET = b"ssh-ed25519 AAAA the user's key\n"


def _data(tmp_path: Path, n: int = 30) -> Path:
    data = tmp_path / "data.jsonl"
    rows = [{"prompt": f"Review {i}: {'good' if i % 2 else 'bad'} film", "completion": "x"} for i in range(n)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return data


def _advised(tmp_path: Path) -> RunDir:
    """A finished data-only run at tmp_path/run."""
    assert main(["advise", str(_data(tmp_path)), "--no-model", "--out", str(tmp_path / "run")]) == 12
    return RunDir(tmp_path / "run")


def _victim(tmp_path: Path) -> Path:
    """A folder outside the run shaped like a run's train/: what a planted link would expose."""
    v = tmp_path / "victim"
    (v / "checkpoints" / "step-0000001").mkdir(parents=True)
    (v / "checkpoints" / "step-0000001" / "state.pt").write_bytes(b"weights")
    (v / "adapter").mkdir()
    (v / "adapter" / "adapter_config.json").write_text("{}", encoding="utf-8")
    (v / "metrics.jsonl").write_text('{"step": 1}\n', encoding="utf-8")
    (v / "secret").write_bytes(SECRET)
    return v


def _one_error(capsys, code: int, rc: int, *names: str) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ": error: " in ln]
    assert rc == code and len(err) == 1, err
    assert all(name in err[0] for name in names), err[0]
    return err[0]


@pytest.mark.parametrize("command", ["advise", "train", "verify"])
def test_a_symlinked_lock_never_writes_its_target(tmp_path: Path, capsys, command: str) -> None:
    run = _advised(tmp_path)
    victim = _victim(tmp_path)
    (run.path / ".lock").symlink_to(victim / "secret")
    before = snapshot(tmp_path)
    argv = {
        "advise": ["advise", str(tmp_path / "data.jsonl"), "--no-model", "--out", str(run.path)],
        "train": ["train", str(run.path), "--force"],
        "verify": ["verify", str(run.path)],
    }[command]
    capsys.readouterr()
    _one_error(capsys, 3, main(argv), str(run.path / ".lock"), "symbolic link")
    assert (victim / "secret").read_bytes() == SECRET
    assert snapshot(tmp_path) == before  # nothing anywhere was written, not even the run folder


def test_a_lock_on_a_fresh_folder_through_a_link_or_a_hard_link(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    for i, plant in enumerate((Path.symlink_to, lambda p, t: os.link(t, p))):
        run = RunDir(tmp_path / f"run{i}")
        run.path.mkdir()
        plant(run.path / ".lock", victim / "secret")
        with pytest.raises(DataError, match=r"symbolic link|hard link") as err, run.lock(create=True):
            pass
        assert err.value.problems[0].file == str(run.path / ".lock")
        assert (victim / "secret").read_bytes() == SECRET
        assert sorted(p.name for p in run.path.iterdir()) == [".lock"]  # no marker either


def test_a_finished_run_leaves_no_lock_and_the_lock_is_reentrant(tmp_path: Path) -> None:
    run = _advised(tmp_path)
    assert not os.path.lexists(run.path / ".lock")
    assert (run.path / ".tunegate-run").is_file()
    with run.lock(), run.lock():  # `tunegate run`: advise and train under one lock
        assert (run.path / ".lock").read_text().strip() == str(os.getpid())
    assert not os.path.lexists(run.path / ".lock")


def test_train_force_through_a_symlinked_train_deletes_nothing_outside(tmp_path: Path, capsys) -> None:
    from tiny import tiny_llama

    run = _advised(tmp_path)
    victim = _victim(tmp_path)
    run.train_dir.symlink_to(victim)
    model = tiny_llama(tmp_path / "model")
    before = snapshot(tmp_path)
    capsys.readouterr()
    rc = main(
        ["train", str(run.path), "--force", "--train-set", f"model={model}", "--train-set", "max_steps=1"]
    )
    _one_error(capsys, 3, rc, str(run.train_dir), "symbolic link")
    assert snapshot(tmp_path) == before


def test_train_outputs_refuse_every_planted_link(tmp_path: Path) -> None:
    """The training loop's own folder object (TrainDir) refuses a link at train/ or at any output, for
    every operation: clear, checkpoints, the metrics log, adapters, the merged model."""
    victim = _victim(tmp_path)
    for name in (None, "checkpoints", "adapter", "best", "metrics.jsonl", "merged"):
        run = RunDir(tmp_path / f"run-{name}").create()
        if name is None:
            run.train_dir.symlink_to(victim)
        else:
            run.train_dir.mkdir()
            (run.train_dir / name).symlink_to(
                victim / ("metrics.jsonl" if name.endswith(".jsonl") else "adapter")
            )
        before = snapshot(victim)
        train = run.train
        for operation in (
            train.clear,
            lambda t=train: t.open_metrics(keep_until_step=None),
            lambda t=train: t.open_metrics(keep_until_step=3),
            lambda t=train: t.write_checkpoint(2, lambda f: f.write_bytes(b"x")),
            lambda t=train: t.write_merged(lambda tmp: tmp.mkdir()),
            lambda t=train: t.keep_best_as_adapter(),
            lambda t=train: t.latest_checkpoint(),
        ):
            try:
                operation()
            except DataError as exc:
                assert "symbolic link" in str(exc)
            except (FileNotFoundError, FilesError):  # best/ missing: nothing to copy
                pass
        assert snapshot(victim) == before, name


def test_predictions_through_a_symlinked_folder_are_refused(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    run = RunDir(tmp_path / "run").create()
    (run.path / "predictions").symlink_to(victim)
    before = snapshot(victim)
    for operation in (
        lambda: run.write_predictions("zero_shot", [{"line": 1}]),
        lambda: run.read_predictions("zero_shot"),
        lambda: run.has_predictions("zero_shot"),
    ):
        with pytest.raises(DataError) as err:
            operation()
        assert err.value.problems[0].file == str(run.path / "predictions")
    assert snapshot(victim) == before


def test_predictions_link_stops_an_advise_with_a_model(tmp_path: Path, monkeypatch) -> None:
    """End to end: a model run (the fake model) into a run folder whose predictions/ is a link."""
    from fakes import FakeBackend

    from advisor import advise
    from advisor.demo import write_demo_data

    monkeypatch.setenv("TUNEGATE_CACHE_DIR", str(tmp_path / "cache"))
    data = write_demo_data(str(tmp_path / "data"), n=60)
    victim = _victim(tmp_path)
    run = RunDir(tmp_path / "run").create()
    (run.path / "predictions").symlink_to(victim)
    before = snapshot(victim)
    with pytest.raises(DataError) as err:
        advise(data, out=run.path, backend=FakeBackend(), eval_size=20, dev_size=10, k_ladder=(1,))
    assert err.value.problems[0].file == str(run.path / "predictions")
    assert snapshot(victim) == before


def test_out_on_a_folder_that_is_not_a_run_stops_and_changes_nothing(tmp_path: Path, capsys) -> None:
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    for name in ("config.json", "report.md", "split.json", "prompts.json", "notes.txt", "src/main.py"):
        (project / name).write_text(f"the user's {name}\n", encoding="utf-8")
    (project / ".env").write_bytes(SECRET)
    data = _data(tmp_path)
    before = snapshot(tmp_path)
    for command in ("advise", "run"):
        rc = main([command, str(data), "--no-model", "--out", str(project)])
        _one_error(capsys, 2, rc, str(project), "config.json", "not a tunegate run folder")
        assert snapshot(tmp_path) == before  # every name, every byte


def test_out_may_be_missing_empty_a_run_or_a_run_from_before_the_marker(tmp_path: Path) -> None:
    data = _data(tmp_path)
    (tmp_path / "empty").mkdir()
    for out in ("missing/deeper", "empty"):
        assert main(["advise", str(data), "--no-model", "--out", str(tmp_path / out)]) == 12
        assert (tmp_path / out / ".tunegate-run").is_file() and (tmp_path / out / "decision.json").is_file()
    run = tmp_path / "empty"
    assert main(["advise", str(data), "--no-model", "--out", str(run)]) == 12  # a run again
    (run / ".tunegate-run").unlink()  # a run folder written before the marker existed
    assert main(["advise", str(data), "--no-model", "--out", str(run)]) == 12
    assert (run / ".tunegate-run").is_file()
    (run / ".tunegate-run").unlink()
    (run / "decision.json").write_text('{"foreign": true}', encoding="utf-8")
    with pytest.raises(ConfigError, match="not a tunegate run folder"):
        RunDir(run).create()


def test_an_input_inside_the_run_under_a_name_the_run_writes_is_never_overwritten(
    tmp_path: Path, capsys
) -> None:
    run = _advised(tmp_path)
    for name in ("config.json", "split.json", "report.md"):
        data = run.path / name
        data.write_bytes((tmp_path / "data.jsonl").read_bytes())
        before = snapshot(tmp_path)
        rc = main(["advise", str(data), "--no-model", "--out", str(run.path)])
        _one_error(capsys, 2, rc, str(data), name)
        assert snapshot(tmp_path) == before
    # the demo's way: a data file the run reads, kept in the run folder under its own name
    kept = run.write_input("reviews.jsonl", (tmp_path / "data.jsonl").read_text(encoding="utf-8"))
    assert main(["advise", str(kept), "--no-model", "--out", str(run.path)]) == 12
    assert kept.read_bytes() == (tmp_path / "data.jsonl").read_bytes()


def test_a_run_that_stops_before_it_starts_leaves_nothing(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = _data(tmp_path)
    assert main(["advise", str(tmp_path / "missing.jsonl"), "--no-model"]) == 3
    assert main(["advise", str(data), "--model", str(tmp_path / "no-model"), "--out", "runs/x/y"]) == 2
    assert main(["run", str(tmp_path / "missing.jsonl"), "--no-model", "--out", "runs/z"]) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]  # no runs/ at all
    (tmp_path / "empty").mkdir()
    assert main(["advise", str(data), "--model", str(tmp_path / "no-model"), "--out", "empty"]) == 2
    assert list((tmp_path / "empty").iterdir()) == []  # an empty folder stays empty


def _split_keys(run: RunDir) -> dict[int, str]:
    from advisor.audit.checks import input_key
    from advisor.intake.data import load_examples

    return {ex.line: input_key(ex) for ex in load_examples(str(run.path.parent / "data.jsonl")).examples}


def test_tampered_splits_are_refused_by_line_and_by_content(tmp_path: Path) -> None:
    run = _advised(tmp_path)
    good = json.loads(run.split_path.read_text())
    keys = _split_keys(run)
    run.check_held_out(run.read_split(), keys)  # the split advise wrote is disjoint
    for change, field in (
        (lambda s: {**s, "train": s["train"] + s["eval"][:1]}, "eval"),
        (lambda s: {**s, "dev": s["dev"] + s["dev"][:1]}, "dev"),
        (lambda s: {**s, "eval": "1,2"}, "eval"),
        (lambda s: {**s, "train": [True]}, "train"),
    ):
        run.split_path.write_text(json.dumps(change(dict(good))))
        with pytest.raises(DataError) as err:
            run.read_split()
        assert (err.value.problems[0].file, err.value.problems[0].field) == (str(run.split_path), field)
    # by content: an eval item whose input is also a training item's, under another line number
    ev, tr = good["eval"][0], good["train"][0]
    same = {**keys, ev: keys[tr]}
    with pytest.raises(DataError, match="same input") as err:
        run.check_held_out(good, same)
    assert err.value.problems[0].field == "eval"


def test_an_eval_item_among_its_own_demonstrations_is_refused(tmp_path: Path) -> None:
    from advisor.measure.prompt_record import PromptRecord, RecordedArm

    run = _advised(tmp_path)
    split = run.read_split()
    keys = _split_keys(run)
    ev, tr = split["eval"][0], split["train"][0]

    def record(demos: list[int]) -> PromptRecord:
        arm = RecordedArm(
            name="few_shot_k1", kind="few_shot", k=1, selection="nearest", instruction=None,
            format_hint="", variant="raw", offsets=None, demos={ev: demos},
        )  # fmt: skip
        return PromptRecord(
            task="generate", labels=[], seed=0, eval_lines=split["eval"], best_arm=None, arms=[arm]
        )

    run.check_held_out(split, keys, [a.demos for a in record([tr]).arms])
    for demos, content in (([ev], keys), ([999], {**keys, 999: keys[ev]})):  # by line, by content
        with pytest.raises(DataError, match="its own demonstration") as err:
            run.check_held_out(split, content, [a.demos for a in record(demos).arms])
        assert err.value.problems[0].field == f"arms.0.demos.{ev}"
        assert err.value.problems[0].file == str(run.path / "prompts.json")


@pytest.mark.parametrize("command", ["train", "verify"])
def test_a_read_only_run_folder_is_exit_8(tmp_path: Path, capsys, monkeypatch, command: str) -> None:
    """README: a folder that cannot be written is exit 8 (the tests run as root, whom permission bits do
    not stop, so the file system's refusal is simulated below the run folder)."""
    import errno

    run = _advised(tmp_path)
    real_open = os.open
    below = str(run.path)

    def read_only(path, flags, *a, **k):  # noqa: ANN001, ANN202
        if os.path.abspath(os.fspath(path)).startswith(below) and flags & (
            os.O_WRONLY | os.O_RDWR | os.O_CREAT
        ):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real_open(path, flags, *a, **k)

    before = snapshot(tmp_path)
    monkeypatch.setattr(os, "open", read_only)
    capsys.readouterr()
    _one_error(
        capsys, 8, main([command, str(run.path)] + (["--force"] if command == "train" else [])), "read-only"
    )
    monkeypatch.undo()
    assert snapshot(tmp_path) == before
