"""`atlas extract`: image sources -> a fixed-size uint8 training set for the denoising autoencoder.

The output folder (written atomically: built under a temporary name, then renamed) holds

- `images.npy`: one uint8 array N x S x S x 3 (RGB), loadable with `numpy.load(mmap_mode="r")`;
- `manifest.parquet`: one row per array row, in the same order (provenance, label, split, crop box);
- `skipped.parquet`: every input that was not used, with the reason;
- `extract.json`: the arguments, the counts, the package versions and the array's sha256.

Each image is converted to RGB (alpha composited over white, 16-bit grey scaled to 8 bits, the EXIF
orientation applied), then the centred square of side min(width, height) is resized to S x S
(bicubic, antialiased): the same pixels as "resize the short side to S, centre-crop S x S", in one
resampling step. `--augment-crops K` adds K seeded random square crops (side 50-100 % of the short
side, random position, horizontal flip with probability 1/2) per image; a crop row names its parent
row and its crop box in the original image's pixels.

Sources: `imagenet` (one folder per wnid), `folder` (any tree of images) and `bundled` (real
photographs that installed packages ship, so the default needs no dataset and no network).

`load_dataset(dir)` is the loader that the autoencoder trainer uses.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import io as _bytes_io
import json
import logging
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from atlas import __version__
from atlas.errors import AtlasError
from atlas.io import atomic_dir, sha256_file, write_parquet, write_text

log = logging.getLogger(__name__)

SOURCES = ("imagenet", "folder", "bundled")
DEFAULT_SIZE = 224
# The bundled set is ~40 photos: too few for even a small autoencoder, so it gets crops by default.
BUNDLED_DEFAULT_CROPS = 8
# Smallest crop side, as a fraction of the short side: smaller crops of 224-512 px photos would be
# upsampled so much that the autoencoder would mostly learn blur.
CROP_MIN_FRACTION = 0.5
# The dog subtree of ImageNet-1k, as the paper's autoencoder was trained on (DESIGN.md §2).
DOG_CLASSES = (151, 268)
# The WordNet synset "dog, domestic dog": not itself one of the 1000 classes, so `--wnids` expands it
# to the 118 dog breeds (we ship no WordNet hierarchy to expand other inner synsets).
DOG_SYNSET = "n02084071"
WNID_RE = re.compile(r"n\d{8}")
_FOOLBOX_RE = re.compile(r"imagenet_(\d+)_(\d+)\.jpg")

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


# --------------------------------------------------------------------------------------------
# ImageNet class list


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k wnids in standard class-index order (shipped package data)."""
    text = importlib.resources.files("atlas").joinpath("imagenet_wnids.txt").read_text(encoding="utf-8")
    wnids = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    # A damaged list would silently mislabel every class, so check what the order relies on.
    if len(wnids) != 1000 or len(set(wnids)) != 1000 or wnids != sorted(wnids):
        raise AtlasError(
            "atlas/imagenet_wnids.txt is damaged (need 1000 unique sorted wnids): reinstall atlas"
        )
    return wnids


def parse_classes(spec: str) -> list[int]:
    """Parse `--classes` ("151-268", "1,5,9", "0-9,500") into sorted unique 0-based class indices."""
    out: set[int] = set()
    for raw in spec.split(","):
        tok = raw.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", tok)
        if m is None:
            raise AtlasError(
                f"malformed --classes item {tok!r} in {spec!r}: use 0-based indices and ranges such as "
                "151-268 or 1,5,9"
            )
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if lo > hi:
            raise AtlasError(f"--classes range {tok!r} runs backwards: write it as {hi}-{lo}")
        if hi > 999:
            raise AtlasError(f"--classes item {tok!r} is out of range: ImageNet-1k class indices are 0..999")
        out.update(range(lo, hi + 1))
    return sorted(out)


