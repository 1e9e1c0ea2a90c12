"""`atlas extract`'s library entry point: a config -> the dataset folder.

`extract(config, out)` lists the source's candidates (`atlas.extract.sources`), decodes and resizes
them (`atlas.extract.decode`) into images.npy row by row (`atlas.extract.npy`), splits the images
into train and val, and writes the manifest, the skipped inputs and extract.json, all in one
atomic folder. `write_dataset` does the same for any list of candidates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import UnidentifiedImageError
from tqdm import tqdm

from atlas import __version__
from atlas.dataset import (
    IMAGES_FILE,
    INFO_FILE,
    MANIFEST_COLUMNS,
    MANIFEST_FILE,
    SKIPPED_COLUMNS,
    SKIPPED_FILE,
    one_line,
    typed_frame,
)
from atlas.errors import AtlasError
from atlas.extract.classes import DOG_CLASSES, imagenet_wnids, parse_classes, parse_wnids
from atlas.extract.config import ExtractConfig
from atlas.extract.decode import CROP_MIN_FRACTION, centre_box, crop_boxes, decode_image, render
from atlas.extract.npy import NpyWriter
from atlas.extract.sources import (
    BUNDLED_PACKAGES,
    Candidate,
    bundled_candidates,
    check_root,
    dist_version,
    folder_candidates,
    imagenet_candidates,
)
from atlas.io import atomic_dir, sha256_file, write_parquet, write_text

log = logging.getLogger(__name__)

# What to do when a --root holds no readable image.
FOLDER_FIX = "point --root at a folder of JPEG/PNG images"


@dataclass
class ExtractResult:
    """Row counts of a written dataset (rows = kept images + their crops; train + val = rows)."""

    rows: int
    kept: int
    skipped: int
    train: int
    val: int


def _rng_for(seed: int, sha256: str) -> np.random.Generator:
    # Seeded by the file's content, not its position, so an image keeps its crops when other
    # inputs are added or removed.
    return np.random.default_rng([seed, int(sha256[:16], 16)])


def _split(n: int, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the n images that go to `val`: exactly round(fraction * n), seeded."""
    n_val = int(math.floor(val_fraction * n + 0.5))
    if val_fraction > 0 and n > 1:
        n_val = max(n_val, 1)
    n_val = min(n_val, n - 1) if n > 1 else 0
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    return mask


