"""The report's plots as SVG text: pure functions from document sections to standalone SVG strings.

No plotting library: each plot is a few lines, axes and labels written by hand. Every SVG has a
viewBox and no fixed size, so it scales to its container and prints without cut-off; every piece of
text is XML-escaped (arm names and labels come from the user's data and config). The same strings
are inlined into report.html and written beside report.md as files (`figures`).

A function returns None when its section lacks the numbers it needs; callers say why instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any, TypeVar

from advisor.document import (
    ArmEvidence,
    ArmScores,
    Estimate,
    Evidence,
    LatencyModel,
    LearningCurve,
    Pilot,
    Prompting,
    Report,
    ScoredModel,
    Verification,
)
from advisor.report.fmt import short_count as fmt_count
from advisor.report.fmt import short_money as fmt_money
from advisor.report.fmt import short_score as fmt_score
from advisor.textsafe import term_safe

WIDTH = 640
FONT = 11
CHAR_W = 6.2  # rough width of one character at FONT px, for laying out legends and labels
# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies and in greyscale print.
BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY, GREY = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#666666",
)
COMPARISON = ("pilot", "arms")  # the first screen's chart, in order of preference
MIN_LATENCY_R2 = 0.5  # a latency model explaining less of the variance is "no trend", not a line
MAX_POLYLINE_POINTS = 400  # longer series are thinned (every n-th point, the last kept)


@dataclass(frozen=True)
class Figure:
    """One plot of the report: `name` is the file stem (plots/<name>.svg), `section` the document key."""

    name: str
    section: str
    title: str
    svg: str


# ---------------------------------------------------------------- small helpers


def _esc(text: Any) -> str:
    # Control characters are not allowed in XML: shown escaped, so the SVG stays well-formed.
    return escape(term_safe(text, single_line=True), quote=True)


def _num(v: Any) -> float | None:
    """A finite float, or None (bools, strings and NaN are not numbers to plot)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def _f(x: float) -> str:
    return f"{x:.1f}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi], about `n` of them."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks between lo and hi (both > 0); only powers of ten when there are many decades."""
    decades = math.log10(hi) - math.log10(lo)
    mults = (1,) if decades > 3 else (1, 2, 5)
    out = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in mults:
            v = m * 10.0**e
            if lo <= v <= hi:
                out.append(v)
    return out or [lo, hi]


@dataclass(frozen=True)
class Scale:
    """Data range [lo, hi] onto pixel range [a, b] (b < a for a y axis), linear or log10."""

    lo: float
    hi: float
    a: float
    b: float
    log: bool = False

    def __call__(self, v: float) -> float:
        if self.log:
            v = max(v, self.lo * 1e-3)
            t = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            t = (v - self.lo) / (self.hi - self.lo)
        return self.a + t * (self.b - self.a)


def _clip(v: float, scale: Scale) -> float:
    """v held inside the scale's data range."""
    lo, hi = min(scale.lo, scale.hi), max(scale.lo, scale.hi)
    return min(hi, max(lo, v))


def _pad_range(
    lo: float, hi: float, frac: float = 0.08, floor: float | None = None, ceil: float | None = None
):
    if hi <= lo:
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    pad = (hi - lo) * frac
    lo, hi = lo - pad, hi + pad
    if floor is not None:
        lo = max(lo, floor)
    if ceil is not None:
        hi = min(hi, ceil)
    return lo, hi


def _thin(
    points: Sequence[tuple[float, float]], limit: int = MAX_POLYLINE_POINTS
) -> list[tuple[float, float]]:
    if len(points) <= limit:
        return list(points)
    stride = math.ceil(len(points) / limit)
    out = list(points[::stride])
    if out[-1] != points[-1]:
        out.append(points[-1])
    return out


