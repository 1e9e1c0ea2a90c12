"""Inline SVG charts for the site: loss curves and score histograms.

Every chart is built as text here and handed to Jinja as `Markup`, so every piece of text that
comes from the data (method names) is escaped here, by `escape`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from markupsafe import Markup, escape

from atlas.formatting import number, percent

# Colour-blind-safe (Okabe-Ito), one per method in the site's method order.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")


def colour(i: int) -> str:
    return COLOURS[i % len(COLOURS)]


def loss_curves(
    series: Mapping[str, Sequence[float] | None], steps: Mapping[str, int | None], width: int = 520, height: int = 220
) -> Markup:
    """One polyline per method: the loss (y) against the optimisation step (x), the legend on the
    right (the chart is `width` plus the legend's width wide).

    Curves are stored subsampled (at most 250 points spread over the run), so point i of n sits at
    step i * (steps - 1) / (n - 1). Non-finite points break the line.
    """
    curves = {m: [float(v) if v is not None else math.nan for v in (c or [])] for m, c in series.items()}
    finite = [v for c in curves.values() for v in c if math.isfinite(v)]
    if not finite:
        return Markup('<p class="muted">No loss curve recorded.</p>')
    left, right, top, bottom = 64, 12, 12, 34
    pw, ph = width - left - right, height - top - bottom
    # The legend sits right of the plot, never over the curves: a swatch line and the name.
    legend = min(28 + 7 * max((len(m) for m in curves), default=0), 220)
    width += legend
    lo, hi = min(finite), max(finite)
    if hi == lo:
        lo, hi = lo - 1.0, hi + 1.0
    xmax = max([max((steps.get(m) or len(c)) - 1, 1) for m, c in curves.items()] or [1])

    def y(v: float) -> float:
        return top + ph * (hi - v) / (hi - lo)

    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="loss per step">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
    ]
    for v in (hi, (hi + lo) / 2, lo):
        parts.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="11">{number(v)}</text>')
    parts.append(f'<text x="{left}" y="{height - 18}" font-size="11">0</text>')
    parts.append(f'<text x="{left + pw}" y="{height - 18}" text-anchor="end" font-size="11">{xmax}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle" font-size="11">step</text>')
    parts.append(
        f'<text x="12" y="{top + ph / 2}" font-size="11" transform="rotate(-90 12 {top + ph / 2})" text-anchor="middle">loss</text>'
    )
    for i, (method, c) in enumerate(curves.items()):
        n = len(c)
        last = max((steps.get(method) or n) - 1, 1)
        segment: list[str] = []
        segments = []
        for j, v in enumerate(c):
            if not math.isfinite(v):
                segments.append(segment)
                segment = []
                continue
            x = left + pw * (j * last / max(n - 1, 1)) / xmax
            segment.append(f"{x:.1f},{y(v):.1f}")
        segments.append(segment)
        for seg in segments:
            if len(seg) == 1:
                cx, cy = seg[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{colour(i)}"/>')
            elif seg:
                parts.append(
                    f'<polyline fill="none" stroke="{colour(i)}" stroke-width="1.5" points="{" ".join(seg)}"/>'
                )
        ly = top + 10 + 16 * i
        parts.append(
            f'<line x1="{left + pw + 10}" y1="{ly - 4}" x2="{left + pw + 24}" y2="{ly - 4}" stroke="{colour(i)}" stroke-width="2"/>'
        )
        parts.append(f'<text x="{left + pw + 28}" y="{ly}" font-size="12">{escape(method)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def histogram(
    values: Sequence[float | None],
    colour_: str,
    lo: float = 0.0,
    hi: float = 1.0,
    bins: int = 20,
    width: int = 220,
    height: int = 90,
    label: str = "",
    fmt: Callable[[float], str] = number,
) -> Markup:
    """Bars of the counts of `values` in `bins` equal bins over [lo, hi] (values outside clipped);
    the axis ends printed by `fmt`."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    counts = [0] * bins
    for v in vals:
        k = int((min(max(v, lo), hi) - lo) / (hi - lo) * bins)
        counts[min(k, bins - 1)] += 1
    top, bottom = 14, 16
    ph = height - top - bottom
    bw = width / bins
    peak = max(counts) or 1
    parts = [
        f'<svg class="hist" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{escape(label)}: histogram of {len(vals)} values">',
        f'<line x1="0" y1="{top + ph}" x2="{width}" y2="{top + ph}" stroke="#999"/>',
    ]
    for k, n in enumerate(counts):
        if n:
            h = ph * n / peak
            parts.append(
                f'<rect x="{k * bw + 0.5:.1f}" y="{top + ph - h:.1f}" width="{bw - 1:.1f}" height="{h:.1f}" fill="{colour_}"/>'
            )
    parts.append(f'<text x="0" y="{height - 3}" font-size="10">{escape(fmt(lo))}</text>')
    parts.append(f'<text x="{width}" y="{height - 3}" font-size="10" text-anchor="end">{escape(fmt(hi))}</text>')
    parts.append(
        f'<text x="{width}" y="10" font-size="10" text-anchor="end">n={len(vals)}, max bin {max(counts)}</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))


class _Readable(Protocol):  # atlas.site.tables.Comparison, which imports this module
    @property
    def method(self) -> str: ...
    @property
    def n(self) -> int: ...
    @property
    def judge_top1(self) -> int: ...
    @property
    def judge_top5(self) -> int: ...
    @property
    def judge_prob_mean(self) -> float | None: ...


def readability(rows: Sequence[_Readable], colours: Mapping[str, str], width: int = 560) -> Markup:
    """Per method, three bars on one 0-100 % scale: the share of its class targets the judge ranks
    first, the share in its top five, and the judge's mean probability of the class."""
    if not rows:
        return Markup("")
    label_w, bar_h, gap = 190, 14, 10
    measures = ("judge top-1", "judge top-5", "mean judge prob")
    plot = width - label_w - 60
    height = len(rows) * (3 * bar_h + gap + 14) + 20
    parts = [
        f'<svg class="chart readability" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="judge top-1, top-5 and mean probability per method">'
    ]
    y = 4
    for r in rows:
        parts.append(f'<text x="0" y="{y + 11}" font-size="12" font-weight="600">{escape(r.method)}</text>')
        y += 14
        shares = (
            r.judge_top1 / r.n if r.n else None,
            r.judge_top5 / r.n if r.n else None,
            r.judge_prob_mean,
        )
        for name, v in zip(measures, shares, strict=True):
            parts.append(f'<text x="{label_w - 6}" y="{y + 11}" font-size="11" text-anchor="end">{name}</text>')
            parts.append(f'<rect x="{label_w}" y="{y + 1}" width="{plot}" height="{bar_h - 2}" fill="#eee"/>')
            if v is not None and math.isfinite(v):
                parts.append(
                    f'<rect x="{label_w}" y="{y + 1}" width="{plot * min(max(v, 0.0), 1.0):.1f}" height="{bar_h - 2}" '
                    f'fill="{colours.get(r.method, COLOURS[0])}"/>'
                )
            parts.append(f'<text x="{label_w + plot + 6}" y="{y + 11}" font-size="11">{escape(percent(v))}</text>')
            y += bar_h
        y += gap
    parts.append(f'<text x="{label_w}" y="{height - 4}" font-size="10">0 %</text>')
    parts.append(f'<text x="{label_w + plot}" y="{height - 4}" font-size="10" text-anchor="end">100 %</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