def parse_wnids(spec: str) -> list[str]:
    """Parse `--wnids` into a list of wnids; the dog synset expands to the 118 dog breeds."""
    all_wnids = imagenet_wnids()
    out: set[str] = set()
    for raw in spec.split(","):
        tok = raw.strip()
        if not WNID_RE.fullmatch(tok):
            raise AtlasError(f"malformed --wnids item {tok!r}: a wnid is 'n' and 8 digits, e.g. n01440764")
        if tok == DOG_SYNSET:
            out.update(all_wnids[DOG_CLASSES[0] : DOG_CLASSES[1] + 1])
        else:
            out.add(tok)
    return sorted(out)


# --------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class Candidate:
    """One input to try. `missing` is set when it is known up front that it cannot be read."""

    source: str
    path: str  # what the manifest records
    file: Path | None = None
    package: str | None = None
    name: str | None = None
    label: str | None = None
    class_index: int | None = None
    wnid: str | None = None
    group: str | None = None  # what `--per-class` counts per
    missing: str | None = None


def _walk_files(root: Path, exclude: Path | None = None) -> list[Path]:
    """Every regular file under `root`, sorted by relative path; hidden files and folders are ignored
    (.DS_Store, our own temporary folders) and so is `exclude` (an output folder inside the root)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".") and (exclude is None or (here / d).resolve() != exclude)
        )
        found.extend(here / f for f in filenames if not f.startswith("."))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _check_root(root: str | None, source: str) -> Path:
    if root is None:
        raise AtlasError(f"--source {source} needs --root DIR: pass the folder that holds the images")
    path = Path(root)
    if not path.exists():
        raise AtlasError(f"--root {path} does not exist: pass the folder that holds the images")
    if not path.is_dir():
        raise AtlasError(f"--root {path} is not a folder: pass the folder that holds the images")
    return path


def imagenet_candidates(root: Path, wnids: Sequence[str]) -> list[Candidate]:
    """Files of the selected classes of an ImageNet-layout tree (one folder per wnid), sorted."""
    all_wnids = imagenet_wnids()
    index_of = {w: i for i, w in enumerate(all_wnids)}
    if not any(p.is_dir() and WNID_RE.fullmatch(p.name) for p in root.iterdir()):
        raise AtlasError(
            f"no ImageNet class folders (like n01440764/) under {root}: point --root at an ImageNet "
            "train/ or val/ folder with one folder per wnid, or use --source folder"
        )
    out: list[Candidate] = []
    for wnid in sorted(wnids):
        folder = root / wnid
        cls = index_of.get(wnid)
        if cls is None and not folder.is_dir():
            raise AtlasError(
                f"--wnids {wnid} is not an ImageNet-1k class and {folder} does not exist: check the wnid"
            )
        common = dict(source="imagenet", label=wnid, class_index=cls, wnid=wnid, group=wnid)
        if not folder.is_dir():
            # A partial tree is normal (a subset was copied): record it rather than fail.
            out.append(Candidate(path=wnid + "/", missing="class folder missing under --root", **common))
            continue
        files = _walk_files(folder)
        if not files:
            out.append(Candidate(path=wnid + "/", missing="class folder has no files", **common))
        out.extend(Candidate(path=f.relative_to(root).as_posix(), file=f, **common) for f in files)
    return out


def folder_candidates(root: Path, labels_from_folders: bool, exclude: Path | None) -> list[Candidate]:
    """Every file of a tree, sorted; the label is the parent folder's name when asked for."""
    index_of = {w: i for i, w in enumerate(imagenet_wnids())}
    out: list[Candidate] = []
    for f in _walk_files(root, exclude):
        label = None
        # A file directly under the root has no class folder: the root's own name is no label.
        if labels_from_folders and f.parent != root:
            label = f.parent.name
        cls = index_of.get(label) if label is not None else None
        out.append(
            Candidate(
                source="folder",
                path=f.relative_to(root).as_posix(),
                file=f,
                label=label,
                class_index=cls,
                wnid=label if cls is not None else None,
                group=label,
            )
        )
    return out


