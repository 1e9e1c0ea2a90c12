"""Tiny classifiers for fast, exact tests (no downloads, hand-set weights where it matters)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from atlas.classifier import Classifier
from atlas.dataset import IMAGES_FILE, MANIFEST_COLUMNS, MANIFEST_FILE, typed_frame


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def tiny_classifier(num_classes: int = 6, size: int = 32, seed: int = 0) -> Classifier:
    """A small random conv net: conv -> relu -> pool -> linear, input size 32."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, 4, 3, stride=2, padding=1),
            act=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            fc=nn.Linear(4, num_classes),
        )
    )
    return Classifier(
        name="tiny",
        weights="random",
        model=_frozen(model),
        input_size=size,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        class_names=[f"class {i}" for i in range(num_classes)],
    )


def linear_classifier(weight: list[list[float]], bias: list[float]) -> Classifier:
    """logits = W @ (per-channel mean of the image) + b: exact values on constant images."""
    w = torch.tensor(weight)
    fc = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        fc.weight.copy_(w)
        fc.bias.copy_(torch.tensor(bias))
    model = nn.Sequential(OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=fc))
    return Classifier(
        name="linear",
        weights="hand",
        model=_frozen(model),
        input_size=8,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        class_names=[f"c{i}" for i in range(w.shape[0])],
    )


def constant_image(values: list[float], size: int = 8) -> torch.Tensor:
    return torch.tensor(values).view(1, 3, 1, 1).expand(1, 3, size, size).clone()


def write_dataset(
    folder: Path,
    images: np.ndarray,
    parents: list[int | None] | None = None,
    class_indices: list[int | None] | None = None,
) -> Path:
    """A dataset folder as `atlas extract` lays it out (images.npy + manifest.parquet), from a uint8
    N x S x S x 3 array; `parents[i]` marks row i as an augmented crop of that row, and
    `class_indices[i]` is its class label (none by default)."""
    n = len(images)
    parents = parents or [None] * n
    class_indices = class_indices or [None] * n
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / IMAGES_FILE, images.astype(np.uint8))
    size = images.shape[1]
    rows = [
        {
            "index": i,
            "source": "folder",
            "path": f"img{i}.png",
            "package": None,
            "name": None,
            "label": f"label{i}",
            "class_index": class_indices[i],
            "wnid": None,
            "width": size,
            "height": size,
            "sha256": f"{i:064d}",
            "split": "train",
            "parent": parents[i],
            "box_left": 0,
            "box_top": 0,
            "box_right": size,
            "box_bottom": size,
            "flipped": False,
        }
        for i in range(n)
    ]
    typed_frame(rows, MANIFEST_COLUMNS).to_parquet(folder / MANIFEST_FILE, index=False)
    return folder


def make_chunk(folder: Path, specs: list[str], seed: int = 0, seeds: int = 1) -> Path:
    """A real chunk folder: `atlas generate` (pixel, 2 steps) with `tiny_classifier()`, each target
    drawn from `seeds` seeds."""
    from atlas.generate import GenerateConfig, generate
    from atlas.methods import settings_for
    from atlas.targets import parse_specs, with_seeds

    settings = settings_for("pixel", "default", {"steps": "2"})
    targets = with_seeds(parse_specs(specs), seeds)
    generate(tiny_classifier(), targets, GenerateConfig(settings=settings, seed=seed), folder, torch.device("cpu"))
    return folder
