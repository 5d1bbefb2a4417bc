"""Markdown for the fine-tuning sections of the report (`training`, `verification`) and the adapter's model
card, from the typed report.

They live in the advisor, beside the other renderers, because the report is the advisor's: the advisor
never imports `pipeline`, while `pipeline` fills these sections and writes the model card.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePath

from advisor.backends.model import EMBEDDED_HUB_ID, hub_model_id
from advisor.document import Estimate, Latency, Training, Verification
from advisor.report import fmt
from advisor.report.prose import unverified_adapter_sentence
from advisor.textsafe import md_code, md_escape, term_safe


def training_markdown(t: Training | None) -> str:
    """The report's "Fine-tuning" section."""
    if t is None:
        return "## Fine-tuning\n\nNot run.\n"
    m, c = t.metrics, t.config
    lines = [
        "## Fine-tuning",
        "",
        f"{md_escape(t.method.upper())} on {md_code(t.base_model)}: "
        + md_escape(
            f"r={c.get('r')}, alpha={c.get('alpha')}, dropout={c.get('dropout')}, "
            f"targets {c.get('target_modules')}, lr {c.get('lr')} ({c.get('schedule')}), "
            f"batch {c.get('batch_size')}×{c.get('grad_accum')}×{m.world_size} process(es), "
            f"max_seq_len {c.get('max_seq_len')}."
        ),
        f"{m.n_train} train / {m.n_dev} dev examples; {m.steps} of {m.total_steps} steps"
        f"{' (stopped early)' if m.stopped_early else ''}; "
        + (
            f"best dev loss {m.best_dev_loss:.4f} at step {m.best_step}; "
            if m.best_dev_loss is not None
            else ""
        )
        + f"{m.tokens_per_s:,.0f} tokens/s over {m.elapsed_s or 0:.0f} s.",
        f"Adapter: {md_code(t.adapter_dir)}.",
    ]
    if t.provenance.forced:
        lines += [
            "",
            f"**Forced**: the advisor's verdict was {md_code(t.provenance.gate_verdict)}, not `fine_tune`.",
        ]
    return "\n".join(lines) + "\n"


def _est(e: Estimate) -> str:
    return fmt.estimate(e.value, e.low, e.high)


def _ms(lat: Latency | None) -> str:
    return fmt.DASH if lat is None else f"{lat.p50_ms:.0f} / {lat.p95_ms:.0f}"


def _g3(v: float | None) -> str:
    return fmt.DASH if v is None else f"{v:.3g}"


