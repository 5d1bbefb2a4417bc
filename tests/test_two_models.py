"""Two models, the question teams ask: keep prompting model A, or fine-tune model B (--finetune-model).

A served model cannot be fine-tuned here, so `run` with one must name the local candidate before a request
is spent; `train` after such an advise refuses to guess. With a candidate, the pilots train B, B is also
measured prompted (so the model change is told apart from the fine-tuning), `run` trains B, and the
outputs name both models.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from advisor.cli import main
from advisor.errors import ConfigError, ExitCode


def _reviews(path: Path, n: int) -> Path:
    from tiny import rotten_tomatoes_rows

    rows = rotten_tomatoes_rows(n, seed=5)
    path.write_text("".join(json.dumps({"prompt": t, "completion": lab}) + "\n" for _, t, lab in rows))
    return path


def test_run_with_a_served_model_and_no_candidate_fails_before_any_request(tmp_path, capsys) -> None:
    data = _reviews(tmp_path / "d.jsonl", 40)
    out = tmp_path / "run"
    # Port 9 (discard) on loopback: nothing answers; the check must come before any connection.
    argv = ["run", str(data), "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "big",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "--finetune-model" in err and "served model" in err
    assert not out.exists()  # nothing written, not even the run folder
    # Naming the local model in the training settings is also enough to pass the check (the dry run
    # stops there: it sends nothing either).
    named = [*argv, "--train-set", "model=embedded", "--dry-run", "--json"]
    assert main(named) == ExitCode.OK
    assert not out.exists()
    capsys.readouterr()
    # The dry run of the two-model question names B: its pilots, and B prompted on the eval items.
    big = _reviews(tmp_path / "big.jsonl", 200)  # enough training rows for the pilots to fit their budget
    two = [*argv[:1], str(big), *argv[2:], "--finetune-model", "embedded", "--dry-run", "--json"]
    assert main(two) == ExitCode.OK
    plan = json.loads(capsys.readouterr().out)["dry_run"]
    assert plan["pilot"]["model"] == "embedded" and plan["pilot"]["steps"] > 0
    assert not out.exists()


def test_train_after_a_served_advise_refuses_to_guess_the_model(monkeypatch, tmp_path) -> None:
    from advisor.backends import model as model_mod
    from advisor.finetune.config import TrainConfig
    from pipeline.run import training_model

    monkeypatch.setattr(model_mod, "default_model_dir", lambda: tmp_path)  # no conversion in this test
    served = {"backend": "openai", "model": "gpt-large"}
    with pytest.raises(ConfigError, match="--finetune-model"):
        training_model(TrainConfig(), served)
    assert training_model(TrainConfig(), {**served, "finetune_model": "embedded"}).kind == "embedded"
    assert training_model(TrainConfig.from_mapping({"model": "embedded"}), served).path == tmp_path
    assert training_model(TrainConfig(), {"backend": "hf", "model": None}).kind == "embedded"


def test_a_candidate_without_a_chat_template_is_refused_before_the_run_folder(tmp_path, capsys) -> None:
    from tiny import tiny_llama

    plain = tiny_llama(tmp_path / "m")
    cfg_file = plain / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg.pop("chat_template", None)
    cfg_file.write_text(json.dumps(cfg))
    for extra in ("chat_template.jinja", "chat_template.json"):
        (plain / extra).unlink(missing_ok=True)
    data = _reviews(tmp_path / "d.jsonl", 40)
    out = tmp_path / "run"
    rc = main(["advise", str(data), "--finetune-model", str(plain), "--out", str(out)])
    assert rc == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "chat template" in err and "finetune_model" in err
    assert not out.exists()


@pytest.mark.realmodel
@pytest.mark.slow
def test_run_prompts_model_a_fine_tunes_model_b_and_names_both(tmp_path, capsys) -> None:
    """A: the embedded SmolLM2-135M-Instruct, prompted; B: a tiny random Llama, the candidate."""
    from tiny import tiny_llama

    b_dir = tiny_llama(tmp_path / "models").rename(tmp_path / "models" / "small-b")
    data = _reviews(tmp_path / "reviews.jsonl", 80)
    out = tmp_path / "run"
    argv = ["run", str(data), "--finetune-model", str(b_dir), "--out", str(out), "--eval-size", "20",
            "--dev-size", "10", "--k", "1", "--target", "accuracy=0.8", "--set", "pilot_steps=30",
            "--set", "latency_samples=1", "--force", "--train-set", "max_steps=2"]  # fmt: skip
    rc = main(argv)
    console = capsys.readouterr().out
    assert rc in (0, 10, 11, 12, 13, 14), console[-3000:]
    doc = json.loads((out / "decision.json").read_text())

    # A's arms: the embedded model prompted.
    a_id = doc["provenance"]["backend"]["model_id"]
    assert doc["model"]["source"] == "embedded" and doc["prompting"]["arms"]
    # B: the pilots trained it, it was measured prompted on the same eval items, then fine-tuned.
    p = doc["pilot"]
    assert p["measured"] and p["model_id"] == "small-b" and p["arms_model_id"] == a_id
    n_eval = doc["prompting"]["arms"][0]["scores"]["accuracy"]["n"]
    assert p["candidate_prompted"]["n"] == n_eval
    for key in ("model_change", "finetune_adds"):
        assert p[key]["n"] == n_eval and p[key]["low"] <= p[key]["diff"] <= p[key]["high"]
    assert (out / "predictions" / "candidate_prompted.jsonl").is_file()
    assert Path(doc["training"]["base_model"]).name == "small-b"  # `run` trained B, not A
    assert doc["verification"] is not None

    # Every output that shows the two sides names both models.
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for text in (md, html):
        assert "small-b" in text and a_id in text
        assert "prompted, not fine-tuned" in text  # B prompted has its own row in the options
    assert "small-b" in console and "Changing the model alone" in md
    shutil.rmtree(b_dir)


def test_a_bad_model_file_is_exit_2_naming_the_flag_before_anything_runs(tmp_path, capsys) -> None:
    """Found by probing --finetune-model: a file named .gguf that is not one was a traceback (exit 70)
    from the converter, and the resolver's errors named --model's field for the other flag."""
    data = _reviews(tmp_path / "d.jsonl", 40)
    fake = tmp_path / "weights.gguf"
    fake.write_bytes(b"not a gguf file at all")
    (tmp_path / "empty").mkdir()
    for flag, value, field in (
        ("--finetune-model", str(fake), "finetune_model"),
        ("--model", str(fake), "model"),
        ("--finetune-model", str(tmp_path / "empty"), "finetune_model"),
    ):
        out = tmp_path / "run"
        assert main(["advise", str(data), flag, value, "--out", str(out)]) == ExitCode.USAGE
        err = capsys.readouterr().err
        assert f"field '{field}'" in err and "Traceback" not in err, err
        assert not out.exists()
    main(["advise", str(data), "--model", str(fake), "--out", str(tmp_path / "run")])
    assert "not a GGUF file" in capsys.readouterr().err


def test_no_eval_item_is_refused_before_the_pilots_train(tmp_path, capsys) -> None:
    """Two distinct inputs repeated: duplicates stay in one split, so nothing is held out for evaluation.
    That used to be found after three pilot fine-tunes had trained (minutes); now before any."""
    from tiny import tiny_llama

    model = tiny_llama(tmp_path / "m")
    data = tmp_path / "d.jsonl"
    rows = [
        {"prompt": "good film", "completion": "positive"},
        {"prompt": "bad film", "completion": "negative"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows * 30))
    out = tmp_path / "run"
    assert main(["advise", str(data), "--model", str(model), "--out", str(out)]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "eval item" in err and "2 distinct inputs" in err
    assert not (out / "pilot").exists()
