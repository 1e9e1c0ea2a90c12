"""`atlas site`: index.parquet -> the static HTML atlas (`atlas.site`)."""

from __future__ import annotations

import argparse

# The site's thumbnail side (atlas.site.THUMB_SIZE; a test keeps the two equal without this module
# importing the site's renderer).
THUMB_SIZE = 128


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "site",
        help="render the static HTML atlas of a run from its index.parquet",
        description="Render the run's static site (index grid, one page per target, layer, pairs, summary, "
        "provenance, download, group and failure pages) from results/<run>/index.parquet into a self-contained folder "
        "that works opened from disk and under any sub-path. Built atomically.",
    )
    p.add_argument("--index", required=True, metavar="FILE", help="the run's index.parquet (from `atlas index`)")
    p.add_argument("--out", metavar="DIR", help="the site folder to (re)build; default: site/ beside the index")
    p.add_argument(
        "--thumb-size",
        type=int,
        default=THUMB_SIZE,
        metavar="PX",
        help=f"thumbnail side in pixels (default {THUMB_SIZE})",
    )
    p.add_argument(
        "--png",
        action="store_true",
        help="carry the exact PNGs (and the exemplars' originals) in the site, under png/; by default the site "
        "shows JPEG copies and links the PNGs in the run folder, which a copy of the site alone lacks",
    )
    p.add_argument(
        "--compare",
        metavar="FILE",
        help="a comparison table from `atlas compare` of this run against a second model's run: the site then "
        "shows the second model's images beside this run's, the transfer table and the most-changed targets",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from atlas.site import build_site

    index = Path(args.index)
    build_site(
        index,
        Path(args.out) if args.out else index.parent / "site",
        args.thumb_size,
        png=args.png,
        compare=Path(args.compare) if args.compare else None,
    )
    return 0