@dataclass
class _Chart:
    """An SVG being drawn: a frame (title, axes, ticks, legend) plus marks appended in data space."""

    title: str
    x: Scale
    y: Scale
    height: int
    parts: list[str] = field(default_factory=list)

    def inside(self, a: float, b: float) -> bool:
        """Whether a data point lies within the frame (marks outside it are not drawn)."""
        return _clip(a, self.x) == a and _clip(b, self.y) == b

    def line(
        self, pts: Iterable[tuple[float, float]], colour: str, *, width: float = 2, dash: str = ""
    ) -> None:
        px = " ".join(f"{_f(self.x(_clip(a, self.x)))},{_f(self.y(_clip(b, self.y)))}" for a, b in pts)
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<polyline points="{px}" fill="none" stroke="{colour}" stroke-width="{width}"{d} '
            'stroke-linejoin="round" stroke-linecap="round"/>'
        )

    def hline(self, v: float, colour: str, label: str, *, dash: str = "6 4", anchor: str = "end") -> None:
        y = self.y(v)
        x0, x1 = self.x.a, self.x.b
        self.parts.append(
            f'<line x1="{_f(x0)}" y1="{_f(y)}" x2="{_f(x1)}" y2="{_f(y)}" stroke="{colour}" '
            f'stroke-width="1.5" stroke-dasharray="{dash}"/>'
        )
        tx = x1 - 4 if anchor == "end" else x0 + 4
        self.text(tx, y - 4, label, colour=colour, anchor=anchor)

    def vline(
        self, v: float, colour: str, label: str, *, dash: str = "2 3", bottom_label: bool = False
    ) -> None:
        x = self.x(v)
        top, bottom = self.y.b, self.y.a
        self.parts.append(
            f'<line x1="{_f(x)}" y1="{_f(top)}" x2="{_f(x)}" y2="{_f(bottom)}" stroke="{colour}" '
            f'stroke-width="1.5" stroke-dasharray="{dash}"/>'
        )
        anchor = "end" if x > (self.x.a + self.x.b) / 2 else "start"
        y = bottom - 6 if bottom_label else top + 12
        self.text(x + (-4 if anchor == "end" else 4), y, label, colour=colour, anchor=anchor)

    def point(self, a: float, b: float, colour: str, *, hollow: bool = False, shape: str = "circle") -> None:
        if not self.inside(a, b):
            return
        x, y = self.x(a), self.y(b)
        fill = "#ffffff" if hollow else colour
        if shape == "diamond":
            r = 6
            self.parts.append(
                f'<polygon points="{_f(x)},{_f(y - r)} {_f(x + r)},{_f(y)} {_f(x)},{_f(y + r)} '
                f'{_f(x - r)},{_f(y)}" fill="{fill}" stroke="{colour}" stroke-width="1.5"/>'
            )
        else:
            self.parts.append(
                f'<circle cx="{_f(x)}" cy="{_f(y)}" r="4.5" '
                f'fill="{fill}" stroke="{colour}" stroke-width="1.5"/>'
            )

    def errorbar(self, a: float, low: float, high: float, colour: str) -> None:
        """A whisker from low to high, cut at the frame; a cap only on an end that was not cut."""
        if _clip(a, self.x) != a:
            return
        lo, hi = _clip(low, self.y), _clip(high, self.y)
        x, y0, y1 = self.x(a), self.y(lo), self.y(hi)
        caps = "".join(
            f"M{_f(x - 5)},{_f(y)}H{_f(x + 5)}" for y, cut in ((y0, lo != low), (y1, hi != high)) if not cut
        )
        self.parts.append(
            f'<path d="M{_f(x)},{_f(y0)}V{_f(y1)}{caps}" stroke="{colour}" stroke-width="1.5" fill="none"/>'
        )

    def text(
        self,
        x: float,
        y: float,
        label: str,
        *,
        colour: str = "#222222",
        anchor: str = "middle",
        size: int = FONT,
        weight: str = "normal",
    ) -> None:
        w = ' font-weight="bold"' if weight != "normal" else ""
        self.parts.append(
            # a white halo keeps labels legible where they cross a line
            f'<text x="{_f(x)}" y="{_f(y)}" fill="{colour}" text-anchor="{anchor}" font-size="{size}"{w} '
            'stroke="#ffffff" stroke-width="3" stroke-linejoin="round" paint-order="stroke">'
            f"{_esc(label)}</text>"
        )


def _chart(
    title: str,
    *,
    x: tuple[float, float],
    y: tuple[float, float],
    xlabel: str,
    ylabel: str,
    xticks: Sequence[float] | None = None,
    yticks: Sequence[float] | None = None,
    xfmt: Callable[[float], str] = fmt_count,
    yfmt: Callable[[float], str] = fmt_score,
    xlog: bool = False,
    legend: Sequence[tuple[str, str, str]] = (),
    height: int = 320,
    xtick_labels: Sequence[tuple[float, Sequence[str]]] | None = None,
    left: int = 60,
) -> _Chart:
    """The frame: title, legend rows, grid, ticks and axis labels. Legend items: (label, colour, style)."""
    rows = _legend_rows(legend, WIDTH - left - 16)
    top = 34 + 16 * len(rows)
    bottom_lines = max((len(lines) for _, lines in xtick_labels), default=1) if xtick_labels else 1
    bottom = 30 + 13 * bottom_lines
    xs = Scale(x[0], x[1], left, WIDTH - 16, log=xlog)
    ys = Scale(y[0], y[1], height - bottom, top)
    c = _Chart(title, xs, ys, height)
    c.text(8, 18, title, anchor="start", size=13, weight="bold")
    for i, row in enumerate(rows):
        cx: float = left
        ly = 34 + 16 * i
        for label, colour, style in row:
            if style == "line":
                c.parts.append(
                    f'<line x1="{cx}" y1="{ly - 4}" x2="{cx + 18}" '
                    f'y2="{ly - 4}" stroke="{colour}" stroke-width="2"/>'
                )
            elif style == "dash":
                c.parts.append(
                    f'<line x1="{cx}" y1="{ly - 4}" x2="{cx + 18}" y2="{ly - 4}" stroke="{colour}" '
                    'stroke-width="2" stroke-dasharray="5 3"/>'
                )
            elif style == "diamond":
                c.parts.append(
                    f'<polygon points="{cx + 9},{ly - 10} {cx + 15},{ly - 4} '
                    f'{cx + 9},{ly + 2} {cx + 3},{ly - 4}" '
                    f'fill="{colour}" stroke="{colour}"/>'
                )
            else:
                fill = "#ffffff" if style == "hollow" else colour
                c.parts.append(
                    f'<circle cx="{cx + 9}" cy="{ly - 4}" r="4" '
                    f'fill="{fill}" stroke="{colour}" stroke-width="1.5"/>'
                )
            c.text(cx + 23, ly, label, anchor="start")
            cx += 23 + len(label) * CHAR_W + 16
    # grid and ticks
    for t in yticks if yticks is not None else nice_ticks(*y):
        py = ys(t)
        c.parts.append(f'<line x1="{left}" y1="{_f(py)}" x2="{WIDTH - 16}" y2="{_f(py)}" stroke="#e3e3e3"/>')
        c.text(left - 6, py + 4, yfmt(t), anchor="end", colour="#444444")
    if xtick_labels is not None:
        for t, lines in xtick_labels:
            px = xs(t)
            for j, line in enumerate(lines):
                c.text(px, height - bottom + 16 + 13 * j, line, colour="#444444")
    else:
        ticks = xticks if xticks is not None else (log_ticks(*x) if xlog else nice_ticks(*x))
        for t in ticks:
            px = xs(t)
            c.parts.append(
                f'<line x1="{_f(px)}" y1="{top}" x2="{_f(px)}" y2="{height - bottom}" stroke="#efefef"/>'
            )
            c.text(px, height - bottom + 16, xfmt(t), colour="#444444")
    c.parts.append(f'<path d="M{left},{top}V{height - bottom}H{WIDTH - 16}" stroke="#888888" fill="none"/>')
    c.text((left + WIDTH - 16) / 2, height - 6, xlabel, colour="#333333")
    cy = (top + height - bottom) / 2
    c.parts.append(
        f'<text x="14" y="{_f(cy)}" fill="#333333" text-anchor="middle" font-size="{FONT}" '
        f'transform="rotate(-90 14 {_f(cy)})">{_esc(ylabel)}</text>'
    )
    return c


