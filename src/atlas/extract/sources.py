"""The inputs of `atlas extract`: one `Candidate` per file to try, from each kind of source.

- `imagenet`: an ImageNet-layout tree (one folder per wnid), the selected classes only;
- `folder`: every file of any tree, labelled by its parent folder when asked;
- `bundled`: real photographs that installed packages ship (scikit-image, scikit-learn, matplotlib,
  foolbox), read as files: the default needs no dataset and no network.

Listing opens no image (decoding is `atlas.extract.decode`'s job) and imports neither numpy nor PIL.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atlas.errors import AtlasError
from atlas.extract.classes import WNID_RE, imagenet_wnids

SOURCES = ("imagenet", "folder", "bundled")
_FOOLBOX_RE = re.compile(r"imagenet_(\d+)_(\d+)\.jpg")


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
            d for d in dirnames if not d.startswith(".") and (exclude is None or (here / d).resolve() != exclude)
        )
        found.extend(here / f for f in filenames if not f.startswith("."))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def check_root(root: str | os.PathLike[str] | None, source: str) -> Path:
    """`--root` as a folder that exists (imagenet and folder sources need one)."""
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
            raise AtlasError(f"--wnids {wnid} is not an ImageNet-1k class and {folder} does not exist: check the wnid")
        common: dict[str, Any] = dict(source="imagenet", label=wnid, class_index=cls, wnid=wnid, group=wnid)
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


def dist_version(dist: str) -> str | None:
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


def _bundled(dist: str, module: str, sub: str, folder: Path, filename: str, name: str, **extra: Any) -> Candidate:
    """One photo of a bundled package; `missing` says why when the file is not there."""
    f = folder / filename
    missing = None
    if not f.is_file():
        missing = (
            f"not shipped in {dist} {dist_version(dist)} (it is downloaded on first use; extraction never downloads)"
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
        if folder is None or not folder.is_dir() or dist_version(dist) is None:
            out.append(
                Candidate(
                    source="bundled",
                    path=f"{module}/{sub}/",
                    package=dist,
                    missing=f"{dist} is not installed (or ships no {sub}/): `uv sync` installs it",
                )
            )
        elif module == "skimage":
            out.extend(_bundled(dist, module, sub, folder, filename, name) for name, filename in SKIMAGE_PHOTOS)
        elif module == "foolbox":
            # 20 ImageNet validation photos named imagenet_<k>_<class index>.jpg. Its mnist, cifar
            # and fashionMNIST files are 28-32 px thumbnails: too small to be useful at 224 px.
            for f in sorted(folder.glob("imagenet_*.jpg")):
                m = _FOOLBOX_RE.fullmatch(f.name)
                cls = int(m.group(2)) if m and int(m.group(2)) < 1000 else None
                wnid = wnids[cls] if cls is not None else None
                out.append(_bundled(dist, module, sub, folder, f.name, f.stem, label=wnid, class_index=cls, wnid=wnid))
        else:
            # scikit-learn's images/ and matplotlib's sample_data/: the JPEGs are the photographs
            # (china, flower; grace_hopper); the PNGs in sample_data are a logo and a clip-art icon.
            out.extend(_bundled(dist, module, sub, folder, f.name, f.stem) for f in sorted(folder.glob("*.jpg")))
    return sorted(out, key=lambda c: c.path)
