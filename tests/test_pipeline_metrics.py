"""The training log: the pipeline writes train/metrics.jsonl and reads its curve into the document."""

from __future__ import annotations

import json
from pathlib import Path

from advisor.report import plots
from pipeline.metrics import MAX_TRAIN_RECORDS, MetricsLog, load_training_curve


def test_load_training_curve_keeps_steps_and_thins(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"event": "start", "step": 0, "config": {"r": 8}})]
    for s in range(1, 1201):
        lines.append(json.dumps({"event": "train", "step": s, "loss": 2.0 / s, "lr": 1e-4, "tokens": 512}))
        if s % 100 == 0:
            lines.append(json.dumps({"event": "dev", "step": s, "dev_loss": 1.0 / s, "dev_accuracy": 0.8}))
    lines.append('{"event": "train", "step": 1201, "loss": NaN}')
    lines.append('{"event": "end", "step": 1201')  # cut short by a crash
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    curve = load_training_curve(log)
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
    assert load_training_curve(tmp_path / "missing.jsonl") == []
    svg = plots.training_loss_svg(curve, best_step=1200)
    assert svg is not None and "best dev loss at step 1200" in svg


def test_resumed_log_drops_records_past_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    first = MetricsLog(path, enabled=True, keep_until_step=None)
    for step in range(1, 7):
        first.write({"event": "train", "step": step, "loss": 1.0 / step})
    resumed = MetricsLog(path, enabled=True, keep_until_step=4)  # the checkpoint was at step 4
    resumed.write({"event": "train", "step": 5, "loss": 0.3})
    steps = [json.loads(ln)["step"] for ln in path.read_text(encoding="utf-8").splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    MetricsLog(tmp_path / "other.jsonl", enabled=False, keep_until_step=None).write({"step": 1})
    assert not (tmp_path / "other.jsonl").exists()  # ranks other than 0 write nothing