def _legend_rows(items: Sequence[tuple[str, str, str]], width: float) -> list[list[tuple[str, str, str]]]:
    rows: list[list[tuple[str, str, str]]] = []
    used = width + 1
    for item in items:
        w = 23 + len(item[0]) * CHAR_W + 16
        if used + w > width:
            rows.append([])
            used = 0
        rows[-1].append(item)
        used += w
    return rows


def _render(c: _Chart, desc: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {c.height}" role="img" '
        f'font-family="system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif" '
        f'font-size="{FONT}" preserveAspectRatio="xMidYMid meet">'
        f"<title>{_esc(c.title)}</title><desc>{_esc(desc)}</desc>"
        f'<rect x="0" y="0" width="{WIDTH}" height="{c.height}" fill="#ffffff"/>'
        + "".join(c.parts)
        + "</svg>"
    )


# ---------------------------------------------------------------- the plots

_KIND_ORDER = {"zero_shot": 0, "system": 1, "few_shot": 2}


Arm = TypeVar("Arm", ArmScores, ArmEvidence)


def arm_label(arm: ArmScores | ArmEvidence) -> list[str]:
    """Tick label lines for an arm: 'zero-shot', 'system', 'k=8' (+ 'nearest'), else the name."""
    if arm.kind == "zero_shot":
        first = ["zero-shot"]
    elif arm.kind == "system":
        first = ["system"]
    elif arm.kind == "few_shot":
        nearest = isinstance(arm, ArmScores) and arm.selection == "nearest"
        first = [f"k={arm.k}"] + (["nearest"] if nearest else [])
    else:
        first = [arm.name if len(arm.name) <= 16 else arm.name[:15] + "…"]
    return first


def ordered_arms(arms: Sequence[Arm]) -> list[Arm]:
    """zero-shot → system → few-shot by k (stratified before nearest) → anything else."""

    def key(a: Arm) -> tuple[int, int, bool, float]:
        if isinstance(a, ArmScores):
            return (
                _KIND_ORDER.get(a.kind, 3),
                a.k,
                a.selection == "nearest",
                _num(a.mean_prompt_tokens) or 0.0,
            )
        return (_KIND_ORDER.get(a.kind, 3), a.k, False, 0.0)

    return sorted(arms, key=key)


def arm_curve_svg(prompting: Prompting | None, finetuned: ScoredModel | None = None) -> str | None:
    """Target-metric score per arm (zero-shot → system → k-shot) with 95% CIs and the target line.

    `finetuned`: the verification section's `finetuned` entry, drawn as a last, differently coloured point.
    """
    if prompting is None or not prompting.arms:
        return None
    metric = prompting.target_metric
    rows: list[tuple[list[str], float, float | None, float | None, str]] = []
    trend = prompting.plateau.trend
    fitted: list[tuple[int, float]] = []  # (row index, fitted score) for the ladder's arms
    for arm in ordered_arms(prompting.arms):
        est = arm.scores.get(metric)
        v = _num(est.value) if est else None
        if est is None or v is None:
            continue
        tokens = _num(arm.mean_prompt_tokens)
        lines = arm_label(arm) + ([f"{fmt_count(tokens)} tok"] if tokens is not None else [])
        if arm.degeneracy is not None and arm.degeneracy.degenerate:
            lines.append("degenerate")
        if trend is not None and arm.kind in ("system", "few_shot"):
            fitted.append((len(rows), trend.at(arm.k)))
        rows.append((lines, v, _num(est.low), _num(est.high), BLUE))
    ft = finetuned.scores.get(metric) if finetuned is not None else None
    if finetuned is not None and ft is not None and _num(ft.value) is not None:
        tokens = _num(finetuned.mean_prompt_tokens)
        lines = ["fine-tuned"] + ([f"{fmt_count(tokens)} tok"] if tokens is not None else [])
        rows.append((lines, ft.value, _num(ft.low), _num(ft.high), VERMILLION))
    if not rows:
        return None
    target = _num(prompting.quality_target)
    majority = _num(getattr(prompting.baselines.majority, metric, None)) if prompting.baselines else None
    values = [v for r in rows for v in (r[1], r[2], r[3]) if v is not None]
    values += [y for _, y in fitted] + [x for x in (target, majority) if x is not None]
    ylo, yhi = _pad_range(min(values), max(values), 0.12, floor=0.0, ceil=1.0)
    n = len(rows)
    legend = [("score, 95% CI", BLUE, "point")]
    if trend is not None and len(fitted) > 1:
        legend.append((f"trend over k: {trend.slope:+.3f} per doubling of k+1", ORANGE, "line"))
    if majority is not None:
        legend.append((f"majority baseline {fmt_score(majority)}", GREY, "dash"))
    if finetuned and rows[-1][4] == VERMILLION:
        legend.append(("fine-tuned model", VERMILLION, "point"))
    if target is not None:
        legend.append((f"target {fmt_score(target)}", GREEN, "dash"))
    c = _chart(
        f"Prompting arms: {metric}",
        x=(-0.5, n - 0.5),
        y=(ylo, yhi),
        xlabel="arm (mean prompt tokens)",
        ylabel=metric,
        legend=legend,
        xtick_labels=[(i, r[0]) for i, r in enumerate(rows)],
    )
    if target is not None:
        c.hline(target, GREEN, f"target {fmt_score(target)}", anchor="start")
    if majority is not None:
        c.hline(majority, GREY, f"majority {fmt_score(majority)}", anchor="end")
    if len(fitted) > 1:
        c.line(fitted, ORANGE, width=1.6)
    pts = [(i, r[1]) for i, r in enumerate(rows) if r[4] == BLUE]
    if len(pts) > 1:
        c.line(pts, BLUE, width=1.2, dash="3 3")
    for i, (_, v, lo, hi, colour) in enumerate(rows):
        if lo is not None and hi is not None:
            c.errorbar(i, lo, hi, colour)
        c.point(i, v, colour)
        c.text(c.x(i) + 8, c.y(v) + 4, fmt_score(v), anchor="start", colour=colour)
    desc = "; ".join(f"{' '.join(r[0])}: {fmt_score(r[1])}" for r in rows)
    return _render(c, desc)


