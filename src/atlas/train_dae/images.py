"""The training images: a split of the extracted dataset as batches, the random crops of
augmentation, the classifier's normalisation, and the fingerprint that identifies a dataset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from atlas.dataset import IMAGES_FILE, recorded_sha256
from atlas.generator import OUTPUT_SIZE
from atlas.io import sha256_file
from atlas.train_dae.config import TrainConfig

# Smallest random crop, as a fraction of the image side: the dataset's own crops already go down
# to 50 %, so on-the-fly crops only need to vary the framing a little.
_CROP_MIN = 0.8


class Images:
    """One split of the dataset as batches of float RGB in [0, 1], (B, 3, 224, 224), on `device`.

    Rows are read from the memory-mapped array batch by batch (sorted, so reads are sequential),
    so a dataset far larger than memory trains as well as the bundled one. Images of another size
    are resized to the decoder's 224 (bilinear, antialiased).
    """

    def __init__(self, images: np.ndarray, rows: np.ndarray, device: torch.device) -> None:
        self.images = images
        self.rows = rows
        self.device = device

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, positions: np.ndarray) -> torch.Tensor:
        """RGB of the split's rows at `positions` (in that order)."""
        rows = self.rows[positions]
        order = np.argsort(rows, kind="stable")
        block = np.empty((len(rows), *self.images.shape[1:]), dtype=np.uint8)
        block[order] = self.images[rows[order]]
        x = torch.from_numpy(block).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-1] != OUTPUT_SIZE:
            x = F.interpolate(x, size=(OUTPUT_SIZE, OUTPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
        return x.contiguous(memory_format=torch.channels_last)

    def batches(self, batch_size: int, order: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        order = np.arange(len(self)) if order is None else order
        for start in range(0, len(order), batch_size):
            pos = order[start : start + batch_size]
            yield pos, self.load(pos)


def fingerprint(directory: Path, images: np.ndarray) -> str:
    """What identifies the dataset's content: the sha256 that `atlas extract` recorded, and the shape."""
    sha = recorded_sha256(directory) or sha256_file(directory / IMAGES_FILE)
    return f"{'x'.join(str(s) for s in images.shape)}:{sha}"


def normaliser(cfg: TrainConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The classifier's mean and std as (1, 3, 1, 1) tensors: x = (rgb - mean) / std."""
    mean = torch.tensor(cfg.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, device=device).view(1, 3, 1, 1)
    return mean, std


def random_crops(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random square crop (side `_CROP_MIN`-100 %) of each image, resized back to its size,
    flipped horizontally with probability 1/2. One affine resampling, batched."""
    b = x.shape[0]
    u = torch.rand(b, 4, generator=gen)
    scale = _CROP_MIN + (1.0 - _CROP_MIN) * u[:, 0]
    # In grid_sample's [-1, 1] coordinates a crop of relative side s may move by up to 1 - s.
    tx = (2 * u[:, 1] - 1) * (1 - scale)
    ty = (2 * u[:, 2] - 1) * (1 - scale)
    flip = torch.where(u[:, 3] < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = scale
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
