"""Markdown for the fine-tuning sections of the report (`training`, `verification`).

They live in the advisor, beside the other renderers, because the report is the advisor's: the advisor
never imports `pipeline`, while `pipeline` fills these sections and re-exports the renderers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from advisor.textsafe import md_code, md_escape


def training_markdown(section: Mapping[str, Any] | None) -> str:
    """The report's "Fine-tuning" section from decision.json's `training` subtree."""
    if not section:
        return "## Fine-tuning\n\nNot run.\n"
    m, c, prov = section.get("metrics", {}), section.get("config", {}), section.get("provenance", {})
    dev = m.get("best_dev_loss")
    lines = [
        "## Fine-tuning",
        "",
        f"{md_escape(str(section.get('method', 'lora')).upper())} on {md_code(section.get('base_model'))}: "
        + md_escape(
            f"r={c.get('r')}, alpha={c.get('alpha')}, dropout={c.get('dropout')}, "
            f"targets {c.get('target_modules')}, lr {c.get('lr')} ({c.get('schedule')}), "
            f"batch {c.get('batch_size')}×{c.get('grad_accum')}×{m.get('world_size', 1)} process(es), "
            f"max_seq_len {c.get('max_seq_len')}."
        ),
        f"{m.get('n_train')} train / {m.get('n_dev')} dev examples; "
        f"{m.get('steps')} of {m.get('total_steps')} steps"
        f"{' (stopped early)' if m.get('stopped_early') else ''}; "
        + (f"best dev loss {dev:.4f} at step {m.get('best_step')}; " if dev is not None else "")
        + f"{m.get('tokens_per_s', 0):,.0f} tokens/s over {m.get('elapsed_s', 0):.0f} s.",
        f"Adapter: {md_code(section.get('adapter_dir'))}.",
    ]
    if prov.get("forced"):
        lines += [
            "",
            f"**Forced**: the advisor's verdict was {md_code(prov.get('gate_verdict'))}, not `fine_tune`.",
        ]
    return "\n".join(lines) + "\n"


def _est(e: Mapping[str, Any]) -> str:
    return f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"


def _ms(lat: Mapping[str, Any] | None) -> str:
    return "–" if not lat else f"{lat['p50_ms']:.0f} / {lat['p95_ms']:.0f}"


def verification_markdown(section: Mapping[str, Any] | None) -> str:
    """The report's "Fine-tuning verification" section from the decision.json subtree."""
    if not section:
        return "## Fine-tuning verification\n\nNot run: no adapter was trained for this run.\n"
    metric = section["metric"]
    base, ft, d, flips = section["baseline"], section["finetuned"], section["difference"], section["flips"]
    degeneracy, majority = section.get("degeneracy") or {}, section.get("majority") or {}
    verdict = (
        "**Fine-tuning verified**: the fine-tuned model beats the best honest prompting arm and the "
        "majority baseline; both paired 95% intervals lie above zero."
        if section["finetune_verified"]
        else f"**Fine-tuning not verified**: the fine-tuned model is degenerate ({degeneracy['reason']})."
        if degeneracy.get("degenerate")
        else "**Fine-tuning not verified**: a paired 95% interval of the difference includes zero or lies "
        "below it, so this eval set does not show the fine-tuned model beating both the best honest "
        "prompting arm and the majority baseline."
    )
    forced = section.get("provenance", {}).get("forced")
    lines = [
        "## Fine-tuning verification",
        "",
        f"Same {section['n_eval']} eval items and scoring as the prompting arms; "
        f"metric: {md_escape(metric)}.",
        "",
        f"| Model | {metric} (95% CI) | Prompt tokens / request | Latency p50 / p95 (ms) |",
        "|---|---:|---:|---:|",
        f"| best prompting arm {md_code(base['arm'])} | {_est(base['scores'][metric])} | "
        f"{base['mean_prompt_tokens']:.0f} | {_ms(base['latency'])} |",
        f"| fine-tuned{' (LoRA)' if ft.get('adapter_dir') else ''} | {_est(ft['scores'][metric])} | "
        f"{ft['mean_prompt_tokens']:.0f} | {_ms(ft['latency'])} |",
        "",
        f"Fine-tuned model: {md_code(ft.get('model_id'))}, prompted "
        + (
            f"with the recorded prompts of the arm {md_code(ft['prompted_as'])}."
            if ft.get("prompted_as") not in (None, "finetune")
            else "as tunegate trains adapters (the item's own turns and the answer-format hint)."
        ),
        "",
        f"Paired difference (fine-tuned − {md_code(base['arm'])}): "
        f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}], "
        f"p = {d['p_value']:.3g} (McNemar p = {d['mcnemar_p_value']:.3g}).",
        f"Flips: {flips['improved']} items fixed by fine-tuning, {flips['regressed']} broken by it.",
        *(
            [
                f"Against always answering `{majority['label']}` (the majority baseline): "
                f"{majority['difference']['diff']:+.3f} [{majority['difference']['low']:+.3f}, "
                f"{majority['difference']['high']:+.3f}], p = {majority['difference']['p_value']:.3g}."
            ]
            if majority
            else []
        ),
        "",
        verdict,
    ]
    if forced:
        lines += ["", "Training was forced against the advisor's verdict (`--force`)."]
    for title, key in (
        ("Fixed by fine-tuning", "improved_examples"),
        ("Broken by fine-tuning", "regressed_examples"),
    ):
        if flips[key]:
            lines += [
                "",
                f"{title}:",
                "",
                "| line | input | target | before | after |",
                "|---:|---|---|---|---|",
            ]
            for x in flips[key]:
                cells = [str(x["line"]), x["input"], x["target"], x["before"], x["after"]]
                lines.append("| " + " | ".join(md_escape(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
