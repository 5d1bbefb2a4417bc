"""Hostile input and a failing environment at the edges: one documented exit code, one line, no traceback.

Every case runs `tunegate` in-process through `advisor.cli.main` (a hang-prone one, the named pipe,
in a subprocess with a timeout). Disk faults are simulated by making the OS calls fail with the real
errno (the tests run as root, where permission bits do not stop writes).
"""

from __future__ import annotations

import errno
import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from advisor import files
from advisor.cli import main
from advisor.config import AdviseConfig
from advisor.errors import ConfigError, ExitCode
from advisor.finetune.config import TrainConfig
from advisor.measure import stats

REPO = Path(__file__).resolve().parents[1]


def rows(n: int = 30) -> str:
    return "".join(
        json.dumps(
            {
                "prompt": f"review number {i} {'good' if i % 2 else 'bad'}",
                "completion": "pos" if i % 2 else "neg",
            }
        )
        + "\n"
        for i in range(n)
    )


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.jsonl"
    path.write_text(rows(), encoding="utf-8")
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("tunegate: error:")]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------- the before-stop hook's three


@pytest.mark.parametrize(
    "content,expected",
    [
        ("[" * 50000 + "\n", "nested deeper than 64 levels"),
        ('{"prompt": "a", "completion": ' + "9" * 6000 + "}\n", "number is too large"),
        ('{"prompt": "a", "completion": "b\\ud800"}\n', "field 'completion': holds a lone UTF-16 surrogate"),
        (
            '{"messages": [{"role": "user", "content": "\\udfff"}, {"role": "assistant", "content": "x"}]}\n',
            "field 'messages[0].content'",
        ),
        ('{"prompt": "a", "completion": ' + "[" * 70 + "]" * 70 + "}\n", "nested deeper"),
        ('{"text": "a", "label": 1e999}\n', "not a finite number"),
    ],
)
def test_hostile_json_lines_exit_3_naming_the_line(tmp_path, capsys, content: str, expected: str) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text(content, encoding="utf-8")
    rc, err = run(["advise", str(data), "--no-model", "--out", str(tmp_path / "run")], capsys)
    assert rc == ExitCode.BAD_INPUT
    assert f"{data}:1: " in err and expected in err


def test_valid_surrogate_pairs_and_moderate_nesting_still_load(tmp_path, capsys) -> None:
    data = tmp_path / "ok.jsonl"
    lines = [
        {"prompt": f"smile \ud83d\ude00 {i}", "completion": "pos" if i % 2 else "neg", "x": [[[[1]]]]}
        for i in range(30)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")  # ASCII \\ud83d\\ude00
    rc, err = run(["advise", str(data), "--no-model", "--out", str(tmp_path / "run")], capsys)
    assert rc in (0, 10, 11, 12, 13), err
    assert json.loads((tmp_path / "run" / "decision.json").read_text())["dataset"]["n_examples"] == 30


# --------------------------------------------------------------------------- regular files only


def test_fifo_data_file_is_refused_without_hanging(tmp_path) -> None:
    fifo = tmp_path / "data.jsonl"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "advisor.cli",
            "advise",
            str(fifo),
            "--no-model",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == ExitCode.BAD_INPUT
    assert "not a regular file (a named pipe)" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("flag", ["--config", "--prices", "--system-prompt"])
def test_fifo_side_files_are_refused(tmp_path, good, capsys, flag: str) -> None:
    fifo = tmp_path / "side.toml"
    os.mkfifo(fifo)
    rc, err = run(["advise", str(good), "--no-model", flag, str(fifo), "--out", str(tmp_path / "r")], capsys)
    assert rc == ExitCode.USAGE
    assert f"{fifo}: not a regular file (a named pipe)" in one_line_error(err)


def test_open_regular_does_not_block_on_a_fifo(tmp_path) -> None:
    fifo = tmp_path / "p"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="named pipe"):
        files.open_regular(fifo, ConfigError)


def test_unreadable_data_file_exits_3(tmp_path, good, capsys, monkeypatch) -> None:
    real_open = os.open

    def deny(path, flags, *a, **k):  # type: ignore[no-untyped-def]
        if str(path) == str(good):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", deny)
    rc, err = run(["advise", str(good), "--no-model", "--out", str(tmp_path / "r")], capsys)
    assert rc == ExitCode.BAD_INPUT
    assert f"{good}: cannot open data file: Permission denied" in one_line_error(err)


# --------------------------------------------------------------------------- non-finite numbers everywhere


