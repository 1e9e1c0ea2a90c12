"""What `atlas extract` is asked to do, checked when it is made.

Torch-, numpy- and PIL-free: the command line imports its defaults for its help texts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from atlas.errors import AtlasError
from atlas.extract.sources import SOURCES

DEFAULT_SIZE = 224
# The bundled set is ~40 photos: too few for even a small autoencoder, so it gets crops by default.
BUNDLED_DEFAULT_CROPS = 8


@dataclass(frozen=True)
class ExtractConfig:
    """The options of `atlas extract` (the output folder aside), with the command line's checks."""

    source: str = "bundled"  # imagenet | folder | bundled
    root: str | os.PathLike[str] | None = None  # input folder (imagenet, folder)
    size: int = DEFAULT_SIZE  # output side in pixels
    wnids: str | None = None  # imagenet: comma-separated wnids (the dog synset: the 118 dog breeds)
    classes: str | None = None  # imagenet: 0-based class indices and ranges, e.g. "151-268" or "1,5,9"
    per_class: int | None = None  # at most this many readable images per class / label; None: all
    labels_from_folders: bool = False  # folder: label each image with its parent folder's name
    augment_crops: int | None = None  # crops per image; None: BUNDLED_DEFAULT_CROPS for bundled, else 0
    val_fraction: float = 0.1  # fraction of the images (each with its crops) in the val split
    seed: int = 0  # of the split and of the crops

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise AtlasError(f"--source {self.source!r} is not a source: pass one of {', '.join(SOURCES)}")
        if self.size < 1:
            raise AtlasError(f"--size {self.size} must be at least 1 pixel: pass e.g. --size {DEFAULT_SIZE}")
        if self.augment_crops is not None and self.augment_crops < 0:
            raise AtlasError(f"--augment-crops {self.augment_crops} is negative: pass 0 or more")
        if self.per_class is not None and self.per_class < 1:
            raise AtlasError(f"--per-class {self.per_class} must be at least 1: leave it out for no cap")
        if not 0.0 <= self.val_fraction < 1.0:
            raise AtlasError(f"--val-fraction {self.val_fraction} is outside [0, 1): pass e.g. 0.1")
        if self.source != "imagenet" and (self.wnids or self.classes):
            raise AtlasError("--wnids and --classes select ImageNet classes: use them with --source imagenet")

    @property
    def crops(self) -> int:
        """Augmented crops per image, the source's default filled in."""
        if self.augment_crops is not None:
            return self.augment_crops
        return BUNDLED_DEFAULT_CROPS if self.source == "bundled" else 0
