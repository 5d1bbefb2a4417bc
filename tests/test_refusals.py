"""Inputs found by a hostile-input probe that crashed (exit 70), were silently dropped or reached a
server: each is refused with a documented exit code and one line, before the run folder is touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from advisor.cli import main
from advisor.errors import ExitCode

ROWS = "".join(
    json.dumps({"prompt": f"text {i}", "completion": "yes" if i % 3 else "no"}) + "\n" for i in range(60)
)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "d.jsonl"
    path.write_text(ROWS)
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


@pytest.mark.parametrize("seed", ["-1", "4294967296", "9223372036854775807"])
def test_a_seed_numpy_or_scikit_learn_refuses_is_a_usage_error(seed, data, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    rc, err = _run(["advise", str(data), "--no-model", "--seed", seed, "--out", str(out)], capsys)
    assert rc == ExitCode.USAGE and "field 'seed'" in err and not out.exists()
    rc, err = _run(["advise", str(data), "--no-model", "--set", f"seed={seed}", "--out", str(out)], capsys)
    assert rc == ExitCode.USAGE and not out.exists()


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_header_naming_the_input_column_twice_is_refused(kind, tmp_path, capsys) -> None:
    if kind == "csv":
        path = tmp_path / "d.csv"
        path.write_text("text,text,label\n" + "".join(f"a {i},b {i},{i % 2}\n" for i in range(30)))
    else:
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        path = tmp_path / "d.parquet"
        names = ["text", "text", "label"]
        cols = [pa.array([f"a {i}" for i in range(30)]), pa.array([f"b {i}" for i in range(30)]),
                pa.array([str(i % 2) for i in range(30)])]  # fmt: skip
        pq.write_table(pa.Table.from_arrays(cols, names=names), path)
    rc, err = _run(["advise", str(path), "--no-model", "--out", str(tmp_path / "run")], capsys)
    assert rc == ExitCode.BAD_INPUT and "'text' 2 times" in err and str(path) in err


def test_no_model_with_a_backend_is_refused_before_any_call(data, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["advise", str(data), "--no-model", "--backend", "openai", "--base-url", "http://127.0.0.1:9"]
    rc, err = _run([*argv, "--out", str(out)], capsys)
    assert rc == ExitCode.USAGE and "not allowed with argument --no-model" in err and not out.exists()
    assert err.count("\n") == 1


def test_a_bad_price_file_is_refused_before_the_run_folder_and_by_the_dry_run(data, tmp_path, capsys) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text("[api]\ninput_per_million = 'cheap'\n")
    out = tmp_path / "run"
    rc, err = _run(["advise", str(data), "--no-model", "--prices", str(prices), "--out", str(out)], capsys)
    assert rc == ExitCode.USAGE and str(prices) in err and not out.exists()
    rc, err = _run(["advise", str(data), "--no-model", "--dry-run", "--prices", str(prices)], capsys)
    assert rc == ExitCode.USAGE and str(prices) in err


def test_a_config_file_reads_thresholds_beside_advise_and_refuses_other_tables(
    data, tmp_path, capsys
) -> None:
    out = tmp_path / "run"
    config = tmp_path / "c.toml"
    config.write_text("[advise]\nseed = 1\n[thresholds]\nmin_examples = 5\n")
    _run(["advise", str(data), "--no-model", "--config", str(config), "--out", str(out)], capsys)
    written = json.loads((out / "config.json").read_text())
    assert written["thresholds"] == {"min_examples": 5} and written["seed"] == 1
    config.write_text("[advise]\nseed = 1\n[bogus]\nx = 1\n")
    rc, err = _run(
        ["advise", str(data), "--no-model", "--config", str(config), "--out", str(tmp_path / "r2")], capsys
    )
    assert rc == ExitCode.USAGE and "bogus" in err and not (tmp_path / "r2").exists()


@pytest.mark.parametrize(
    "override,why",
    [
        ("min_predictive_power=2", "between 0 and 1"),
        ("min_verdict_probability=-1", "at least 0"),
        ("min_examples=-5", "at least 0"),
        ("min_examples=1.5", "whole number"),
        ("pilot_noninferior_low=0.5", "between -1 and 0"),
    ],
)
def test_a_threshold_outside_its_range_is_refused(override, why, data, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    rc, err = _run(["advise", str(data), "--no-model", "--threshold", override, "--out", str(out)], capsys)
    assert rc == ExitCode.USAGE and why in err and override.split("=")[0] in err and not out.exists()


def test_a_rule_folder_value_outside_its_range_is_a_rules_error(tmp_path) -> None:
    from advisor.decide.rules import load_rules
    from advisor.errors import RulesError

    (tmp_path / "mine.toml").write_text("[thresholds]\ndegenerate_top_share = 1.5\n")
    with pytest.raises(RulesError, match="between 0 and 1"):
        load_rules([tmp_path])
    (tmp_path / "mine.toml").write_text("[thresholds]\nmy_share = 0.5\n[limits]\nmy_share = [1, 0]\n")
    with pytest.raises(RulesError, match="LOW <= HIGH"):
        load_rules([tmp_path])


def test_every_shipped_threshold_has_a_range_and_lies_in_it() -> None:
    import tomllib

    from advisor.decide.rules import load_rules, shipped_rules_dir

    limits: dict[str, list[float]] = {}
    for path in shipped_rules_dir().iterdir():
        if path.name.endswith(".toml"):
            limits.update(tomllib.loads(path.read_text()).get("limits", {}))
    numeric = {k: v for k, v in load_rules([]).thresholds.items() if isinstance(v, int | float)}
    assert set(numeric) == set(limits)
    assert all(limits[k][0] <= v <= limits[k][1] for k, v in numeric.items())


def test_run_reads_its_training_settings_before_advising(data, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["run", str(data), "--no-model", "--train-set", "max_steps=abc", "--out", str(out)]
    rc, err = _run(argv, capsys)
    assert rc == ExitCode.USAGE and "max_steps" in err and not out.exists()