def probe_trend(curve: LearningCurve) -> bool:
    """Whether the probe's score rises with more data, so its power law may be drawn and extrapolated:
    a positive exponent and a largest subset that scores at least the smallest."""
    scores = [p.score for p in curve.points]
    return bool(scores) and curve.b > 0 and scores[-1] >= scores[0]


def latency_trend(model: LatencyModel | None) -> bool:
    """Whether the fitted latency model is one to draw: no negative intercept or slope, and a fit that
    explains at least half the variance."""
    if model is None:
        return False
    return model.a >= 0 and model.b >= 0 and (model.r2 is None or model.r2 >= MIN_LATENCY_R2)


def learning_curve_svg(curve: LearningCurve | None, prompt_score: float | None = None) -> str | None:
    """The probe's score against train examples (log x) with CIs, the power-law fit and its extrapolation."""
    if curve is None or not curve.points:
        return None
    pts = [
        (float(p.n), float(p.score), _num(p.ci_low), _num(p.ci_high))
        for p in curve.points
        if p.n > 0 and _num(p.score) is not None
    ]
    if not pts:
        return None
    a, b = (_num(curve.a), _num(curve.b)) if probe_trend(curve) else (None, None)
    target = _num(curve.target)
    n_min, n_max = min(p[0] for p in pts), max(p[0] for p in pts)
    need = _num(curve.examples_needed.value)
    x_end = 4 * n_max
    if need is not None and need <= 20 * n_max:
        x_end = max(x_end, need * 1.15)
    xlo, xhi = n_min / 1.4, x_end * 1.1
    extra = []
    for factor, iv in ((2, curve.score_at_2x), (4, curve.score_at_4x)) if a is not None else ():
        v = _num(iv.value)
        if v is not None:
            extra.append((factor * n_max, v, _num(iv.low), _num(iv.high)))
    values = [v for p in pts + extra for v in p[1:] if v is not None]
    values += [v for v in (target, prompt_score) if v is not None]
    ylo, yhi = _pad_range(min(values), max(values), 0.1, floor=0.0, ceil=1.0)
    metric = curve.metric
    legend = [("probe score, 95% CI", BLUE, "point")]
    if a is not None and b is not None:
        legend += [("power-law fit", BLUE, "line"), ("extrapolation, 95% CI", BLUE, "hollow")]
    else:
        legend.append(("no trend: the score does not rise with more data, so no fit is drawn", GREY, "point"))
    if target is not None:
        legend.append((f"target {fmt_score(target)}", GREEN, "dash"))
    if prompt_score is not None:
        legend.append((f"best prompt {fmt_score(prompt_score)}", GREY, "dash"))
    c = _chart(
        f"Learning curve (TF-IDF probe): {metric}",
        x=(xlo, xhi),
        y=(ylo, yhi),
        xlabel="train examples (log scale)",
        ylabel=metric,
        xlog=True,
        legend=legend,
    )
    if target is not None:
        c.hline(target, GREEN, f"target {fmt_score(target)}")
    if prompt_score is not None:
        c.hline(prompt_score, GREY, f"best prompt {fmt_score(prompt_score)}", anchor="start", dash="8 3 2 3")
    if a is not None and b is not None:

        def score(n: float) -> float:
            return min(yhi, max(ylo, 1.0 - a * n ** (-b)))

        def span(lo: float, hi: float, k: int = 40) -> list[tuple[float, float]]:
            return [(lo * (hi / lo) ** (i / k), score(lo * (hi / lo) ** (i / k))) for i in range(k + 1)]

        c.line(span(n_min, n_max), BLUE, width=1.5)
        c.line(span(n_max, x_end), BLUE, width=1.5, dash="5 4")
    if a is not None and need is not None and xlo <= need <= xhi:
        c.vline(need, GREEN, f"≈{fmt_count(need)} examples to reach the target", bottom_label=True)
    for n, v, lo, hi in pts:
        if lo is not None and hi is not None:
            c.errorbar(n, lo, hi, BLUE)
        c.point(n, v, BLUE)
    for n, v, lo, hi in extra:
        if lo is not None and hi is not None:
            c.errorbar(n, lo, hi, BLUE)
        c.point(n, v, BLUE, hollow=True)
    desc = "; ".join(f"{fmt_count(n)} examples: {fmt_score(v)}" for n, v, *_ in pts)
    return _render(c, desc)