def verification_markdown(v: Verification | None, trained: bool = False, *, public: bool = False) -> str:
    """The report's "Fine-tuning verification" section (`trained`: the run holds an adapter).

    `public`: for the model card, published beside the adapter: without the eval items' texts (the
    fixed and broken examples) and without the fine-tuned model's local id (a folder path)."""
    if v is None and trained:
        return f"## Fine-tuning verification\n\nNot run yet: {unverified_adapter_sentence()}\n"
    if v is None:
        return "## Fine-tuning verification\n\nNot run: no adapter was trained for this run.\n"
    metric = v.metric
    base, ft, d, flips = v.baseline, v.finetuned, v.difference, v.flips
    if v.finetune_verified:
        verdict = (
            "**Fine-tuning verified**: the fine-tuned model beats the best honest prompting arm and the "
            "majority baseline; both paired 95% intervals lie above zero."
        )
    elif v.degeneracy is not None and v.degeneracy.degenerate:
        verdict = f"**Fine-tuning not verified**: the fine-tuned model is degenerate ({v.degeneracy.reason})."
    else:
        verdict = (
            "**Fine-tuning not verified**: a paired 95% interval of the difference includes zero or lies "
            "below it, so this eval set does not show the fine-tuned model beating both the best honest "
            "prompting arm and the majority baseline."
        )
    majority = []
    if v.majority is not None:
        md = v.majority.difference
        majority = [
            f"Against always answering `{v.majority.label}` (the majority baseline): "
            f"{fmt.difference(md.diff, md.low, md.high)}, p = {_g3(md.p_value)}."
        ]
    lines = [
        "## Fine-tuning verification",
        "",
        f"Same {v.n_eval} eval items and scoring as the prompting arms; metric: {md_escape(metric)}.",
        "",
        f"| Model | {metric} (95% CI) | Prompt tokens / request | Latency p50 / p95 (ms) |",
        "|---|---:|---:|---:|",
        f"| best prompting arm {md_code(base.arm)} | {_est(base.scores[metric])} | "
        f"{base.mean_prompt_tokens:.0f} | {_ms(base.latency)} |",
        f"| fine-tuned{' (LoRA)' if ft.adapter_dir else ''} | {_est(ft.scores[metric])} | "
        f"{ft.mean_prompt_tokens:.0f} | {_ms(ft.latency)} |",
        "",
        (
            "Fine-tuned model: this adapter, prompted "
            if public
            else f"Fine-tuned model: {md_code(ft.model_id)}, prompted "
        )
        + (
            f"with the recorded prompts of the arm {md_code(ft.prompted_as)}."
            if ft.prompted_as not in (None, "finetune")
            else "as tunegate trains adapters (the item's own turns and the answer-format hint)."
        ),
        "",
        f"Paired difference (fine-tuned − {md_code(base.arm)}): {fmt.difference(d.diff, d.low, d.high)}, "
        f"p = {_g3(d.p_value)} (McNemar p = {_g3(d.mcnemar_p_value)}).",
        f"Flips: {flips.improved} items fixed by fine-tuning, {flips.regressed} broken by it.",
        *majority,
        "",
        verdict,
    ]
    if v.provenance.forced:
        lines += ["", "Training was forced against the advisor's verdict (`--force`)."]
    shown = () if public else (flips.improved_examples, flips.regressed_examples)
    for title, examples in zip(("Fixed by fine-tuning", "Broken by fine-tuning"), shown, strict=False):
        if examples:
            lines += [
                "",
                f"{title}:",
                "",
                "| line | input | target | before | after |",
                "|---:|---|---|---|---|",
            ]
            for x in examples:
                cells = [str(x.line), x.input, x.target, x.before, x.after]
                lines.append("| " + " | ".join(md_escape(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the model card

CARD_METRICS = (
    "steps",
    "total_steps",
    "best_step",
    "best_dev_loss",
    "final_train_loss",
    "stopped_early",
    "n_train",
    "n_dev",
    "trained_tokens",
    "tokens_per_s",
    "elapsed_s",
    "world_size",
)


def _cell(v: object) -> str:
    """A number as fmt writes it (no Markdown in it to escape); anything else escaped."""
    return fmt.value(v) if v is None or isinstance(v, float) else md_escape(v)


def card_metadata(
    hub_id: str | None,
    *,
    license: str | None = None,
    dataset: str | None = None,
    verification: Verification | None = None,
) -> str:
    """The card's YAML front matter through huggingface_hub's ModelCardData: `base_model` only when the
    Hub id is known (never a local path), the license, the training data's name, and the verified score
    on the held-out eval items as an `EvalResult`."""
    from huggingface_hub import EvalResult, ModelCardData

    # Names from the user's data in plain characters: a renderer that shows the front matter as Markdown
    # (or HTML) then finds no markup, and YAML no syntax, in them.
    dataset = _plain_name(dataset) if dataset else None
    license = _plain_name(license) if license else None
    results = None
    if verification is not None:
        metric = verification.metric
        results = [
            EvalResult(
                task_type="text-generation",
                dataset_type=dataset or "held-out",
                dataset_name=dataset or "held-out eval items",
                dataset_split="eval",
                metric_type=metric,
                metric_name=f"{metric} on {verification.n_eval} held-out eval items",
                metric_value=float(verification.finetuned.scores[metric].value),
            )
        ]
    data = ModelCardData(
        library_name="peft",
        base_model=hub_id,
        license=license,
        datasets=[dataset] if dataset else None,
        tags=["lora", "tunegate"],
        model_name=CARD_TITLE if results else None,
        eval_results=results,
    )
    return str(data.to_yaml())


CARD_TITLE = "LoRA adapter trained by tunegate"


def _plain_name(name: str) -> str:
    return re.sub(r"[^\w.+/-]", "_", name)


def model_card_markdown(
    training: Training,
    verification: Verification | None = None,
    *,
    dataset: str | None = None,
    license: str | None = None,
) -> str:
    """The adapter folder's README.md: provenance, data hash, config, metrics, before/after comparison.

    It is meant to be published with the adapter, so it holds no local path (a local base model is named
    by its folder's name) and no eval item's text. `dataset`: the training data's name (a file name or a
    Hub dataset id, never a path); `license`: the base model's license, when known."""
    prov = training.provenance
    # A JSON string is a valid YAML (front matter) and Python (usage snippet) string literal: the model
    # name cannot end the line, the front matter or the code block it sits in.
    # Markdown and HTML punctuation as \u escapes too: a renderer that shows the front matter as
    # Markdown sees no HTML, link or image in it.
    # The base named is the Hub id its weights are when known (a path in one user's cache means nothing
    # to a server elsewhere), else the name of the folder trained on.
    trained_on = training.base_model
    hub_id = training.base_model_id or hub_model_id(trained_on)
    base_id = hub_id or PurePath(trained_on).name or trained_on
    base_literal = "".join(
        f"\\u{ord(c):04x}" if c in "<>&[]()!`*_|#~" else c
        for c in json.dumps(term_safe(base_id, single_line=True))
    )
    lines = [
        "---",
        card_metadata(hub_id, license=license, dataset=dataset, verification=verification).rstrip("\n"),
        "---",
        "",
        f"# {CARD_TITLE}",
        "",
        f"- Base model: {md_code(base_id)}"
        + ("" if hub_id else " (a local model folder, named here by its name)"),
        *(
            [
                "  The embedded model is the Q4_1 GGUF quantisation of this base, dequantised: a server "
                "loading the Hub checkpoint serves a base close to, not identical with, the one this "
                "adapter was trained and verified on."
            ]
            if base_id == EMBEDDED_HUB_ID
            else []
        ),
        f"- License: {md_code(license)}"
        if license
        else "- License: not recorded (the base model's card was not "
        "found); an adapter usually takes its base model's license",
        f"- Method: {md_escape(training.method)}",
        (f"- Training data: {md_code(dataset)}, SHA-256 " if dataset else "- Training data SHA-256: ")
        + md_code(prov.data_sha256),
        "- Trained on the train and dev splits only; the eval split was held out.",
        f"- Gate: verdict {md_code(prov.gate_verdict)}"
        + (" — **training was forced against the verdict (--force)**" if prov.forced else ""),
        "",
        "## Metrics",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {key} | {_cell(getattr(training.metrics, key))} |" for key in CARD_METRICS]
    lines += ["", "## Configuration", "", "| option | value |", "|---|---|"]
    # `model` is the base model named above (as given, it may be a local path)
    lines += [f"| {md_escape(k)} | {_cell(v)} |" for k, v in training.config.items() if k != "model"]
    if verification is not None:
        lines += ["", verification_markdown(verification, public=True)]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        f"base = AutoModelForCausalLM.from_pretrained({base_literal})",
        'model = PeftModel.from_pretrained(base, "<this folder>")',
        "```",
        "",
        f"vLLM: {md_code(f'vllm serve {base_id} --enable-lora --lora-modules tuned=<this folder>')}, "
        "then `tunegate verify RUN --backend openai --base-url http://HOST:8000/v1 --model tuned`.",
        "",
    ]
    return "\n".join(lines)
