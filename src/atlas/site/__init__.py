"""`atlas site`: the static HTML atlas of a run, rendered from its index.parquet with Jinja2.

The site is one folder (publish it alone, open it from disk, serve it under any sub-path): every
link is relative and nothing is loaded from outside. It shows the images as JPEG; the exact PNGs
are linked in the run folder, or carried in the site's png/ with `--png`.

    index.html                 grid of every image (vanilla JS over data/index.js): group, filter, search, sort
    <target id>.html           one page per target: the methods side by side, exemplars, scores, loss
    groups.html, groups-<group>.html, failures.html
    layers.html, layer-<layer>.html, pairs.html, summary.html, provenance.html, downloads.html
    images/<method>/<target id>.jpg, thumbs/<method>/<target id>.jpg, exemplars/<hash>.jpg, [png/]
    data/index.js              the grid's data, one compact table (window.ATLAS_INDEX = {...})
    assets/                    style.css, atlas.js
    index.parquet, index.csv   the index for download

File names come from target ids, layer names and method names only (made file-name-safe by
`slug`), never from labels. The folder is built under a temporary name and renamed into place.

The modules, one job each: `views` (the index read and grouped into one view per target, file
names), `images` (full images, thumbnails, exemplars, links to the originals), `groups` (the groups
of classes), `tables` (the grid's data, the summary's comparison and statistics, the failures, the
groups' table, a target's score table), `charts` (inline SVG), `build` (`build_site`:
the pages rendered from the templates in atlas/templates/).
"""

from __future__ import annotations

from atlas.site.build import MARKER, THUMB_SIZE, build_site
from atlas.site.tables import (
    COMPARISON_COLUMNS,
    GRID_SCORES,
    Comparison,
    comparison,
    grid_data,
    method_descriptions,
    score_table,
    summary,
)
from atlas.site.views import TargetView, inside, load_index, method_order, slug, target_views

__all__ = [
    "COMPARISON_COLUMNS",
    "GRID_SCORES",
    "MARKER",
    "method_descriptions",
    "THUMB_SIZE",
    "Comparison",
    "TargetView",
    "build_site",
    "comparison",
    "grid_data",
    "inside",
    "load_index",
    "method_order",
    "score_table",
    "slug",
    "summary",
    "target_views",
]
