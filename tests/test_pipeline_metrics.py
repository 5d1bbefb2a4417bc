"""The training log: the run folder keeps train/metrics.jsonl; the pipeline reads its curve into the
document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from advisor.report import plots
from advisor.rundir import TrainDir
from pipeline.metrics import MAX_TRAIN_RECORDS, training_curve


def test_training_curve_keeps_steps_and_thins(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"event": "start", "step": 0, "config": {"r": 8}})]
    for s in range(1, 1201):
        lines.append(json.dumps({"event": "train", "step": s, "loss": 2.0 / s, "lr": 1e-4, "tokens": 512}))
        if s % 100 == 0:
            lines.append(json.dumps({"event": "dev", "step": s, "dev_loss": 1.0 / s, "dev_accuracy": 0.8}))
    lines.append('{"event": "train", "step": 1201, "loss": NaN}')
    lines.append('{"event": "end", "step": 1201')  # cut short by a crash
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    curve = training_curve(TrainDir(tmp_path).read_metrics())
    train = [r for r in curve if r["event"] == "train"]
    dev = [r for r in curve if r["event"] == "dev"]
    assert len(dev) == 12 and dev[0] == {"event": "dev", "step": 100, "dev_loss": 0.01, "dev_accuracy": 0.8}
    assert len(train) <= MAX_TRAIN_RECORDS + 1 and train[-1] == {
        "event": "train",
        "step": 1201,
        "loss": None,
    }
    assert set(train[0]) == {"event", "step", "loss"}
    json.dumps(curve, allow_nan=False)
    assert TrainDir(tmp_path / "missing").read_metrics() == []
    svg = plots.training_loss_svg(curve, best_step=1200)
    assert svg is not None and "best dev loss at step 1200" in svg


def test_resumed_log_drops_records_past_the_checkpoint(tmp_path: Path) -> None:
    out = TrainDir(tmp_path / "train")
    first = out.open_metrics(keep_until_step=None)
    for step in range(1, 7):
        first.write({"event": "train", "step": step, "loss": 1.0 / step})
    with open(out.metrics_path, "a", encoding="utf-8") as fh:
        fh.write('{"event": "train", "st')  # cut short by a crash
    resumed = out.open_metrics(keep_until_step=4)  # the checkpoint was at step 4
    resumed.write({"event": "train", "step": 5, "loss": 0.3})
    assert [json.loads(ln)["step"] for ln in out.read_metrics()] == [1, 2, 3, 4, 5]
    assert out.open_metrics(keep_until_step=None) and out.read_metrics() == []  # a fresh run starts empty


def test_train_folders_are_swapped_in_whole_and_old_checkpoints_pruned(tmp_path: Path) -> None:
    out = TrainDir(tmp_path / "train")
    for step in (2, 4, 6):
        out.write_checkpoint(step, lambda f, s=step: f.write_text(str(s), encoding="utf-8"))
    assert sorted(p.name for p in (out.path / "checkpoints").iterdir()) == ["step-0000004", "step-0000006"]
    latest = out.latest_checkpoint()
    assert latest is not None and out.checkpoint_state(latest).read_text(encoding="utf-8") == "6"

    def crash(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "state.pt").write_text("half", encoding="utf-8")
        raise OSError("disk full")

    with pytest.raises(OSError):
        out.write_checkpoint(8, crash)
    assert out.latest_checkpoint() == latest  # the failed write left nothing behind
    assert not [p for p in out.path.rglob(".*") if "tmp" in p.name]
    with pytest.raises(ValueError):
        out.write_adapter("../elsewhere", object())
