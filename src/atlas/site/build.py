"""`build_site`: the whole site of an index rendered into its folder, built under a temporary name
and renamed into place; the Jinja environment, the CSV download and the checks of the out folder."""

from __future__ import annotations

import json
import logging
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from jinja2 import Environment, PackageLoader, StrictUndefined
from tqdm import tqdm

from atlas.classifier_spec import NONE as NO_JUDGE
from atlas.errors import AtlasError
from atlas.formatting import number, percent, value
from atlas.io import atomic_dir
from atlas.schema import INDEX_COLUMNS
from atlas.site import charts
from atlas.site import compare as two_models
from atlas.site.groups import class_groups
from atlas.site.images import copy_images, site_bytes, source
from atlas.site.tables import (
    COMPARISON_COLUMNS,
    FAILURES_SHOWN,
    GRID_SCORES,
    NATURALNESS_COLUMNS,
    comparison,
    exemplar_note,
    failures,
    grid_data,
    group_table,
    method_descriptions,
    naturalness_table,
    score_table,
    summary,
)
from atlas.site.views import (
    TargetView,
    class_index,
    inside,
    kind_order,
    load_index,
    method_order,
    slug,
    target_views,
)

log = logging.getLogger("atlas.site")  # one logger for the whole command, whichever module logs

