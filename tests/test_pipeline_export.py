"""Export: merged model equals base + adapter; model card and decision update carry the provenance."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import report_docs  # noqa: E402
from tiny import rotten_tomatoes_examples, tiny_llama  # noqa: E402

from advisor.document import Training  # noqa: E402
from advisor.finetune.config import TrainConfig  # noqa: E402
from advisor.report.finetune import model_card_markdown, training_markdown  # noqa: E402
from advisor.rundir import TrainDir  # noqa: E402
from pipeline.export import merge_adapter, update_decision  # noqa: E402

SECTION = {
    "method": "lora",
    "base_model": "/models/base",
    "adapter_dir": "/run/train/adapter",
    "config": TrainConfig().to_dict(),
    "metrics": {
        "steps": 10,
        "total_steps": 10,
        "best_step": 8,
        "best_dev_loss": 0.5,
        "n_train": 30,
        "n_dev": 10,
        "trained_tokens": 492,
        "tokens_per_s": 123.0,
        "elapsed_s": 4.0,
        "world_size": 1,
    },
    "provenance": {"gate_verdict": "prompt", "forced": True, "data_sha256": "deadbeef"},
}


def test_merged_model_gives_the_adapters_logits(tmp_path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from advisor.finetune.loop import train

    torch.set_num_threads(1)
    model_dir = tiny_llama(tmp_path)
    ex = rotten_tomatoes_examples(20, seed=4)
    cfg = TrainConfig(batch_size=4, max_seq_len=48, lr=2e-2, max_steps=3, eval_every=0, save_every=0)
    res = train(model_dir, ex, [], tmp_path / "out", cfg, progress=False)
    merged_dir = merge_adapter(model_dir, res.adapter_dir, TrainDir(tmp_path / "out"))
    assert merged_dir == tmp_path / "out" / "merged"
    assert (merged_dir / "model.safetensors").is_file() and (merged_dir / "tokenizer.json").is_file()
    probe = torch.tensor([[7, 30, 2, 99, 14]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()(input_ids=probe).logits
        peft = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(model_dir), res.adapter_dir
        ).eval()
        assert torch.allclose(merged, peft(input_ids=probe).logits, atol=1e-5)


def test_model_card_and_training_section_show_hash_config_metrics_and_force() -> None:
    card = model_card_markdown(Training.model_validate(SECTION))
    assert "deadbeef" in card and "forced against the verdict" in card and "| r | 8 |" in card
    assert "| best_dev_loss | 0.5 |" in card and "library_name: peft" in card
    md = training_markdown(Training.model_validate(SECTION))
    assert "best dev loss 0.5000 at step 8" in md and "Forced" in md
    assert "Not run" in training_markdown(None)


def test_model_card_metadata_names_the_hub_model_never_a_local_path(tmp_path, monkeypatch) -> None:
    import yaml

    from advisor.backends.model import EMBEDDED_HUB_ID, EMBEDDED_NAME, hub_model_id, user_cache_dir

    monkeypatch.setenv("TUNEGATE_CACHE_DIR", str(tmp_path / "cache"))
    snapshot = tmp_path / "hub" / "models--Qwen--Qwen2.5-0.5B-Instruct" / "snapshots" / "a1b2"
    snapshot.mkdir(parents=True)
    cases = {
        str(
            user_cache_dir() / "models" / EMBEDDED_NAME
        ): EMBEDDED_HUB_ID,  # the embedded model: its Hub original
        str(snapshot): "Qwen/Qwen2.5-0.5B-Instruct",  # a Hugging Face cache folder
        "HuggingFaceTB/SmolLM2-360M-Instruct": "HuggingFaceTB/SmolLM2-360M-Instruct",  # a Hub id as given
        str(tmp_path): None,  # any other local folder: omitted
    }
    for model, expected in cases.items():
        assert hub_model_id(model) == expected
        card = model_card_markdown(Training.model_validate({**SECTION, "base_model": model}))
        front = yaml.safe_load(card.split("---\n")[1])
        assert front.get("base_model") == expected and front["library_name"] == "peft"
        assert ("base_model" in front) == (expected is not None)
        assert str(tmp_path) not in card.split("---\n")[1]  # no local path in the metadata


def test_update_decision_keeps_other_sections(tmp_path: Path) -> None:
    before = report_docs.few_shot_doc(tmp_path)
    (tmp_path / "decision.json").write_text(json.dumps(before))
    update_decision(tmp_path, training=Training.model_validate(SECTION), signals={"finetune_verified": True})
    doc = json.loads((tmp_path / "decision.json").read_text())
    assert report_docs.facts(doc["decision"]) == report_docs.facts(before["decision"])
    assert doc["training"]["provenance"]["forced"] is True
    assert doc["signals"] == {**before["signals"], "finetune_verified": True}
    assert not list((tmp_path / "out").glob(".*tmp*"))  # the temp folder was renamed into place


def test_the_adapter_names_the_original_model_never_a_cache_folder(tmp_path, monkeypatch) -> None:
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM

    from advisor.backends.model import EMBEDDED_HUB_ID, original_model_id
    from advisor.finetune.loop import train

    monkeypatch.setenv("TUNEGATE_CACHE_DIR", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "models" / "smollm2-135m-instruct"  # the embedded model, converted
    assert original_model_id(cached) == EMBEDDED_HUB_ID
    assert original_model_id(tmp_path / "mine") == str(tmp_path / "mine")  # a user's folder, as given

    torch.set_num_threads(1)
    model_dir = tiny_llama(tmp_path)
    cfg = TrainConfig(batch_size=4, max_seq_len=48, max_steps=1, eval_every=0, save_every=0)
    res = train(model_dir, rotten_tomatoes_examples(8, seed=4), [], tmp_path / "out", cfg, progress=False)
    assert PeftConfig.from_pretrained(res.adapter_dir).base_model_name_or_path == str(model_dir)
    TrainDir(tmp_path / "out").name_base_model(res.adapter_dir, original_model_id(cached))
    assert PeftConfig.from_pretrained(res.adapter_dir).base_model_name_or_path == EMBEDDED_HUB_ID
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), res.adapter_dir)  # still loads

    card = model_card_markdown(Training.model_validate({**SECTION, "base_model": str(cached)}))
    assert f"base_model: {EMBEDDED_HUB_ID}" in card.split("---\n")[1]
    assert f"vllm serve {EMBEDDED_HUB_ID} --enable-lora" in card
    assert "Q4_1" in card and str(cached) not in card
    assert "Q4_1" not in model_card_markdown(Training.model_validate(SECTION))


def test_the_model_card_parses_with_license_data_and_eval_results_and_no_path_or_eval_text(
    tmp_path: Path,
) -> None:
    """The card a run writes (`write_model_card`), read back by huggingface_hub: base model, license,
    the data file's name and the verified score as metadata; no local path, no eval item's text."""
    from huggingface_hub import ModelCard

    from advisor.backends.model import EMBEDDED_HUB_ID
    from advisor.document import Report
    from advisor.rundir import RunDir
    from pipeline.export import write_model_card

    doc = report_docs.fine_tune_doc(tmp_path)
    data = tmp_path / "private" / "team-tickets.jsonl"
    doc["dataset"]["path"] = str(data)
    base = tmp_path / "cache" / "models" / "SmolLM2-135M-Instruct"
    doc["training"] = {**doc["training"], "base_model": str(base), "base_model_id": EMBEDDED_HUB_ID}
    doc["training"]["config"] = {**doc["training"]["config"], "model": str(base)}
    run = RunDir(tmp_path / "run").create()
    run.write_report(Report.model_validate(doc))
    report = run.read_report()
    assert report.training is not None and report.verification is not None
    (tmp_path / "run" / "train" / "adapter").mkdir(parents=True)
    path = write_model_card(run, "train/adapter", report.training, report.verification)

    text = path.read_text()
    card = ModelCard(text)
    meta = card.data.to_dict()
    assert meta["base_model"] == EMBEDDED_HUB_ID and meta["license"] == "apache-2.0"
    assert meta["datasets"] == ["team-tickets.jsonl"] and meta["library_name"] == "peft"
    (result,) = card.data.eval_results
    metric = report.verification.metric
    assert result.metric_type == metric and result.dataset_name == "team-tickets.jsonl"
    assert result.metric_value == report.verification.finetuned.scores[metric].value
    assert str(report.verification.n_eval) in (result.metric_name or "")
    assert str(tmp_path) not in text
    assert re.findall(r"(?:^|[\s`(\"'|])(~?/[\w.-]+)", text, re.M) == []  # no absolute or home path at all
    flips = report.verification.flips
    texts = [x.input for x in flips.improved_examples + flips.regressed_examples]
    assert texts and not any(t in text for t in texts)  # the eval items' texts stay in the run folder
    assert "Paired difference" in text  # the verification itself is there


def test_a_local_base_model_is_named_by_its_folder_and_its_cards_license(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    from pipeline.export import base_model_license, dataset_name

    base = tmp_path / "models" / "acme-7b"
    base.mkdir(parents=True)
    assert base_model_license(str(base), None) is None  # no card in the folder: not recorded
    (base / "README.md").write_text("---\nlicense: mit\n---\n# acme\n")
    assert base_model_license(str(base), None) == "mit"
    card = model_card_markdown(
        Training.model_validate({**SECTION, "base_model": str(base)}), dataset="x.csv", license="mit"
    )
    assert "`acme-7b`" in card and str(tmp_path) not in card
    assert ModelCard(card).data.license == "mit" and "base_model" not in ModelCard(card).data.to_dict()
    assert dataset_name(str(tmp_path / "a" / "b.parquet"), "table") == "b.parquet"
    assert dataset_name("stanfordnlp/imdb", "datasets") == "stanfordnlp/imdb"  # a Hub id, as it is
    assert dataset_name(str(tmp_path), "datasets") == tmp_path.name  # a save_to_disk folder: its name