@pytest.mark.parametrize(
    "extra,field",
    [
        (["--latency-budget-ms", "nan"], "latency_budget_ms"),
        (["--latency-budget-ms", "inf"], "latency_budget_ms"),
        (["--latency-budget-ms=-inf"], "latency_budget_ms"),
        (["--latency-budget-ms", "1e308"], "latency_budget_ms"),
        (["--set", "horizon_days=nan"], "horizon_days"),
        (["--set", "horizon_days=inf"], "horizon_days"),
        (["--set", "horizon_days=1e308"], "horizon_days"),
        (["--set", "min_gain=nan"], "min_gain"),
        (["--set", "volume_per_day=inf"], "volume_per_day"),
        (["--set", "quality_target=nan"], "quality_target"),
        (["--set", "eval_size=" + "9" * 5000], "eval_size"),
        (["--set", "seed=" + "9" * 30], "seed"),
        (["--seed", "9" * 30], "seed"),
        (["--volume", "9" * 400 + "/day"], "volume"),
        (["--volume", "1" + "0" * 20 + "/hour"], "volume"),
        (["--target", "accuracy=nan"], "--target"),
        (["--target", "accuracy=inf"], "--target"),
        (["--threshold", "min_examples=nan"], "min_examples"),
        (["--threshold", "min_examples=inf"], "min_examples"),
        (["--threshold", "min_examples=1e300"], "min_examples"),
    ],
)
def test_non_finite_flags_exit_2_naming_the_field(
    tmp_path, good, capsys, extra: list[str], field: str
) -> None:
    rc, err = run(["advise", str(good), "--no-model", "--out", str(tmp_path / "r"), *extra], capsys)
    assert rc == ExitCode.USAGE
    line = one_line_error(err)
    assert f"{field}'" in line and len(line) < 400
    assert not (tmp_path / "r" / "decision.json").exists()


