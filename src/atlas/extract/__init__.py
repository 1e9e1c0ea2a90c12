"""`atlas extract`: image sources -> a fixed-size uint8 training set for the denoising autoencoder.

The output folder (written atomically: built under a temporary name, then renamed) holds

- `images.npy`: one uint8 array N x S x S x 3 (RGB), loadable with `numpy.load(mmap_mode="r")`;
- `manifest.parquet`: one row per array row, in the same order (provenance, label, split, crop box);
- `skipped.parquet`: every input that was not used, with the reason;
- `extract.json`: the arguments, the counts, the package versions and the array's sha256.

Each image is converted to RGB (alpha composited over white, 16-bit grey scaled to 8 bits, the EXIF
orientation applied), then the centred square of side min(width, height) is resized to S x S
(bicubic, antialiased): the same pixels as "resize the short side to S, centre-crop S x S", in one
resampling step. `augment_crops` K adds K seeded random square crops (side 50-100 % of the short
side, random position, horizontal flip with probability 1/2) per image; a crop row names its parent
row and its crop box in the original image's pixels.

Sources: `imagenet` (one folder per wnid), `folder` (any tree of images) and `bundled` (real
photographs that installed packages ship, so the default needs no dataset and no network).

    from atlas.extract import ExtractConfig, extract
    extract(ExtractConfig(source="folder", root="photos", size=128), "data/photos")

Modules: `classes` (the ImageNet class list, --classes/--wnids), `sources` (the candidates of each
source), `decode` (bytes -> RGB -> S x S views), `npy` (the streaming images.npy writer), `config`
(ExtractConfig and its checks) and `build` (the split and the folder: `extract`, `write_dataset`).
The dataset format and its reader, `load_dataset(dir)`, are in `atlas.dataset`.

The names below load their module on first use, so that the command line can import the light
modules (classes, sources, config) for its help texts without numpy, pandas or PIL.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module of this package that defines it
_EXPORTS = {
    "extract": "build",
    "write_dataset": "build",
    "ExtractResult": "build",
    "ExtractConfig": "config",
    "Candidate": "sources",
    "imagenet_wnids": "classes",
    "imagenet_class_names": "classes",
    "parse_classes": "classes",
    "parse_wnids": "classes",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
