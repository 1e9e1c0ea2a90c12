"""Images as tensors: the display mapping (D's input space <-> 8-bit RGB), as every PNG is saved
and read back, and how a classifier sees an RGB image of any size."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from atlas.errors import AtlasError

if TYPE_CHECKING:
    from atlas.classifier import Classifier


def quantise(classifier: Classifier, images: torch.Tensor) -> torch.Tensor:
    """Display mapping: D's input space -> uint8 RGB (B, H, W, 3), as every PNG is saved."""
    rgb = classifier.to_rgb(images.detach().float())
    return (rgb * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()


def dequantise(classifier: Classifier, pixels: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (B, H, W, 3) -> D's input space (B, 3, H, W), the inverse of `quantise`."""
    return classifier.normalise(unit_rgb(pixels))


def unit_rgb(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (B, H, W, 3), as PNGs are read -> float RGB in [0, 1] (B, 3, H, W). (Not
    `Classifier.to_rgb`, which maps D's input space back to RGB.)"""
    return pixels.permute(0, 3, 1, 2).float() / 255.0


def to_input(classifier: Classifier, rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] (B, 3, H, W) of any size -> `classifier`'s input: resized bilinearly in RGB to
    its input size (antialiased when shrinking), then its own normalisation. How a judge, with its
    own input size and normalisation, sees a PNG made for D, and how D sees a dataset photo."""
    size = classifier.input_size
    if rgb.shape[-2:] != (size, size):
        shrink = rgb.shape[-1] > size or rgb.shape[-2] > size
        rgb = nn.functional.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    return classifier.normalise(rgb)


def load_png(path: Path) -> np.ndarray:
    """A saved image as uint8 RGB (H, W, 3); an unreadable file is an AtlasError."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise AtlasError(f"cannot read image {path} ({exc}); rerun the chunk that wrote it") from exc


def __getattr__(name: str) -> object:
    if name == "to_rgb":  # renamed: it was easily taken for Classifier.to_rgb, the other direction
        raise AttributeError("atlas.pixels.to_rgb was renamed atlas.pixels.unit_rgb (uint8 RGB -> float RGB in [0, 1])")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
