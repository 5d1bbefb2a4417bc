"""--report-to: a clear exit 2 when the tracker's library is missing; what a tracker receives.

None of mlflow, tensorboard or wandb is installed in the test environment, so the sending is checked
through a stand-in `mlflow` module that records its calls (the same calls the real library takes).
"""

from __future__ import annotations

import copy
import importlib.machinery
import importlib.util
import json
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import pytest
import report_docs

import pipeline.run
import pipeline.tracking
from advisor.cli import main
from advisor.errors import ExitCode
from advisor.report.document import Report


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


class _FakeMlflow(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("mlflow")
        self.__spec__ = importlib.machinery.ModuleSpec("mlflow", None)
        self.uri: str | None = None
        self.runs: list[str] = []
        self.metrics: list[tuple[dict[str, float], int | None]] = []
        self.tags: dict[str, str] = {}

    def set_tracking_uri(self, uri: str) -> None:
        self.uri = uri

    @contextmanager
    def start_run(self, run_name: str):
        self.runs.append(run_name)
        yield

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.append((dict(metrics), step))

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)


def test_train_sends_the_curve_scores_and_verdict(tmp_path, monkeypatch, capsys) -> None:
    fake = _FakeMlflow()
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "run"
    (run / "train").mkdir(parents=True)
    log = [{"event": "train", "step": s, "loss": 2.0 / s, "lr": 1e-4} for s in range(1, 5)]
    log.insert(2, {"event": "dev", "step": 2, "dev_loss": 0.9, "best_dev_loss": 0.9, "improved": True})
    (run / "train" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    doc = copy.deepcopy(report_docs.fine_tune_doc(tmp_path))
    monkeypatch.setattr(pipeline.run, "train_and_verify", lambda run_dir, **kw: Report.model_validate(doc))

    rc = main(["train", str(run), "--report-to", "mlflow", "-q"])
    assert rc in (ExitCode.OK, ExitCode.VETOED)
    assert fake.runs == ["run"] and fake.uri == (run / "mlruns").resolve().as_uri()
    by_step = {step: m for m, step in fake.metrics if step is not None}
    assert [by_step[s]["train/loss"] for s in range(1, 5)] == [2.0 / s for s in range(1, 5)]
    assert by_step[2]["dev/dev_loss"] == 0.9 and "dev/improved" not in by_step[2]  # a bool is no metric
    (summary,) = [m for m, step in fake.metrics if step is None]
    metric = doc["prompting"]["target_metric"]
    for arm in doc["prompting"]["arms"]:
        assert summary[f"score/{arm['name']}"] == arm["scores"][metric]["value"]
    assert summary["score/fine_tuned"] == doc["verification"]["finetuned"]["scores"][metric]["value"]
    assert summary["finetune_verified"] == float(doc["verification"]["finetune_verified"])
    assert fake.tags["verdict"] == doc["decision"]["verdict"]
    assert not Path("mlruns").exists()
