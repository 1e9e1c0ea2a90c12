"""Two models on one site (`atlas site --compare`): the second model B's images beside run A's on
every class and pair page, the transfer table of the summary (how often each model reads the
other's images as the class), and the page of the classes whose images changed most between the
two models, the audit's starting point.

The comparison table comes from `atlas compare` (`atlas.compare`); B's images are copied from B's
run folder, which the table's metadata names relative to itself."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlas.compare import read_comparison
from atlas.errors import AtlasError
from atlas.formatting import finite_or_none, percent
from atlas.site.images import _original, display_copies, source
from atlas.site.views import TargetView

CHANGED_SHOWN = 100  # the most-changed page lists this many targets at most
PAGE = "changed.html"


@dataclass
class Comparison:
    """The comparison as the site shows it: the two models' names, B's run, and per target and
    method the comparison row (with B's image's site paths added)."""

    label_a: str
    label_b: str
    b_run: Path
    rows: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    by_target: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for (tid, method), r in self.rows.items():
            self.by_target.setdefault(tid, {})[method] = r

    def of(self, t: TargetView) -> dict[str, dict[str, Any]]:
        """Target `t`'s rows, by method."""
        return self.by_target.get(t.id, {})


def load(path: Path) -> Comparison:
    table, meta = read_comparison(path)
    b_run = (path.parent / meta["b"]["run_dir"]).resolve()
    if not b_run.is_dir():
        raise AtlasError(f"the second model's run folder {b_run} (named by {path}) is missing; rerun the workflow")
    rows = {}
    for r in table.to_pylist():
        r = {k: finite_or_none(v) for k, v in r.items()}
        rows[(r["target_id"], r["method"])] = r
    return Comparison(meta["a"]["label"], meta["b"]["label"], b_run, rows)


def copy_other_images(
    comparison: Comparison,
    targets: list[TargetView],
    methods: dict[str, str],
    out: Path,
    tmp: Path,
    thumb: int,
    png: bool,
) -> None:
    """B's image of each compared target and method into the site being built (`tmp`, to become
    `out`), as run A's are: a full-size JPEG and a thumbnail under compare/, and the PNG linked."""
    by_id = {t.id: t for t in targets}
    for (tid, method), r in comparison.rows.items():
        t = by_id.get(tid)
        if t is None or method not in methods or r["b_image"] is None:
            continue
        src = source(comparison.b_run, r["b_image"], "the second model's image")
        stem = f"compare/{{}}/{methods[method]}/{t.slug}"
        r["b_full"] = stem.format("images") + ".jpg"
        r["b_thumb"] = stem.format("thumbs") + ".jpg"
        r["b_width"], r["b_height"] = display_copies(src, tmp, r["b_full"], r["b_thumb"], thumb)
        r["b_png"] = _original(src, out, tmp, f"png/compare/{methods[method]}/{t.slug}.png" if png else None)


def _top1(ranks: list[Any]) -> str:
    n = len(ranks)
    hits = sum(1 for r in ranks if r == 1)
    return f"{hits}/{n}" if n else "-"


def _mean(values: list[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


# The summary's transfer table: (heading, what it means)
TRANSFER_COLUMNS = (
    ("targets", "class and pair targets both models drew with the method"),
    ("A's own p", "A's mean probability of the target on A's images"),
    ("B reads A's: top-1", "how many of A's images B ranks as the target first"),
    ("B reads A's: mean p", "B's mean probability of the target on A's images"),
    ("B's own p", "B's mean probability of the target on B's images"),
    ("A reads B's: top-1", "how many of B's images A ranks as the target first"),
    ("A reads B's: mean p", "A's mean probability of the target on B's images"),
    ("judge on A's / B's", "the judge's mean probability of the target on each model's images"),
)


def transfer_table(comparison: Comparison, methods: list[str]) -> list[dict[str, Any]]:
    """One row per method: each model's own reading of its images and the other's."""
    out = []
    for m in methods:
        rows = [r for (_, method), r in comparison.rows.items() if method == m]
        if not rows:
            continue
        a_drawn = [r for r in rows if r["a_image"] is not None]
        b_drawn = [r for r in rows if r["b_image"] is not None]
        cells = [
            str(len(rows)),
            percent(_mean([r["a_prob"] for r in a_drawn])),
            _top1([r["b_reads_a_rank"] for r in a_drawn]),
            percent(_mean([r["b_reads_a"] for r in a_drawn])),
            percent(_mean([r["b_prob"] for r in b_drawn])),
            _top1([r["a_reads_b_rank"] for r in b_drawn]),
            percent(_mean([r["a_reads_b"] for r in b_drawn])),
            f"{percent(_mean([r['a_judge_prob'] for r in a_drawn]))} / {percent(_mean([r['b_judge_prob'] for r in b_drawn]))}",
        ]
        out.append({"method": m, "cells": cells})
    return out


def changed(
    comparison: Comparison, targets: list[TargetView], methods: list[str], n: int = CHANGED_SHOWN
) -> list[dict[str, Any]]:
    """The targets whose images the two models read least in each other, lowest mean transfer
    first (over the methods where both drew an image): per target its page, label, mean transfer,
    the judge's mean change, and each method's pair of thumbnails."""
    out: list[tuple[float, str, dict[str, Any]]] = []
    for t in targets:
        rows = comparison.of(t)
        transfers = [r["transfer"] for r in rows.values() if r["transfer"] is not None]
        if not transfers:
            continue
        judge_change = _mean(
            [
                abs(r["a_judge_prob"] - r["b_judge_prob"])
                for r in rows.values()
                if r["a_judge_prob"] is not None and r["b_judge_prob"] is not None
            ]
        )
        mean = statistics.fmean(transfers)
        shown = {
            "t": t,
            "transfer": mean,
            "transfer_text": percent(mean),
            "judge_change": percent(judge_change),
            "methods": [(m, rows[m]) for m in methods if m in rows],
        }
        out.append((mean, t.id, shown))
    out.sort(key=lambda c: (c[0], c[1]))
    return [c for _, _, c in out[:n]]
