"""--report-to: a clear exit 2 when the tracker's library is missing; hyperparameters before the first step,
metrics as each step is logged, the adapter and the reports as artifacts at the end; a tracker that fails
never changes the run's result or exit code.

Training runs on the tiny random Llama (tests/tiny.py) from one advise run folder made once. The stand-in
`mlflow` module below takes the calls the real `MlflowClient` takes; the test against the real MLflow 3
is optional (MLflow is large and not a dependency): it is skipped, with the reason, when MLflow is absent.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from needs import unavailable

import pipeline.run
import pipeline.tracking
from advisor.cli import main
from advisor.errors import ExitCode

TRAIN = [
    "--force",
    "--train-set",
    "max_steps=3",
    "--train-set",
    "eval_every=2",
    "--train-set",
    "save_every=0",
]
TRAIN += ["--train-set", "batch_size=4", "--train-set", "max_seq_len=64", "-q", "--json"]


def _refuse(*args, **kwargs):
    raise AssertionError("training started although the tracker is missing")


@pytest.mark.parametrize("tracker", ["mlflow", "tensorboard", "wandb"])
def test_a_missing_tracker_library_is_exit_2_before_any_work(tracker, tmp_path, monkeypatch, capsys) -> None:
    # Missing whether or not it is installed here: a None entry in sys.modules is what find_spec (and
    # import) treat as "no such module".
    monkeypatch.setitem(sys.modules, pipeline.tracking._MODULES[tracker], None)
    monkeypatch.setattr(pipeline.run, "train_and_verify", _refuse)
    rc = main(["train", str(tmp_path), "--report-to", tracker])
    err = capsys.readouterr().err
    assert rc == ExitCode.USAGE
    assert f"pip install {tracker}" in err and "report_to" in err and "Traceback" not in err


def test_an_unknown_tracker_is_a_usage_error(tmp_path, capsys) -> None:
    assert main(["train", str(tmp_path), "--report-to", "comet"]) == ExitCode.USAGE
    assert "invalid choice" in capsys.readouterr().err


def test_step_metrics_keep_numbers_of_train_and_dev_records() -> None:
    step = pipeline.tracking.step_metrics
    assert step({"event": "train", "step": 3, "loss": 1.5, "lr": 1e-4}) == (
        3,
        {"train/loss": 1.5, "train/lr": 1e-4},
    )
    assert step({"event": "dev", "step": 2, "dev_loss": 0.9, "improved": True}) == (2, {"dev/dev_loss": 0.9})
    assert step({"event": "start", "step": 0, "n_train": 30}) is None


# --------------------------------------------------------------------------- training with a tracker


@pytest.fixture(scope="module")
def advised(tmp_path_factory) -> Path:
    """One advise run folder on the tiny model (a prompt verdict: training is forced)."""
    pytest.importorskip("torch")
    from tiny import tiny_llama, write_reviews_csv

    from advisor import recipe
    from advisor.config import AdviseConfig

    tmp = tmp_path_factory.mktemp("advised")
    model_dir = tiny_llama(tmp)
    data = write_reviews_csv(tmp / "reviews.csv", 80, seed=7)
    recipe.advise(
        AdviseConfig(
            data=str(data), input_col="text", output_col="label", model=str(model_dir), out=str(tmp / "run"),
            eval_size=20, dev_size=10, k_ladder=(1,), latency_samples=1,
            thresholds={"min_verdict_probability": 0.0},
        )
    )  # fmt: skip
    return tmp / "run"


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # a tracker must not write into the current folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


@pytest.fixture(scope="module")
def untracked(advised, tmp_path_factory) -> tuple[int, dict[str, Any]]:
    """The exit code and decision of training without a tracker."""
    run = _copy(advised, tmp_path_factory.mktemp("untracked"))
    rc = main(["train", str(run), *TRAIN])
    return rc, json.loads((run / "decision.json").read_text())


def _copy(advised: Path, tmp_path: Path, name: str = "run") -> Path:
    return Path(shutil.copytree(advised, tmp_path / name))


def _train(run: Path, capsys, *extra: str) -> tuple[int, dict[str, Any], str]:
    rc = main(["train", str(run), *TRAIN, *extra])
    out, err = capsys.readouterr()
    return rc, json.loads(out), err


class _FakeClient:
    """The MlflowClient calls tracking makes, recorded; `fail_on` names the one that raises."""

    def __init__(self, module: _FakeMlflow, tracking_uri: str | None = None) -> None:
        self.m = module
        self.m.uri = tracking_uri

    def _call(self, name: str) -> None:
        if name == self.m.fail_on:
            raise RuntimeError(f"{name}: the tracking server is down")

    def get_experiment_by_name(self, name: str) -> Any:
        self._call("get_experiment_by_name")
        return None

    def create_experiment(self, name: str, artifact_location: str | None = None) -> str:
        self._call("create_experiment")
        self.m.artifact_location = artifact_location
        return "1"

    def create_run(self, experiment_id: str, run_name: str) -> Any:
        self._call("create_run")
        self.m.calls.append(("create_run", run_name))
        return types.SimpleNamespace(info=types.SimpleNamespace(run_id="r1"))

    def log_batch(self, run_id: str, metrics: Any = (), params: Any = ()) -> None:
        self._call("log_batch")
        for p in params:
            self.m.calls.append(("param", p.key, p.value))
        for metric in metrics:
            # what the training log holds at the moment this metric is sent
            logged = self.m.log_steps()
            self.m.calls.append(("metric", metric.key, metric.value, metric.step, logged))

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.m.calls.append(("tag", key, value))

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str) -> None:
        self._call("log_artifacts")
        self.m.calls.append(("artifacts", artifact_path, sorted(p.name for p in Path(local_dir).iterdir())))

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str) -> None:
        self.m.calls.append(("artifact", artifact_path, Path(local_path).name))

    def set_terminated(self, run_id: str, status: str) -> None:
        self.m.calls.append(("terminated", status))


class _FakeMlflow(types.ModuleType):
    def __init__(self, run: Path, fail_on: str | None = None) -> None:
        super().__init__("mlflow")
        self.__spec__ = importlib.machinery.ModuleSpec("mlflow", None)
        self.run, self.fail_on = run, fail_on
        self.uri: str | None = None
        self.artifact_location: str | None = None
        self.calls: list[tuple[Any, ...]] = []
        self.MlflowClient = lambda tracking_uri=None: _FakeClient(self, tracking_uri)

    def log_steps(self) -> list[int]:
        path = self.run / "train" / "metrics.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [r["step"] for r in records if r["event"] in ("train", "dev", "end")]


def _fake_entities() -> types.ModuleType:
    entities = types.ModuleType("mlflow.entities")
    entities.Param = lambda key, value: types.SimpleNamespace(key=key, value=value)
    entities.Metric = lambda key, value, timestamp, step: types.SimpleNamespace(
        key=key, value=value, step=step
    )
    return entities


def _install(monkeypatch, fake: _FakeMlflow) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.setitem(sys.modules, "mlflow.entities", _fake_entities())


@pytest.mark.slow
def test_params_first_metrics_as_each_step_is_logged_artifacts_at_the_end(
    advised, tmp_path, monkeypatch, capsys
) -> None:
    run = _copy(advised, tmp_path)
    fake = _FakeMlflow(run)
    _install(monkeypatch, fake)
    rc, doc, err = _train(run, capsys, "--report-to", "mlflow")
    assert rc in (ExitCode.OK, ExitCode.VETOED) and "warning" not in err
    kinds = [c[0] for c in fake.calls]
    assert kinds[0] == "create_run" and kinds[-1] == "terminated" and fake.calls[-1][1] == "FINISHED"
    assert fake.uri == f"sqlite:///{(run / 'mlruns' / 'mlflow.db').resolve()}"  # MLflow 3 takes this store
    assert fake.artifact_location == (run / "mlruns" / "artifacts").resolve().as_uri()
    params = {c[1]: c[2] for c in fake.calls if c[0] == "param"}
    assert params["lr"] == str(doc["training"]["config"]["lr"]) and params["max_steps"] == "3"
    assert params["forced"] == "True" and params["n_train"] == str(doc["training"]["metrics"]["n_train"])
    assert kinds.index("metric") > max(i for i, k in enumerate(kinds) if k == "param")  # params first
    losses = [c for c in fake.calls if c[0] == "metric" and c[1] == "train/loss"]
    assert [c[3] for c in losses] == [1, 2, 3]
    for _, _, _, step, logged in losses:
        assert max(logged) == step  # sent while training, before the next step was logged
    assert [c[3] for c in fake.calls if c[0] == "metric" and c[1] == "dev/dev_loss"] == [2, 3]
    final = {c[1]: c[2] for c in fake.calls if c[0] == "metric" and not c[1].startswith(("train/", "dev/"))}
    assert final["verdict_probability"] == doc["decision"]["confidence"] is not None
    assert final["finetune_verified"] == float(doc["verification"]["finetune_verified"])
    assert ("tag", "verdict", doc["decision"]["verdict"]) in fake.calls
    (adapter,) = [c for c in fake.calls if c[0] == "artifacts"]
    assert adapter[1] == "adapter" and {"adapter_config.json", "README.md"} <= set(adapter[2])
    assert {c[2] for c in fake.calls if c[0] == "artifact"} == {"decision.json", "report.md", "report.html"}
    assert not Path("mlruns").exists()


@pytest.mark.slow
@pytest.mark.parametrize("fail_on", ["create_run", "log_batch", "log_artifacts"])
def test_a_tracker_that_raises_does_not_change_the_result(
    advised, untracked, tmp_path, monkeypatch, capsys, fail_on
) -> None:
    plain_rc, plain = untracked
    run = _copy(advised, tmp_path)
    fake = _FakeMlflow(run, fail_on=fail_on)
    _install(monkeypatch, fake)
    rc, doc, err = _train(run, capsys, "--report-to", "mlflow")
    assert rc == plain_rc
    assert doc["decision"]["verdict"] == plain["decision"]["verdict"]
    assert doc["training"]["metrics"]["steps"] == 3 and doc["verification"] is not None
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert warnings == [
        "tunegate: warning: --report-to mlflow failed "
        f"(RuntimeError: {fail_on}: the tracking server is down); the run goes on without it"
    ]
    assert "Traceback" not in err
    assert ("terminated", "FINISHED") not in fake.calls  # nothing more is sent once it failed


def test_the_real_mlflow_stores_params_step_metrics_and_the_adapter(
    advised, tmp_path, monkeypatch, capsys
) -> None:
    """MLflow 3 itself (in the test set-up: `scripts/bootstrap.sh test`), read back through its client from
    the run's store."""
    if importlib.util.find_spec("mlflow") is None:
        unavailable("MLflow is not installed (scripts/bootstrap.sh test installs it; or pip install mlflow)")
    import mlflow

    run = _copy(advised, tmp_path)
    store = f"sqlite:///{run / 'mlruns' / 'mlflow.db'}"
    during: list[tuple[int, dict[str, str], list[int]]] = []
    step = pipeline.tracking.Session.step

    def step_and_look(self, n: int) -> None:  # what the store holds while training is still running
        step(self, n)
        client = mlflow.MlflowClient(tracking_uri=store)
        (found,) = client.search_runs([client.get_experiment_by_name("tunegate").experiment_id])
        history = client.get_metric_history(found.info.run_id, "train/loss")
        during.append((n, found.data.params, [m.step for m in history]))

    monkeypatch.setattr(pipeline.tracking.Session, "step", step_and_look)
    rc, doc, err = _train(run, capsys, "--report-to", "mlflow")
    assert rc in (ExitCode.OK, ExitCode.VETOED) and "warning" not in err

    assert [n for n, _, _ in during] == [1, 2, 3]
    assert all(params["lr"] == str(doc["training"]["config"]["lr"]) for _, params, _ in during)  # from step 1
    assert [steps for _, _, steps in during] == [[1], [1, 2], [1, 2, 3]]  # each step as it happened
    client = mlflow.MlflowClient(tracking_uri=store)
    (found,) = client.search_runs([client.get_experiment_by_name("tunegate").experiment_id])
    assert found.info.status == "FINISHED" and found.data.tags["verdict"] == doc["decision"]["verdict"]
    adapter = {Path(f.path).name for f in client.list_artifacts(found.info.run_id, "adapter")}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= adapter
    reports = {Path(f.path).name for f in client.list_artifacts(found.info.run_id, "report")}
    assert reports == {"decision.json", "report.md", "report.html"}
    local = Path(client.download_artifacts(found.info.run_id, "adapter/adapter_config.json", str(tmp_path)))
    assert json.loads(local.read_text()) == json.loads(
        (run / "train" / "adapter" / "adapter_config.json").read_text()
    )
    assert not Path("mlruns").exists() and not Path("mlartifacts").exists()
