"""The command line: help is instant and light, user errors give documented exit codes and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

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
