"""Report documents for the HTML tests: three verdicts, built the way `advise`/`run` build them.

Data, audit, split, signals and the decision are real: real Rotten Tomatoes snippets, the real audit,
the shipped rules and `decide`. The learning curve is the real probe on those snippets, and cost and
break-even come from the real cost model. Model-dependent numbers (arm scores, latency, training
curve) are fixed figures of the size seen on this machine with SmolLM2-135M (zero-shot ≈ 0.79,
LoRA ≈ 0.83-0.88), since the tests run no model. Flip examples are real eval items.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

from tiny import rotten_tomatoes_rows

from advisor.audit import checks as audit_mod
from advisor.config import AdviseConfig
from advisor.decide.rules import load_rules
from advisor.decide.verdict import decide
from advisor.intake import data
from advisor.measure.cost import CostConfig
from advisor.measure.evaluate import prompting_signals
from advisor.measure.evidence import (
    ArmEvidence,
    Evidence,
    LatencyModel,
    evidence_signals,
    gather_evidence,
    price_arms,
)
from advisor.measure.learning import probe_learning_curve
from advisor.report import render as report

METRIC = "accuracy"


def _est(value: float, n: int, half: float) -> dict[str, Any]:
    return {"value": value, "low": max(0.0, value - half), "high": min(1.0, value + half), "n": n}


def _load(tmp_path: Path, n: int, seed: int, name: str = "reviews.jsonl", label_map: Any = None):
    """Real snippets written as prompt/completion JSONL, loaded, audited and split like `advise`."""
    rows = rotten_tomatoes_rows(n, seed=seed)
    path = tmp_path / name
    with path.open("w", encoding="utf-8") as fh:
        for _, text, label in rows:
            text = " ".join(text.split())
            label = (label_map or {}).get(label, label)
            fh.write(json.dumps({"prompt": f"Review: {text}\nSentiment:", "completion": label}) + "\n")
    loaded = data.load_examples(path)
    task, labels = data.detect_task(loaded.examples)
    examples = data.with_labels(loaded.examples, labels)
    eval_size, dev_size = (200, 100) if n >= 600 else (max(4, n // 5), max(2, n // 10))
    split = audit_mod.make_split(examples, seed=seed, eval_size=eval_size, dev_size=dev_size)
    audit = audit_mod.audit(examples, task, labels)
    by_line = {ex.line: ex for ex in examples}
    return path, loaded, task, labels, examples, split, audit, by_line


def _prompting(
    scores: dict[str, float], tokens: dict[str, float], n_eval: int, target: float, plateau: dict[str, Any]
) -> dict[str, Any]:
    arms = []
    for name, value in scores.items():
        kind = "zero_shot" if name == "zero_shot" else "system" if name == "system" else "few_shot"
        k = int(name.split("_k")[1]) if kind == "few_shot" else 0
        half = 1.96 * math.sqrt(value * (1 - value) / n_eval)
        arms.append(
            {
                "name": name,
                "kind": kind,
                "k": k,
                "selection": "stratified" if kind == "few_shot" else None,
                "n": n_eval,
                "mean_prompt_tokens": tokens[name],
                "scores": {
                    METRIC: _est(value, n_eval, half),
                    "macro_f1": _est(value - 0.01, n_eval, half + 0.005),
                },
                "variant": "batch" if kind == "zero_shot" else "raw",
                "calibration": {"fresh": -0.3, "rotten": -1.35} if kind == "zero_shot" else None,
                "tried": [
                    {
                        "variant": v,
                        "selection": "stratified" if kind == "few_shot" else None,
                        "dev_score": value - d,
                        "n_dev": 100,
                    }
                    for v, d in (("raw", 0.0), ("contextual", 0.01), ("batch", 0.02))
                ],  # fmt: skip
                "degeneracy": {
                    "top_label": "fresh",
                    "top_share": 0.62,
                    "top_true_share": 0.58,
                    "collapsed": False,
                    "vs_majority": {
                        "diff": value - 0.58,
                        "low": value - 0.62,
                        "high": value - 0.54,
                        "p_value": 0.001,
                    },  # fmt: skip
                    "beats_majority": True,
                    "degenerate": False,
                    "reason": None,
                },
            }
        )
    names = list(scores)
    comparisons = []
    for prev, cur in zip(names, names[1:], strict=False):
        diff = scores[cur] - scores[prev]
        comparisons.append(
            {
                "arm": cur,
                "baseline": prev,
                "metric": METRIC,
                "diff": diff,
                "low": diff - 0.035,
                "high": diff + 0.035,
                "n": n_eval,
                "p_value": 0.02 if diff > 0.02 else 0.6,
                "bootstrap_p_value": 0.02 if diff > 0.02 else 0.58,
                "mcnemar_p_value": 0.02 if diff > 0.02 else 0.6,
                "improved": max(0, round(diff * n_eval)) + 6,
                "regressed": 6,
                "improved_lines": [],
                "regressed_lines": [],
            }
        )
    curve = [
        {
            "k": a["k"],
            "arm": a["name"],
            "selection": a["selection"],
            **a["scores"][METRIC],
            "mean_prompt_tokens": a["mean_prompt_tokens"],
        }
        for a in arms
        if a["kind"] != "zero_shot"
    ]
    return {
        "backend": "hf",
        "model_id": "SmolLM2-135M-Instruct",
        "task": "classify",
        "labels": ["fresh", "rotten"],
        "target_metric": METRIC,
        "metric_reason": "accuracy, because the labels are balanced enough (rarest 'rotten': 42.0% ≥ 25.0%)",
        "quality_target": target,
        "min_gain": 0.02,
        "alpha": 0.05,
        "seed": 0,
        "n_eval": n_eval,
        "k_max": 24,
        "baselines": {
            "majority_label": "fresh",
            "majority_share": 0.58,
            "label_shares": {"fresh": 0.58, "rotten": 0.42},
            "majority": {"accuracy": 0.58, "macro_f1": 0.367},
            "uniform": {"accuracy": 0.5, "macro_f1": 0.496},
        },
        "arms": arms,
        "comparisons": comparisons,
        "k_curve": curve,
        "plateau": {
            "case": "costlier_not_better" if plateau["plateaued"] else "still_improving",
            "extend": False,
            "ladder_exhausted": False,
            "trend": {
                "ks": [0, 1, 2, 4],
                "slope": 0.012,
                "low": 0.002,
                "high": 0.022,
                "intercept": 0.8,
                "n": n_eval,
            },  # fmt: skip
            "costlier": [],
        }
        | plateau,
    }


def _evidence(
    scores: dict[str, float],
    tokens: dict[str, float],
    *,
    volume: float,
    budget: float,
    train: list[Any],
    eval_items: list[Any],
    target: float,
) -> Evidence:
    """Arms with fixed latency figures, priced by the real cost model; the real probe learning curve."""
    model = LatencyModel(a=0.045, b=0.0011, c=0.031, n=80, r2=0.94, fitted=("a", "b", "c"))
    rows = []
    for name, score in scores.items():
        kind = "zero_shot" if name == "zero_shot" else "system" if name == "system" else "few_shot"
        mean_ms = model.project(tokens[name], 2.0) * 1000
        rows.append(
            ArmEvidence(
                name,
                kind,
                0 if kind != "few_shot" else int(name.split("_k")[1]),
                score,
                tokens[name],
                2.0,
                p50_ms=round(mean_ms * 0.97, 1),
                p95_ms=round(mean_ms * 1.22, 1),
            )
        )
    best = max(rows, key=lambda a: a.score or 0).name
    few = max((a for a in rows if a.kind == "few_shot"), key=lambda a: a.score or 0).name
    prices = CostConfig(
        serving="api",
        input_per_million=0.5,
        output_per_million=1.5,
        finetuned_input_per_million=0.8,
        finetuned_output_per_million=2.4,
        finetune_cost=24.0,
        price_date="2026-11-01",
        source="advisor/data/prices.example.toml",
    )
    priced, summary = price_arms(
        rows,
        best,
        prices,
        volume,
        finetuned_prompt_tokens=tokens["zero_shot"],
        completion_tokens=2.0,
        train_tokens=len(train) * (tokens["zero_shot"] + 2.0),
        latency_model=model,
    )
    curve = probe_learning_curve(
        [ex.input_text for ex in train],
        [str(ex.label) for ex in train],
        [ex.input_text for ex in eval_items],
        [str(ex.label) for ex in eval_items],
        target=target,
        metric=METRIC,
        seed=0,
        n_boot=200,
    )
    return Evidence(
        task_kind="classify",
        arms=priced,
        best_arm=best,
        few_shot_arm=few,
        volume_per_day=volume,
        latency_budget_ms=budget,
        latency_model=model,
        finetuned_latency_ms=model.project(tokens["zero_shot"], 2.0) * 1000,
        cost=summary,
        horizon_days=90.0,
        learning_curve=curve,
        not_measured=(("domain perplexity", "skipped in this fixture"),),
    )


def _training_curve(steps: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for s in range(1, steps + 1):
        loss = 0.35 + 1.9 * math.exp(-s / 18) + rng.uniform(-0.06, 0.06)
        out.append({"event": "train", "step": s, "loss": round(loss, 4)})
        if s % 10 == 0:
            dev = 0.42 + 1.7 * math.exp(-s / 20) + 0.0009 * max(0, s - 60)
            out.append(
                {
                    "event": "dev",
                    "step": s,
                    "dev_loss": round(dev, 4),
                    "best_dev_loss": None,
                    "improved": True,
                    "dev_accuracy": round(0.80 + 0.085 * (1 - math.exp(-s / 25)), 4),
                }
            )
    return out


def _training(n_train: int, n_dev: int, data_sha: str) -> dict[str, Any]:
    curve = _training_curve(80, seed=3)
    dev = [r for r in curve if r["event"] == "dev"]
    best = min(dev, key=lambda r: r["dev_loss"])
    return {
        "method": "lora",
        "base_model": "~/.cache/tunegate/SmolLM2-135M-Instruct",
        "adapter_dir": "run/train/adapter",
        "config": {
            "r": 8,
            "alpha": 16,
            "dropout": 0.05,
            "target_modules": "all-linear",
            "lr": 2e-4,
            "max_seq_len": 128,
            "seed": 0,
            "batch_size": 8,
            "max_steps": 80,
        },
        "metrics": {
            "adapter_dir": "run/train/adapter",
            "steps": 80,
            "total_steps": 80,
            "best_step": best["step"],
            "best_dev_loss": best["dev_loss"],
            "final_train_loss": curve[-2]["loss"],
            "stopped_early": False,
            "trained_tokens": 81920,
            "tokens_per_s": 96.4,
            "elapsed_s": 850.0,
            "peak_memory_bytes": 0,
            "world_size": 1,
            "resumed_from": None,
            "n_train": n_train,
            "n_dev": n_dev,
            "n_truncated": 0,
        },
        "provenance": {"gate_verdict": "fine_tune", "forced": False, "data_sha256": data_sha},
        "curve": curve,
    }


def _verification(
    by_line: dict[int, Any],
    eval_lines: list[int],
    baseline: str,
    target: float,
    base_value: float,
    ft_value: float,
    n_eval: int,
    data_sha: str,
) -> dict[str, Any]:
    """Before/after on real eval items: the first few flip one way, two flip the other."""
    items = [by_line[i] for i in eval_lines]
    flip = [
        {
            "line": ex.line,
            "input": ex.input_text,
            "target": ex.label,
            "before": "rotten" if ex.label == "fresh" else "fresh",
            "after": ex.label,
        }
        for ex in items[:3]
    ]
    broke = [
        {
            "line": ex.line,
            "input": ex.input_text,
            "target": ex.label,
            "before": ex.label,
            "after": "rotten" if ex.label == "fresh" else "fresh",
        }
        for ex in items[3:5]
    ]
    diff = ft_value - base_value
    return {
        "metric": METRIC,
        "n_eval": n_eval,
        "quality_target": target,
        "baseline": {
            "arm": baseline,
            "scores": {METRIC: _est(base_value, n_eval, 0.052)},
            "mean_prompt_tokens": 236.0,
            "latency": {"n": 20, "p50_ms": 306.0, "p95_ms": 371.0, "mean_ms": 311.0},
        },
        "finetuned": {
            "arm": "fine_tuned",
            "model_id": "SmolLM2-135M-Instruct+lora",
            "adapter_dir": "run/train/adapter",
            "scores": {METRIC: _est(ft_value, n_eval, 0.045)},
            "mean_prompt_tokens": 41.0,
            "latency": {"n": 20, "p50_ms": 112.0, "p95_ms": 138.0, "mean_ms": 116.0},
        },
        "difference": {
            "diff": diff,
            "low": diff - 0.04,
            "high": diff + 0.04,
            "p_value": 0.001,
            "n": n_eval,
            "mcnemar_p_value": 0.0008,
        },
        "flips": {"improved": 21, "regressed": 7, "improved_examples": flip, "regressed_examples": broke},
        "meets_target": ft_value >= target,
        "finetune_verified": diff - 0.04 > 0,
        "provenance": {"gate_verdict": "fine_tune", "forced": False, "data_sha256": data_sha},
    }


def _build(
    tmp_path: Path,
    *,
    loaded,
    task,
    labels,
    audit,
    split,
    signals,
    config,
    prompting=None,
    evidence=None,
    training=None,
    verification=None,
    pilot=None,
) -> dict[str, Any]:
    ruleset = load_rules()
    doc = report.build_report(
        config=config,
        loaded=loaded,
        task=task,
        labels=labels,
        audit=audit,
        split=split,
        signals=signals,
        decision=decide(ruleset, signals),
        ruleset=ruleset,
        prompting=prompting,
        evidence=evidence,
        training=training,
        verification=verification,
        pilot=pilot,
        backend_info={"name": "hf", "model_id": "SmolLM2-135M-Instruct"} if prompting else None,
        created_at="2026-11-28T10:00:00+00:00",
    ).as_dict()
    return json.loads(json.dumps(doc, allow_nan=False))  # the JSON form, as renderers read it


def few_shot_doc(tmp_path: Path) -> dict[str, Any]:
    """800 snippets; a 4-shot prompt meets the 0.85 target while zero-shot does not; low volume."""
    path, loaded, task, labels, examples, split, audit, by_line = _load(
        tmp_path, 800, seed=1, name="reviews-800.jsonl"
    )
    target = 0.85
    scores = {
        "zero_shot": 0.79,
        "system": 0.80,
        "few_shot_k1": 0.825,
        "few_shot_k2": 0.84,
        "few_shot_k4": 0.865,
    }
    tokens = {
        "zero_shot": 41.0,
        "system": 78.0,
        "few_shot_k1": 121.0,
        "few_shot_k2": 163.0,
        "few_shot_k4": 236.0,
    }
    plateau = {
        "plateaued": False,
        "best_arm": "few_shot_k4",
        "previous_arm": "few_shot_k2",
        "best_score": 0.865,
        "gain": 0.025,
        "p_value": 0.03,
        "significant": True,
        "below_target": False,
        "items_needed": 180,
        "reason": "the largest k still improves significantly on the next cheaper arm",
    }
    prompting = _prompting(scores, tokens, 200, target, plateau)
    train = [by_line[i] for i in split.train]
    eval_items = [by_line[i] for i in split.eval]
    evidence = _evidence(
        scores, tokens, volume=300.0, budget=500.0, train=train, eval_items=eval_items, target=target
    )
    config = AdviseConfig(
        data=str(path),
        out=str(tmp_path / "run-few"),
        seed=1,
        quality_target=target,
        target_metric=METRIC,
        volume_per_day=300.0,
        latency_budget_ms=500.0,
    )
    signals: dict[str, Any] = dict(audit_mod.audit_signals(audit, split))
    signals["task_kind"] = task.value
    signals.update(prompting_signals(prompting))
    signals.update(evidence_signals(evidence, config))
    return _build(
        tmp_path,
        loaded=loaded,
        task=task,
        labels=labels,
        audit=audit,
        split=split,
        signals=signals,
        config=config,
        prompting=prompting,
        evidence=evidence.to_dict(),
    )


def _pilot(n_full: int, best_arm: str) -> dict[str, Any]:
    """A measured pilot: three LoRA pilots rising on dev, the largest above the best arm on eval."""
    from advisor.finetune.pilot import recipe

    def diff(d: float, lo: float, hi: float, p: float, n: int) -> dict[str, Any]:
        return {"diff": d, "low": lo, "high": hi, "p_value": p, "n": n, "mcnemar_p_value": None}

    a, b, c = 0.905, 0.82, 0.5
    return {
        "measured": True,
        "reason": "LoRA pilots on 60, 120, 240 training examples (99 optimizer steps), scored on the dev "
        "split: rising",
        "model_id": "SmolLM2-135M-Instruct:3f2a9c1e:float32",
        "recipe": recipe(2).to_dict(),
        "budget_steps": 100,
        "points": [
            {"n_train": 60, "steps": 24, "dev": _est(0.800, 100, 0.08), "train_s": 61.0},
            {"n_train": 120, "steps": 45, "dev": _est(0.830, 100, 0.075), "train_s": 118.0},
            {"n_train": 240, "steps": 90, "dev": _est(0.852, 100, 0.07), "train_s": 231.0},
        ],
        "curve": {
            "a": a,
            "b": b,
            "c": c,
            "trend": True,
            "trend_gain": diff(0.052, 0.01, 0.094, 0.012, 100),
            "n_full": n_full,
            "at_full": _est(a - b * n_full**-c, 100, 0.06),
        },
        "baseline_arm": best_arm,
        "baseline_kind": "few_shot",
        "eval_score": _est(0.87, 200, 0.045),
        "gain": diff(0.04, 0.005, 0.075, 0.03, 200),
        "full_gain": diff(0.055, 0.012, 0.098, 0.01, 200),
        "to_beat_prompt": {"level": 0.83, "value": 75, "low": 40, "high": 190},
        "to_target": {"level": 0.88, "value": 2690, "low": 1100, "high": None},
        "degenerate": False,
        "wall_s": 512.0,
        "reused": False,
    }


def fine_tune_doc(tmp_path: Path) -> dict[str, Any]:
    """1,500 snippets; prompting plateaus below 0.88; high volume, over the latency budget; LoRA verified."""
    path, loaded, task, labels, examples, split, audit, by_line = _load(
        tmp_path, 1500, seed=2, name="reviews-1500.jsonl"
    )
    target = 0.88
    scores = {
        "zero_shot": 0.79,
        "system": 0.80,
        "few_shot_k1": 0.815,
        "few_shot_k2": 0.825,
        "few_shot_k4": 0.83,
    }
    tokens = {
        "zero_shot": 41.0,
        "system": 78.0,
        "few_shot_k1": 121.0,
        "few_shot_k2": 163.0,
        "few_shot_k4": 236.0,
    }
    plateau = {
        "plateaued": True,
        "best_arm": "few_shot_k4",
        "previous_arm": "few_shot_k2",
        "best_score": 0.83,
        "gain": 0.005,
        "p_value": 0.62,
        "significant": False,
        "below_target": True,
        "items_needed": 150,
        "reason": "the best arm gains 0.005 on the next cheaper arm (p=0.62): not significant",
    }
    prompting = _prompting(scores, tokens, 200, target, plateau)
    train = [by_line[i] for i in split.train]
    eval_items = [by_line[i] for i in split.eval]
    evidence = _evidence(
        scores, tokens, volume=50_000.0, budget=250.0, train=train, eval_items=eval_items, target=target
    )
    config = AdviseConfig(
        data=str(path),
        out=str(tmp_path / "run-ft"),
        seed=2,
        quality_target=target,
        target_metric=METRIC,
        volume_per_day=50_000.0,
        latency_budget_ms=250.0,
    )
    training = _training(len(split.train), len(split.dev), loaded.sha256)
    verification = _verification(
        by_line, list(split.eval), "few_shot_k4", target, 0.83, 0.885, 200, loaded.sha256
    )
    signals: dict[str, Any] = dict(audit_mod.audit_signals(audit, split))
    signals["task_kind"] = task.value
    signals.update(prompting_signals(prompting))
    signals.update(evidence_signals(evidence, config))
    from advisor.document import Verification
    from pipeline.verify import verification_signals

    signals.update(verification_signals(Verification.model_validate(verification)))
    from advisor.document import Pilot
    from advisor.finetune import pilot as pilot_mod

    pilot = _pilot(len(split.train), "few_shot_k4")
    signals.update(pilot_mod.signals(Pilot.model_validate(pilot), len(examples), len(split.train)))
    return _build(
        tmp_path,
        loaded=loaded,
        task=task,
        labels=labels,
        audit=audit,
        split=split,
        signals=signals,
        config=config,
        prompting=prompting,
        evidence=evidence.to_dict(),
        training=training,
        verification=verification,
        pilot=pilot,
    )


def collect_data_doc(tmp_path: Path, n: int = 60) -> dict[str, Any]:
    """A data-only run (backend none) on 60 snippets: below the 500-example floor; nothing else measured."""
    path, loaded, task, labels, examples, split, audit, by_line = _load(
        tmp_path, n, seed=0, name=f"reviews-{n}.jsonl"
    )
    config = AdviseConfig(
        data=str(path), out=str(tmp_path / "run-cd"), seed=0, backend="none", quality_target=0.85
    )
    signals: dict[str, Any] = dict(audit_mod.audit_signals(audit, split))
    signals.update({"task_kind": task.value, "prompting_measured": False})
    # what `advise` measures without a model: the probe's learning curve on the real snippets
    train = [by_line[i] for i in split.train]
    eval_items = [by_line[i] for i in split.eval]
    evidence = gather_evidence(None, None, train, eval_items, task, labels, config)
    signals.update(evidence_signals(evidence, config))
    return _build(
        tmp_path,
        loaded=loaded,
        task=task,
        labels=labels,
        audit=audit,
        split=split,
        signals=signals,
        config=config,
        evidence=evidence.to_dict(),
    )


# Dataset text that would break a page rendered without escaping.
HOSTILE_INPUTS = (
    "<script>alert(1)</script>",
    "</table></td><img src=x onerror=alert(2)>",
    "\"double\" & 'single' quotes <b>bold?</b>",
    "W" * 20_000,  # one 20,000-character line without a break opportunity
)
HOSTILE_LABELS = {"fresh": '<i>fresh</i> "ok"', "rotten": "</table><script>alert(3)</script>"}


def hostile_doc(tmp_path: Path) -> dict[str, Any]:
    """A data-only document whose labels and before/after items carry markup, quotes and a 20k line."""
    path, loaded, task, labels, examples, split, audit, by_line = _load(
        tmp_path, 60, seed=0, name="hostile.jsonl", label_map=HOSTILE_LABELS
    )
    config = AdviseConfig(data=str(path), out=str(tmp_path / "run-hostile"), seed=0, backend="none")
    signals: dict[str, Any] = dict(audit_mod.audit_signals(audit, split))
    signals.update({"task_kind": task.value, "prompting_measured": False})
    eval_lines = list(split.eval)
    verification = _verification(
        by_line, eval_lines, "system", 0.85, 0.80, 0.84, len(eval_lines), loaded.sha256
    )
    examples_shown = verification["flips"]["improved_examples"] + verification["flips"]["regressed_examples"]
    for ex, text in zip(examples_shown, HOSTILE_INPUTS, strict=False):
        ex["input"] = f"{text} {ex['input']}"
    return _build(
        tmp_path,
        loaded=loaded,
        task=task,
        labels=labels,
        audit=audit,
        split=split,
        signals=signals,
        config=config,
        verification=verification,
    )


def facts(doc: object, path: str = "") -> dict[str, object]:
    """Every non-null leaf of a JSON document by its path (an absent key and a null one say the same)."""
    if isinstance(doc, dict):
        return {k: v for key, val in doc.items() for k, v in facts(val, f"{path}.{key}").items()}
    if isinstance(doc, list):
        out = {f"{path}[]": len(doc)}
        for i, val in enumerate(doc):
            out.update(facts(val, f"{path}[{i}]"))
        return out
    return {} if doc is None else {path: doc}


def run_decision(tmp_path: Path, verdict: str) -> dict[str, Any]:
    """A real run's decision.json with `verdict` and no model measurements (prompting: null)."""
    folder = tmp_path / "doc-source"
    folder.mkdir(exist_ok=True)
    doc = few_shot_doc(folder)
    doc["decision"]["verdict"] = verdict
    doc.update(prompting=None, evidence=None, training=None, verification=None)
    return doc
