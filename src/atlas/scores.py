"""Scores of generated images under a classifier: the target's activation, probability and rank.

Images are scored as saved (after the display mapping and 8-bit quantisation), so a score can be
reproduced from the PNG alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from atlas.classifier import Classifier
from atlas.targets import Target


@dataclass
class Scores:
    """Per image (B,): `activation` is relu(logit) summed over the target classes, or the spatial
    mean of the target channels (summed) for a filter; `prob` the softmax probability of the target
    classes (summed; NaN for a filter); `rank` the 1-based rank of the best target class (-1 for a
    filter); `top5` D's five best class indices."""

    activation: torch.Tensor
    prob: torch.Tensor
    rank: torch.Tensor
    top5: torch.Tensor


@torch.no_grad()
def score(classifier: Classifier, targets: Sequence[Target], images: torch.Tensor) -> Scores:
    """Score images (B, 3, H, W) in `classifier`'s input space."""
    layers = tuple(dict.fromkeys(t.layer for t in targets if t.layer is not None))
    acts = classifier.forward(images, layers=layers, need_logits=True)
    assert acts.logits is not None
    logits = acts.logits.float().cpu()
    probs = torch.softmax(logits, dim=1)
    order = torch.argsort(logits, dim=1, descending=True)
    n = len(targets)
    activation = torch.empty(n)
    prob = torch.full((n,), float("nan"))
    rank = torch.full((n,), -1, dtype=torch.long)
    for b, t in enumerate(targets):
        if t.kind == "filter":
            fmap = acts.features[t.layer].float().cpu()  # type: ignore[index]
            activation[b] = fmap[b, list(t.channels)].mean(dim=(1, 2)).sum()
        else:
            cls = list(t.classes)
            activation[b] = torch.relu(logits[b, cls]).sum()
            prob[b] = probs[b, cls].sum()
            rank[b] = min(int((order[b] == c).nonzero()) + 1 for c in cls)
    return Scores(activation=activation, prob=prob, rank=rank, top5=order[:, :5].clone())


def quantise(classifier: Classifier, images: torch.Tensor) -> torch.Tensor:
    """Display mapping: D's input space -> uint8 RGB (B, H, W, 3), as every PNG is saved."""
    rgb = classifier.to_rgb(images.detach().float())
    return (rgb * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()


def dequantise(classifier: Classifier, pixels: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (B, H, W, 3) -> D's input space (B, 3, H, W), the inverse of `quantise`."""
    rgb = pixels.permute(0, 3, 1, 2).float() / 255.0
    return classifier.normalise(rgb)