@pytest.mark.parametrize(
    "body,needle",
    [
        ("horizon_days = nan\n", "horizon_days"),
        ("latency_budget_ms = inf\n", "latency_budget_ms"),
        ("volume_per_day = 1e308\n", "volume_per_day"),
        ("seed = " + "9" * 6000 + "\n", "number is too large"),
        ("k_ladder = " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
        ('domain = "\\ud800"\n', "not a Unicode scalar value"),
        ("[thresholds]\nmin_examples = nan\n", "thresholds.min_examples"),
    ],
)
def test_config_file_numbers_and_limits(tmp_path, good, capsys, body: str, needle: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(body, encoding="utf-8")
    rc, err = run(
        ["advise", str(good), "--no-model", "--config", str(cfg), "--out", str(tmp_path / "r")], capsys
    )
    assert rc == ExitCode.USAGE
    assert needle in one_line_error(err)


@pytest.mark.parametrize(
    "body,needle",
    [
        ("[api]\ninput_per_million = nan\noutput_per_million = 1\n", "input_per_million"),
        ("[api]\ninput_per_million = inf\noutput_per_million = 1\n", "input_per_million"),
        ("[api]\ninput_per_million = 1e308\noutput_per_million = 1\n", "input_per_million"),
        ("[api]\ninput_per_million = " + "9" * 400 + "\n", "input_per_million"),
        ("[api]\ninput_per_million = " + "9" * 6000 + "\n", "number is too large"),
        ("[finetune]\nepochs = nan\n", "epochs"),
        ('[meta]\ncurrency = "\\udc00"\n', "not a Unicode scalar value"),
        ("x = " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
    ],
)
def test_price_file_numbers_and_limits(tmp_path, good, capsys, body: str, needle: str) -> None:
    prices = tmp_path / "p.toml"
    prices.write_text(body, encoding="utf-8")
    rc, err = run(
        ["advise", str(good), "--no-model", "--prices", str(prices), "--out", str(tmp_path / "r")], capsys
    )
    assert rc == ExitCode.USAGE
    line = one_line_error(err) if err.count("tunegate: error:") == 1 else err
    assert needle in line and str(prices) in line


RULE = """[[rule]]
id = "r1"
kind = "vote"
verdict = "prompt"
weight = {weight}
message = "m"
source = {{ title = "t", url = "https://example.org" }}
[[rule.when]]
signal = "n_examples"
op = "gt"
{operand}
"""


@pytest.mark.parametrize(
    "weight,operand,needle",
    [
        ("inf", "value = 1", "'weight'"),
        ("nan", "value = 1", "'weight'"),
        ("1e308", "value = 1", "'weight' must be at most 1000"),
        ("1", "value = nan", "not NaN"),
        ("1", "value = inf", "finite"),
        ("1", "value = -1e308", "magnitude"),
        ("1", 'threshold = "t"\n[thresholds]\nt = inf', "finite"),
        ("1", "value = " + "9" * 5000, "number is too large"),
        ("1", "value = " + "[" * 2000 + "]" * 2000, "nested too deeply"),
    ],
)
def test_rule_numbers_are_validated(tmp_path, capsys, weight: str, operand: str, needle: str) -> None:
    (tmp_path / "r.toml").write_text(RULE.format(weight=weight, operand=operand), encoding="utf-8")
    rc, err = run(["rules", "validate", str(tmp_path)], capsys)
    assert rc == ExitCode.BAD_RULES
    assert needle in err and "r.toml" in err


def test_three_huge_votes_cannot_make_the_confidence_nan(tmp_path, good, capsys) -> None:
    rules = "".join(
        RULE.format(weight="1000", operand="value = 0").replace('id = "r1"', f'id = "big{i}"')
        for i in range(3)
    )
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "big.toml").write_text(rules, encoding="utf-8")
    rc, err = run(
        ["advise", str(good), "--no-model", "--rules", str(tmp_path / "rules"), "--out", str(tmp_path / "r")],
        capsys,
    )
    assert rc in (0, 10, 11, 12, 13), err
    decision = json.loads((tmp_path / "r" / "decision.json").read_text())["decision"]
    assert decision["confidence"] is None  # data only: nothing per item to resample
    assert 0.0 <= decision["vote_margin"] <= 1.0


@pytest.mark.parametrize(
    "override", ["lr=nan", "lr=inf", "dropout=nan", "epochs=inf", "alpha=1e308", "r=" + "9" * 5000]
)
def test_train_set_rejects_non_finite(override: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_toml(None, [override])
    assert override.split("=")[0] in str(info.value)


# --------------------------------------------------------------------------- the environment


def test_out_that_is_a_file_exits_8(tmp_path, good, capsys) -> None:
    out = tmp_path / "out"
    out.write_text("x")
    rc, err = run(["advise", str(good), "--no-model", "--out", str(out)], capsys)
    assert rc == ExitCode.FILES
    assert f"{out}: the run folder (--out) is a file, not a folder" in one_line_error(err)


@pytest.mark.parametrize(
    "where,code,reason",
    [
        ("mkstemp", errno.EROFS, "the file system is read-only"),
        ("mkstemp", errno.EACCES, "permission denied"),
        ("fsync", errno.ENOSPC, "the disk is full"),
        ("fsync", errno.EDQUOT, "the disk quota is exceeded"),
    ],
)
def test_write_faults_exit_8_and_leave_no_temp_files(
    tmp_path, good, capsys, monkeypatch, where, code, reason
) -> None:
    out = tmp_path / "run"
    out.mkdir()

    def fail(*a, **k):  # type: ignore[no-untyped-def]
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tempfile if where == "mkstemp" else os, where, fail)
    rc, err = run(["advise", str(good), "--no-model", "--out", str(out)], capsys)
    assert rc == ExitCode.FILES
    line = one_line_error(err)
    assert reason in line and str(out) in line
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_stray_os_and_sqlite_errors_map_to_exit_8(monkeypatch, capsys) -> None:
    import advisor.cli as cli

    for exc in (
        sqlite3.DatabaseError("file is not a database"),
        OSError(errno.ENOSPC, "No space left on device", "/cache/responses.sqlite"),
    ):

        def boom(args, exc=exc):  # type: ignore[no-untyped-def]
            raise exc

        monkeypatch.setattr(cli, "_dispatch", boom)
        rc, err = run(["rules", "list"], capsys)
        assert rc == ExitCode.FILES
        one_line_error(err)


def test_a_real_bug_is_not_swallowed(monkeypatch) -> None:
    import advisor.cli as cli

    def bug(args):  # type: ignore[no-untyped-def]
        raise ValueError("a bug")

    monkeypatch.setattr(cli, "_dispatch", bug)
    with pytest.raises(ValueError, match="a bug"):
        main(["rules", "list"])


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_reports_follow_the_umask(tmp_path, good, capsys, mask: int, mode: int) -> None:
    old = os.umask(mask)
    try:
        rc, err = run(["advise", str(good), "--no-model", "--out", str(tmp_path / "r")], capsys)
    finally:
        os.umask(old)
    assert rc in (0, 10, 11, 12, 13), err
    for name in ("decision.json", "report.md", "report.html", "config.json", "split.json"):
        assert stat.S_IMODE((tmp_path / "r" / name).stat().st_mode) == mode, name


# --------------------------------------------------------------------------- credentials in URLs


@pytest.mark.parametrize("url", ["http://user:secret@127.0.0.1:9/v1", "https://secret@host/v1"])
def test_base_url_with_credentials_is_refused(tmp_path, good, capsys, url: str) -> None:
    rc, err = run(
        ["advise", str(good), "--backend", "openai", "--base-url", url, "--out", str(tmp_path / "r")], capsys
    )
    assert rc == ExitCode.USAGE
    line = one_line_error(err)
    assert "'base_url'" in line and "OPENAI_API_KEY" in line and "secret" not in line
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_base_url_credentials_from_the_environment_are_refused(tmp_path, good, capsys, monkeypatch) -> None:
    monkeypatch.delenv("TUNEGATE_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://u:secret@127.0.0.1:9/v1")
    rc, err = run(["advise", str(good), "--backend", "openai", "--out", str(tmp_path / "r")], capsys)
    assert rc == ExitCode.USAGE
    assert "$OPENAI_BASE_URL" in one_line_error(err) and "secret" not in err


def test_recorded_urls_are_redacted() -> None:
    from advisor.recipe import _backend_info

    class Fake:
        name = "openai"
        model_id = "m@http://u:secret@host/v1"

    assert _backend_info(Fake())["model_id"] == "m@http://***@host/v1"
    config = AdviseConfig(data="d.jsonl", out="o")
    object.__setattr__(config, "base_url", "http://u:secret@host/v1")  # past the check, as a bug would
    assert config.to_dict()["base_url"] == "http://***@host/v1"


# --------------------------------------------------------------------------- bounded memory


@pytest.mark.parametrize("n", [1, 7, 333, 5000])
def test_chunked_bootstrap_gives_the_all_at_once_result(n: int, monkeypatch) -> None:
    rng = np.random.default_rng(n)
    a = rng.integers(0, 2, n).astype(float)
    b = rng.integers(0, 2, n).astype(float)
    idx = np.random.default_rng(5).integers(0, n, size=(stats.N_RESAMPLES, n))
    old = (a - b)[idx].mean(axis=1)
    lo, hi = stats._percentiles(old, stats.CONFIDENCE)
    monkeypatch.setattr(stats, "CHUNK_ELEMENTS", 1000)  # many small blocks
    new = stats.paired_bootstrap_mean(a, b, seed=5)
    assert (new.low, new.high, new.p_value) == (lo, hi, stats._paired_p(old))
    labels = ["x", "y"]
    ya = [labels[int(v)] for v in a]
    yb = [labels[int(v)] for v in b]
    chunked = stats.paired_bootstrap_macro_f1(ya, ya, yb, labels, seed=5)
    monkeypatch.setattr(stats, "CHUNK_ELEMENTS", 1 << 40)  # one block: the old way
    assert stats.paired_bootstrap_macro_f1(ya, ya, yb, labels, seed=5) == chunked


def test_learning_probe_caps_text_length() -> None:
    from advisor.measure.learning import MAX_PROBE_CHARS, probe_learning_curve

    rng = np.random.default_rng(0)
    words = np.array(["good", "bad", "fine", "poor", "great", "awful", "film", "plot"])
    texts = [" ".join(rng.choice(words, 12)) for _ in range(80)]
    labels = ["pos" if ("good" in t or "great" in t) else "neg" for t in texts]
    long_texts = list(texts)
    long_texts[0] = texts[0] + " " + "x" * (MAX_PROBE_CHARS * 50)  # a megabyte of one text
    capped = [t[:MAX_PROBE_CHARS] for t in long_texts]
    a = probe_learning_curve(
        long_texts[:60], labels[:60], long_texts[60:], labels[60:], target=0.9, n_boot=50
    )
    b = probe_learning_curve(capped[:60], labels[:60], capped[60:], labels[60:], target=0.9, n_boot=50)
    assert a == b


# --------------------------------------------------------------------------- the terminal


def test_usage_errors_show_bad_values_escaped(capsys) -> None:
    rc = main(["advise", "d.jsonl", "--seed", "\x1b[2J\x1b]8;;https://e.example\x07x"])
    err = capsys.readouterr().err
    assert rc == ExitCode.USAGE
    assert "\x1b" not in err and "\x07" not in err and "\\x1b[2J" in err


def test_json_output_is_valid_and_terminal_safe(tmp_path, capsys) -> None:
    data = tmp_path / "c1.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": f"i {i}", "completion": "a\x9b31m\u202e" if i % 2 else "b"}) + "\n"
            for i in range(30)
        ),
        encoding="utf-8",
    )
    rc = main(["advise", str(data), "--no-model", "--json", "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert rc in (0, 10, 11, 12, 13)
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]", out)
    assert "a\x9b31m\u202e" in json.loads(out)["dataset"]["labels"]


def test_an_error_quoting_huge_data_stays_one_short_line(tmp_path, capsys) -> None:
    data = tmp_path / "role.jsonl"
    role = "\x1b" + "r" * 1_000_000
    data.write_text(
        json.dumps({"messages": [{"role": role, "content": "a"}, {"role": "assistant", "content": "b"}]})
        + "\n"
    )
    rc, err = run(["advise", str(data), "--no-model", "--out", str(tmp_path / "r")], capsys)
    assert rc == ExitCode.BAD_INPUT
    line = one_line_error(err)
    assert len(line) < 2200 and "characters)" in line and "\x1b" not in line
