"""`--report-to mlflow|tensorboard|wandb`: a training run followed by an experiment tracker as it happens.

One `Session` per training run: `start` logs the hyperparameters before the first step, `step` sends each
optimizer step's records of the training log (train/metrics.jsonl) as they are written, `finish` sends
the scores, P(verdict) and the verdict, and the adapter folder and the reports as artifacts. What is sent
is decided here, in pure functions (`params_of`, `step_metrics`, `summary_of`); each writer only maps it
onto its library's calls. The library is the user's to install (`check_available`).

A tracker never changes the run's result: the first error a tracker raises is printed as one warning on
stderr, and the session sends nothing more. Training, verification, decision.json and the exit code go on.

MLflow: the run folder's `mlruns/` holds a SQLite store (`mlflow.db`) and the artifacts, since MLflow 3
refuses a plain file store; `MLFLOW_TRACKING_URI` (a server, a database) replaces it when set, and
`MLFLOW_EXPERIMENT_NAME` names the experiment (default: tunegate). TensorBoard keeps no artifacts: it gets
the hyperparameters as text, the metrics as scalars. W&B: `WANDB_PROJECT` (default: tunegate).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from advisor.document import Report
from advisor.errors import ConfigError
from advisor.rundir import DECISION, HTML_FILE, MARKDOWN_FILE, RunDir

TRACKERS = ("mlflow", "tensorboard", "wandb")
# the module each tracker is used through (its package has the same name)
_MODULES = {"mlflow": "mlflow", "tensorboard": "tensorboard", "wandb": "wandb"}
EXPERIMENT = "tunegate"


def check_available(tracker: str) -> None:
    """Fail before any work when the tracker's library is missing (exit 2, naming the package)."""
    if tracker not in TRACKERS:
        raise ConfigError(f"unknown tracker {tracker!r}; allowed: {', '.join(TRACKERS)}", field="report_to")
    module = _MODULES[tracker]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"--report-to {tracker} needs the `{module}` package, which is not installed: "
            f"pip install {module}",
            field="report_to",
        )


# --------------------------------------------------------------------------- what is sent (pure)


def params_of(config: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, str]:
    """The hyperparameters: the training config and what the run trains on, as text values."""
    out = {}
    for key, value in {**config, **extra}.items():
        if isinstance(value, list | tuple):
            value = ",".join(str(v) for v in value)
        out[key] = "None" if value is None else str(value)
    return out


def step_metrics(record: Mapping[str, Any]) -> tuple[int, dict[str, float]] | None:
    """(step, metrics) for a `train` or `dev` record of the training log; None for any other record.
    Numbers only (a boolean such as `improved` is no metric); names prefixed train/ or dev/."""
    event = record.get("event")
    if event not in ("train", "dev") or not isinstance(record.get("step"), int):
        return None
    metrics = {
        f"{event}/{key}": float(value)
        for key, value in record.items()
        if key not in ("event", "step") and isinstance(value, int | float) and not isinstance(value, bool)
    }
    return int(record["step"]), metrics


def summary_of(report: Report) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, tags) at the end: each arm's score on the target metric, the fine-tuned model's score and
    gain, P(verdict); the verdict and the target metric as tags."""
    summary: dict[str, float] = {}
    prompting = report.prompting
    metric = prompting.target_metric if prompting is not None else None
    for arm in prompting.arms if prompting is not None else ():
        score = arm.scores.get(metric) if metric is not None else None
        if score is not None:
            summary[f"score/{arm.name}"] = float(score.value)
    verification = report.verification
    if verification is not None:
        finetuned = verification.finetuned
        summary[f"score/{finetuned.arm}"] = float(finetuned.scores[verification.metric].value)
        summary["finetune_gain"] = float(verification.difference.diff)
        summary["finetune_verified"] = float(bool(verification.finetune_verified))
    decision = report.decision
    if decision.confidence is not None:
        summary["verdict_probability"] = float(decision.confidence)
    tags = {"verdict": str(decision.verdict)}
    if metric:
        tags["target_metric"] = str(metric)
    return summary, tags


def artifacts_of(run: RunDir, report: Report) -> list[tuple[Path, str]]:
    """(local file or folder, artifact folder) to send: the adapter (with its model card), the reports."""
    out: list[tuple[Path, str]] = []
    if report.training is not None:
        adapter = run.inside(report.training.adapter_dir, field="training.adapter_dir")
        if adapter.is_dir():
            out.append((adapter, "adapter"))
    for name in (DECISION, MARKDOWN_FILE, HTML_FILE):
        if (run.path / name).is_file():
            out.append((run.path / name, "report"))
    return out


# --------------------------------------------------------------------------- the session


class Writer(Protocol):
    """What a tracker's library is asked to do."""

    def params(self, params: dict[str, str]) -> None: ...
    def metrics(self, metrics: dict[str, float], step: int | None) -> None: ...
    def finish(
        self, summary: dict[str, float], tags: dict[str, str], artifacts: list[tuple[Path, str]]
    ) -> None: ...
    def close(self, ok: bool) -> None: ...


