"""The optional perceptual term of the loss (`--perceptual W`): the classifier's early and middle
features of the reconstruction against those of the clean image."""

from __future__ import annotations

from typing import Any

import torch

# The classifier's layers whose features the perceptual term compares: early and middle ones (edges,
# textures, parts), not the class evidence of the last ones.
_PERCEPTUAL_LAYERS = {
    "efficientnet-lite0": ("_blocks.1", "_blocks.3", "_blocks.5"),
    "efficientnet-lite2": ("_blocks.2", "_blocks.5", "_blocks.8"),
    "torchvision:vgg16": ("features.3", "features.8", "features.15"),
}


def perceptual_layers(classifier: Any) -> tuple[str, ...]:
    """The layers of `classifier` (an `atlas.classifier.Classifier`) the perceptual term uses:
    the table's, or three spread over the first third of its feature layers."""
    if classifier.name in _PERCEPTUAL_LAYERS:
        return _PERCEPTUAL_LAYERS[classifier.name]
    names = list(classifier.layers)
    last = min(len(names), max(3, len(names) // 3)) - 1
    return tuple(dict.fromkeys(names[round(k * last / 2)] for k in (0, 1, 2)))


class Perceptual:
    """sum over layers of mean((phi(x) - phi(y))^2) / mean(phi(y)^2), phi the frozen classifier's
    features (one pass over x and y together, stopped after the last layer)."""

    def __init__(self, classifier: Any, device: torch.device) -> None:
        self.classifier = classifier.to(device)
        self.layers = perceptual_layers(classifier)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        acts = self.classifier.forward(torch.cat([x, y]), layers=self.layers, need_logits=False)
        total = x.new_zeros(())
        for name in self.layers:
            fx, fy = acts.features[name].float().chunk(2)
            fy = fy.detach()
            total = total + ((fx - fy) ** 2).mean() / (fy**2).mean().clamp(min=1e-8)
        return total