def write_dataset(
    candidates: Sequence[Candidate],
    out: Path,
    config: ExtractConfig,
    *,
    where: str,
    fix: str = FOLDER_FIX,
    info: dict[str, Any] | None = None,
) -> ExtractResult:
    """Decode `candidates` in order and write the dataset folder `out` atomically.

    `config` gives the size, the crops, the cap per class, the split and the seed; `where` and `fix`
    complete the error when no image is readable; `info` goes into extract.json.
    """
    size, augment_crops, per_class = config.size, config.crops, config.per_class
    val_fraction, seed = config.val_fraction, config.seed
    with atomic_dir(out) as tmp:
        writer = NpyWriter(tmp / IMAGES_FILE, size)
        rows: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        kept_per_group: Counter[str | None] = Counter()
        capped = 0
        try:
            for cand in tqdm(candidates, desc="extract", unit="img"):

                def skip(reason: str, cand: Candidate = cand) -> None:
                    skipped.append(
                        dict(
                            source=cand.source,
                            path=cand.path,
                            package=cand.package,
                            name=cand.name,
                            reason=one_line(reason),
                        )
                    )
                    (log.warning if len(skipped) <= 20 else log.debug)("skipped %s: %s", cand.path, reason)

                if cand.missing is not None or cand.file is None:
                    skip(cand.missing or "no file")
                    continue
                if per_class is not None and kept_per_group[cand.group] >= per_class:
                    capped += 1
                    continue
                try:
                    data = cand.file.read_bytes()
                except OSError as exc:
                    skip(f"cannot read file ({exc.strerror or exc})")
                    continue
                digest = hashlib.sha256(data).hexdigest()
                try:
                    im = decode_image(data)
                except UnidentifiedImageError:
                    skip("not an image (PIL cannot identify the file format)")
                    continue
                except Exception as exc:  # noqa: BLE001 - PIL raises many exception types on corrupt data
                    skip(f"corrupt or truncated image ({type(exc).__name__}: {exc})")
                    continue
                kept_per_group[cand.group] += 1
                width, height = im.size
                views = [(centre_box(width, height), False)]
                if augment_crops:
                    views += crop_boxes(width, height, augment_crops, _rng_for(seed, digest))
                parent: int | None = None
                for box, flip in views:
                    index = writer.append(render(im, box, flip, size))
                    rows.append(
                        dict(
                            index=index,
                            source=cand.source,
                            path=cand.path,
                            package=cand.package,
                            name=cand.name,
                            label=cand.label,
                            class_index=cand.class_index,
                            wnid=cand.wnid,
                            width=width,
                            height=height,
                            sha256=digest,
                            split=None,
                            parent=parent,
                            box_left=box[0],
                            box_top=box[1],
                            box_right=box[2],
                            box_bottom=box[3],
                            flipped=flip,
                        )
                    )
                    if parent is None:
                        parent = index
        except BaseException:
            writer.abort()
            raise
        writer.close()

        if not rows:
            if not candidates:
                detail = "there are no files"
            else:
                first = skipped[0]
                detail = f"{len(skipped)} inputs skipped, e.g. {first['path']}: {first['reason']}"
            raise AtlasError(f"no readable images found under {where}: {detail}; {fix}")

        originals = [r for r in rows if r["parent"] is None]
        val_mask = _split(len(originals), val_fraction, seed)
        split_of = {r["index"]: ("val" if v else "train") for r, v in zip(originals, val_mask, strict=True)}
        for r in rows:
            r["split"] = split_of[r["index"] if r["parent"] is None else r["parent"]]

        manifest = typed_frame(rows, MANIFEST_COLUMNS)
        write_parquet(manifest, tmp / MANIFEST_FILE)
        write_parquet(typed_frame(skipped, SKIPPED_COLUMNS), tmp / SKIPPED_FILE)

        n_val_rows = int((manifest["split"] == "val").sum())
        result = ExtractResult(
            rows=len(rows),
            kept=len(originals),
            skipped=len(skipped),
            train=len(rows) - n_val_rows,
            val=n_val_rows,
        )
        meta = dict(info or {})
        meta.update(
            atlas_version=__version__,
            counts=dict(
                inputs=len(candidates),
                kept=result.kept,
                skipped=result.skipped,
                capped=capped,
                crops=result.rows - result.kept,
                rows=result.rows,
                train_images=int((~val_mask).sum()),
                val_images=int(val_mask.sum()),
                train_rows=result.train,
                val_rows=result.val,
            ),
            images=dict(
                file=IMAGES_FILE,
                shape=[result.rows, size, size, 3],
                dtype="uint8",
                sha256=sha256_file(tmp / IMAGES_FILE),
            ),
            preprocessing=(
                "RGB (alpha over white, EXIF orientation applied); centred square of side "
                f"min(width, height) resized to {size}x{size}, bicubic; augmented crops: square, side "
                f"{CROP_MIN_FRACTION:g}-1 of the short side, random position, flip p=0.5, seeded by "
                "(seed, sha256 of the file)"
            ),
        )
        write_text(tmp / INFO_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")

    log.info(
        "extracted %d images (+%d crops = %d rows) to %s; skipped %d; train %d rows, val %d rows",
        result.kept,
        result.rows - result.kept,
        result.rows,
        out,
        result.skipped,
        result.train,
        result.val,
    )
    return result


def extract(config: ExtractConfig, out: str | os.PathLike[str]) -> ExtractResult:
    """Extract the dataset that `config` describes into the folder `out` (replaced as a whole)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AtlasError(f"--out {out} exists and is not a folder: pass another path or remove it")
    info: dict[str, Any] = {
        "command": "extract",
        "arguments": {
            "source": config.source,
            "root": str(Path(config.root).resolve()) if config.root else None,
            "out": str(out.resolve()),
            "size": config.size,
            "wnids": config.wnids,
            "classes": config.classes,
            "per_class": config.per_class,
            "labels_from_folders": config.labels_from_folders,
            "augment_crops": config.crops,
            "val_fraction": config.val_fraction,
            "seed": config.seed,
        },
        "packages": {d: dist_version(d) for d in ("numpy", "pillow", "pandas", "pyarrow")},
    }

    candidates: list[Candidate]
    fix = FOLDER_FIX
    if config.source == "imagenet":
        root = check_root(config.root, config.source)
        wnids: set[str] = set()
        if config.wnids:
            wnids.update(parse_wnids(config.wnids))
        if config.classes:
            all_wnids = imagenet_wnids()
            wnids.update(all_wnids[i] for i in parse_classes(config.classes))
        if not wnids:
            all_wnids = imagenet_wnids()
            wnids.update(all_wnids[DOG_CLASSES[0] : DOG_CLASSES[1] + 1])
        info["selected_wnids"] = sorted(wnids)
        info["wnid_list"] = "atlas/imagenet_wnids.txt (from timm 1.0.31's imagenet_synsets.txt)"
        candidates = imagenet_candidates(root, sorted(wnids))
        where = str(root)
        if all(c.missing for c in candidates):
            raise AtlasError(
                f"no readable images found under {root}: none of the {len(wnids)} selected class folders "
                f"exist (e.g. {min(wnids)}); check --wnids/--classes or --root"
            )
    elif config.source == "folder":
        root = check_root(config.root, config.source)
        exclude = out.resolve() if out.exists() else None
        candidates = folder_candidates(root, config.labels_from_folders, exclude)
        where = str(root)
    else:
        if config.root:
            log.warning("--root %s is not used by --source bundled", config.root)
        candidates = bundled_candidates()
        info["packages"].update({d: dist_version(d) for d, _, _ in BUNDLED_PACKAGES})
        where = "the bundled packages (" + ", ".join(d for d, _, _ in BUNDLED_PACKAGES) + ")"
        fix = "run `uv sync` to install them, or use --source folder/imagenet"

    return write_dataset(candidates, out, config, where=where, fix=fix, info=info)
