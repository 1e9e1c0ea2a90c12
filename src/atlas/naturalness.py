"""How natural an image's colour and contrast are, in three cheap figures computed on the saved
8-bit image at `SIDE` px (an image of another size is resized, antialiased, first), so that a
washed-out or an over-saturated method shows in numbers beside photos':

- `saturation`: the mean over pixels of HSV saturation, (max - min) / max of R, G, B (0 where
  max is 0);
- `rms_contrast`: the standard deviation of the grey level (ITU-R BT.601 luma) in [0, 1];
- `colourfulness`: Hasler and Suesstrunk's (2003) measure on the 0-255 scale,
  sqrt(sd(rg)^2 + sd(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2), rg = R - G, yb = (R + G) / 2 - B.

Real ImageNet photos score about 0.29, 0.20 and 38 (docs/method.md, "Naturalness")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

SIDE = 224
FIELDS = ("saturation", "rms_contrast", "colourfulness")


@dataclass(frozen=True)
class Naturalness:
    """Per image (N,): the three figures."""

    saturation: np.ndarray
    rms_contrast: np.ndarray
    colourfulness: np.ndarray

    def mean(self) -> dict[str, float]:
        return {f: float(np.mean(getattr(self, f))) for f in FIELDS}


@torch.no_grad()
def naturalness(rgb: torch.Tensor) -> Naturalness:
    """The figures of images `rgb` (N, 3, H, W), float RGB in [0, 1] (e.g. `pixels.unit_rgb` of PNGs)."""
    x = rgb.double()
    if x.shape[-2:] != (SIDE, SIDE):
        shrink = min(x.shape[-2:]) > SIDE
        x = nn.functional.interpolate(x, size=(SIDE, SIDE), mode="bilinear", align_corners=False, antialias=shrink)
        x = x.clamp(0.0, 1.0)
    hi = x.amax(dim=1)
    lo = x.amin(dim=1)
    sat = torch.where(hi > 0, (hi - lo) / hi.clamp(min=1e-12), torch.zeros_like(hi)).mean(dim=(1, 2))
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    grey = 0.299 * r + 0.587 * g + 0.114 * b
    contrast = grey.flatten(1).std(dim=1, unbiased=False)
    rg = (r - g).flatten(1) * 255.0
    yb = (0.5 * (r + g) - b).flatten(1) * 255.0
    sd = (rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False)).sqrt()
    mu = (rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2).sqrt()
    return Naturalness(saturation=sat.numpy(), rms_contrast=contrast.numpy(), colourfulness=(sd + 0.3 * mu).numpy())


def of_uint8(pixels: np.ndarray, batch_size: int = 64) -> Naturalness:
    """The figures of uint8 RGB images (N, H, W, 3), in batches (a dataset of photos)."""
    parts: list[Naturalness] = []
    for start in range(0, len(pixels), batch_size):
        part = torch.from_numpy(np.ascontiguousarray(pixels[start : start + batch_size]))
        parts.append(naturalness(part.permute(0, 3, 1, 2).float() / 255.0))
    if not parts:
        empty = np.zeros(0)
        return Naturalness(empty, empty, empty)
    return Naturalness(*(np.concatenate([getattr(p, f) for p in parts]) for f in FIELDS))


def of_photos(images: np.ndarray, rows: np.ndarray) -> dict[str, float | int]:
    """The mean figures of a dataset's photos `images[rows]` (the reference row beside every
    method's), with their count under "photos"."""
    return {"photos": len(rows), **of_uint8(np.asarray(images[rows])).mean()}
