"""The advise config: every problem at once naming field and source, text values read by type, help from
the fields."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from pydantic import ValidationError

from advisor.cli import main
from advisor.config import AdviseConfig, resolve
from advisor.errors import ConfigError, ExitCode
from advisor.finetune.config import TrainConfig


def test_every_problem_in_every_layer_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        resolve(
            ("cfg.toml", {"seed": True, "horizon_days": float("nan"), "bogus": 1}),
            (None, {"eval_size": 0}),
            ("--set", {"task": "sort", "k_ladder": "1,x"}),
        )
    found = {(p.field, p.file) for p in err.value.problems}
    assert found == {
        ("seed", "cfg.toml"),
        ("horizon_days", "cfg.toml"),
        ("bogus", "cfg.toml"),
        ("eval_size", None),
        ("task", "--set"),
        ("k_ladder[1]", "--set"),
    }
    assert err.value.exit_code == ExitCode.USAGE


def test_text_values_are_read_by_the_field_type() -> None:
    config = resolve(
        (None, {"data": "d.jsonl", "domain": "legal"}),
        (
            "--set",
            {"domain": "none", "k_ladder": "1, 3", "needs_consistent_style": "yes", "thresholds.x": "2"},
        ),
    )
    assert config.domain is None and config.k_ladder == (1, 3) and config.needs_consistent_style is True
    assert config.thresholds == {"x": 2.0} and config.out == str(Path("runs") / "d")
    with pytest.raises(ValidationError, match="frozen"):
        config.seed = 3  # type: ignore[misc]


def test_direct_construction_reports_like_the_files() -> None:
    with pytest.raises(ConfigError) as err:
        AdviseConfig(eval_size=0, backend="gpu")
    assert {p.field for p in err.value.problems} == {"eval_size", "backend"}


@pytest.mark.parametrize(("command", "model"), [("advise", AdviseConfig), ("train", TrainConfig)])
def test_help_lists_every_setting_with_its_description(command: str, model: type) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([command, "--help"]) == 0
    text = out.getvalue()
    for name, info in model.model_fields.items():
        assert info.description, name
        assert f"  {name} " in text and info.description.split(",")[0][:30] in " ".join(text.split())


def test_server_settings_concurrency_and_tokenizer() -> None:
    config = resolve((None, {"data": "d.jsonl", "backend": "openai"}), ("--set", {"concurrency": "8"}))
    assert config.concurrency == 8 and config.tokenizer is None
    assert AdviseConfig().concurrency == 4
    with pytest.raises(ConfigError) as err:
        AdviseConfig(backend="openai", concurrency=0)
    assert [p.field for p in err.value.problems] == ["concurrency"]
    assert AdviseConfig(backend="openai", tokenizer="org/name").tokenizer == "org/name"
    with pytest.raises(ConfigError) as err:
        AdviseConfig(tokenizer="org/name")  # the hf backend brings its own
    assert [p.field for p in err.value.problems] == ["tokenizer"]
    assert "--backend openai" in str(err.value.problems[0])
