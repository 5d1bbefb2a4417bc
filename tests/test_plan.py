"""--dry-run: the planned requests match what the real run sends, and the dry run sends none."""

from __future__ import annotations

import json

import pytest
from fakes import FakeBackend

from advisor import recipe
from advisor.cli import main
from advisor.config import AdviseConfig
from advisor.demo import write_demo_data
from advisor.errors import ExitCode
from advisor.plan import plan_run

KEYWORDS = {"positive": {"good", "great", "fun"}, "negative": {"bad", "dull", "boring"}}
SETTINGS = {"eval_size": 40, "dev_size": 20, "k_ladder": (1, 2), "latency_samples": 3}


@pytest.fixture
def fake(monkeypatch) -> FakeBackend:
    backend = FakeBackend(KEYWORDS)
    monkeypatch.setattr(recipe, "_open_backend", lambda config, model=None: backend)
    return backend


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    return str(write_demo_data(str(tmp_path_factory.mktemp("data")), n=600))


def _sent(fake: FakeBackend) -> int:
    """Distinct requests the run sent (a repeated one is answered by the response cache in a real run)."""
    return len(set(fake.loglik_requests)) + len(set(fake.gen_requests))


@pytest.mark.slow
@pytest.mark.parametrize("grow", [False, True], ids=["sure verdict", "eval split grows"])
def test_the_estimate_is_within_20_percent_of_the_real_run_and_makes_no_call(
    data, tmp_path, fake, grow
) -> None:
    # P(verdict) floor 0: the first eval step settles it; above 1: every step allowed is scored
    config = AdviseConfig(
        data=data,
        out=str(tmp_path / "run"),
        thresholds={"min_verdict_probability": 1.01 if grow else 0.0, "initial_eval_items": 20},
        **SETTINGS,
    )
    plan = plan_run(config)
    assert fake.loglik_requests == [] and fake.gen_requests == []
    assert not (tmp_path / "run").exists()
    stages = {s.stage for s in plan.stages}
    assert {"prompting arms", "latency samples", "domain perplexity"} <= stages

    result = recipe.advise(config)
    sent = _sent(fake)
    assert result.split is not None and result.split.eval_growth is not None
    assert result.split.eval_growth.rounds == (3 if grow else 0)  # 20 -> 40 in the split, 2 rounds beyond
    # Unsure answers never settle the verdict: the plan then walks every step itself (planned); a sure
    # one stops at the first step and bounds the rest (marked ≤).
    steps = next((s for s in plan.stages if s.stage.startswith("eval steps")), None)
    assert (steps is None) if grow else (steps is not None and "up to 60 more items" in steps.stage)
    assert steps is None or steps.upper_bound
    estimate = plan.total("requests")
    assert abs(estimate - sent) <= 0.2 * sent, (estimate, sent)
    assert sent <= plan.total("requests", upper=True)
    assert plan.total("prompt_tokens") > 0 and plan.total("answer_tokens") > 0


class _Reporting(FakeBackend):
    """The fake, reporting each finished answer as the backend protocol allows (the cache stores them so)."""

    def loglikelihood(self, requests, on_done=None):
        out = super().loglikelihood(requests)
        if on_done is not None:
            on_done(range(len(out)), out)
        return out

    def generate(self, requests, on_done=None):
        out = super().generate(requests)
        if on_done is not None:
            on_done(range(len(out)), out)
        return out