def pilot_svg(
    pilot: Pilot | None, prompting: Prompting | None, verified: tuple[int, Estimate] | None = None
) -> str | None:
    """The fine-tuning curve (the pilots' dev scores against training examples, log x, with the fitted
    saturating curve and its prediction at the full train split) against the prompting side: each honest
    prompting arm's eval score and the quality target as horizontal lines.

    `verified`: (training examples, eval score) of the verified fine-tuned model, drawn as measured."""
    if pilot is None or not pilot.points or pilot.curve is None:
        return None
    cv = pilot.curve
    pts = [(float(p.n_train), p.dev.value, p.dev.low, p.dev.high) for p in pilot.points]
    n_min, n_full = pts[0][0], float(max(cv.n_full, int(pts[-1][0])))
    xlo, xhi = n_min / 1.4, n_full * 1.4
    metric = prompting.target_metric if prompting is not None else ""
    target = _num(prompting.quality_target) if prompting is not None else None
    honest = [
        a for a in (prompting.arms if prompting is not None else [])
        if not (a.degeneracy is not None and a.degeneracy.degenerate)
    ]  # fmt: skip
    arm_scores = [(a.name, a.scores[metric].value) for a in honest if metric in a.scores]
    majority = prompting.baselines if prompting is not None and not arm_scores else None
    if majority is not None:  # no honest prompt: the fine-tune is held against always answering the majority
        level = getattr(majority.majority, metric, None)
        arm_scores = [("majority baseline", level)] if level is not None else []
    values = [v for p in pts for v in p[1:]] + [cv.at_full.low, cv.at_full.high]
    values += [v for _, v in arm_scores] + ([target] if target is not None else [])
    if pilot.eval_score is not None:
        values.append(pilot.eval_score.value)
    if verified is not None:
        values.append(verified[1].value)
    ylo, yhi = _pad_range(min(values), max(values), 0.1, floor=0.0, ceil=1.0)
    legend = [("pilot, dev score, 95% CI", BLUE, "point"), ("fitted curve", BLUE, "line")]
    legend.append(("predicted at the full train split, 95% CI", BLUE, "hollow"))
    if pilot.eval_score is not None:
        legend.append(("largest pilot on the eval items", ORANGE, "point"))
    if verified is not None:
        legend.append(("fine-tuned model, verified on the eval items", VERMILLION, "diamond"))
    if arm_scores:
        what = "majority baseline (no prompt beats it)" if majority is not None else "prompting arms (eval)"
        legend.append((what, GREY, "dash"))
    if target is not None:
        legend.append((f"target {fmt_score(target)}", GREEN, "dash"))
    c = _chart(
        f"Fine-tuning curve (LoRA pilots) against prompting: {metric}",
        x=(xlo, xhi),
        y=(ylo, yhi),
        xlabel="training examples (log scale)",
        ylabel=metric,
        xlog=True,
        legend=legend,
    )
    if target is not None:
        c.hline(target, GREEN, f"target {fmt_score(target)}")
    for name, v in arm_scores:
        label = f"{term_safe(name)} {fmt_score(v)}"
        c.hline(v, GREY, label, anchor="start", dash="8 3 2 3")

    def score(n: float) -> float:
        y = cv.a - cv.b * n ** (-cv.c) if cv.b > 0 else cv.a
        return min(yhi, max(ylo, y))

    def span(lo: float, hi: float, k: int = 40) -> list[tuple[float, float]]:
        return [(lo * (hi / lo) ** (i / k), score(lo * (hi / lo) ** (i / k))) for i in range(k + 1)]

    c.line(span(n_min, pts[-1][0]), BLUE, width=1.5)
    if n_full > pts[-1][0]:
        c.line(span(pts[-1][0], n_full), BLUE, width=1.5, dash="5 4")
    for n, v, lo, hi in pts:
        c.errorbar(n, lo, hi, BLUE)
        c.point(n, v, BLUE)
    c.errorbar(n_full, cv.at_full.low, cv.at_full.high, BLUE)
    c.point(n_full, cv.at_full.value, BLUE, hollow=True)
    if pilot.eval_score is not None:
        c.point(pts[-1][0], pilot.eval_score.value, ORANGE, shape="diamond")
    if verified is not None:
        n, est = verified
        c.errorbar(n, est.low, est.high, VERMILLION)
        c.point(n, est.value, VERMILLION, shape="diamond")
    desc = "; ".join(f"{fmt_count(n)} examples: {fmt_score(v)}" for n, v, *_ in pts)
    desc += f"; predicted at {fmt_count(n_full)}: {fmt_score(cv.at_full.value)}"
    return _render(c, desc)