class Session:
    """One training run's tracking (`tracker` None: nothing is sent). Every call is guarded: a tracker's
    error is warned about once and ends the tracking, never the run."""

    def __init__(self, tracker: str | None, run_dir: str | Path) -> None:
        self.tracker, self.run = tracker, RunDir(run_dir)
        self.writer: Writer | None = None
        self.failed = False
        self.last_step: int | None = None
        self._tail = _Tail(self.run.train.metrics_path)

    @property
    def active(self) -> bool:
        return self.tracker is not None and not self.failed

    def start(self, config: Mapping[str, Any], extra: Mapping[str, Any]) -> None:
        """Open the tracker's run and log the hyperparameters, before the first training step."""
        if self.active:
            self._guard(lambda: self._open().params(params_of(config, extra)))

    def step(self, step: int) -> None:
        """Send the training log's records written since the last call (the loop's `on_step`)."""
        if self.writer is not None and self.active:
            self._guard(self._send_new)

    def finish(self, report: Report) -> None:
        """Send the last records, the scores, the verdict and the artifacts; close the tracker's run."""
        if self.writer is None or not self.active:
            return
        writer = self.writer

        def send() -> None:
            self._send_new()
            summary, tags = summary_of(report)
            writer.finish(summary, tags, artifacts_of(self.run, report))
            writer.close(True)

        self._guard(send)
        self.writer = None

    def close(self, ok: bool) -> None:
        """End the tracker's run if `finish` did not (the run failed or was interrupted)."""
        if self.writer is not None and self.active:
            writer = self.writer
            self._guard(lambda: writer.close(ok))
        self.writer = None

    def _open(self) -> Writer:
        name = self.run.path.name
        folder = self.run.tracker_dir(str(self.tracker))
        if self.tracker == "mlflow":
            self.writer = _Mlflow(folder, name)
        elif self.tracker == "tensorboard":
            self.writer = _TensorBoard(folder)
        else:
            self.writer = _Wandb(folder, name)
        return self.writer

    def _send_new(self) -> None:
        assert self.writer is not None
        for record in self._tail.records():
            found = step_metrics(record)
            if found is not None and found[1]:
                self.last_step = found[0]
                self.writer.metrics(found[1], found[0])

    def _guard(self, call: Any) -> None:
        try:
            call()
        except Exception as exc:  # a tracker's failure, whatever it is, must not end the run
            self.failed = True
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            print(
                f"tunegate: warning: --report-to {self.tracker} failed ({type(exc).__name__}: {first}); "
                "the run goes on without it",
                file=sys.stderr,
            )


@contextmanager
def session(tracker: str | None, run_dir: str | Path) -> Iterator[Session]:
    """A `Session` closed on the way out (as failed when the block raised)."""
    tracking = Session(tracker, run_dir)
    try:
        yield tracking
    except BaseException:
        tracking.close(False)
        raise
    tracking.close(True)