# Real photographs in scikit-image's `skimage.data`: (name of the loader, file in skimage/data).
# Chosen: captured images (photos, a telescope, a fundus camera, a microscope slide) of 2-D RGB or
# grey. Left out: synthetic ones (logo, colorwheel, horse silhouette, phantom, checkerboard, blobs),
# near-duplicates (cat = chelsea, the motorcycle's right view), the scanned page, tiny ones (cell,
# microaneurysms, lfw_subset) and 3-D / fluorescence stacks. eagle and skin are not in the wheel
# (skimage downloads them on first use): they are listed so that the output says they were skipped.
SKIMAGE_PHOTOS: tuple[tuple[str, str], ...] = (
    ("astronaut", "astronaut.png"),
    ("brick", "brick.png"),
    ("camera", "camera.png"),
    ("chelsea", "chelsea.png"),
    ("clock", "clock_motion.png"),
    ("coffee", "coffee.png"),
    ("coins", "coins.png"),
    ("eagle", "eagle.png"),
    ("grass", "grass.png"),
    ("gravel", "gravel.png"),
    ("hubble_deep_field", "hubble_deep_field.jpg"),
    ("immunohistochemistry", "ihc.png"),
    ("moon", "moon.png"),
    ("retina", "retina.jpg"),
    ("rocket", "rocket.jpg"),
    ("skin", "skin.jpg"),
    ("stereo_motorcycle", "motorcycle_left.png"),
    ("text", "text.png"),
)


