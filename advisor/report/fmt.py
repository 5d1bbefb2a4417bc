"""How numbers and names read in every output: one place, so the console, Markdown, HTML, the plots and
the model card never disagree on a digit or a name.

Every function returns plain text; a renderer escapes it for its own medium (HTML, Markdown). A value that
was not measured (None) or is not finite reads as DASH.
"""

from __future__ import annotations

import math
from typing import Any

DASH = "–"

METRIC_NAMES = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "balanced_accuracy": "balanced accuracy",
    "exact_match": "exact match",
    "normalized_exact_match": "normalised exact match",
    "token_f1": "token F1",
    "chrf": "chrF",
}
VERDICT_NAMES = {
    "prompt": "Prompting is enough",
    "few_shot": "Use few-shot prompting",
    "fine_tune": "Fine-tune",
    "collect_data": "Collect more data first",
    "inconclusive": "Inconclusive",
}


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def verdict_name(verdict: str) -> str:
    return VERDICT_NAMES.get(verdict, verdict)


def score(v: Any) -> str:
    """A score in [0, 1] (or any metric value): three decimals."""
    x = _number(v)
    return DASH if x is None else f"{x:.3f}"


def signed(v: Any) -> str:
    """A difference: three decimals with its sign."""
    x = _number(v)
    return DASH if x is None else f"{x:+.3f}"


def estimate(value: Any, low: Any, high: Any) -> str:
    """`0.575 [0.510, 0.645]`: a score and its interval."""
    if _number(value) is None:
        return DASH
    return f"{score(value)} [{score(low)}, {score(high)}]"


def difference(diff: Any, low: Any, high: Any) -> str:
    """`+0.045 [-0.020, +0.110]`: a paired difference and its interval."""
    if _number(diff) is None:
        return DASH
    return f"{signed(diff)} [{signed(low)}, {signed(high)}]"


def p_value(p: Any) -> str:
    x = _number(p)
    if x is None:
        return DASH
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def fixed(v: Any, digits: int = 0) -> str:
    """A number with `digits` decimals and thousands separators: 1,234.5."""
    x = _number(v)
    return DASH if x is None else f"{x:,.{digits}f}"


def count(v: Any) -> str:
    """A count with thousands separators, rounded to a whole number."""
    x = _number(v)
    return DASH if x is None else f"{x:,.0f}"


def share(v: Any) -> str:
    """A share in [0, 1] as a percentage with one decimal."""
    x = _number(v)
    return DASH if x is None else f"{x:.1%}"


def ms(v: Any) -> str:
    x = _number(v)
    return DASH if x is None else f"{x:,.0f} ms"


def money(v: Any, currency: str = "") -> str:
    """Cents for sums; two significant digits for fractions of a cent (a price per request)."""
    x = _number(v)
    if x is None:
        return DASH
    a = abs(x)
    digits = 2 if a >= 1 or a == 0 else max(2, 1 - math.floor(math.log10(a)))
    return f"{x:,.{digits}f} {currency}".strip()


def serving(mode: str, finetuned_mode: str | None) -> str:
    """How the prices were applied: one serving mode, or the prompted and the fine-tuned model's each."""
    words = {"api": "API", "self_hosted": "self-hosted"}
    if finetuned_mode is None or finetuned_mode == mode:
        return f"{words.get(mode, mode)} serving"
    return (
        f"prompted model: {words.get(mode, mode)} serving; "
        f"fine-tuned model: {words.get(finetuned_mode, finetuned_mode)} serving"
    )


def value(v: Any) -> str:
    """Any signal or threshold value: flags as true/false, floats to four significant digits."""
    if v is None:
        return DASH
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if not math.isfinite(v):
            return DASH
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.4g}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(value(x) for x in v) + "]"
    return str(v)


def short_count(v: float) -> str:
    """12, 1.5k, 20k, 1.2M: axis labels for counts."""
    a = abs(v)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{v / div:.1f}".rstrip("0").rstrip(".") + suffix
    return f"{v:.0f}" if a >= 10 or v == int(v) else f"{v:.2g}"


def short_score(v: float) -> str:
    """Axis labels for scores: 0.5, 0.25, 1."""
    return f"{v:.3f}".rstrip("0").rstrip(".") if v not in (0, 1) else f"{v:.0f}"


def short_money(v: float, currency: str = "") -> str:
    """Axis labels for money: 1.2M, 3.4k, 12, 0.0031."""
    a = abs(v)
    if a >= 1e6:
        s = f"{v / 1e6:.2f}M"
    elif a >= 1e3:
        s = f"{v / 1e3:.1f}k"
    elif v == 0:
        s = "0"
    elif a >= 1:
        s = f"{v:.0f}" if a >= 100 else f"{v:.2f}"
    else:
        s = f"{v:.2g}"
    return f"{s} {currency}".strip()
