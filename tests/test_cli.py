"""The command line: help is instant and light, user errors give documented exit codes and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import report_docs

from advisor.cli import main
from advisor.errors import ExitCode


def test_help_imports_no_heavy_library() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from advisor.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    rc = main(['--help'])\n"
        "names = ('torch', 'transformers', 'peft', 'rich', 'pandas', 'sklearn')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print(rc, heavy, 'exit codes' in out.getvalue())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "0 [] True"


def test_usage_error_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["advise"]) == ExitCode.USAGE
    assert "usage" in capsys.readouterr().err


def test_bad_target_is_a_config_error(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n')
    rc = main(["advise", str(data), "--no-model", "--target", "accuracy=high", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == ExitCode.USAGE
    assert "--target" in err and "Traceback" not in err


def test_unknown_setting_names_it(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n')
    rc = main(["advise", str(data), "--no-model", "--set", "eval_sise=10", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == ExitCode.USAGE
    assert "eval_sise" in err and "eval_size" in err


@pytest.mark.parametrize("case", __import__("malformed_cases").MALFORMED_CASES, ids=lambda c: c[0])
def test_malformed_input_exits_3_naming_the_place(case, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from malformed_cases import materialise

    path = materialise(case, tmp_path)
    rc = main(["advise", str(path), "--no-model", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == ExitCode.BAD_INPUT, err
    assert case[3] in err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "decision.json").exists()


def test_train_refuses_without_a_fine_tune_verdict(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "decision.json").write_text(json.dumps(report_docs.run_decision(tmp_path, "prompt")))
    rc = main(["train", str(run)])
    err = capsys.readouterr().err
    assert rc == ExitCode.GATE_REFUSED
    assert "prompt" in err and "--force" in err and "Traceback" not in err
    assert not (run / "train").exists()


@pytest.mark.parametrize("verified", [True, False])
def test_train_exits_14_when_verification_vetoes(verified, tmp_path, monkeypatch, capsys) -> None:
    import copy

    import pipeline.run
    from advisor.report.document import Report
    from pipeline.run import redecide

    doc = copy.deepcopy(report_docs.fine_tune_doc(tmp_path))
    doc["verification"]["finetune_verified"] = verified
    doc["signals"]["finetune_verified"] = verified
    report = redecide(Report.model_validate(doc))  # the decision train_and_verify writes after verification
    monkeypatch.setattr(pipeline.run, "train_and_verify", lambda run_dir, **kw: report)
    rc = main(["train", str(tmp_path), "--json"])
    out, err = capsys.readouterr()
    assert json.loads(out) == report.as_dict()  # --json prints the document as decision.json holds it
    if verified:
        assert rc == ExitCode.OK and report.decision.verdict == "fine_tune"
    else:
        assert rc == ExitCode.VETOED == 14 and report.decision.verdict != "fine_tune"
        assert "vetoed" in err


# ---------------------------------------------------------------------------------------------------
# CI gating: --fail-on (the example GitHub Actions workflow: tests/test_examples.py)


@pytest.fixture(scope="module")
def gate_data(tmp_path_factory) -> dict[str, Path]:
    """Real Rotten Tomatoes snippets: 40 give collect_data, 600 give few_shot, both without a model."""
    from tiny import rotten_tomatoes_rows

    folder = tmp_path_factory.mktemp("gate")
    paths = {}
    for name, n in (("collect_data", 40), ("few_shot", 600)):
        rows = rotten_tomatoes_rows(n, seed=0)
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"prompt": t, "completion": lab}) + "\n" for _, t, lab in rows))
        paths[name] = path
    return paths


def _advise(command: str, data: Path, out: Path, *extra: str) -> tuple[int, str]:
    rc = main([command, str(data), "--no-model", "--out", str(out), *extra])
    return rc, json.loads((out / "decision.json").read_text())["decision"]["verdict"]


@pytest.mark.parametrize("command", ["advise", "run"])
def test_fail_on_exits_0_unless_the_verdict_is_listed(command, gate_data, tmp_path) -> None:
    few, collect = gate_data["few_shot"], gate_data["collect_data"]
    assert _advise(command, few, tmp_path / "a") == (ExitCode.FEW_SHOT, "few_shot")  # default: verdict code
    gate = ("--fail-on", "collect_data,inconclusive")
    assert _advise(command, few, tmp_path / "b", *gate) == (ExitCode.OK, "few_shot")
    assert _advise(command, collect, tmp_path / "c", *gate) == (ExitCode.COLLECT_DATA, "collect_data")
    assert _advise(command, few, tmp_path / "d", "--fail-on", "few_shot") == (ExitCode.FEW_SHOT, "few_shot")


@pytest.mark.parametrize(
    "value, says",
    [("collect_data,bogus", "unknown verdict 'bogus'"), ("prompt", "'prompt' exits 0"), (",", "nothing")],
)
def test_fail_on_rejects_what_is_not_a_failing_verdict(value, says, tmp_path, capsys) -> None:
    rc = main(["advise", str(tmp_path / "d.jsonl"), "--no-model", "--fail-on", value])
    err = capsys.readouterr().err
    assert rc == ExitCode.USAGE
    assert says in err and "few_shot, fine_tune, collect_data, inconclusive" in err


def test_server_flags_reach_the_config_and_verify_refuses_them_without_a_server(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    from advisor.cli import _advise_config, build_parser

    argv = ["advise", "d.jsonl", "--backend", "openai", "--concurrency", "8", "--tokenizer", "org/tok"]
    config = _advise_config(build_parser("advise").parse_args(argv))
    assert (config.concurrency, config.tokenizer) == (8, "org/tok")
    assert main(["advise", "d.jsonl", "--tokenizer", "org/tok"]) == ExitCode.USAGE  # hf brings its own
    assert "tokenizer" in capsys.readouterr().err
    assert main(["verify", str(tmp_path), "--concurrency", "2"]) == ExitCode.USAGE
    assert "--concurrency need --backend openai" in capsys.readouterr().err