def cost_svg(evidence: Evidence | None) -> str | None:
    """Cumulative cost against requests served: the best prompting arm against fine-tuning + serving it.

    The lines cross at the break-even volume; with a declared volume the x ticks also read in days and
    the horizon is marked.
    """
    if evidence is None or evidence.cost is None:
        return None
    cost = evidence.cost
    best = next((a for a in evidence.arms if a.name == evidence.best_arm), None)
    p = _num(best.cost_per_request) if best else None
    f = _num(cost.finetuned_cost_per_request)
    one_time = _num(cost.finetune_cost)
    if p is None or f is None or one_time is None:
        return None
    cur = cost.currency
    volume = _num(evidence.volume_per_day)
    horizon_days = _num(evidence.horizon_days)
    be = _num(cost.break_even_requests)
    horizon = volume * horizon_days if volume and horizon_days else None
    if be and (horizon is None or horizon > 6 * be):
        x_max = 2.5 * be  # the break-even is the point of the plot; the horizon is far off to the right
    elif be or horizon:
        x_max = max(v for v in ((be or 0) * 1.6, (horizon or 0) * 1.15))
    else:
        x_max = one_time / (p - f) * 2 if p > f else 1e6
    y_max = max(p * x_max, one_time + f * x_max) * 1.08
    ticks = nice_ticks(0, x_max, 5)

    def tick_lines(t: float) -> list[str]:
        lines = [fmt_count(t)]
        if volume:
            days = t / volume
            lines.append(f"{days:.0f} d" if days >= 10 or days == 0 else f"{days:.1f} d")
        return lines

    arm = best.name if best else "best arm"
    legend = [
        (f"prompting ({arm}): {fmt_money(p, cur)}/request", BLUE, "line"),
        (
            f"fine-tune {fmt_money(one_time, cur)} + {fmt_money(f, cur)}/request",
            VERMILLION,
            "line",
        ),
    ]
    c = _chart(
        "Cumulative cost against volume served",
        x=(0, x_max),
        y=(0, y_max),
        xlabel="requests served" + (" (days at the declared volume)" if volume else ""),
        ylabel=f"cumulative cost ({cur})" if cur else "cumulative cost",
        yfmt=lambda v: fmt_count(v) if abs(v) >= 1000 else f"{v:g}",
        legend=legend,
        xtick_labels=[(t, tick_lines(t)) for t in ticks],
        left=64,
    )
    for t in ticks:
        c.parts.append(
            f'<line x1="{_f(c.x(t))}" y1="{_f(c.y.b)}" x2="{_f(c.x(t))}" y2="{_f(c.y.a)}" stroke="#efefef"/>'
        )
    if horizon and horizon <= x_max:
        c.vline(horizon, GREY, f"{horizon_days:g}-day horizon")
    elif horizon:
        c.text(
            WIDTH - 20,
            c.y.b + 12,
            f"{horizon_days:g}-day horizon: {fmt_count(horizon)} requests →",
            anchor="end",
            colour=GREY,
        )
    c.line([(0, 0), (x_max, p * x_max)], BLUE)
    c.line([(0, one_time), (x_max, one_time + f * x_max)], VERMILLION)
    if be is not None and be <= x_max:
        c.point(be, p * be, "#222222")
        days = f" ≈ {be / volume:.1f} days" if volume else ""
        label = f"break-even: {fmt_count(be)} requests{days}"
        anchor = "end" if c.x(be) > WIDTH / 2 else "start"
        # below the crossing, right of it, the orange line is above: the corner is empty
        c.text(
            c.x(be) + (-8 if anchor == "end" else 10), c.y(p * be) + 20, label, anchor=anchor, weight="bold"
        )
    desc = (
        f"prompting costs {fmt_money(p, cur)} per request; fine-tuning costs {fmt_money(one_time, cur)} once "
        f"and {fmt_money(f, cur)} per request; "
        + (f"break-even after {fmt_count(be)} requests" if be else "no break-even")
    )
    return _render(c, desc)


def latency_svg(
    evidence: Evidence | None, finetuned: ScoredModel | None = None, trained: bool = False
) -> str | None:
    """Measured p50/p95 latency per arm against its prompt tokens, the fitted model, the budget line.

    The fine-tuned model is drawn as measured (`finetuned`, the verification's entry, when it was timed),
    else as projected by the latency model only when a fine-tune was `trained`; never otherwise."""
    if evidence is None:
        return None
    arms = [a for a in evidence.arms if _num(a.prompt_tokens) is not None and _num(a.p95_ms) is not None]
    if not arms:
        return None
    budget = _num(evidence.latency_budget_ms)
    model = evidence.latency_model
    ma, mb, mc = (_num(model.a), _num(model.b), _num(model.c)) if model else (None, None, None)
    has_model = latency_trend(model) and ma is not None and mb is not None
    outs = [_num(a.completion_tokens) for a in arms]
    out_tokens = sum(o for o in outs if o is not None) / max(1, sum(o is not None for o in outs))
    measured = finetuned.latency if finetuned is not None else None
    if finetuned is not None and measured is not None:
        ft_ms, ft_tokens, ft_label = _num(measured.p95_ms), _num(finetuned.mean_prompt_tokens), "measured"
    else:
        zero = next((a for a in arms if a.kind == "zero_shot"), None)
        ft_ms = _num(evidence.finetuned_latency_ms) if trained and has_model else None
        ft_tokens = _num(evidence.cost.finetuned_prompt_tokens if evidence.cost else None) or (
            _num(zero.prompt_tokens) if zero else None
        )
        ft_label = "projected"
    x_max = max(_num(a.prompt_tokens) or 0 for a in arms) * 1.12 + 1
    ys = [_num(a.p95_ms) or 0 for a in arms] + [_num(a.p50_ms) or 0 for a in arms]
    ys += [v for v in (budget, ft_ms) if v is not None]

    def model_ms(x: float) -> float:
        return 1000.0 * ((ma or 0.0) + (mb or 0.0) * x + (mc or 0.0) * out_tokens)

    if has_model:
        ys.append(model_ms(x_max))
    y_max = max(ys) * 1.15 or 1.0
    legend = [("p95", BLUE, "point"), ("p50", BLUE, "hollow")]
    if has_model:
        legend.append(("latency model (mean)", GREY, "line"))
    elif model is not None:
        legend.append(("no trend: the latency model fits poorly, so no line is drawn", GREY, "point"))
    if ft_ms is not None and ft_tokens is not None:
        legend.append((f"fine-tuned ({ft_label}{', p95' if measured else ''})", VERMILLION, "diamond"))
    if budget is not None:
        legend.append((f"budget {budget:g} ms", VERMILLION, "dash"))
    c = _chart(
        "Latency against prompt length",
        x=(0, x_max),
        y=(0, y_max),
        xlabel="prompt tokens per request",
        ylabel="latency (ms)",
        yfmt=lambda v: f"{v:g}",
        legend=legend,
    )
    if budget is not None:
        c.hline(budget, VERMILLION, f"budget {budget:g} ms")
    if has_model:
        c.line([(0, model_ms(0)), (x_max, model_ms(x_max))], GREY, width=1.5)
    for i, a in enumerate(sorted(arms, key=lambda a: _num(a.prompt_tokens) or 0)):
        x = _num(a.prompt_tokens) or 0.0
        p95 = _num(a.p95_ms) or 0.0
        p50 = _num(a.p50_ms)
        if p50 is not None:
            c.parts.append(
                f'<line x1="{_f(c.x(x))}" y1="{_f(c.y(p50))}" x2="{_f(c.x(x))}" y2="{_f(c.y(p95))}" '
                f'stroke="{BLUE}" stroke-width="1.5"/>'
            )
            c.point(x, p50, BLUE, hollow=True)
        c.point(x, p95, BLUE)
        dy = -9 if i % 2 == 0 else 17
        label = " ".join(arm_label(a))
        anchor = "end" if c.x(x) > WIDTH - 90 else "start"
        c.text(c.x(x) + (-7 if anchor == "end" else 7), c.y(p95) + dy, label, anchor=anchor)
    if ft_ms is not None and ft_tokens is not None:
        c.point(ft_tokens, ft_ms, VERMILLION, shape="diamond")
    desc = "; ".join(
        f"{a.name}: {fmt_count(_num(a.prompt_tokens) or 0)} tokens, p95 {_num(a.p95_ms) or 0:.0f} ms"
        for a in arms
    )
    return _render(c, desc)


