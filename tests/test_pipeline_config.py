"""TrainConfig: defaults, validation naming field and allowed values, TOML + key=value overrides."""

from __future__ import annotations

import pytest

from advisor.errors import ConfigError, ExitCode
from advisor.finetune.config import TrainConfig


def test_defaults_are_the_documented_ones() -> None:
    c = TrainConfig()
    assert (c.r, c.alpha, c.dropout, c.target_modules, c.lr, c.max_seq_len) == (
        8,
        16,
        0.05,
        "all-linear",
        2e-4,
        256,
    )
    assert (c.schedule, c.qlora, c.bf16, c.merge, c.group_by_length) == ("cosine", False, "auto", False, True)


def test_every_bad_field_is_reported_at_once_with_allowed_values() -> None:
    with pytest.raises(ConfigError) as err:
        TrainConfig(r=0, schedule="step", dropout=1.5, bf16="yes")
    fields = {p.field for p in err.value.problems}
    assert fields == {"r", "schedule", "dropout", "bf16"}
    assert "cosine, linear" in str(err.value)
    assert err.value.exit_code == ExitCode.USAGE


def test_toml_then_overrides(tmp_path) -> None:
    f = tmp_path / "tunegate.toml"
    f.write_text('[advise]\nseed = 3\n\n[train]\nr = 16\nlr = 1e-4\ntarget_modules = ["q_proj", "v_proj"]\n')
    c = TrainConfig.from_toml(f, ["lr=5e-4", "schedule=linear", "qlora=false", "bf16=auto", "max_steps=7"])
    assert c.r == 16 and c.lr == 5e-4 and c.schedule == "linear" and c.max_steps == 7
    assert c.target_modules == ("q_proj", "v_proj")
    assert c.to_dict()["target_modules"] == ["q_proj", "v_proj"]
    assert TrainConfig.from_toml(None, ["target_modules=q_proj,k_proj"]).target_modules == (
        "q_proj",
        "k_proj",
    )


@pytest.mark.parametrize(
    ("override", "field"),
    [("rank=4", "rank"), ("r=four", "r"), ("qlora=maybe", "qlora"), ("lr", None)],
)
def test_bad_overrides_name_the_field(override: str, field: str | None) -> None:
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_toml(None, [override])
    assert err.value.problems[0].field == field


def test_unknown_toml_key_is_an_error(tmp_path) -> None:
    f = tmp_path / "t.toml"
    f.write_text("[train]\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_toml(f)
    assert err.value.problems[0].field == "learning_rate"
    assert err.value.problems[0].file == str(f)