@pytest.mark.slow
def test_a_warm_cache_replays_the_run_and_plans_no_new_request(data, tmp_path, monkeypatch) -> None:
    from advisor.backends.cache import CachedBackend

    fake = _Reporting(KEYWORDS)
    cached = CachedBackend(fake, tmp_path / "responses.sqlite")
    monkeypatch.setattr(recipe, "_open_backend", lambda config, model=None: cached)
    config = AdviseConfig(
        data=data, out=str(tmp_path / "run"), thresholds={"initial_eval_items": 20}, **SETTINGS
    )
    cold = plan_run(config)
    assert cold.total("new") > 0 and cached.stats()["calls"] == 0
    recipe.advise(config)
    sent = cached.stats()["calls"]
    assert sent > 0 and sent <= cold.total("new", upper=True)
    warm = plan_run(config)
    assert cached.stats()["calls"] == sent  # the dry run asked the model nothing
    assert warm.total("new", upper=True) == 0 and warm.seconds in (None, 0.0)  # no rate for the fake
    # the replay walked the run's own path: every request the run sent, and no other
    assert warm.total("requests") == len(set(fake.loglik_requests)) + len(set(fake.gen_requests))


@pytest.mark.slow
def test_cli_dry_run_exits_0_writes_nothing_and_prices_the_tokens(data, tmp_path, fake, capsys) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[meta]\ncurrency = "USD"\nserving = "api"\n'
        "[api]\ninput_per_million = 1.0\noutput_per_million = 2.0\n"
    )
    argv = ["advise", data, "--out", str(tmp_path / "run"), "--eval-size", "40", "--dev-size", "20"]
    argv += ["--k", "1,2", "--prices", str(prices), "--set", "latency_samples=3"]
    rc = main([*argv, "--dry-run"])
    out = capsys.readouterr().out
    assert rc == ExitCode.OK
    assert "no model call" in out and "Estimated cost:" in out and "USD" in out and "≤" in out
    assert fake.loglik_requests == [] and not (tmp_path / "run").exists()

    rc = main([*argv, "--dry-run", "--json"])
    plan = json.loads(capsys.readouterr().out)["dry_run"]
    tokens = plan["totals"]
    expected = (tokens["prompt_tokens"]["planned"] * 1.0 + tokens["answer_tokens"]["planned"] * 2.0) / 1e6
    assert plan["cost"] == pytest.approx(expected) and plan["currency"] == "USD"
    assert plan["totals"]["requests"]["planned"] <= plan["totals"]["requests"]["upper_bound"]