def training_series(curve: Sequence[Mapping[str, Any]] | None) -> dict[str, list[tuple[float, float]]]:
    """Series by name from the training log records: 'loss' (train), 'dev_loss', and each dev metric."""
    out: dict[str, list[tuple[float, float]]] = {}
    skip = {"event", "step", "best_dev_loss", "improved", "lr", "tokens", "tokens_per_s", "elapsed_s"}
    for rec in curve or []:
        step = _num(rec.get("step"))
        if step is None or rec.get("event") not in ("train", "dev"):
            continue
        for key, v in rec.items():
            val = _num(v)
            if key in skip or val is None:
                continue
            name = "loss" if rec["event"] == "train" and key == "loss" else key
            if rec["event"] == "train" and key != "loss":
                continue
            out.setdefault(name, []).append((step, val))
    return out


def training_loss_svg(
    curve: Sequence[Mapping[str, Any]] | None, best_step: float | None = None
) -> str | None:
    """Train loss per optimizer step, dev loss at each evaluation, the best (kept) step."""
    series = training_series(curve)
    train, dev = series.get("loss", []), series.get("dev_loss", [])
    if not train and not dev:
        return None
    allpts = train + dev
    x_max = max(s for s, _ in allpts)
    x_min = min(s for s, _ in allpts)
    ylo, yhi = _pad_range(min(v for _, v in allpts), max(v for _, v in allpts), 0.08, floor=0.0)
    legend = []
    if train:
        legend.append(("train loss", BLUE, "line"))
    if dev:
        legend.append(("dev loss", ORANGE, "point"))
    c = _chart(
        "Training and dev loss",
        x=(min(0.0, x_min), max(x_max, 1.0)),
        y=(ylo, yhi),
        xlabel="optimizer step",
        ylabel="loss",
        yfmt=lambda v: f"{v:.3g}",
        legend=legend,
    )
    if best_step is not None:
        c.vline(best_step, GREEN, f"best dev loss at step {best_step:g}")
    if train:
        c.line(_thin(train), BLUE, width=1.3)
    if dev:
        c.line(dev, ORANGE, width=1.5)
        for s, v in _thin(dev, 60):
            c.point(s, v, ORANGE)
    return _render(c, f"{len(train)} train steps, {len(dev)} dev evaluations")


def training_metric_svg(
    curve: Sequence[Mapping[str, Any]] | None, target: float | None = None, target_metric: str | None = None
) -> str | None:
    """Dev metrics (whatever the training loop's callback recorded) per step; the target when comparable."""
    series = {k: v for k, v in training_series(curve).items() if k not in ("loss", "dev_loss")}
    if not series:
        return None
    colours = [ORANGE, PURPLE, GREEN, SKY, BLUE]
    allpts = [p for pts in series.values() for p in pts]
    comparable = (
        target is not None
        and target_metric is not None
        and any(k in (target_metric, f"dev_{target_metric}") for k in series)
    )
    values = [v for _, v in allpts] + ([target] if comparable and target is not None else [])
    ylo, yhi = _pad_range(min(values), max(values), 0.1)
    legend = [(k, colours[i % len(colours)], "point") for i, k in enumerate(series)]
    if comparable and target is not None:
        legend.append((f"target {fmt_score(target)}", GREEN, "dash"))
    c = _chart(
        "Dev metrics during training",
        x=(min(0.0, min(s for s, _ in allpts)), max(1.0, max(s for s, _ in allpts))),
        y=(ylo, yhi),
        xlabel="optimizer step",
        ylabel="dev metric",
        yfmt=lambda v: f"{v:.3g}",
        legend=legend,
    )
    if comparable and target is not None:
        c.hline(target, GREEN, f"target {fmt_score(target)}", anchor="start")
    for i, pts in enumerate(series.values()):
        colour = colours[i % len(colours)]
        c.line(pts, colour, width=1.5)
        for s, v in _thin(pts, 60):
            c.point(s, v, colour)
    return _render(c, ", ".join(f"{k}: last {fmt_score(v[-1][1])}" for k, v in series.items()))


