"""`atlas site`: the static HTML atlas of a run, rendered from its index.parquet with Jinja2.

The site is one self-contained folder (publish it alone, open it from disk, serve it under any
sub-path): every link is relative, nothing is loaded from outside, and the images are in it.

    index.html                 grid of every image (vanilla JS over data/index.js): filter, search, sort
    <target id>.html           one page per target: the methods side by side, exemplars, scores, loss
    layers.html, layer-<layer>.html, pairs.html, summary.html, provenance.html, downloads.html
    images/<method>/<target id>.png, thumbs/<method>/<target id>.jpg, exemplars/<hash>.<ext>
    data/index.js              the grid's data, one compact table (window.ATLAS_INDEX = {...})
    assets/                    style.css, atlas.js
    index.parquet, index.csv   the index for download

File names come from target ids, layer names and method names only (made file-name-safe by
`slug`), never from labels. The folder is built under a temporary name and renamed into place.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import re
import shutil
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from jinja2 import Environment, PackageLoader, StrictUndefined
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from atlas import charts
from atlas.errors import AtlasError
from atlas.formatting import number, percent, value
from atlas.io import atomic_dir
from atlas.methods import METHODS
from atlas.schema import INDEX_COLUMNS, PROVENANCE_KEY, check_index

log = logging.getLogger(__name__)

MARKER = ".atlas-site"  # marks a folder as a site this command may replace
THUMB_SIZE = 128
_KIND_ORDER = ("class", "pair", "group", "filter")
_PAGES = {"index", "layers", "pairs", "summary", "provenance", "downloads"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")
_IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".gif"}
# The grid's sortable scores, in the order of their columns in data/index.js.
GRID_SCORES = (
    ("d_prob", "D probability"), ("judge_prob", "judge probability"), ("robust_prob", "robust probability"),
    ("robust_prob_min", "robust probability (min)"), ("d_activation", "D activation"), ("d_rank", "D rank"),
    ("judge_rank", "judge rank"), ("final_loss", "final loss"), ("seconds", "seconds"),
)
# Scores summarised per method: probabilities where the kind has them, activations for filters.
_PROB_SCORES = (("d_prob", "D probability"), ("judge_prob", "judge probability"), ("robust_prob", "robust probability"))
_FILTER_SCORES = (("d_activation", "D activation"), ("robust_activation", "robust activation (ratio)"))
# The columns that are probabilities: printed as percentages, histograms over [0, 1].
_PROB_COLUMNS = {"d_prob", "judge_prob", "robust_prob", "robust_prob_min"}
# One line per method for the summary page; a method not listed here is shown without one.
METHOD_DESCRIPTIONS = {
    "scratch": "a generator network trained from scratch for each target, all its weights optimised (the paper's first method)",
    "pretrained": "only the input code of a generator pretrained as a denoising autoencoder's decoder is optimised "
                  "(the paper's second method)",
    "pixel": "the pixels optimised directly, the classic baseline the paper compares against (its Figure 1)",
    "fourier": "a colour-decorrelated Fourier image optimised under random transformations (the feature-visualisation standard of lucid)",
    "maco": "only the phase of a Fourier image is optimised, its magnitude fixed to that of natural photos (MACO, Fel et al. 2023)",
}


def slug(text: str) -> str:
    """A file-name-safe stem for `text` (a target id, layer or method): itself when already safe and
    not a page name; otherwise its safe characters plus a hash of the original, so names stay unique."""
    safe = _UNSAFE.sub("_", text).lstrip(".")[:100]
    if safe == text and safe and safe.lower() not in _PAGES and not safe.lower().startswith("layer-"):
        return safe
    return f"{safe or 'x'}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def inside(root: Path, *parts: str) -> Path:
    """`root / parts`, refused when it would land outside `root`."""
    path = root.joinpath(*parts)
    if not path.resolve().is_relative_to(root.resolve()):
        raise AtlasError(f"refusing to write {path}: it is outside the site folder {root}")
    return path


def _number(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


@dataclass
class TargetView:
    id: str
    slug: str
    kind: str
    label: str
    first: dict[str, Any]
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> row (with site paths)
    prev: TargetView | None = None
    next: TargetView | None = None

    @property
    def page(self) -> str:
        return f"{self.slug}.html"

    def sort_key(self) -> tuple[Any, ...]:
        kind = _KIND_ORDER.index(self.kind) if self.kind in _KIND_ORDER else len(_KIND_ORDER)
        f = self.first
        return (kind, self.kind, f["layer"] or "", list(f["classes"] or []), list(f["channels"] or []), self.id)


def load_index(path: Path) -> tuple[pa.Table, dict[str, Any]]:
    """The index table, checked against the schema, and its provenance (empty when absent)."""
    if not path.is_file():
        raise AtlasError(f"index {path} does not exist; build it with `atlas index` (or run snakemake)")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise AtlasError(f"cannot read {path} ({exc}); rebuild it with `atlas index`") from exc
    table = check_index(table, str(path))
    raw = (table.schema.metadata or {}).get(PROVENANCE_KEY)
    provenance: dict[str, Any] = {}
    if raw is None:
        log.warning("%s has no provenance in its metadata; the provenance page lists only its columns", path)
    else:
        try:
            provenance = json.loads(raw)
        except ValueError as exc:
            raise AtlasError(f"{path} has unreadable provenance metadata ({exc}); rebuild it with `atlas index`") from exc
    return table, provenance


def _targets(rows: list[dict[str, Any]], where: Path) -> list[TargetView]:
    by_id: dict[str, TargetView] = {}
    slugs: dict[str, str] = {}
    for row in rows:
        if not row["target_id"] or not row["method"]:
            raise AtlasError(f"{where} has a row with no target_id or method; rebuild it with `atlas index`")
        if not row["failed"] and not row["image"]:
            raise AtlasError(f"{where}: {row['method']} {row['target_id']} neither failed nor has an image; rebuild it")
        t = by_id.get(row["target_id"])
        if t is None:
            s = slug(row["target_id"])
            if s.lower() in slugs:
                raise AtlasError(f"{where}: targets {slugs[s.lower()]} and {row['target_id']} share file name {s}; rename one")
            slugs[s.lower()] = row["target_id"]
            t = by_id[row["target_id"]] = TargetView(row["target_id"], s, row["kind"], row["label"] or row["target_id"], row)
        if row["method"] in t.rows:
            raise AtlasError(f"{where}: target {row['target_id']} of method {row['method']} is twice in the index; rebuild it")
        t.rows[row["method"]] = {k: _number(v) for k, v in row.items()}
    targets = sorted(by_id.values(), key=TargetView.sort_key)
    for a, b in zip(targets, targets[1:], strict=False):
        a.next, b.prev = b, a
    return targets


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: copy
        shutil.copyfile(src, dst)


def _source(run_dir: Path, rel: str, what: str) -> Path:
    src = run_dir / rel
    if not src.is_file():
        raise AtlasError(f"{what} {src} is listed in the index but missing; rerun the workflow (snakemake) to remake it")
    return src


def _copy_images(targets: list[TargetView], methods: dict[str, str], run_dir: Path, out: Path, thumb: int) -> None:
    """Full images (linked), thumbnails (JPEG), exemplars (linked); site paths written into the rows."""
    exemplars: dict[str, dict[str, Any]] = {}
    jobs = [(t, m, r) for t in targets for m, r in t.rows.items()]
    for t, method, row in tqdm(jobs, desc="site images", unit="img", mininterval=2):
        row["mslug"] = methods[method]
        if not row["failed"]:
            src = _source(run_dir, row["image"], "image")
            ext = src.suffix.lower() if src.suffix.lower() in _IMAGE_EXTS else ".png"
            row["full"] = f"images/{methods[method]}/{t.slug}{ext}"
            row["thumb"] = f"thumbs/{methods[method]}/{t.slug}.jpg"
            _link(src, inside(out, row["full"]))
            try:
                with Image.open(src) as im:
                    row["width"], row["height"] = im.size
                    small = im.convert("RGB")
                    small.thumbnail((thumb, thumb))
                    dst = inside(out, row["thumb"])
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    small.save(dst, format="JPEG", quality=85)
            except (OSError, UnidentifiedImageError) as exc:
                raise AtlasError(f"cannot read image {src} ({exc}); rerun the workflow to remake it") from exc
        row["site_exemplars"] = []
        for rel, score in zip(row["exemplars"] or [], row["exemplar_scores"] or [None] * len(row["exemplars"] or []), strict=False):
            if rel not in exemplars:
                src = _source(run_dir, rel, "exemplar")
                ext = src.suffix.lower() if src.suffix.lower() in _IMAGE_EXTS else ".png"
                name = f"exemplars/{hashlib.sha256(rel.encode()).hexdigest()[:16]}{ext}"
                _link(src, inside(out, name))
                try:
                    with Image.open(src) as im:
                        size = im.size
                except (OSError, UnidentifiedImageError) as exc:
                    raise AtlasError(f"cannot read exemplar {src} ({exc}); rerun the workflow to remake it") from exc
                exemplars[rel] = {"src": name, "width": size[0], "height": size[1], "name": rel.rsplit("/", 1)[-1]}
            row["site_exemplars"].append({**exemplars[rel], "score": _number(score)})


def _method_order(names: Iterable[str]) -> list[str]:
    names = set(names)
    return [m for m in METHODS if m in names] + sorted(names - set(METHODS))


def _round(v: Any, prob: bool = False) -> Any:
    """`v` to 4 significant digits, or to a whole number from 1000 (which the pages print whole); a
    probability under 1 stays under 1, so that the grid never shows 100 % for an image that does
    not reach it."""
    if not isinstance(v, float):
        return v
    r = float(f"{v:.4g}") if abs(v) < 999.5 else float(round(v))
    return 0.9999 if prob and r >= 1.0 > v else r


def grid_data(targets: list[TargetView], methods: list[str], kinds: list[str]) -> str:
    """data/index.js: one row per image, fields by position (see atlas.js), numbers rounded by `_round`.

    JSON with <, > and & as \\u escapes, so that no label can close a script or start markup."""
    rows = []
    for t in targets:
        for m in methods:
            r = t.rows.get(m)
            if r is None:
                continue
            index = list(r["classes"] or []) if t.kind != "filter" else list(r["channels"] or [])
            failed = (r["reason"] or "failed") if r["failed"] else None
            rows.append([t.id, 0 if t.slug == t.id else t.slug, methods.index(m), kinds.index(t.kind), t.label, index,
                         r["layer"], failed, *(_round(r[k], k in _PROB_COLUMNS) for k, _ in GRID_SCORES)])
    data = {
        "methods": methods, "method_slugs": [slug(m) for m in methods], "kinds": kinds,
        "scores": [name for _, name in GRID_SCORES], "rows": rows,
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
        return [(images, None), share(self.d_over_half), share(self.judge_top1), share(self.judge_top5),
                (percent(self.judge_prob_mean), None), (str(self.distinct_top1), None),
                (number(self.seconds_mean), None)]


COMPARISON_COLUMNS = (
    ("images", "class targets of the method (failed ones have no image and count as misses)"),
    ("D prob > 0.5", "D, the classifier the images were made for, gives the class a probability above one half"),
    ("judge top-1", "the independent judge classifier ranks the class first"),
    ("judge top-5", "the judge ranks the class among its first five"),
    ("mean judge prob", "the judge's mean probability of the class"),
    ("distinct judge top-1 labels", "how many different classes the judge sees first over the method's images: "
                                    "low when the method paints the same thing for every class"),
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
        rows.append(Comparison(
            method=m, n=len(got), failed=sum(bool(r["failed"]) for r in got),
            d_over_half=sum(r["d_prob"] is not None and r["d_prob"] > 0.5 for r in got),
            judge_top1=sum(k == 1 for k in ranks), judge_top5=sum(k <= 5 for k in ranks),
            judge_prob_mean=_stats([r["judge_prob"] for r in got])[0],
            distinct_top1=len({r["judge_top5"][0] for r in got if r["judge_top5"]}),
            seconds_mean=_stats([r["seconds"] for r in got])[0],
        ))
    return rows


def summary(targets: list[TargetView], methods: list[str]) -> list[dict[str, Any]]:
    """Per kind: a table of mean/median scores per method and their histograms (inline SVG)."""
    sections = []
    kinds = sorted({t.kind for t in targets}, key=lambda k: (_KIND_ORDER.index(k) if k in _KIND_ORDER else 9, k))
    for kind in kinds:
        scores = _FILTER_SCORES if kind == "filter" else _PROB_SCORES
        rows, hists = [], []
        for i, m in enumerate(methods):
            got = [t.rows[m] for t in targets if t.kind == kind and m in t.rows]
            if not got:
                continue
            stats = [_stats([r[k] for r in got]) for k, _ in scores]
            shown = [tuple(map(percent if k in _PROB_COLUMNS else number, st)) for (k, _), st in zip(scores, stats, strict=True)]
            rows.append({"method": m, "n": len(got), "failed": sum(bool(r["failed"]) for r in got), "stats": stats, "shown": shown})
            cells = []
            for k, name in scores:
                vals = [r[k] for r in got]
                finite = [v for v in vals if v is not None]
                lo, hi = (0.0, 1.0) if k in _PROB_COLUMNS else (min(finite, default=0.0), max(finite, default=1.0))
                if hi <= lo:
                    hi = lo + 1.0
                cells.append(charts.histogram(vals, charts.colour(i), lo, hi, label=f"{m} {name}",
                                              fmt=percent if k in _PROB_COLUMNS else number))
            hists.append({"method": m, "cells": cells})
        sections.append({"kind": kind, "scores": [name for _, name in scores], "rows": rows, "hists": hists})
    return sections


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
        row("D activation", lambda r: r["d_activation"]), row("D probability", lambda r: r["d_prob"], percent),
        row("D rank", lambda r: r["d_rank"]), row("D top-5", lambda r: _top5(r["d_top5"], r["d_top5_labels"])),
        row("judge", lambda r: r["judge"]), row("judge probability", lambda r: r["judge_prob"], percent),
        row("judge rank", lambda r: r["judge_rank"]),
        row("judge top-5", lambda r: _top5(r["judge_top5"], r["judge_top5_labels"])),
        row("robust probability (mean)", lambda r: r["robust_prob"], percent),
        row("robust probability (min)", lambda r: r["robust_prob_min"], percent),
        row("robust activation (ratio)", lambda r: r["robust_activation"]),
        row("final loss", lambda r: r["final_loss"]), row("steps", lambda r: r["steps"]),
        row("seed", lambda r: r["seed"]), row("seconds", lambda r: r["seconds"]),
        row("failed", lambda r: (r["reason"] or "yes") if r["failed"] else "no"),
    ]


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("atlas", "templates"), autoescape=True, undefined=StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )
    env.filters["fmt"] = value  # text as it is, numbers to 3 significant digits
    env.filters["num"] = number
    env.filters["pct"] = percent  # probabilities
    return env


def _csv(table: pa.Table, path: Path) -> None:
    """The index as CSV: list columns as JSON text."""
    cols = {}
    for c in INDEX_COLUMNS:
        vals = table.column(c.name).to_pylist()
        if pa.types.is_list(c.type):
            vals = [None if v is None else json.dumps(v, ensure_ascii=False) for v in vals]
        cols[c.name] = vals
    pd.DataFrame(cols).to_csv(path, index=False)


def _check_out(index: Path, out: Path) -> None:
    if index.resolve().is_relative_to(out.resolve()):
        raise AtlasError(f"--out {out} holds the index {index}: it would be replaced; pass a folder of its own, e.g. {index.parent / 'site'}")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise AtlasError(f"--out {out} exists and is not an atlas site: refusing to replace it; pass a new folder")


def build_site(index: Path, out: Path, thumb: int = THUMB_SIZE) -> Path:
    """Render the site of `index` (a run's index.parquet) into the folder `out`; return `out`."""
    _check_out(index, out)
    table, provenance = load_index(index)
    if table.num_rows == 0:
        raise AtlasError(f"{index} has no rows: nothing to draw; run the workflow's generation first")
    run_dir = index.parent
    targets = _targets(table.to_pylist(), index)
    methods = _method_order(r["method"] for t in targets for r in t.rows.values())
    method_slugs = {m: slug(m) for m in methods}
    kinds = sorted({t.kind for t in targets}, key=lambda k: (_KIND_ORDER.index(k) if k in _KIND_ORDER else 9, k))
    layers: dict[str, list[TargetView]] = {}
    for t in targets:
        if t.kind == "filter":
            layers.setdefault(t.first["layer"] or "?", []).append(t)
    for t in targets:  # every file is there before anything is written
        for r in t.rows.values():
            for rel in ([r["image"]] if not r["failed"] else []) + list(r["exemplars"] or []):
                _source(run_dir, rel, "image")
    env = _environment()
    common = {
        "run_name": run_dir.name, "methods": [{"name": m, "slug": method_slugs[m], "colour": charts.colour(i)} for i, m in enumerate(methods)],
        "n_targets": len(targets), "n_images": table.num_rows,
    }
    with atomic_dir(out) as tmp:
        (tmp / MARKER).write_text("built by `atlas site`; the command replaces this folder as a whole\n")
        _copy_images(targets, method_slugs, run_dir, tmp, thumb)

        def page(name: str, template: str, **ctx: Any) -> None:
            inside(tmp, name).write_text(env.get_template(template).render(**common, **ctx), encoding="utf-8")

        assets = resources.files("atlas") / "templates" / "static"
        inside(tmp, "assets").mkdir()
        for name in ("style.css", "atlas.js"):
            inside(tmp, "assets", name).write_bytes((assets / name).read_bytes())
        inside(tmp, "data").mkdir()
        inside(tmp, "data", "index.js").write_text(grid_data(targets, methods, kinds), encoding="ascii")
        page("index.html", "index.html", kinds=kinds, scores=[n for _, n in GRID_SCORES])
        for t in tqdm(targets, desc="site pages", unit="page", mininterval=2):
            page(t.page, "target.html", t=t, scores=score_table(t, methods), present=[m for m in common["methods"] if m["name"] in t.rows],
                 loss=charts.loss_curves({m: t.rows[m]["loss_curve"] for m in methods if m in t.rows},
                                         {m: t.rows[m]["steps"] for m in methods if m in t.rows}))
        layer_pages = [{"name": name, "page": f"layer-{slug(name)}.html", "targets": ts} for name, ts in sorted(layers.items())]
        page("layers.html", "layers.html", layers=layer_pages)
        for lp in layer_pages:
            page(lp["page"], "layer.html", layer=lp)
        page("pairs.html", "pairs.html", targets=[t for t in targets if t.kind in ("pair", "group")])
        page("summary.html", "summary.html", comparison=comparison(targets, methods), comparison_columns=COMPARISON_COLUMNS,
             colours={m["name"]: m["colour"] for m in common["methods"]}, descriptions=METHOD_DESCRIPTIONS,
             sections=summary(targets, methods))
        columns = {c.name: sorted({value(v) for v in table.column(c.name).to_pylist()}) for c in INDEX_COLUMNS if c.group == "provenance"}
        page("provenance.html", "provenance.html", provenance=provenance,
             provenance_json=json.dumps(provenance, indent=2, sort_keys=True, ensure_ascii=False), columns=columns)
        shutil.copyfile(index, inside(tmp, "index.parquet"))
        _csv(table, inside(tmp, "index.csv"))
        files = [(n, inside(tmp, n).stat().st_size) for n in ("index.parquet", "index.csv", "data/index.js")]
        page("downloads.html", "downloads.html", files=files)
    log.info("wrote the site of %d targets (%d images) to %s; open %s", len(targets), table.num_rows, out, out / "index.html")
    return out


def run(args: argparse.Namespace) -> int:
    index = Path(args.index)
    out = Path(args.out) if args.out else index.parent / "site"
    if not 16 <= args.thumb_size <= 1024:
        raise AtlasError(f"--thumb-size {args.thumb_size} is out of range; use 16..1024 pixels")
    build_site(index, out, args.thumb_size)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "site",
        help="render the static HTML atlas of a run from its index.parquet",
        description="Render the run's static site (index grid, one page per target, layer, pairs, summary, "
        "provenance and download pages) from results/<run>/index.parquet into a self-contained folder "
        "that works opened from disk and under any sub-path. Built atomically.",
    )
    p.add_argument("--index", required=True, metavar="FILE", help="the run's index.parquet (from `atlas index`)")
    p.add_argument("--out", metavar="DIR", help="the site folder to (re)build; default: site/ beside the index")
    p.add_argument("--thumb-size", type=int, default=THUMB_SIZE, metavar="PX", help=f"thumbnail side in pixels (default {THUMB_SIZE})")
    p.set_defaults(func=run)