@pytest.mark.slow
def test_dry_run_of_run_adds_the_training_plan(data, tmp_path, fake, capsys) -> None:
    argv = ["run", data, "--out", str(tmp_path / "run"), "--eval-size", "40", "--dev-size", "20", "--k", "1"]
    rc = main([*argv, "--dry-run", "--json", "--train-set", "max_steps=7"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == ExitCode.OK and doc["training"]["training"] == "7 steps"
    assert doc["training"]["verification_requests"] == 40 * 2
    assert fake.loglik_requests == [] and not (tmp_path / "run").exists()
    # the training time: the steps asked for, at the pilot's tokens per example and trained tokens a second
    est, per_example = doc["training"]["estimate"], doc["dry_run"]["pilot"]["tokens_per_example"]
    assert est["steps"] == 7 and est["trained_tokens"] == pytest.approx(7 * 8 * per_example)
    assert est["train_seconds"] == pytest.approx(est["trained_tokens"] / est["tokens_per_s"])
    assert est["verify_seconds"] is None  # the stand-in model has no measured time per request
    assert "min of training at an assumed 100 trained tokens a second" in doc["training"]["summary"]


def test_a_real_run_records_its_model_time_and_the_estimate_uses_it(tmp_path, monkeypatch) -> None:
    from advisor.measure import rates

    monkeypatch.setenv("TUNEGATE_CACHE_DIR", str(tmp_path / "cache"))

    class Timed:
        name, model_id = "hf", "m:1"

        def model_time(self) -> dict[str, tuple[int, float]]:
            return {"loglikelihood": (400, 100.0), "generate": (3, 9.0)}  # too few generations to record

    default = rates.lookup("hf", "m:1", "loglikelihood")
    assert default is not None and default.basis.startswith("shipped default")
    rates.record(Timed())
    measured = rates.lookup("hf", "m:1", "loglikelihood")
    assert measured is not None and measured.seconds_per_request == 0.25
    assert "measured on this machine" in measured.basis and "400 requests" in measured.basis
    assert rates.lookup("hf", "m:1", "generate") == rates.lookup("hf", "other", "generate")  # the default


@pytest.mark.slow
def test_the_prompt_budget_setting_bounds_the_ladder(data, tmp_path, fake) -> None:
    settings = {**SETTINGS, "k_ladder": (1, 2, 4, 8), "thresholds": {"min_verdict_probability": 0.0}}
    wide = recipe.advise(AdviseConfig(data=data, out=str(tmp_path / "wide"), **settings))
    narrow = recipe.advise(
        AdviseConfig(data=data, out=str(tmp_path / "narrow"), max_prompt_tokens=300, **settings)
    )
    assert wide.prompting is not None and narrow.prompting is not None
    assert narrow.prompting.k_max is not None and wide.prompting.k_max is not None
    assert 1 <= narrow.prompting.k_max < 8 < wide.prompting.k_max
    rungs = {a.name for a in narrow.prompting.arms if a.name.startswith("few_shot_k")}
    assert rungs and all(int(name.split("_k")[1].split("_")[0]) <= narrow.prompting.k_max for name in rungs)
    assert narrow.provenance.config["max_prompt_tokens"] == 300


DAMAGED_RATES = {
    "not JSON": "{",
    "a list": "[1, 2]",
    "entry not an object": '{"hf:m:1": [1, 2]}',
    "op not an object": '{"hf:m:1": {"loglikelihood": 3}}',
    "rate is text": '{"hf:m:1": {"loglikelihood": {"seconds_per_request": "fast"}}}',
    "rate is NaN": '{"hf:m:1": {"loglikelihood": {"seconds_per_request": NaN}}}',
    "rate is a 400-digit integer": '{"hf:m:1": {"loglikelihood": {"seconds_per_request": '
    + "9" * 400
    + "}}}",
    "rate is a 5000-digit integer": '{"hf:m:1": {"loglikelihood": {"seconds_per_request": '
    + "9" * 5000
    + "}}}",
    "nested 100k deep": "[" * 100_000,
    "not UTF-8": b'{"hf:m:1": "\xff"}',
}


@pytest.mark.parametrize("damage", DAMAGED_RATES)
def test_a_damaged_rates_file_is_measured_again(damage, tmp_path, monkeypatch) -> None:
    from advisor.measure import rates

    monkeypatch.setenv("TUNEGATE_CACHE_DIR", str(tmp_path))
    body = DAMAGED_RATES[damage]
    (tmp_path / "rates.json").write_bytes(body if isinstance(body, bytes) else body.encode())
    shipped = rates.lookup("hf", "other", "loglikelihood")
    assert rates.lookup("hf", "m:1", "loglikelihood") == shipped  # the damaged entry is not used

    class Timed:
        name, model_id = "hf", "m:1"

        def model_time(self) -> dict[str, tuple[int, float]]:
            return {"loglikelihood": (100, 50.0)}

    rates.record(Timed())  # the next run's measurement replaces it
    assert json.loads((tmp_path / "rates.json").read_text())["hf:m:1"]["loglikelihood"]["requests"] == 100
    measured = rates.lookup("hf", "m:1", "loglikelihood")
    assert measured is not None and measured.seconds_per_request == 0.5


def test_an_unwritable_cache_never_fails_a_finished_run(tmp_path, monkeypatch) -> None:
    from advisor.measure import rates

    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("TUNEGATE_CACHE_DIR", str(tmp_path / "file" / "cache"))  # under a file

    class Timed:
        name, model_id = "hf", "m:1"

        def model_time(self) -> dict[str, tuple[int, float]]:
            return {"loglikelihood": (100, 50.0)}

    rates.record(Timed())  # nothing recorded, nothing raised
    assert rates.lookup("hf", "m:1", "loglikelihood") == rates.lookup("hf", "other", "loglikelihood")
