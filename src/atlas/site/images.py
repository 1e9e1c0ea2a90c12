"""The site's image files: the full images and exemplars linked (or copied) from the run, the
thumbnails written as JPEG; their site paths and sizes are written into the targets' rows."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from atlas.errors import AtlasError
from atlas.formatting import finite_or_none
from atlas.site.views import TargetView, inside

_IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".gif"}


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


def copy_images(targets: list[TargetView], methods: dict[str, str], run_dir: Path, out: Path, thumb: int) -> None:
    """Full images (linked), thumbnails (JPEG), exemplars (linked); site paths written into the rows."""
    exemplars: dict[str, dict[str, Any]] = {}
    jobs = [(t, m, r) for t in targets for m, r in t.rows.items()]
    for t, method, row in tqdm(jobs, desc="site images", unit="img", mininterval=2):
        row["mslug"] = methods[method]
        if not row["failed"]:
            src = source(run_dir, row["image"], "image")
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
        for rel, score in zip(
            row["exemplars"] or [], row["exemplar_scores"] or [None] * len(row["exemplars"] or []), strict=False
        ):
            if rel not in exemplars:
                src = source(run_dir, rel, "exemplar")
                ext = src.suffix.lower() if src.suffix.lower() in _IMAGE_EXTS else ".png"
                name = f"exemplars/{hashlib.sha256(rel.encode()).hexdigest()[:16]}{ext}"
                _link(src, inside(out, name))
                try:
                    with Image.open(src) as im:
                        size = im.size
                except (OSError, UnidentifiedImageError) as exc:
                    raise AtlasError(f"cannot read exemplar {src} ({exc}); rerun the workflow to remake it") from exc
                exemplars[rel] = {"src": name, "width": size[0], "height": size[1], "name": rel.rsplit("/", 1)[-1]}
            row["site_exemplars"].append({**exemplars[rel], "score": finite_or_none(score)})
