"""An extracted dataset (`atlas extract`): its files, their columns, and the reader.

A dataset folder holds

- `images.npy`: one uint8 array N x S x S x 3 (RGB), loadable with `numpy.load(mmap_mode="r")`;
- `manifest.parquet`: one row per array row, in the same order (provenance, label, split, crop box);
- `skipped.parquet`: every input that was not used, with the reason;
- `extract.json`: the arguments, the counts, the package versions and the array's sha256.

`atlas extract` writes it; `load_dataset` is how every other stage (train-dae, exemplars, the maco
method's spectrum) reads it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atlas.errors import AtlasError
from atlas.io import sha256_file

IMAGES_FILE = "images.npy"
MANIFEST_FILE = "manifest.parquet"
SKIPPED_FILE = "skipped.parquet"
INFO_FILE = "extract.json"

MANIFEST_COLUMNS: dict[str, str] = {
    "index": "int64",  # row in images.npy
    "source": "string",  # imagenet | folder | bundled
    "path": "string",  # relative to --root; for bundled, relative to the package's install folder
    "package": "string",  # bundled only: the distribution that ships the photo
    "name": "string",  # bundled only: the photo's name in that package
    "label": "string",  # wnid (imagenet, foolbox) or parent folder name (--labels-from-folders)
    "class_index": "Int64",  # ImageNet-1k index, 0-based, when known
    "wnid": "string",
    "width": "int64",  # of the source image, after its EXIF orientation
    "height": "int64",
    "sha256": "string",  # of the source file's bytes
    "split": "string",  # train | val (a crop is in its parent's split)
    "parent": "Int64",  # for an augmented crop: the row of the image it was cut from
    "box_left": "int64",  # region of the source image that became this row
    "box_top": "int64",
    "box_right": "int64",
    "box_bottom": "int64",
    "flipped": "bool",
}
SKIPPED_COLUMNS: dict[str, str] = {
    "source": "string",
    "path": "string",
    "package": "string",
    "name": "string",
    "reason": "string",
}


def one_line(text: str) -> str:
    """An exception's text on one line (PIL and pyarrow messages may span several)."""
    return " ".join(str(text).split())


def typed_frame(rows: list[dict[str, Any]], columns: dict[str, str]) -> pd.DataFrame:
    """`rows` as a DataFrame with exactly `columns` (name -> dtype), also when there are none."""
    df = pd.DataFrame(rows, columns=list(columns))
    return df.astype(columns) if len(df) else pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})


def recorded_sha256(directory: str | os.PathLike[str]) -> str | None:
    """The images' sha256 as `atlas extract` recorded it in extract.json (None without one):
    what identifies a dataset's content without hashing an ImageNet-sized array again."""
    try:
        return json.loads((Path(directory) / INFO_FILE).read_text(encoding="utf-8"))["images"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_dataset(directory: str | os.PathLike[str], verify: bool = False) -> tuple[np.memmap, pd.DataFrame]:
    """Open an extracted dataset: (images N x S x S x 3 uint8, memory-mapped; manifest).

    Checks that the array and the manifest describe the same rows; `verify=True` also checks the
    array's sha256 against extract.json (reads the whole file).
    """
    d = Path(directory)
    hint = f"run `atlas extract --out {d}` to (re)build it"
    if not d.is_dir():
        raise AtlasError(f"dataset folder {d} does not exist: {hint}")
    for name in (IMAGES_FILE, MANIFEST_FILE):
        if not (d / name).is_file():
            raise AtlasError(f"{d} is not an extracted dataset ({name} is missing): {hint}")
    try:
        images = np.load(d / IMAGES_FILE, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise AtlasError(f"{d / IMAGES_FILE} is not a readable .npy file ({one_line(str(exc))}): {hint}") from exc
    if not (
        isinstance(images, np.memmap)
        and images.dtype == np.uint8
        and images.ndim == 4
        and images.shape[1] == images.shape[2]
        and images.shape[3] == 3
    ):
        raise AtlasError(f"{d / IMAGES_FILE} holds {images.dtype} {images.shape}, not uint8 N x S x S x 3: {hint}")
    try:
        manifest = pd.read_parquet(d / MANIFEST_FILE)
    except Exception as exc:  # pyarrow raises its own error types for bad files
        raise AtlasError(f"{d / MANIFEST_FILE} is not a readable Parquet file ({one_line(str(exc))}): {hint}") from exc
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise AtlasError(f"{d / MANIFEST_FILE} lacks columns {', '.join(missing)}: {hint}")
    if len(manifest) != images.shape[0] or not np.array_equal(manifest["index"].to_numpy(), np.arange(len(manifest))):
        raise AtlasError(
            f"{d}: manifest has {len(manifest)} rows but images.npy has {images.shape[0]} "
            f"(or the index column is not 0..N-1): the files do not belong together; {hint}"
        )
    info_path = d / INFO_FILE
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        recorded = info.get("images", {})
        if recorded.get("shape") and list(recorded["shape"]) != list(images.shape):
            raise AtlasError(
                f"{d}: extract.json records shape {recorded['shape']}, images.npy is {list(images.shape)}: {hint}"
            )
        if verify and recorded.get("sha256") and sha256_file(d / IMAGES_FILE) != recorded["sha256"]:
            raise AtlasError(
                f"{d / IMAGES_FILE} does not match the sha256 in extract.json (changed or damaged): {hint}"
            )
    elif verify:
        raise AtlasError(f"{d} has no {INFO_FILE} to verify against: {hint}")
    return images, manifest
