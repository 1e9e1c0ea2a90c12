"""What the pages show beyond the images: the grid's data (data/index.js), the summary's method
comparison and per-kind score tables and histograms, and a target page's score table."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from atlas.formatting import number, percent, value
from atlas.methods import registry
from atlas.site import charts
from atlas.site.groups import Group
from atlas.site.views import TargetView, class_index, kind_order, slug

# The grid's sortable scores, in the order of their columns in data/index.js.
GRID_SCORES = (
    ("d_prob", "D probability"),
    ("judge_prob", "judge probability"),
    ("robust_prob", "robust probability"),
    ("robust_prob_min", "robust probability (min)"),
    ("d_activation", "D activation"),
    ("d_rank", "D rank"),
    ("judge_rank", "judge rank"),
    ("final_loss", "final loss"),
    ("seconds", "seconds"),
)
# Scores summarised per method: probabilities where the kind has them, activations for filters.
_PROB_SCORES = (("d_prob", "D probability"), ("judge_prob", "judge probability"), ("robust_prob", "robust probability"))
_FILTER_SCORES = (("d_activation", "D activation"), ("robust_activation", "robust activation (ratio)"))
# The columns that are probabilities: printed as percentages, histograms over [0, 1].
_PROB_COLUMNS = {"d_prob", "judge_prob", "robust_prob", "robust_prob_min"}


def method_descriptions() -> dict[str, str]:
    """One line per method for the summary page, from each method's module (atlas.methods); a
    method that is not registered (an index from elsewhere) is shown without one."""
    return {m.name: m.description for m in registry()}


def _round(v: Any, prob: bool = False) -> Any:
    """`v` to 4 significant digits, or to a whole number from 1000 (which the pages print whole); a
    probability under 1 stays under 1, so that the grid never shows 100 % for an image that does
    not reach it."""
    if not isinstance(v, float):
        return v
    r = float(f"{v:.4g}") if abs(v) < 999.5 else float(round(v))
    return 0.9999 if prob and r >= 1.0 > v else r


def grid_data(targets: list[TargetView], methods: list[str], kinds: list[str], groups: Sequence[Group] = ()) -> str:
    """data/index.js: one row per image, fields by position (see atlas.js), numbers rounded by `_round`;
    the groups of classes (names, page slugs, and each class index's group).

    JSON with <, > and & as \\u escapes, so that no label can close a script or start markup."""
    rows = []
    for t in targets:
        for m in methods:
            r = t.rows.get(m)
            if r is None:
                continue
            index = list(r["classes"] or []) if t.kind != "filter" else list(r["channels"] or [])
            failed = (r["reason"] or "failed") if r["failed"] else None
            rows.append(
                [
                    t.id,
                    0 if t.slug == t.id else t.slug,
                    methods.index(m),
                    kinds.index(t.kind),
                    t.label,
                    index,
                    r["layer"],
                    failed,
                    *(_round(r[k], k in _PROB_COLUMNS) for k, _ in GRID_SCORES),
                ]
            )
    data = {
        "methods": methods,
        "method_slugs": [slug(m) for m in methods],
        "kinds": kinds,
        "scores": [name for _, name in GRID_SCORES],
        "groups": [g.name for g in groups],
        "group_slugs": [g.slug for g in groups],
        "class_group": {str(c): i for i, g in enumerate(groups) for c in g.classes},
        "rows": rows,
    }
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f"window.ATLAS_INDEX={text};\n"


def _stats(values: list[Any]) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    return (statistics.fmean(vals), statistics.median(vals)) if vals else (None, None)


@dataclass(frozen=True)
class Comparison:
    """One method's row of the summary's comparison of the class targets: counts are out of `n`, the
    method's class targets, a failed one counting as a miss; means are over the images that have
    the score."""

    method: str
    n: int
    failed: int
    d_over_half: int  # D's probability of the class > 0.5
    judge_top1: int  # the judge ranks the class first
    judge_top5: int  # ... among its first five
    judge_prob_mean: float | None
    distinct_top1: int  # different classes among the judge's top-1 predictions
    seconds_mean: float | None

    def cells(self) -> list[tuple[str, str | None]]:
        """The printed cells after the method's name: (value, share in percent or None)."""

        def share(k: int) -> tuple[str, str | None]:
            return f"{k}/{self.n}", percent(k / self.n) if self.n else None

        images = f"{self.n}" + (f" ({self.failed} failed)" if self.failed else "")
        return [
            (images, None),
            share(self.d_over_half),
            share(self.judge_top1),
            share(self.judge_top5),
            (percent(self.judge_prob_mean), None),
            (str(self.distinct_top1), None),
            (number(self.seconds_mean), None),
        ]


COMPARISON_COLUMNS = (
    ("images", "class targets of the method (failed ones have no image and count as misses)"),
    ("D prob > 0.5", "D, the classifier the images were made for, gives the class a probability above one half"),
    ("judge top-1", "the independent judge classifier ranks the class first"),
    ("judge top-5", "the judge ranks the class among its first five"),
    ("mean judge prob", "the judge's mean probability of the class"),
    (
        "distinct judge top-1 labels",
        "how many different classes the judge sees first over the method's images: "
        "low when the method paints the same thing for every class",
    ),
    ("seconds per image", "mean wall seconds of optimisation per image"),
)


def comparison(targets: list[TargetView], methods: list[str]) -> list[Comparison]:
    """The methods side by side on the class targets: how often D and the judge read the class."""
    rows = []
    for m in methods:
        got = [t.rows[m] for t in targets if t.kind == "class" and m in t.rows]
        if not got:
            continue
        ranks = [r["judge_rank"] for r in got if r["judge_rank"] is not None]
        rows.append(
            Comparison(
                method=m,
                n=len(got),
                failed=sum(bool(r["failed"]) for r in got),
                d_over_half=sum(r["d_prob"] is not None and r["d_prob"] > 0.5 for r in got),
                judge_top1=sum(k == 1 for k in ranks),
                judge_top5=sum(k <= 5 for k in ranks),
                judge_prob_mean=_stats([r["judge_prob"] for r in got])[0],
                distinct_top1=len({r["judge_top5"][0] for r in got if r["judge_top5"]}),
                seconds_mean=_stats([r["seconds"] for r in got])[0],
            )
        )
    return rows


NATURALNESS_COLUMNS = (
    ("saturation", "saturation", "mean HSV saturation, (max - min) / max of R, G, B"),
    ("rms_contrast", "RMS contrast", "standard deviation of the grey level in [0, 1]"),
    ("colourfulness", "colourfulness", "Hasler and Suesstrunk's colourfulness, 0-255 scale"),
)


def naturalness_table(
    targets: list[TargetView], methods: list[str], reference: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Per method, the mean naturalness of its images (all kinds of target), each with its ratio to
    the dataset's photos' (`reference`, the exemplars' record) where there is one; the photos' own
    row last."""
    rows = []
    for m in methods:
        got = [t.rows[m] for t in targets if m in t.rows and not t.rows[m]["failed"]]
        means = [_stats([r.get(k) for r in got])[0] for k, _, _ in NATURALNESS_COLUMNS]
        if not got or all(v is None for v in means):
            continue
        cells = []
        for (k, _, _), v in zip(NATURALNESS_COLUMNS, means, strict=True):
            ref = (reference or {}).get(k)
            ratio = f"{v / ref:.2f}x" if v is not None and ref else None
            cells.append((number(v), ratio))
        rows.append({"method": m, "n": len(got), "cells": cells, "reference": False})
    if reference and reference.get("photos"):
        cells = [(number(reference.get(k)), None) for k, _, _ in NATURALNESS_COLUMNS]
        rows.append({"method": "the dataset's photos", "n": reference["photos"], "cells": cells, "reference": True})
    return rows


FAILURES_SHOWN = 50  # the classes listed per method on failures.html


def failures(targets: list[TargetView], methods: list[str], n: int = FAILURES_SHOWN) -> list[dict[str, Any]]:
    """Per method, its class targets the judge reads worst: the `n` lowest judge probabilities of the
    class, lowest first (ties in target order; an image without a judge score first), each with what
    the judge read instead (its top-1 class); and the targets that failed, which have no image."""
    out = []
    for m in methods:
        got = [(k, t, t.rows[m]) for k, t in enumerate(targets) if t.kind == "class" and m in t.rows]
        if not got:
            continue
        scored = sorted(
            ((k, t, r) for k, t, r in got if not r["failed"]),
            key=lambda x: (x[2]["judge_prob"] is not None, x[2]["judge_prob"] or 0.0, x[0]),
        )
        rows = []
        for _, t, r in scored[:n]:
            top, labels = r["judge_top5"] or [], r["judge_top5_labels"] or []
            read_as = None
            if top:
                read_as = f"{top[0]} {labels[0] if labels else ''}".strip()
            rows.append(
                {"t": t, "r": r, "read_as": read_as, "read_right": bool(top) and top[0] in (r["classes"] or [])}
            )
        out.append(
            {
                "method": m,
                "slug": slug(m),
                "n": len(got),
                "scored": len(scored),
                "rows": rows,
                "failed": [t for _, t, r in got if r["failed"]],
            }
        )
    return out


def group_table(groups: list[Group], targets: list[TargetView], methods: list[str]) -> list[dict[str, Any]]:
    """One row per group of classes: its classes in the run and, per method, the comparison's
    counts over the group's class targets (`comparison`), None where the method has none."""
    classes = {class_index(t): t for t in targets if t.kind == "class"}
    rows = []
    for g in groups:
        ts = [classes[c] for c in g.classes if c in classes]
        by = {c.method: c for c in comparison(ts, methods)}
        rows.append({"group": g, "n": len(ts), "methods": [by.get(m) for m in methods]})
    return rows


def summary(targets: list[TargetView], methods: list[str]) -> list[dict[str, Any]]:
    """Per kind: a table of mean/median scores per method and their histograms (inline SVG)."""
    sections = []
    for kind in kind_order({t.kind for t in targets}):
        scores = _FILTER_SCORES if kind == "filter" else _PROB_SCORES
        rows, hists = [], []
        for i, m in enumerate(methods):
            got = [t.rows[m] for t in targets if t.kind == kind and m in t.rows]
            if not got:
                continue
            stats = [_stats([r[k] for r in got]) for k, _ in scores]
            shown = [
                tuple(map(percent if k in _PROB_COLUMNS else number, st))
                for (k, _), st in zip(scores, stats, strict=True)
            ]
            rows.append(
                {
                    "method": m,
                    "n": len(got),
                    "failed": sum(bool(r["failed"]) for r in got),
                    "stats": stats,
                    "shown": shown,
                }
            )
            cells = []
            for k, name in scores:
                vals = [r[k] for r in got]
                finite = [v for v in vals if v is not None]
                lo, hi = (0.0, 1.0) if k in _PROB_COLUMNS else (min(finite, default=0.0), max(finite, default=1.0))
                if hi <= lo:
                    hi = lo + 1.0
                cells.append(
                    charts.histogram(
                        vals,
                        charts.colour(i),
                        lo,
                        hi,
                        label=f"{m} {name}",
                        fmt=percent if k in _PROB_COLUMNS else number,
                    )
                )
            hists.append({"method": m, "cells": cells})
        sections.append({"kind": kind, "scores": [name for _, name in scores], "rows": rows, "hists": hists})
    return sections


def exemplar_note(t: TargetView, info: dict[str, Any] | None) -> str | None:
    """Where a target's exemplars come from, said plainly: the dataset's size and sources, and for a
    class or pair whether any of its photos is labelled with the target's class at all (when none
    is, the exemplars are the photos D scores highest, not photos of the class)."""
    if not info or not info.get("candidates") or not any(r.get("exemplars") for r in t.rows.values()):
        return None
    n = int(info["candidates"])
    sources = ", ".join(info.get("sources") or []) or "unknown source"
    text = f"The {n} photos of the run's dataset ({sources}) ranked by D's activation for the target; "
    if t.kind == "filter":
        return text + "the photos that drive the filter hardest."
    if info.get("labels_are_d_classes") is False:
        return (
            text + "the dataset's labels are ImageNet-1k classes, not D's, so these are the photos D scores "
            "highest for the class, whatever they show."
        )
    counts = [int(r["class_photos"]) for r in t.rows.values() if r.get("class_photos") is not None]
    if not counts:
        return text.rstrip("; ") + "."
    k = counts[0]
    if not info.get("labelled"):
        return text + "the dataset's photos carry no class labels, so these need not show the class."
    if k == 0:
        return (
            text + f"none of them is labelled {t.label}: these are the photos D scores highest for it, "
            "not photos of the class."
        )
    return text + f"{k} of them {'is' if k == 1 else 'are'} labelled {t.label}."


def _top5(ids: list[int] | None, labels: list[str] | None) -> str | None:
    if not ids:
        return None
    labels = labels or [""] * len(ids)
    return ", ".join(f"{i} {n}".strip() for i, n in zip(ids, labels, strict=False))


def score_table(t: TargetView, methods: list[str]) -> list[tuple[str, list[str]]]:
    """Rows (name, printed value per method) of a target page's score table."""
    ms = [m for m in methods if m in t.rows]

    def row(name: str, fn: Any, fmt: Any = value) -> tuple[str, list[str]]:
        return name, [fmt(fn(t.rows[m])) for m in ms]

    return [
        row("D activation", lambda r: r["d_activation"]),
        row("D probability", lambda r: r["d_prob"], percent),
        row("D rank", lambda r: r["d_rank"]),
        row("D top-5", lambda r: _top5(r["d_top5"], r["d_top5_labels"])),
        row("judge", lambda r: r["judge"]),
        row("judge probability", lambda r: r["judge_prob"], percent),
        row("judge rank", lambda r: r["judge_rank"]),
        row("judge top-5", lambda r: _top5(r["judge_top5"], r["judge_top5_labels"])),
        row("robust probability (mean)", lambda r: r["robust_prob"], percent),
        row("robust probability (min)", lambda r: r["robust_prob_min"], percent),
        row("robust activation (ratio)", lambda r: r["robust_activation"]),
        row("saturation", lambda r: r.get("saturation")),
        row("RMS contrast", lambda r: r.get("rms_contrast")),
        row("colourfulness", lambda r: r.get("colourfulness")),
        row("diversity over seeds", lambda r: r.get("diversity")),
        row("final loss", lambda r: r["final_loss"]),
        row("steps", lambda r: r["steps"]),
        row("seed", lambda r: r["seed"]),
        row("seconds", lambda r: r["seconds"]),
        row("failed", lambda r: (r["reason"] or "yes") if r["failed"] else "no"),
    ]
