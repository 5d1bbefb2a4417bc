"""Verification on the tiny model: the adapter scored by the advisor's harness against the best arm."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import report_docs

torch = pytest.importorskip("torch")

from tiny import tiny_llama, write_reviews_csv  # noqa: E402

from advisor.decide.rules import load_rules as _load_rules  # noqa: E402
from advisor.document import Verification  # noqa: E402
from advisor.finetune.config import TrainConfig  # noqa: E402
from advisor.measure.prompt_record import PromptRecord, record_prompts  # noqa: E402
from advisor.report.finetune import verification_markdown  # noqa: E402
from advisor.rundir import RunDir  # noqa: E402
from advisor.types import TaskKind  # noqa: E402
from pipeline.verify import verification_signals  # noqa: E402

SHIPPED_THRESHOLDS = _load_rules([]).thresholds


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _advised_run(
    tmp_path: Path,
    model_dir: Path,
    *,
    k_ladder: tuple[int, ...] = (1, 2),
    n_eval: int = 20,
) -> tuple[Path, Any]:
    """A run folder as `advise` leaves it: config, split, prompting measured on `model_dir` (variants
    chosen on the dev split), the recorded prompts, a fine_tune verdict. Also returns the measurements."""
    from advisor.backends.hf import HFBackend
    from advisor.intake.data import detect_task, load_examples, with_labels
    from advisor.measure import evaluate, prompts

    data = write_reviews_csv(tmp_path / "reviews.csv", 40 + n_eval, seed=7)
    loaded = load_examples(data, input_col="text", output_col="label")
    task, labels = detect_task(loaded.examples)
    examples = with_labels(loaded.examples, labels)
    lines = [e.line for e in examples]
    split = {
        "seed": 0,
        "data_sha256": loaded.sha256,
        "data_path": str(data),
        "train": lines[:30],
        "dev": lines[30:40],
        "eval": lines[40:],
    }
    config = {
        "data": str(data),
        "input_col": "text",
        "output_col": "label",
        "model": str(model_dir),
        "seed": 0,
        "k_ladder": list(k_ladder),
        "demo_selection": "stratified",
        "max_gen_tokens": 8,
    }
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config))
    (run / "split.json").write_text(json.dumps(split))
    by_line = {e.line: e for e in examples}
    train, dev, eval_items = ([by_line[i] for i in split[k]] for k in ("train", "dev", "eval"))
    backend = HFBackend(model_dir, device="cpu")
    arms = prompts.build_arms(backend, task, labels, train, k_ladder=k_ladder, seed=0)
    result = evaluate.evaluate_arms(
        backend,
        arms,
        train,
        eval_items,
        task,
        labels,
        seed=0,
        thresholds=SHIPPED_THRESHOLDS,
        target_metric="accuracy",
        quality_target=0.8,
        min_gain=0.05,
        dev_items=dev,
    )
    evaluate.write_predictions(run, result)
    RunDir(run).write_prompts(record_prompts(result))  # as advise records them
    # A real run's document, with this run's prompting section and a fine_tune verdict.
    doc = report_docs.few_shot_doc(tmp_path)
    doc["decision"]["verdict"] = "fine_tune"
    doc["signals"]["n_eval"] = 20
    doc.update(prompting=result.to_dict(), training=None, verification=None)
    (run / "decision.json").write_text(json.dumps(doc))
    return run, result


def test_verify_run_compares_finetuned_with_the_best_arm(model_dir, tmp_path) -> None:
    from advisor.measure.evaluate import majority_items, read_predictions
    from pipeline.run import train_run
    from pipeline.verify import verify_run

    run, _ = _advised_run(tmp_path, model_dir)
    cfg = TrainConfig(batch_size=4, max_seq_len=96, lr=5e-3, max_steps=4, eval_every=0, save_every=0)
    train_run(run, cfg, progress=False)
    verification = verify_run(run, latency_samples=2, device="cpu")
    assert isinstance(verification, Verification)  # the typed section, as written
    section = verification.model_dump(mode="json")

    doc = json.loads((run / "decision.json").read_text())
    # the best honest arm; with every arm degenerate (a random tiny model) the majority baseline
    best = doc["prompting"]["plateau"]["best_arm"] or "majority"
    assert section["baseline"]["arm"] == best
    assert report_docs.facts(doc["verification"]) == report_docs.facts(section)
    ft_items = read_predictions(run, "fine_tuned")
    if best == "majority":
        label = doc["prompting"]["baselines"]["majority_label"]
        base_items = {it.line: it for it in majority_items(ft_items, label)}
    else:
        base_items = {it.line: it for it in read_predictions(run, best)}
    assert sorted(it.line for it in ft_items) == sorted(json.loads((run / "split.json").read_text())["eval"])
    fixed = sum(it.correct and not base_items[it.line].correct for it in ft_items)
    broken = sum(base_items[it.line].correct and not it.correct for it in ft_items)
    assert (section["flips"]["improved"], section["flips"]["regressed"]) == (fixed, broken)
    acc = sum(it.correct for it in ft_items) / len(ft_items)
    assert section["finetuned"]["scores"]["accuracy"]["value"] == pytest.approx(acc)
    d = section["difference"]
    honest = not section["degeneracy"]["degenerate"]
    assert section["majority"]["beats"] == (section["majority"]["difference"]["low"] > 0)
    verified = d["low"] > 0 and section["majority"]["beats"] and honest
    assert d["low"] <= d["diff"] <= d["high"] and section["finetune_verified"] == verified
    assert doc["signals"]["finetune_degenerate"] == (not honest)
    zero = next(a for a in doc["prompting"]["arms"] if a["name"] == "zero_shot")
    assert section["finetuned"]["mean_prompt_tokens"] == zero["mean_prompt_tokens"]  # prompted as trained
    assert section["finetuned"]["latency"]["n"] == 2
    # a constant predictor has no prompt to time
    assert (
        section["baseline"]["latency"] is None
        if best == "majority"
        else section["baseline"]["latency"]["n"] == 2
    )
    assert doc["signals"]["finetune_verified"] == section["finetune_verified"]
    assert doc["signals"]["finetune_score"] == pytest.approx(acc) and doc["signals"]["n_eval"] == 20
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).parents[1] / "advisor/schema/decision.schema.json").read_text())
    for key in ("training", "verification"):
        jsonschema.validate(doc[key], {"$defs": schema["$defs"], **schema["properties"][key]})
    card = (run / "train" / "adapter" / "README.md").read_text()
    assert "## Fine-tuning verification" in card and best in card
    md = verification_markdown(verification)
    assert "Paired difference" in md and best in md and "fine-tuned (LoRA)" in md


@pytest.mark.slow
def test_training_again_drops_the_old_adapters_verification_until_verify_runs(model_dir, tmp_path) -> None:
    from advisor import recipe
    from advisor.cli import main
    from advisor.config import AdviseConfig
    from pipeline.run import train_run, verify_and_redecide

    run = tmp_path / "run"
    data = write_reviews_csv(tmp_path / "reviews.csv", 100, seed=7)
    advised = recipe.advise(
        AdviseConfig(
            data=str(data), input_col="text", output_col="label", model=str(model_dir), out=str(run),
            eval_size=20, dev_size=10, k_ladder=(1,), latency_samples=1,
            thresholds={"min_verdict_probability": 0.0},
        )
    )  # fmt: skip
    cfg = TrainConfig(batch_size=4, max_seq_len=96, lr=5e-3, max_steps=2, eval_every=0, save_every=0)
    train_run(run, cfg, force=True, progress=False)
    assert RunDir(run).read_report().verification is None
    assert "has not been verified" in (run / "report.md").read_text()  # trained, not verified yet
    verified = verify_and_redecide(run, latency_samples=0, device="cpu")
    assert verified.verification is not None and verified.signals["finetune_measured"] is True
    assert any(r.id.startswith("verification.") for r in verified.decision.fired)

    train_run(run, cfg.model_copy(update={"lr": 1e-3}), force=True, progress=False)  # a new adapter
    doc = json.loads((run / "decision.json").read_text())
    assert doc["verification"] is None and doc["training"]["config"]["lr"] == 1e-3
    assert doc["signals"]["finetune_measured"] is False and doc["signals"]["finetune_verified"] is None
    assert not any(r["id"].startswith("verification.") for r in doc["decision"]["fired"])
    assert "has not been verified" in (run / "report.md").read_text()
    # decided again as advise decided, P(verdict) and its runner-up included
    before = advised.decision
    assert doc["decision"]["verdict"] == before.verdict and doc["decision"]["confidence"] == before.confidence
    assert doc["decision"]["confidence_detail"] == before.confidence_detail.model_dump(mode="json")

    # a verification of another model (here the base model as it is) outlives a new adapter
    assert main(["verify", str(run), "--model", str(model_dir), "--latency-samples", "0", "-q"]) in range(15)
    other = json.loads((run / "decision.json").read_text())["verification"]["finetuned"]["model_id"]
    train_run(run, cfg, force=True, progress=False)
    kept = json.loads((run / "decision.json").read_text())["verification"]
    assert kept is not None and kept["finetuned"]["model_id"] == other


def test_merged_backend_scores_like_the_unmerged_adapter(model_dir, tmp_path) -> None:
    from peft import PeftModel
    from tiny import rotten_tomatoes_examples

    from advisor.backends.base import LoglikRequest
    from advisor.backends.hf import HFBackend
    from advisor.finetune.loop import train
    from advisor.finetune.prompts import finetuned_backend

    ex = rotten_tomatoes_examples(24, seed=2)
    cfg = TrainConfig(batch_size=4, max_seq_len=64, lr=2e-2, max_steps=3, eval_every=0, save_every=0)
    res = train(model_dir, ex[:20], [], tmp_path / "out", cfg, progress=False)
    merged = finetuned_backend(model_dir, res.adapter_dir, device="cpu")
    plain = HFBackend(model_dir, device="cpu")
    plain.model = PeftModel.from_pretrained(plain.model, str(res.adapter_dir)).eval()
    reqs = [LoglikRequest(e.messages, lab) for e in ex[20:] for lab in ("fresh", "rotten")]
    a, b = merged.loglikelihood(reqs), plain.loglikelihood(reqs)
    assert [x.logprob for x in a] == pytest.approx([x.logprob for x in b], abs=1e-4)
    assert merged.model_id != plain.model_id and "+lora:" in merged.model_id
    base = HFBackend(model_dir, device="cpu").loglikelihood(reqs)
    assert [x.logprob for x in a] != pytest.approx([x.logprob for x in base], abs=1e-4)  # the adapter matters


def test_signals_and_markdown_when_not_measured() -> None:
    assert verification_signals(None) == {
        "finetune_measured": False,
        "finetune_score": None,
        "finetune_gain": None,
        "finetune_verified": None,
        "finetune_degenerate": None,
        "finetune_beats_majority": None,
    }
    assert "Not run" in verification_markdown(None)
    assert TaskKind.CLASSIFY == "classify"


# ---------------------------------------------------------------- the recorded prompts, `tunegate verify`


def _eval_examples(run: Path) -> tuple[list, dict]:
    from advisor.intake.data import load_examples, with_labels

    split = json.loads((run / "split.json").read_text())
    loaded = load_examples(split["data_path"], input_col="text", output_col="label")
    labels = json.loads((run / "decision.json").read_text())["prompting"]["labels"]
    by_line = {ex.line: ex for ex in with_labels(loaded.examples, labels)}
    return [by_line[i] for i in split["eval"]], by_line


def _cli(*argv: str) -> tuple[int, dict]:
    from advisor.cli import main

    code = main(list(argv))
    return code, json.loads((Path(argv[1]) / "decision.json").read_text())


def test_the_record_rebuilds_every_request_advise_sent(model_dir, tmp_path) -> None:
    run, result = _advised_run(tmp_path, model_dir)
    record = RunDir(run).read_prompts(PromptRecord)
    eval_items, by_line = _eval_examples(run)
    assert record.best_arm == result.plateau.best_arm and record.eval_lines == [ex.line for ex in eval_items]
    assert [a.name for a in record.arms] == [a.name for a in result.arms]
    for arm in result.arms:
        recorded = record.arm(arm.name)
        assert recorded.render(eval_items, by_line) == list(arm.prompts)  # the exact turns, demos included
        assert (recorded.variant, recorded.offsets) == (arm.variant, arm.offsets)
    assert any(a.demos for a in record.arms)  # few-shot arms: demonstrations by data line
    # Nothing is re-derived from config.json: editing it changes no prompt.
    (run / "config.json").write_text(json.dumps({**json.loads((run / "config.json").read_text()), "seed": 9}))
    again = RunDir(run).read_prompts(PromptRecord)
    assert [again.arm(a.name).render(eval_items, by_line) for a in result.arms] == [
        list(a.prompts) for a in result.arms
    ]


def test_a_run_folder_without_the_record_is_refused_before_any_training(model_dir, tmp_path, capsys) -> None:
    from advisor.cli import main

    run, _ = _advised_run(tmp_path, model_dir)
    (run / "prompts.json").unlink()
    before = (run / "decision.json").read_bytes()
    capsys.readouterr()
    assert main(["train", str(run), "--force", "--train-set", "max_steps=1"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "prompts.json" in err and "tunegate advise" in err
    assert not (run / "train").exists()
    assert main(["verify", str(run), "--model", str(model_dir)]) == 3
    assert (run / "decision.json").read_bytes() == before


@pytest.mark.slow
def test_tunegate_verify_the_runs_adapter_one_from_elsewhere_and_a_recorded_arm(model_dir, tmp_path) -> None:
    from advisor.measure.evaluate import read_predictions
    from pipeline.run import train_run

    run, _ = _advised_run(tmp_path, model_dir)
    cfg = TrainConfig(batch_size=4, max_seq_len=96, lr=5e-3, max_steps=3, eval_every=0, save_every=0)
    train_run(run, cfg, progress=False)
    adapter = run / "train" / "adapter"

    # (a) the run's own adapter, then decided again with the verification rules
    code, doc = _cli("verify", str(run), "--latency-samples", "1")
    own = doc["verification"]
    assert code == 0 and own["finetuned"]["adapter_dir"] == str(adapter.resolve())
    assert own["finetuned"]["prompted_as"] == "finetune" and own["finetuned"]["latency"]["n"] == 1
    assert own["provenance"]["gate_verdict"] == "fine_tune"
    assert not any(r["id"].startswith("verification.") for r in doc["decision"]["skipped"])
    assert doc["signals"]["finetune_verified"] == own["finetune_verified"]
    assert "## Fine-tuning verification" in (run / "report.md").read_text()
    assert "## Fine-tuning verification" in (adapter / "README.md").read_text()

    # (b) a peft adapter from elsewhere: the same weights copied out score the same; its folder is left alone
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(adapter, elsewhere, ignore=shutil.ignore_patterns("README.md"))
    code, doc = _cli("verify", str(run), "--adapter", str(elsewhere), "--latency-samples", "0")
    other = doc["verification"]
    assert code == 0 and other["finetuned"]["adapter_dir"] == str(elsewhere)
    assert other["finetuned"]["scores"] == own["finetuned"]["scores"]
    assert other["finetuned"]["model_id"] == own["finetuned"]["model_id"]  # named by the weights' hash
    assert other["provenance"]["gate_verdict"] is None and not other["provenance"]["forced"]
    assert other["finetuned"]["latency"] is None
    assert not (elsewhere / "README.md").exists()

    # The base model itself given the zero-shot arm's recorded prompts and label-bias correction
    # reproduces that arm item by item: the record and the scoring path compute what advise computed.
    code, doc = _cli("verify", str(run), "--model", str(model_dir), "--prompts", "zero_shot")
    same = doc["verification"]
    zero = next(a for a in doc["prompting"]["arms"] if a["name"] == "zero_shot")
    assert code == 0 and same["finetuned"]["prompted_as"] == "zero_shot"
    assert "recorded prompts of the arm `zero_shot`" in (run / "report.md").read_text()
    assert same["finetuned"]["scores"] == zero["scores"]
    again = read_predictions(run, "fine_tuned")
    arm = read_predictions(run, "zero_shot")
    assert [it.prediction for it in again] == [it.prediction for it in arm]
    assert [it.label_logprobs for it in again] == [pytest.approx(it.label_logprobs, abs=1e-4) for it in arm]

    code, _ = _cli("verify", str(run), "--prompts", "few_shot_k64")
    assert code == 2
    code, _ = _cli("verify", str(run), "--backend", "openai", "--adapter", str(elsewhere))
    assert code == 2


@pytest.mark.server
@pytest.mark.realmodel
def test_tunegate_verify_a_model_behind_a_server(llama_server, tmp_path) -> None:
    """The llama.cpp server serving the embedded GGUF stands in for a model fine-tuned elsewhere: given
    the zero-shot arm's recorded prompts it must score what that arm scored on the local backend.
    (Echo scoring costs ~6 s a request on 2 cores: 6 eval items.)"""
    from advisor.backends.model import default_model_dir
    from advisor.measure.evaluate import read_predictions

    model_dir = default_model_dir()
    run, _ = _advised_run(tmp_path, model_dir, k_ladder=(1,), n_eval=6)
    # With the model's tokenizer the server scores by echo: whole-label log-likelihoods, as locally.
    # Echo requests queue behind each other on the CPU server: a generous timeout.
    code, doc = _cli(
        "verify", str(run), "--backend", "openai", "--base-url", llama_server, "--tokenizer", str(model_dir),
        "--timeout", "900", "--prompts", "zero_shot", "--latency-samples", "1",
    )  # fmt: skip
    served = doc["verification"]
    assert code == 0 and served["finetuned"]["model_id"] == f"smollm2@{llama_server}"
    assert served["finetuned"]["adapter_dir"] is None and served["finetuned"]["prompted_as"] == "zero_shot"
    assert served["finetuned"]["latency"]["n"] == 1 and served["baseline"]["latency"] is None
    zero = next(a for a in doc["prompting"]["arms"] if a["name"] == "zero_shot")
    value = served["finetuned"]["scores"]["accuracy"]["value"]
    assert zero["scores"]["accuracy"]["low"] <= value <= zero["scores"]["accuracy"]["high"]
    # The server runs the 4-bit GGUF, the local backend its fp32 dequantisation: close, not identical.
    remote = read_predictions(run, "fine_tuned")
    local = read_predictions(run, "zero_shot")
    agree = sum(a.prediction == b.prediction for a, b in zip(remote, local, strict=True))
    pairs = [(a.label_logprobs, b.label_logprobs) for a, b in zip(remote, local, strict=True)]
    assert agree >= len(local) - 1, pairs
    for a, b in zip(remote, local, strict=True):
        assert a.label_logprobs.keys() == b.label_logprobs.keys()
        assert all(abs(a.label_logprobs[k] - b.label_logprobs[k]) < 1.5 for k in a.label_logprobs)


@pytest.mark.slow
def test_generation_with_every_arm_degenerate_verifies_against_the_best_scoring_arm(
    model_dir, tmp_path, monkeypatch
) -> None:
    """A random tiny model gives one answer to every definition: every prompting arm is degenerate and
    there is no constant predictor for free text. `run --force` trains, then verifies against the
    best-scoring arm as it is (a KeyError on the majority's metric, exit 70, before), and the fine-tuned
    model gets the generation degeneracy test too."""
    import random

    rng = random.Random(1)
    words = ["river", "stone", "cloud", "bread", "glass", "horse", "paper", "light", "music", "garden"]
    data = tmp_path / "definitions.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": f"define {w} {i}", "completion": f"a {rng.choice(words)} thing number {i}"})
            + "\n"
            for i, w in enumerate(words * 8)
        )
    )
    from advisor.cli import main

    monkeypatch.setenv("TUNEGATE_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    code = main([
        "run", str(data), "--model", str(model_dir), "--task", "generate", "--target", "chrf=0.5",
        "--eval-size", "12", "--dev-size", "8", "--k", "1", "--no-pilot", "--force", "--out", str(run),
        "--set", "latency_samples=1", "--set", "max_gen_tokens=8",
        "--train-set", "max_steps=1", "--train-set", "save_every=0", "--train-set", "eval_every=0", "-q",
    ])  # fmt: skip
    doc = json.loads((run / "decision.json").read_text())
    arms = doc["prompting"]["arms"]
    assert code in (0, 10, 11, 12, 13, 14) and doc["prompting"]["plateau"]["best_arm"] is None
    assert all(a["degeneracy"]["degenerate"] and a["degeneracy"]["vs_majority"] is None for a in arms)
    top = max(arms, key=lambda a: a["scores"]["chrf"]["value"])
    verification = doc["verification"]
    assert verification["baseline"]["arm"] == top["name"]
    assert verification["degeneracy"] is not None and verification["degeneracy"]["vs_majority"] is None
