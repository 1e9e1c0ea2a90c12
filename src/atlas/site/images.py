"""The site's image files: compact JPEG copies of the run's images for display, the thumbnails, the
exemplars, and the links to the exact originals; their site paths and sizes are written into the
targets' rows.

The generated images and their thumbnails are JPEGs with full-resolution colour (4:4:4, no chroma
subsampling): the preferred inputs are full of pixel-level colour noise, which 4:2:0 (the default
of JPEG encoders, and the only mode of lossy WebP) averages over 2x2 pixels and visibly washes out
(docs/design.md, "Image files"). The exemplars, photos, are 4:2:0 JPEGs at the size the page
shows. The exact originals stay one click away: linked in the run folder by a relative path, or
carried in the site's png/ with `png=True`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Any

from PIL import Image, ImageFile, UnidentifiedImageError
from tqdm import tqdm

from atlas.errors import AtlasError
from atlas.extract.classes import imagenet_class_names
from atlas.formatting import finite_or_none
from atlas.site.views import TargetView, inside

FULL_QUALITY = 85  # the full-size display copy: JPEG quality, 4:4:4
THUMB_QUALITY = 75  # the grid's thumbnails, 4:4:4
EXEMPLAR_SIDE = 160  # the exemplars' longest side in the site (the page shows them at most this wide)
EXEMPLAR_QUALITY = 80  # photos: 4:2:0, which a photo's smooth colour loses nothing to
PNG_DIR = "png"  # where `png=True` puts the originals: png/<method>/<target>.png, png/exemplars/<hash>.<ext>


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: copy
        shutil.copyfile(src, dst)


def source(run_dir: Path, rel: str, what: str) -> Path:
    """The file `rel` of the run (an image or exemplar, as `what` says), refused when missing."""
    src = run_dir / rel
    if not src.is_file():
        raise AtlasError(
            f"{what} {src} is listed in the index but missing; rerun the workflow (snakemake) to remake it"
        )
    return src


def _ext(src: Path) -> str:
    """`src`'s suffix, lower case, when file-name-safe; else `.bin` (the site names its own files)."""
    ext = src.suffix.lower()
    return ext if re.fullmatch(r"\.[a-z0-9]{1,8}", ext) else ".bin"


def _jpeg(im: Image.Image, dst: Path, quality: int, full_colour: bool = True) -> None:
    """`im` as a JPEG of `quality`; `full_colour`: 4:4:4, else 4:2:0 (colour at half resolution).
    Progressive: the same pixels in about 7 % fewer bytes on noisy images."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    subsampling = 0 if full_colour else 2
    # Pillow encodes an optimised or progressive JPEG in one buffer of max(w * h, MAXBLOCK) bytes,
    # and a noisy 224-px image at 4:4:4 is larger than that ("broken data stream when writing").
    # 3 bytes a pixel (the raw image) bound any JPEG of it at these qualities.
    old = ImageFile.MAXBLOCK
    ImageFile.MAXBLOCK = max(old, 3 * im.width * im.height + 65536)
    try:
        im.save(dst, format="JPEG", quality=quality, subsampling=subsampling, optimize=True, progressive=True)
    finally:
        ImageFile.MAXBLOCK = old


def _original(src: Path, out: Path, tmp: Path, name: str | None) -> str:
    """The link to the original `src`: `name` inside the site when the site carries it (hard-linked
    into `tmp`, the site being built), else the relative path from the site's final folder `out`."""
    if name is not None:
        _link(src, inside(tmp, name))
        return name
    return Path(os.path.relpath(src.resolve(), out.resolve())).as_posix()


def display_copies(src: Path, tmp: Path, full: str, thumb_name: str, thumb: int) -> tuple[int, int]:
    """A generated image's full-size JPEG (`full`) and thumbnail (`thumb_name`, `thumb` pixels) in
    the site being built (`tmp`); returns the image's size."""
    try:
        with Image.open(src) as im:
            size = im.size
            rgb = im.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise AtlasError(f"cannot read image {src} ({exc}); rerun the workflow to remake it") from exc
    _jpeg(rgb, inside(tmp, full), FULL_QUALITY)
    rgb.thumbnail((thumb, thumb), Image.Resampling.LANCZOS)
    _jpeg(rgb, inside(tmp, thumb_name), THUMB_QUALITY)
    return size


def copy_images(
    targets: list[TargetView],
    methods: dict[str, str],
    run_dir: Path,
    out: Path,
    tmp: Path,
    thumb: int,
    png: bool = False,
) -> None:
    """Write into `tmp` (the site being built, to become `out`) each image's full-size JPEG and
    thumbnail and each exemplar's JPEG, and set in every row: `full`, `thumb`, `png` (the exact
    original), `width`, `height`, `site_exemplars`."""
    exemplars: dict[str, dict[str, Any]] = {}
    names = imagenet_class_names()
    jobs = [(t, m, r) for t in targets for m, r in t.rows.items()]
    jobs += [(t, m, r) for t in targets for m, rows in t.seeds.items() for r in rows]
    for t, method, row in tqdm(jobs, desc="site images", unit="img", mininterval=2):
        mslug = row["mslug"] = methods[method]
        k = int(row.get("seed_index") or 0)
        stem = f"{t.slug}-seed{k}" if k else t.slug
        if not row["failed"]:
            src = source(run_dir, row["image"], "image")
            row["full"] = f"images/{mslug}/{stem}.jpg"
            row["thumb"] = f"thumbs/{mslug}/{stem}.jpg"
            row["width"], row["height"] = display_copies(src, tmp, row["full"], row["thumb"], thumb)
            row["png"] = _original(src, out, tmp, f"{PNG_DIR}/{mslug}/{stem}{_ext(src)}" if png else None)
        row["site_exemplars"] = []
        rels = row["exemplars"] or []
        classes = row.get("exemplar_classes") or [None] * len(rels)
        for rel, score, cls in zip(rels, row["exemplar_scores"] or [None] * len(rels), classes, strict=False):
            if rel not in exemplars:
                src = source(run_dir, rel, "exemplar")
                stem = hashlib.sha256(rel.encode()).hexdigest()[:16]
                name = f"exemplars/{stem}.jpg"
                try:
                    with Image.open(src) as im:
                        size = im.size
                        small = im.convert("RGB")
                except (OSError, UnidentifiedImageError) as exc:
                    raise AtlasError(f"cannot read exemplar {src} ({exc}); rerun the workflow to remake it") from exc
                small.thumbnail((EXEMPLAR_SIDE, EXEMPLAR_SIDE), Image.Resampling.LANCZOS)
                _jpeg(small, inside(tmp, name), EXEMPLAR_QUALITY, full_colour=False)
                exemplars[rel] = {
                    "src": name,
                    "width": small.width,
                    "height": small.height,
                    "original": _original(src, out, tmp, f"{PNG_DIR}/exemplars/{stem}{_ext(src)}" if png else None),
                    "original_size": f"{size[0]}x{size[1]}",
                    "name": rel.rsplit("/", 1)[-1],
                }
            known = cls is not None and 0 <= cls < len(names)
            cls_name = names[cls] if known else None
            row["site_exemplars"].append({**exemplars[rel], "score": finite_or_none(score), "class_name": cls_name})


def site_bytes(root: Path) -> int:
    """The bytes of every file under `root` (hard links counted once per name, as a copy would)."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
