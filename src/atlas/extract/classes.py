"""The ImageNet-1k class list and the `--classes` / `--wnids` selections of `atlas extract`.

Torch-, numpy- and PIL-free: the command line imports it for its help texts.
"""

from __future__ import annotations

import importlib.resources
import re

from atlas.errors import AtlasError
from atlas.targets import parse_range

# ImageNet-1k classes 151..268 (0-based, inclusive) are the dog breeds. The paper trained its
# autoencoder on this subtree of ImageNet, so it is what `--source imagenet` extracts by default.
DOG_CLASSES = (151, 268)
# The WordNet synset "dog, domestic dog": not itself one of the 1000 classes, so `--wnids` expands it
# to the 118 dog breeds (we ship no WordNet hierarchy to expand other inner synsets).
DOG_SYNSET = "n02084071"
WNID_RE = re.compile(r"n\d{8}")


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k wnids in standard class-index order (shipped package data)."""
    text = importlib.resources.files("atlas").joinpath("imagenet_wnids.txt").read_text(encoding="utf-8")
    wnids = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    # A damaged list would silently mislabel every class, so check what the order relies on.
    if len(wnids) != 1000 or len(set(wnids)) != 1000 or wnids != sorted(wnids):
        raise AtlasError("atlas/imagenet_wnids.txt is damaged (need 1000 unique sorted wnids): reinstall atlas")
    return wnids


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in the standard order: torchvision's list, shipped as
    atlas/imagenet_classes.txt (a test checks it against torchvision's) so that loading an
    embedded classifier does not import torchvision (about 1.7 CPU-s a process)."""
    text = importlib.resources.files("atlas").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    names = text.splitlines()
    if len(names) != 1000:
        raise AtlasError("atlas/imagenet_classes.txt is damaged (need 1000 class names): reinstall atlas")
    return names


def parse_classes(spec: str) -> list[int]:
    """Parse `--classes` ("151-268", "1,5,9", "0-9,500") into sorted unique 0-based class indices."""
    out: set[int] = set()
    for raw in spec.split(","):
        tok = raw.strip()
        bounds = parse_range(tok)
        if bounds is None:
            raise AtlasError(
                f"malformed --classes item {tok!r} in {spec!r}: use 0-based indices and ranges such as 151-268 or 1,5,9"
            )
        lo, hi = bounds
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
