"""The command line: help is instant and light, user errors give documented exit codes and no traceback."""

from __future__ import annotations

import json
import shlex
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
    err = capsys.readouterr().err
    # one `tunegate: error:` line like every other error, naming the command and where its help is
    assert err.startswith("tunegate: error: advise: ") and err.count("\n") == 1
    assert "tunegate advise --help" in err and "usage:" not in err


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
    from advisor.document import Report
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


def test_every_advise_setting_answers_to_its_own_name_as_a_flag() -> None:
    """One name per setting: each field a flag sets is also `--field-name`, as in --set and the API."""
    import argparse

    from advisor.cli import ADVISE_FLAGS, build_parser

    parser = build_parser("advise")
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    dests = {o: a.dest for a in commands.choices["advise"]._actions for o in a.option_strings}
    for name in ADVISE_FLAGS:
        if name in ("data", "pilot"):  # the positional; --no-pilot sets pilot=false
            continue
        assert dests.get("--" + name.replace("_", "-")) == name, name


def test_the_old_token_budget_name_still_works_with_a_warning(tmp_path, capsys) -> None:
    """--max-tokens (and the setting max_tokens) was the run's budget, which OpenAI users read as the
    reply length: it is --max-total-tokens now, the old names read for one release with a warning."""
    from advisor.cli import _advise_config, build_parser

    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n')
    for argv in (["--max-tokens", "500"], ["--set", "max_tokens=500"], ["--max-total-tokens", "500"]):
        rc = main(["advise", str(data), "--no-model", *argv, "--dry-run", "--out", str(tmp_path / "r")])
        err = capsys.readouterr().err
        assert rc == 0
        old = argv[0] != "--max-total-tokens"
        assert ("tunegate: warning:" in err and "max_total_tokens" in err.replace("-", "_")) is old, err
        assert "Traceback" not in err
    for budget in (["--max-total-tokens", "0"], ["--max-tokens", "-1"], ["--max-requests", "0"]):
        rc = main(["advise", str(data), "--no-model", *budget, "--out", str(tmp_path / "r0")])
        err = capsys.readouterr().err
        assert rc == ExitCode.USAGE and "greater than or equal to 1" in err, err  # a budget of nothing
    from advisor.errors import DeprecatedSetting

    with pytest.warns(DeprecatedSetting, match="--max-total-tokens"):
        parsed = build_parser("advise").parse_args(["advise", "d.jsonl", "--max-tokens", "7"])
    assert _advise_config(parsed).max_total_tokens == 7
    help_text = subprocess.run(
        [sys.executable, "-m", "advisor.cli", "advise", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--max-total-tokens" in help_text and "--max-tokens " not in help_text
    for group in ("data:", "model:", "prompting:", "budget", "output and gating:"):
        assert group in help_text, group


# ---------------------------------------------------------------------------------------------------
# The standard streams: whatever the environment made of stdout and stderr, a documented exit code

REPO = Path(__file__).resolve().parent.parent
NON_ASCII_ROWS = "".join(
    json.dumps({"prompt": f"critique {i} très {'bonne' if i % 2 else 'mauvaise'}", "completion": lab}) + "\n"
    for i, lab in enumerate(["positif →", "négatif ✗"] * 15)
)


def _tunegate(argv: list[str], redirect: str = "", env: dict[str, str] | None = None) -> tuple[int, str]:
    """`tunegate ARGV REDIRECT` run by bash (the redirection is shell syntax: `>&-`, `2>/dev/full`)."""
    import os

    command = f"{shlex.quote(sys.executable)} -m advisor.cli {shlex.join(argv)} {redirect}"
    done = subprocess.run(
        ["bash", "-c", command],
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def _reader_gone(argv: list[str], stream: str) -> tuple[int, str]:
    """Run with `stream` a pipe whose reader has already gone (what `| head -1` leaves): EPIPE on write."""
    import os

    pipe = {"stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL}
    if stream == "stderr":
        pipe = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    proc = subprocess.Popen(
        [sys.executable, "-m", "advisor.cli", *argv], env={**os.environ, "PYTHONPATH": str(REPO)}, **pipe
    )
    (proc.stdout or proc.stderr).close()  # type: ignore[union-attr]
    return proc.wait(timeout=120), ""


@pytest.fixture
def nonascii_data(tmp_path) -> Path:
    path = tmp_path / "d.jsonl"
    path.write_text(NON_ASCII_ROWS, encoding="utf-8")
    return path


@pytest.mark.parametrize("redirect", [">&-", "2>&-", "<&- >&- 2>&-"])
def test_a_closed_stream_is_discarded_not_a_crash(redirect, nonascii_data, tmp_path) -> None:
    out = tmp_path / "run"
    rc, text = _tunegate(["advise", str(nonascii_data), "--no-model", "--out", str(out)], redirect)
    assert rc == ExitCode.COLLECT_DATA, text  # the verdict's own code: the run itself is unharmed
    assert "Traceback" not in text
    # No file the run opened took the closed descriptor's number and received the output.
    doc = json.loads((out / "decision.json").read_text(encoding="utf-8"))
    assert doc["decision"]["verdict"] == "collect_data"


@pytest.mark.parametrize(
    "stream, argv",
    [
        ("stdout", ["rules", "list"]),
        ("stdout", ["advise"]),  # the rich summary: rich turns EPIPE into SystemExit(1) on its own
        ("stdout", ["advise", "--json"]),
        ("stderr", ["advise"]),  # the progress lines
    ],
)
def test_a_reader_that_went_away_ends_quietly_with_141(stream, argv, nonascii_data, tmp_path) -> None:
    if argv[0] == "advise":
        argv = ["advise", str(nonascii_data), "--no-model", "--out", str(tmp_path / "run"), *argv[1:]]
    rc, _ = _reader_gone(argv, stream)
    assert rc == ExitCode.BROKEN_PIPE == 141


def test_a_full_stdout_is_exit_8_naming_it(nonascii_data, tmp_path) -> None:
    for argv in (
        ["rules", "list"],
        ["advise", str(nonascii_data), "--no-model", "--out", str(tmp_path / "r")],
    ):
        rc, text = _tunegate(argv, "> /dev/full")
        assert rc == ExitCode.FILES, text
        assert text.strip().splitlines()[-1] == "tunegate: error: cannot write to stdout: the disk is full"
        assert "Traceback" not in text and "Exception ignored" not in text


def test_a_full_stderr_is_exit_8(nonascii_data, tmp_path) -> None:
    rc, text = _tunegate(
        ["advise", str(nonascii_data), "--no-model", "--out", str(tmp_path / "r")], "2>/dev/full"
    )
    assert rc == ExitCode.FILES
    assert "Traceback" not in text and "Exception ignored" not in text
    rc, _ = _tunegate(["rules", "list"], "2>/dev/full")  # nothing written to stderr: nothing fails
    assert rc == ExitCode.OK


@pytest.mark.parametrize(
    "env", [{"PYTHONIOENCODING": "ascii"}, {"PYTHONIOENCODING": "latin-1"}, {"LC_ALL": "C"}]
)
@pytest.mark.slow
def test_a_stdout_that_cannot_encode_the_text_gets_replacements(env, nonascii_data, tmp_path) -> None:
    out = tmp_path / "run"
    rc, text = _tunegate(["advise", str(nonascii_data), "--no-model", "--out", str(out)], "", env)
    assert rc == ExitCode.COLLECT_DATA, text
    assert "collect_data" in text and "Traceback" not in text and "not valid Unicode" not in text
    # --json on such a stdout is ASCII with \u escapes: it still reads back as the run's document.
    rc, text = _tunegate(
        ["advise", str(nonascii_data), "--no-model", "--out", str(out), "--json", "-q"], "", env
    )
    assert rc == ExitCode.COLLECT_DATA
    labels = json.loads(text)["audit"]["label_counts"]
    assert set(labels) == {"positif →", "négatif ✗"}


# ---------------------------------------------------------------------------------------------------
# --threshold for a list threshold: the documented `a,b` form, and a number refused


def _fired(out: Path) -> set[str]:
    doc = json.loads((out / "decision.json").read_text(encoding="utf-8"))
    return {r["id"] for r in doc["decision"]["fired"]}


@pytest.mark.parametrize("how", ["flag", "set", "config"])
def test_a_list_threshold_takes_the_a_b_form(how, nonascii_data, tmp_path) -> None:
    out = tmp_path / "run"
    extra = {
        "flag": ["--threshold", "specialist_domains=finance, law"],
        "set": ["--set", "thresholds.specialist_domains=finance,law"],
        "config": ["--config", str(tmp_path / "c.toml")],
    }[how]
    (tmp_path / "c.toml").write_text('[advise.thresholds]\nspecialist_domains = ["finance", "law"]\n')
    argv = ["advise", str(nonascii_data), "--no-model", "--out", str(out), "--domain", "finance", *extra]
    assert main(argv) == ExitCode.COLLECT_DATA
    doc = json.loads((out / "decision.json").read_text(encoding="utf-8"))
    assert doc["provenance"]["thresholds"]["specialist_domains"] == ["finance", "law"]
    assert "domain.specialist_language" in _fired(out)  # the rule reads the new list
    argv[argv.index("finance")] = "legal"  # no longer in the list: the rule stays quiet
    assert main(argv) == ExitCode.COLLECT_DATA
    assert "domain.specialist_language" not in _fired(out)


@pytest.mark.parametrize(
    "extra",
    [
        ["--threshold", "specialist_domains=5"],
        ["--threshold", "specialist_domains=legal,3"],
        ["--set", "thresholds.specialist_domains=0.5"],
        ["--threshold", "min_examples=a,b"],
    ],
)
def test_a_value_of_the_wrong_kind_for_a_threshold_is_exit_2_naming_it(
    extra, nonascii_data, tmp_path, capsys
):
    out = tmp_path / "run"
    rc = main(["advise", str(nonascii_data), "--no-model", "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc == ExitCode.USAGE
    name = extra[1].split("=")[0].removeprefix("thresholds.")
    assert f"'{name}'" in err and "Traceback" not in err
    assert not (out / "decision.json").exists()


def test_a_number_for_a_list_threshold_in_the_config_file_is_refused(nonascii_data, tmp_path, capsys) -> None:
    (tmp_path / "c.toml").write_text("[advise.thresholds]\nspecialist_domains = 5\n")
    argv = ["advise", str(nonascii_data), "--no-model", "--out", str(tmp_path / "r"), "--config"]
    assert main([*argv, str(tmp_path / "c.toml")]) == ExitCode.USAGE
    assert "'specialist_domains'" in capsys.readouterr().err