MARKER = ".atlas-site"  # marks a folder as a site this command may replace
THUMB_SIZE = 128  # the thumbnails' side in pixels (atlas.cli.site keeps its own copy for --help)


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("atlas", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
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
        raise AtlasError(
            f"--out {out} holds the index {index}: it would be replaced; pass a folder of its own, e.g. {index.parent / 'site'}"
        )
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise AtlasError(f"--out {out} exists and is not an atlas site: refusing to replace it; pass a new folder")


def build_site(index: Path, out: Path, thumb: int = THUMB_SIZE, png: bool = False, compare: Path | None = None) -> Path:
    """Render the site of `index` (a run's index.parquet) into the folder `out`; return `out`.

    `png`: carry the exact PNGs (and the exemplars' originals) in the site, under png/; without
    it they are linked in the run folder by relative paths, which a copy of the site alone lacks.
    `compare`: a comparison table (`atlas compare`) of this run against a second model's run,
    whose images then stand beside this run's (`atlas.site.compare`)."""
    if not 16 <= thumb <= 1024:
        raise AtlasError(f"--thumb-size {thumb} is out of range; use 16..1024 pixels")
    _check_out(index, out)
    table, provenance = load_index(index)
    if table.num_rows == 0:
        raise AtlasError(f"{index} has no rows: nothing to draw; run the workflow's generation first")
    run_dir = index.parent
    targets = target_views(table.to_pylist(), index)
    methods = method_order(r["method"] for t in targets for r in t.rows.values())
    method_slugs = {m: slug(m) for m in methods}
    kinds = kind_order({t.kind for t in targets})
    layers: dict[str, list[TargetView]] = {}
    for t in targets:
        if t.kind == "filter":
            layers.setdefault(t.first["layer"] or "?", []).append(t)
    for t in targets:  # every file is there before anything is written
        for r in t.rows.values():
            for rel in ([r["image"]] if not r["failed"] else []) + list(r["exemplars"] or []):
                source(run_dir, rel, "image")
    class_targets = [t for t in targets if t.kind == "class"]
    groups, scheme = class_groups({class_index(t): t.first["label"] or t.label for t in class_targets})
    group_of = {c: g for g in groups for c in g.classes}
    other = two_models.load(compare) if compare is not None else None
    env = _environment()
    common = {
        "run_name": run_dir.name,
        "two_models": None if other is None else {"a": other.label_a, "b": other.label_b, "page": two_models.PAGE},
        "methods": [{"name": m, "slug": method_slugs[m], "colour": charts.colour(i)} for i, m in enumerate(methods)],
        "n_targets": len(targets),
        "n_images": table.num_rows,
        "png_in_site": png,
    }
    with atomic_dir(out) as tmp:
        (tmp / MARKER).write_text("built by `atlas site`; the command replaces this folder as a whole\n")
        copy_images(targets, method_slugs, run_dir, out, tmp, thumb, png)
        if other is not None:
            two_models.copy_other_images(other, targets, method_slugs, out, tmp, thumb, png)

        def page(name: str, template: str, **ctx: Any) -> None:
            inside(tmp, name).write_text(env.get_template(template).render(**common, **ctx), encoding="utf-8")

        assets = resources.files("atlas") / "templates" / "static"
        inside(tmp, "assets").mkdir()
        for name in ("style.css", "atlas.js"):
            inside(tmp, "assets", name).write_bytes((assets / name).read_bytes())
        inside(tmp, "data").mkdir()
        inside(tmp, "data", "index.js").write_text(grid_data(targets, methods, kinds, groups), encoding="ascii")
        page("index.html", "index.html", kinds=kinds, scores=[n for _, n in GRID_SCORES], groups=groups)
        for t in tqdm(targets, desc="site pages", unit="page", mininterval=2):
            page(
                t.page,
                "target.html",
                t=t,
                group=group_of.get(class_index(t)) if t.kind == "class" else None,
                scores=score_table(t, methods),
                exemplar_note=exemplar_note(t, provenance.get("exemplars")),
                present=[m for m in common["methods"] if m["name"] in t.rows],
                other=other.of(t) if other is not None else {},
                loss=charts.loss_curves(
                    {m: t.rows[m]["loss_curve"] for m in methods if m in t.rows},
                    {m: t.rows[m]["steps"] for m in methods if m in t.rows},
                ),
            )
        layer_pages: list[dict[str, Any]] = [
            {"name": name, "page": f"layer-{slug(name)}.html", "targets": ts} for name, ts in sorted(layers.items())
        ]
        page("layers.html", "layers.html", layers=layer_pages)
        for lp in layer_pages:
            page(lp["page"], "layer.html", layer=lp)
        page("pairs.html", "pairs.html", targets=[t for t in targets if t.kind in ("pair", "group")])
        # judge: none (D's label set is its own): no figure of an absent judge is published.
        no_judge = all(r.get("judge") == NO_JUDGE for t in targets for r in t.rows.values())
        compared = [] if no_judge else comparison(targets, methods)
        by_group = group_table(groups, targets, methods)
        page("groups.html", "groups.html", groups=by_group, scheme=scheme)
        for g in by_group:
            ts = [t for t in class_targets if class_index(t) in set(g["group"].classes)]
            page(g["group"].page, "group.html", g=g, targets=ts)
        worst = failures(targets, methods)
        page("failures.html", "failures.html", failures=worst, shown=FAILURES_SHOWN)
        page(
            "summary.html",
            "summary.html",
            comparison=compared,
            no_judge=no_judge,
            comparison_columns=COMPARISON_COLUMNS,
            colours={m["name"]: m["colour"] for m in common["methods"]},
            descriptions=method_descriptions(),
            sections=summary(targets, methods),
            naturalness=naturalness_table(targets, methods, (provenance.get("exemplars") or {}).get("naturalness")),
            naturalness_columns=NATURALNESS_COLUMNS,
            glance=charts.readability(compared, {m: charts.colour(i) for i, m in enumerate(methods)}),
            by_group=by_group,
            scheme=scheme,
            failures_shown=FAILURES_SHOWN,
        )
        if other is not None:
            page(
                two_models.PAGE,
                "changed.html",
                changed=two_models.changed(other, targets, methods),
                shown=two_models.CHANGED_SHOWN,
                transfer=two_models.transfer_table(other, methods),
                transfer_columns=two_models.TRANSFER_COLUMNS,
                colours={m["name"]: m["colour"] for m in common["methods"]},
            )
        columns = {
            c.name: sorted({value(v) for v in table.column(c.name).to_pylist()})
            for c in INDEX_COLUMNS
            if c.group == "provenance"
        }
        page(
            "provenance.html",
            "provenance.html",
            provenance=provenance,
            provenance_json=json.dumps(provenance, indent=2, sort_keys=True, ensure_ascii=False),
            columns=columns,
        )
        shutil.copyfile(index, inside(tmp, "index.parquet"))
        _csv(table, inside(tmp, "index.csv"))
        files = [(n, inside(tmp, n).stat().st_size) for n in ("index.parquet", "index.csv", "data/index.js")]
        page("downloads.html", "downloads.html", files=files)
    log.info(
        "wrote the site of %d targets (%d images, %.1f MiB%s) to %s; open %s",
        len(targets),
        table.num_rows,
        site_bytes(out) / 2**20,
        ", the PNGs included" if png else "; the PNGs are linked in the run folder",
        out,
        out / "index.html",
    )
    return out
