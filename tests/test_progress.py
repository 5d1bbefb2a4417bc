"""Progress: every long stage of a run reports through advisor.progress; -q prints nothing but the result."""

from __future__ import annotations

import io
import json

import pytest
from fakes import FakeBackend
from rich.console import Console

from advisor import progress, recipe
from advisor.cli import main
from advisor.config import AdviseConfig
from advisor.demo import write_demo_data
from advisor.progress_bars import RichReporter

KEYWORDS = {"positive": {"good", "great", "fun"}, "negative": {"bad", "dull", "boring"}}


@pytest.fixture
def fake(monkeypatch) -> FakeBackend:
    backend = FakeBackend(KEYWORDS)
    monkeypatch.setattr(recipe, "_open_backend", lambda config, model=None: backend)
    return backend


@pytest.mark.slow
def test_a_run_with_bars_forced_on_shows_a_bar_per_stage(tmp_path, fake) -> None:
    data = write_demo_data(str(tmp_path / "data"), n=600)
    config = AdviseConfig(
        data=str(data),
        out=str(tmp_path / "run"),
        eval_size=40,
        dev_size=20,
        k_ladder=(1, 2),
        latency_samples=3,
    )
    console = Console(record=True, force_terminal=True, width=140, file=io.StringIO())
    reporter = RichReporter(console)
    with reporter.shown(), progress.reporting(reporter):
        result = recipe.advise(config)
    assert result.prompting is not None
    arms = [a.name for a in result.prompting.arms]
    stages = set(reporter.stages)
    assert {f"prompting {arm}" for arm in arms} <= stages
    assert {"prompting few_shot_k2 (dev race round 1)", "latency samples", "domain perplexity"} <= stages
    # each race round on dev and each step of the eval split shows as its own bar
    assert "eval items scored" in stages, sorted(stages)
    assert "learning curve (probe)" in stages
    text = console.export_text()
    for stage in ("latency samples", "domain perplexity", "learning curve (probe)", f"prompting {arms[0]}"):
        assert stage in text
    assert "ETA" in text
    assert not reporter.tasks  # every stage ran to its end


@pytest.mark.slow
def test_quiet_prints_nothing_but_the_result(tmp_path, fake, capsys) -> None:
    data = write_demo_data(str(tmp_path / "data"), n=600)
    argv = ["advise", str(data), "--out", str(tmp_path / "run"), "--eval-size", "40", "--dev-size", "20"]
    argv += ["--k", "1", "--json", "--set", "latency_samples=2"]
    rc = main(["-q", *argv])
    out, err = capsys.readouterr()
    assert err == ""
    assert json.loads(out)["decision"]["verdict"] and rc in (0, 10, 11, 12, 13)
    assert fake.loglik_requests  # the model was used: the silence is -q, not an empty run

    # without -q, not a terminal: one line per finished stage on stderr, stdout still one JSON document
    rc = main([*argv, "--out", str(tmp_path / "run2")])
    out, err = capsys.readouterr()
    json.loads(out)
    assert "latency samples: " in err and "domain perplexity: " in err and "prompting zero_shot: " in err


def test_quiet_is_accepted_after_the_command_too(tmp_path, capsys) -> None:
    data = write_demo_data(str(tmp_path / "data"), n=600)
    rc = main(["advise", str(data), "--no-model", "--out", str(tmp_path / "run"), "-q"])
    out, err = capsys.readouterr()
    assert err == "" and "verdict" in out.lower()
    assert rc in (0, 10, 11, 12, 13)