def before_after_svg(verification: Verification | None) -> str | None:
    """Best prompting arm against the fine-tuned model on the same eval items, 95% CIs, the target."""
    if verification is None:
        return None
    metric = verification.metric
    rows = []
    for side, colour, label in (
        (verification.baseline, BLUE, "before"),
        (verification.finetuned, VERMILLION, "after"),
    ):
        est = side.scores.get(metric)
        v = _num(est.value) if est else None
        if est is None or v is None:
            return None
        name = "fine-tuned" if side is verification.finetuned else side.arm
        rows.append((f"{label}: {name}", v, _num(est.low), _num(est.high), colour))
    target = _num(verification.quality_target)
    values = [v for r in rows for v in r[1:4] if v is not None] + ([target] if target is not None else [])
    xlo, xhi = _pad_range(min(values), max(values), 0.15, floor=0.0, ceil=1.0)
    height = 190
    left = 200
    legend = [("score, 95% CI", GREY, "point")]
    if target is not None:
        legend.append((f"target {fmt_score(target)}", GREEN, "dash"))
    c = _chart(
        f"Before and after fine-tuning: {metric}",
        x=(xlo, xhi),
        y=(-0.6, len(rows) - 0.4),
        xlabel=metric,
        ylabel="",
        yticks=[],
        legend=legend,
        height=height,
        left=left,
    )
    if target is not None:
        c.vline(target, GREEN, f"target {fmt_score(target)}", dash="6 4")
    for i, (label, v, lo, hi, colour) in enumerate(rows):
        y = len(rows) - 1 - i
        py = c.y(y)
        short = label if len(label) <= 30 else label[:29] + "…"
        c.text(left - 8, py + 4, short, anchor="end")
        if lo is not None and hi is not None:
            x0, x1 = c.x(lo), c.x(hi)
            c.parts.append(
                f'<path d="M{_f(x0)},{_f(py)}H{_f(x1)}M{_f(x0)},{_f(py - 5)}V{_f(py + 5)}'
                f'M{_f(x1)},{_f(py - 5)}V{_f(py + 5)}" stroke="{colour}" stroke-width="1.5" fill="none"/>'
            )
        c.point(v, y, colour)
        right = c.x(hi) if hi is not None else c.x(v)
        c.text(right + 8, py + 4, fmt_score(v), colour=colour, anchor="start", weight="bold")
    return _render(c, "; ".join(f"{r[0]}: {fmt_score(r[1])}" for r in rows))


# ---------------------------------------------------------------- all of a document's plots


def figures(report: Report) -> list[Figure]:
    """Every plot the document has the numbers for, in report order."""
    prompting, evidence = report.prompting, report.evidence
    training, verification = report.training, report.verification
    out: list[Figure] = []

    def add(name: str, section: str, title: str, svg: str | None) -> None:
        if svg is not None:
            out.append(Figure(name, section, title, svg))

    best_prompt = _num(prompting.plateau.best_score) if prompting else None
    add(
        "arms",
        "prompting",
        "Score per prompting arm with 95% intervals and the quality target",
        arm_curve_svg(prompting, verification.finetuned if verification else None),
    )
    if evidence is not None:
        add(
            "learning_curve",
            "evidence",
            "Learning curve of the probe with its power-law extrapolation",
            learning_curve_svg(evidence.learning_curve, best_prompt),
        )
        add(
            "cost",
            "evidence",
            "Cumulative cost against volume, with the break-even point",
            cost_svg(evidence),
        )
        trained = training is not None or (report.pilot is not None and report.pilot.measured)
        add(
            "latency",
            "evidence",
            "Latency against prompt tokens, with the budget",
            latency_svg(evidence, verification.finetuned if verification else None, trained),
        )
    if training is not None:
        best_step = _num(training.metrics.best_step)
        add(
            "training_loss",
            "training",
            "Training and dev loss per step",
            training_loss_svg(training.curve, best_step),
        )
        add(
            "training_metrics",
            "training",
            "Dev metrics per step",
            training_metric_svg(
                training.curve,
                _num(prompting.quality_target) if prompting else None,
                prompting.target_metric if prompting else None,
            ),
        )
    add(
        "pilot",
        "pilot",
        "Fine-tuning curve of the pilots against the prompting arms and the target",
        pilot_svg(report.pilot, prompting, _verified(report)),
    )
    add(
        "before_after",
        "verification",
        "Best prompting arm against the fine-tuned model",
        before_after_svg(verification),
    )
    return out


def _verified(report: Report) -> tuple[int, Estimate] | None:
    """The verified fine-tune's training examples and eval score, when both are in the document."""
    v, t = report.verification, report.training
    est = v.finetuned.scores.get(v.metric) if v is not None else None
    return (t.metrics.n_train, est) if t is not None and est is not None else None


def comparison(figs: Mapping[str, Figure]) -> Figure | None:
    """The one chart of the report's first screen: the fine-tuning curve against the prompting arms and the
    target when the pilot ran, else the prompting arms against the target."""
    return next((figs[n] for n in COMPARISON if n in figs), None)