def _package_dir(module: str) -> Path | None:
    """Install folder of a top-level package, found without importing it (no import cost, no
    import-time side effects; foolbox in particular need not import with our torch)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# (distribution, import name, sub-folder holding the photos)
BUNDLED_PACKAGES: tuple[tuple[str, str, str], ...] = (
    ("scikit-image", "skimage", "data"),
    ("scikit-learn", "sklearn", "datasets/images"),
    ("matplotlib", "matplotlib", "mpl-data/sample_data"),
    ("foolbox", "foolbox", "data"),
)


def _bundled(
    dist: str, module: str, sub: str, folder: Path, filename: str, name: str, **extra: Any
) -> Candidate:
    """One photo of a bundled package; `missing` says why when the file is not there."""
    f = folder / filename
    missing = None
    if not f.is_file():
        missing = (
            f"not shipped in {dist} {_dist_version(dist)} (it is downloaded on first use; "
            "extraction never downloads)"
        )
    return Candidate(
        source="bundled",
        path=f"{module}/{sub}/{filename}",
        file=f if missing is None else None,
        package=dist,
        name=name,
        missing=missing,
        **extra,
    )


def bundled_candidates() -> list[Candidate]:
    """Real photographs shipped inside installed packages, read as files (never downloaded)."""
    wnids = imagenet_wnids()
    out: list[Candidate] = []
    for dist, module, sub in BUNDLED_PACKAGES:
        pkg = _package_dir(module)
        folder = pkg / sub if pkg is not None else None
        if folder is None or not folder.is_dir() or _dist_version(dist) is None:
            out.append(
                Candidate(
                    source="bundled",
                    path=f"{module}/{sub}/",
                    package=dist,
                    missing=f"{dist} is not installed (or ships no {sub}/): `uv sync` installs it",
                )
            )
        elif module == "skimage":
            out.extend(
                _bundled(dist, module, sub, folder, filename, name) for name, filename in SKIMAGE_PHOTOS
            )
        elif module == "foolbox":
            # 20 ImageNet validation photos named imagenet_<k>_<class index>.jpg. Its mnist, cifar
            # and fashionMNIST files are 28-32 px thumbnails: too small to be useful at 224 px.
            for f in sorted(folder.glob("imagenet_*.jpg")):
                m = _FOOLBOX_RE.fullmatch(f.name)
                cls = int(m.group(2)) if m and int(m.group(2)) < 1000 else None
                wnid = wnids[cls] if cls is not None else None
                out.append(
                    _bundled(
                        dist, module, sub, folder, f.name, f.stem, label=wnid, class_index=cls, wnid=wnid
                    )
                )
        else:
            # scikit-learn's images/ and matplotlib's sample_data/: the JPEGs are the photographs
            # (china, flower; grace_hopper); the PNGs in sample_data are a logo and a clip-art icon.
            out.extend(
                _bundled(dist, module, sub, folder, f.name, f.stem) for f in sorted(folder.glob("*.jpg"))
            )
    return sorted(out, key=lambda c: c.path)


# --------------------------------------------------------------------------------------------
# Decoding and resizing


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def decode_image(data: bytes) -> Image.Image:
    """Decode file bytes into an RGB PIL image, raising on anything unreadable."""
    # PIL reports harmless oddities (corrupt EXIF, big images) as warnings: they must not turn a
    # good image into a skipped one (pytest runs with warnings as errors), so log them instead.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Image.open(_bytes_io.BytesIO(data)) as im:
            # Image.open only reads the header: decode now so a truncated file fails here.
            im.load()
            rgb = _to_rgb(ImageOps.exif_transpose(im))
    for w in caught:
        log.debug("PIL warning while decoding: %s", w.message)
    if rgb.width < 1 or rgb.height < 1:
        raise ValueError("image has no pixels")
    return rgb


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # PIL's convert clips 16-bit grey at 255 instead of scaling it: scale to 8 bits ourselves.
        arr = np.asarray(im, dtype=np.float64)
        scale = 257.0 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 1.0
        im = Image.fromarray(np.clip(np.rint(arr / scale), 0, 255).astype(np.uint8), mode="L")
    if im.mode in ("P", "PA", "LA", "La", "RGBa") or "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        # Transparent pixels hold arbitrary colours; white is what a viewer would show.
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB")


Box = tuple[int, int, int, int]


def centre_box(width: int, height: int) -> Box:
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def crop_boxes(width: int, height: int, k: int, rng: np.random.Generator) -> list[tuple[Box, bool]]:
    """K random square crops (side CROP_MIN_FRACTION..1 of the short side) with random flips."""
    short = min(width, height)
    out: list[tuple[Box, bool]] = []
    for _ in range(k):
        side = max(1, int(round(short * rng.uniform(CROP_MIN_FRACTION, 1.0))))
        left = int(rng.integers(0, width - side + 1))
        top = int(rng.integers(0, height - side + 1))
        flip = bool(rng.random() < 0.5)
        out.append(((left, top, left + side, top + side), flip))
    return out


def render(im: Image.Image, box: Box, flip: bool, size: int) -> np.ndarray:
    """The region `box` of `im` resized to size x size, as a uint8 H x W x 3 array."""
    out = im.resize((size, size), Image.Resampling.BICUBIC, box=box)
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(out, dtype=np.uint8)


class _NpyWriter:
    """Streams rows into a .npy file whose length is only known at the end.

    numpy pads its header so that the first axis can grow to 21 digits in place, so we write the
    header for 0 rows, append rows, then rewrite the header: no second copy of a large array and no
    need to hold it in memory.
    """

    def __init__(self, path: Path, size: int) -> None:
        self.size = size
        self.count = 0
        self._fh = open(path, "wb")
        self._header_len = self._write_header()

    def _write_header(self) -> int:
        header = _bytes_io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "|u1", "fortran_order": False, "shape": (self.count, self.size, self.size, 3)}
        )
        self._fh.write(header.getvalue())
        return len(header.getvalue())

    def append(self, row: np.ndarray) -> int:
        assert row.shape == (self.size, self.size, 3) and row.dtype == np.uint8
        self._fh.write(np.ascontiguousarray(row).tobytes())
        self.count += 1
        return self.count - 1

    def close(self) -> None:
        self._fh.seek(0)
        if self._write_header() != self._header_len:  # pragma: no cover - numpy's padding guarantees it
            raise RuntimeError("npy header changed length")
        self._fh.close()

    def abort(self) -> None:
        self._fh.close()


# --------------------------------------------------------------------------------------------
# Extraction


@dataclass
class ExtractResult:
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


def _frame(rows: list[dict[str, Any]], columns: dict[str, str]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(columns))
    return (
        df.astype(columns) if len(df) else pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})
    )


def extract(
    candidates: Sequence[Candidate],
    out: Path,
    *,
    where: str,
    fix: str = "point --root at a folder of JPEG/PNG images",
    size: int = DEFAULT_SIZE,
    augment_crops: int = 0,
    per_class: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    info: dict[str, Any] | None = None,
) -> ExtractResult:
    """Decode `candidates` in order and write the dataset folder `out` atomically."""
    with atomic_dir(out) as tmp:
        writer = _NpyWriter(tmp / IMAGES_FILE, size)
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
                            reason=_one_line(reason),
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

        manifest = _frame(rows, MANIFEST_COLUMNS)
        write_parquet(manifest, tmp / MANIFEST_FILE)
        write_parquet(_frame(skipped, SKIPPED_COLUMNS), tmp / SKIPPED_FILE)

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


# --------------------------------------------------------------------------------------------
# Loader


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
        raise AtlasError(
            f"{d / IMAGES_FILE} is not a readable .npy file ({_one_line(str(exc))}): {hint}"
        ) from exc
    if not (
        isinstance(images, np.memmap)
        and images.dtype == np.uint8
        and images.ndim == 4
        and images.shape[1] == images.shape[2]
        and images.shape[3] == 3
    ):
        raise AtlasError(
            f"{d / IMAGES_FILE} holds {images.dtype} {images.shape}, not uint8 N x S x S x 3: {hint}"
        )
    try:
        manifest = pd.read_parquet(d / MANIFEST_FILE)
    except Exception as exc:  # pyarrow raises its own error types for bad files
        raise AtlasError(
            f"{d / MANIFEST_FILE} is not a readable Parquet file ({_one_line(str(exc))}): {hint}"
        ) from exc
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise AtlasError(f"{d / MANIFEST_FILE} lacks columns {', '.join(missing)}: {hint}")
    if len(manifest) != images.shape[0] or not np.array_equal(
        manifest["index"].to_numpy(), np.arange(len(manifest))
    ):
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


# --------------------------------------------------------------------------------------------
# CLI


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "extract",
        help="turn images into a training set for the denoising autoencoder",
        description=(
            "Turn image sources into a training set for the denoising autoencoder: OUT/images.npy "
            "(uint8 N x S x S x 3, RGB; the centred square of each image resized to S x S), "
            "OUT/manifest.parquet (one row per image: provenance, label, split, crop box), "
            "OUT/skipped.parquet (unusable inputs and why) and OUT/extract.json. The folder is "
            "written atomically."
        ),
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (replaced as a whole; required)"
    )
    p.add_argument(
        "--source",
        choices=SOURCES,
        default="bundled",
        help="imagenet: one folder per wnid under --root; folder: any tree of images under --root; "
        "bundled (default): photos shipped by scikit-image, scikit-learn, matplotlib and foolbox "
        "(no download)",
    )
    p.add_argument("--root", metavar="DIR", help="input folder (imagenet, folder)")
    p.add_argument(
        "--size",
        type=int,
        default=DEFAULT_SIZE,
        metavar="S",
        help=f"output side in pixels (default {DEFAULT_SIZE})",
    )
    p.add_argument(
        "--wnids",
        metavar="LIST",
        help=f"imagenet: comma-separated wnids to extract; {DOG_SYNSET} (dog) means the 118 dog breeds",
    )
    p.add_argument(
        "--classes",
        metavar="LIST",
        help="imagenet: 0-based class indices in the standard 1000-class order, e.g. 151-268 or 1,5,9 "
        f"(with --wnids: both; with neither: the dogs, {DOG_CLASSES[0]}-{DOG_CLASSES[1]})",
    )
    p.add_argument(
        "--per-class",
        type=int,
        metavar="N",
        help="keep at most N readable images per class (imagenet) or per label (folder; per tree "
        "without --labels-from-folders), the first in sorted order",
    )
    p.add_argument(
        "--labels-from-folders",
        action="store_true",
        help="folder: label each image with its parent folder's name",
    )
    p.add_argument(
        "--augment-crops",
        type=int,
        metavar="K",
        help=f"add K seeded random crops/flips per image (default: {BUNDLED_DEFAULT_CROPS} for bundled, 0 otherwise)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        metavar="F",
        help="fraction of the images (each with its crops) put in the val split (default 0.1)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of the crops (default 0)")
    p.set_defaults(func=run)
    return p


def _validate(args: argparse.Namespace) -> None:
    if args.size < 1:
        raise AtlasError(f"--size {args.size} must be at least 1 pixel: pass e.g. --size {DEFAULT_SIZE}")
    if args.augment_crops is not None and args.augment_crops < 0:
        raise AtlasError(f"--augment-crops {args.augment_crops} is negative: pass 0 or more")
    if args.per_class is not None and args.per_class < 1:
        raise AtlasError(f"--per-class {args.per_class} must be at least 1: leave it out for no cap")
    if not 0.0 <= args.val_fraction < 1.0:
        raise AtlasError(f"--val-fraction {args.val_fraction} is outside [0, 1): pass e.g. 0.1")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise AtlasError(f"--out {out} exists and is not a folder: pass another path or remove it")
    if args.source != "imagenet" and (args.wnids or args.classes):
        raise AtlasError("--wnids and --classes select ImageNet classes: use them with --source imagenet")


def run(args: argparse.Namespace) -> int:
    _validate(args)
    out = Path(args.out)
    crops = args.augment_crops
    if crops is None:
        crops = BUNDLED_DEFAULT_CROPS if args.source == "bundled" else 0
    info: dict[str, Any] = {
        "command": "extract",
        "arguments": {
            "source": args.source,
            "root": str(Path(args.root).resolve()) if args.root else None,
            "out": str(out.resolve()),
            "size": args.size,
            "wnids": args.wnids,
            "classes": args.classes,
            "per_class": args.per_class,
            "labels_from_folders": args.labels_from_folders,
            "augment_crops": crops,
            "val_fraction": args.val_fraction,
            "seed": args.seed,
        },
        "packages": {d: _dist_version(d) for d in ("numpy", "pillow", "pandas", "pyarrow")},
    }

    candidates: list[Candidate]
    fix = "point --root at a folder of JPEG/PNG images"
    if args.source == "imagenet":
        root = _check_root(args.root, args.source)
        wnids: set[str] = set()
        if args.wnids:
            wnids.update(parse_wnids(args.wnids))
        if args.classes:
            all_wnids = imagenet_wnids()
            wnids.update(all_wnids[i] for i in parse_classes(args.classes))
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
    elif args.source == "folder":
        root = _check_root(args.root, args.source)
        exclude = out.resolve() if out.exists() else None
        candidates = folder_candidates(root, args.labels_from_folders, exclude)
        where = str(root)
    else:
        if args.root:
            log.warning("--root %s is not used by --source bundled", args.root)
        candidates = bundled_candidates()
        info["packages"].update({d: _dist_version(d) for d, _, _ in BUNDLED_PACKAGES})
        where = "the bundled packages (" + ", ".join(d for d, _, _ in BUNDLED_PACKAGES) + ")"
        fix = "run `uv sync` to install them, or use --source folder/imagenet"

    extract(
        candidates,
        out,
        where=where,
        fix=fix,
        size=args.size,
        augment_crops=crops,
        per_class=args.per_class,
        val_fraction=args.val_fraction,
        seed=args.seed,
        info=info,
    )
    return 0