class _Tail:
    """The training log's records appended since the last read. The log only grows while the loop runs;
    a fresh run empties it first, which starts the reading over."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def records(self) -> list[dict[str, Any]]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self.offset:
            self.offset = 0
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read(size - self.offset)
        whole = chunk[: chunk.rfind(b"\n") + 1]  # a line being written is read next time
        self.offset += len(whole)
        out = []
        for line in whole.decode("utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out


# --------------------------------------------------------------------------- the libraries


class _Mlflow:
    def __init__(self, folder: Path, name: str) -> None:
        mlflow = importlib.import_module("mlflow")
        self.entities = importlib.import_module("mlflow.entities")
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        artifacts = None
        if not uri:  # never a ./mlruns in the caller's folder; MLflow 3 wants a database store
            folder.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{(folder / 'mlflow.db').resolve()}"
            artifacts = (folder / "artifacts").resolve().as_uri()
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        experiment = self.client.get_experiment_by_name(experiment_name)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(experiment_name, artifact_location=artifacts)
        )
        self.run_id = self.client.create_run(experiment_id, run_name=name).info.run_id

    def params(self, params: dict[str, str]) -> None:
        entries = [self.entities.Param(_mlflow_key(k), v[:6000]) for k, v in params.items()]
        self.client.log_batch(self.run_id, params=entries)

    def metrics(self, metrics: dict[str, float], step: int | None) -> None:
        import time

        now = int(time.time() * 1000)
        entries = [self.entities.Metric(_mlflow_key(k), v, now, step or 0) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=entries)

    def finish(
        self, summary: dict[str, float], tags: dict[str, str], artifacts: list[tuple[Path, str]]
    ) -> None:
        self.metrics(summary, None)
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)
        for path, folder in artifacts:
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), folder)
            else:
                self.client.log_artifact(self.run_id, str(path), folder)

    def close(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")


class _TensorBoard:
    def __init__(self, folder: Path) -> None:
        self.writer = importlib.import_module("torch.utils.tensorboard").SummaryWriter(log_dir=str(folder))
        self.step = 0

    def params(self, params: dict[str, str]) -> None:
        table = "\n".join(
            ["| setting | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in params.items()]
        )
        self.writer.add_text("hyperparameters", table, 0)

    def metrics(self, metrics: dict[str, float], step: int | None) -> None:
        self.step = step if step is not None else self.step
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, self.step)

    def finish(
        self, summary: dict[str, float], tags: dict[str, str], artifacts: list[tuple[Path, str]]
    ) -> None:
        self.metrics(summary, None)  # at the last training step
        for key, text in tags.items():
            self.writer.add_text(key, text, self.step)

    def close(self, ok: bool) -> None:
        self.writer.close()


class _Wandb:
    def __init__(self, folder: Path, name: str) -> None:
        self.wandb = importlib.import_module("wandb")
        self.name = name
        project = os.environ.get("WANDB_PROJECT", EXPERIMENT)
        self.run = self.wandb.init(project=project, name=name, dir=str(folder))

    def params(self, params: dict[str, str]) -> None:
        self.run.config.update(params)

    def metrics(self, metrics: dict[str, float], step: int | None) -> None:
        self.run.log(metrics, step=step)

    def finish(
        self, summary: dict[str, float], tags: dict[str, str], artifacts: list[tuple[Path, str]]
    ) -> None:
        self.run.summary.update({**summary, **tags})
        for path, folder in artifacts:
            kind = "model" if folder == "adapter" else "report"
            artifact = self.wandb.Artifact(_wandb_name(f"{self.name}-{path.name}"), type=kind)
            if path.is_dir():
                artifact.add_dir(str(path))
            else:
                artifact.add_file(str(path))
            self.run.log_artifact(artifact)

    def close(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


def _mlflow_key(key: str) -> str:
    # MLflow names allow letters, digits, _ - . space / only.
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in key)


def _wandb_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def report_to(tracker: str, report: Report, run_dir: str | Path) -> None:
    """Send a run that trained nothing (`tunegate run` when the gate stays shut) in one go: its advise
    settings, scores and verdict, and its reports."""
    with session(tracker, run_dir) as tracking:
        tracking.start(report.provenance.config, {})
        tracking.finish(report)
