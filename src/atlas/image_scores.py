"""What a classifier says of a batch of images and targets: the target's activation, probability
and rank, and the classifier's top five classes (`Scores`). `atlas generate` records D's scores of
every saved image; `atlas score` reads the judge's and the robustness set's with the same code."""

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


def class_scores(logits: torch.Tensor, targets: Sequence[Target]) -> Scores:
    """Scores read from logits alone (B, C): a filter target gets activation NaN (no layer here)."""
    logits = logits.float().cpu()
    probs = torch.softmax(logits, dim=1)
    order = torch.argsort(logits, dim=1, descending=True)
    n = len(targets)
    activation = torch.full((n,), float("nan"))
    prob = torch.full((n,), float("nan"))
    rank = torch.full((n,), -1, dtype=torch.long)
    for b, t in enumerate(targets):
        if t.kind != "filter":
            cls = list(t.classes)
            activation[b] = torch.relu(logits[b, cls]).sum()
            prob[b] = probs[b, cls].sum()
            rank[b] = min(int((order[b] == c).nonzero()) + 1 for c in cls)
    return Scores(activation=activation, prob=prob, rank=rank, top5=order[:, :5].clone())


@torch.no_grad()
def score(classifier: Classifier, targets: Sequence[Target], images: torch.Tensor) -> Scores:
    """Score images (B, 3, H, W) in `classifier`'s input space."""
    layers = tuple(dict.fromkeys(t.layer for t in targets if t.layer is not None))
    acts = classifier.forward(images, layers=layers, need_logits=True)
    assert acts.logits is not None
    out = class_scores(acts.logits, targets)
    for b, t in enumerate(targets):
        if t.kind == "filter":
            assert t.layer is not None
            fmap = acts.features[t.layer].float().cpu()
            out.activation[b] = fmap[b, list(t.channels)].mean(dim=(1, 2)).sum()
    return out
