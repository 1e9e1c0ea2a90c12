"""What a classifier says of a batch of images and targets: the target's activation, probability
and rank, and the classifier's top five classes (`Scores`). `atlas generate` records D's scores of
every saved image; `atlas score` reads the judge's and the robustness set's with the same code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

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
def logits_and_features(classifier: Classifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The logits of `x` (B, C) and the penultimate features (B, F): the input of the classifier's
    last linear layer, flattened; None for a classifier without one."""
    linears = [m for m in classifier.model.modules() if isinstance(m, nn.Linear)]
    got: list[torch.Tensor] = []
    hook = (
        linears[-1].register_forward_pre_hook(lambda _m, inp: got.append(inp[0].detach().flatten(1)))
        if linears
        else None
    )
    try:
        logits = classifier.forward(x, need_logits=True).logits
    finally:
        if hook is not None:
            hook.remove()
    assert logits is not None
    return logits, (got[-1].float().cpu() if got else None)


def diversity(features: torch.Tensor) -> float:
    """The mean pairwise cosine distance (1 - cosine similarity) of features (N, F), N >= 2: 0 when
    the images are the same to the network, up to 2."""
    if len(features) < 2:
        raise ValueError("diversity needs at least two images")
    unit = nn.functional.normalize(features.double(), dim=1)
    sim = unit @ unit.T
    n = len(features)
    return float((1 - sim)[~torch.eye(n, dtype=torch.bool)].mean())


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
