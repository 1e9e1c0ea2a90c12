"""The frozen classifier D as Atlas runs it: `Classifier` (its input space, its forward pass with
layer hooks, its filter layers) and `Activations`, what a forward pass exposes to objectives.

`atlas.classifier` builds a `Classifier` from a `ClassifierSpec` and re-exports these names.

A vision transformer's filters: a token layer's output (B, tokens, dim) is exposed to objectives
as a map (B, dim, h, w) of its patch tokens (the class and register tokens dropped, the patches
in their grid), so a filter, the spatial mean of a channel, is that channel of the token
embedding averaged over the patch tokens, exactly as for a convolution's feature map.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from atlas.errors import AtlasError
from atlas.fold import dummy_pass, fold_batchnorm

log = logging.getLogger(__name__)


class _StopForward(Exception):
    """Raised by a hook once every requested layer has been captured, to skip the rest of D."""


@dataclass
class Activations:
    """What one forward pass of D exposes to objectives: logits (None when the pass stopped early
    at a filter layer) and the outputs of the requested layers, each (B, C, H, W)."""

    logits: torch.Tensor | None
    features: dict[str, torch.Tensor] = field(default_factory=dict)

    def row(self, b: int) -> Activations:
        """Image b alone (batch of one). Each target's objective sees only its own row, so a NaN in
        one target's loss cannot reach another's gradient (0 * NaN is NaN)."""
        logits = None if self.logits is None else self.logits[b : b + 1]
        return Activations(logits=logits, features={k: v[b : b + 1] for k, v in self.features.items()})


@dataclass
class Classifier:
    """A frozen classifier with everything Atlas needs to know about it."""

    name: str
    weights: str
    model: nn.Module
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: list[str]
    weights_file: str | None = None
    classes_file: str | None = None  # the label set's file; None: ImageNet-1k's classes
    interpolation: str = "bilinear"  # how an image of another size is resized to input_size
    # A transformer's prefix tokens (class, register) before its patch tokens; None: not one.
    prefix_tokens: int | None = None
    # Why D's layers cannot be hooked (a saved TorchScript or torch.export model); None: they can.
    no_layers: str | None = None
    _layers: dict[str, int] | None = field(default=None, repr=False)
    _token_layers: set[str] = field(default_factory=set, repr=False)
    _compiled: Callable[..., Any] | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to(self, device: torch.device | str) -> Classifier:
        self.model.to(device)
        return self

    def prepare(
        self, channels_last: bool, compile: bool, fold_bn: bool = False, keep: Collection[str] = ()
    ) -> Classifier:
        """Memory layout of D's weights (in place) and, with `compile`, a compiled D for the passes
        that need no layer hooks (a hook would recompile it at every step). With `fold_bn`, D's
        BatchNorm layers are first folded into the convolutions before them (`atlas.fold`), except
        the convolutions named in `keep` (the layers that will be hooked)."""
        if fold_bn and self.no_layers is None:
            folded = fold_batchnorm(self.model, self.input_size, keep)
            log.info("%s: %d BatchNorm layers folded into their convolutions", self.name, folded)
        self.model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)  # type: ignore[call-overload]  # torch accepts it; its stubs do not list it
        self._compiled = torch.compile(self.model) if compile else None
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)
        return mean, std

    def normalise(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] -> D's input space."""
        mean, std = self._stats(rgb)
        return (rgb - mean) / std

    def to_rgb(self, x: torch.Tensor) -> torch.Tensor:
        """D's input space -> RGB clipped to [0, 1] (the display mapping of every saved PNG)."""
        mean, std = self._stats(x)
        return (x * std + mean).clamp(0.0, 1.0)

    @property
    def imagenet(self) -> bool:
        """D's label set is ImageNet-1k's, as it is without a classes file (the label set of the
        extracted datasets' class indices and of the built-in judges)."""
        return self.classes_file is None

    def resolve_layer(self, name: str) -> nn.Module:
        if self.no_layers is not None:
            raise AtlasError(f"{self.name} has no filter layers: {self.no_layers}")
        modules = dict(self.model.named_modules())
        if name not in self.layers:
            raise AtlasError(f"unknown layer {name!r} for {self.name}; valid layers: {', '.join(self.layers)}")
        return modules[name]

    @property
    def layers(self) -> dict[str, int]:
        """Layers usable as filter targets, name -> channel count, in forward order: modules whose
        output is a 4-D feature map and, in a transformer, those whose output is the whole token
        sequence (their channels are the token embedding's). None for a saved model."""
        if self.no_layers is not None:
            return {}
        if self._layers is None:
            self._layers, self._token_layers = _probe_layers(self.model, self.input_size, self.prefix_tokens)
        return self._layers

    def _as_map(self, name: str, out: torch.Tensor) -> torch.Tensor:
        """A layer's output as objectives read it: a token layer's patch tokens as a map."""
        if name not in self._token_layers:
            return out
        return tokens_to_map(out, self.prefix_tokens or 0)

    def forward(
        self, x: torch.Tensor, layers: Sequence[str] = (), need_logits: bool = True, native: bool = False
    ) -> Activations:
        """Run D on `x` (D's input space, any size: resized bilinearly to D's input size, or with
        `native` run at its own size, as a convolutional network with a global pool can be),
        capturing `layers`. Without `need_logits`, the pass stops right after the last requested
        layer."""
        if (not native or self.prefix_tokens is not None or self.no_layers is not None) and (
            x.shape[-1] != self.input_size or x.shape[-2] != self.input_size
        ):
            # A transformer's position embedding and a saved model's graph take one size only.
            x = nn.functional.interpolate(
                x, size=(self.input_size, self.input_size), mode=self.interpolation, align_corners=False
            )
        feats: dict[str, torch.Tensor] = {}
        wanted = set(layers)
        handles = []
        try:
            for name in wanted:
                module = self.resolve_layer(name)

                def hook(_m: nn.Module, _i: object, out: torch.Tensor, name: str = name) -> None:
                    feats[name] = self._as_map(name, out)
                    if not need_logits and wanted <= feats.keys():
                        raise _StopForward

                handles.append(module.register_forward_hook(hook))
            model = self._compiled if self._compiled is not None and not wanted else self.model
            try:
                logits = model(x)
            except _StopForward:
                logits = None
        finally:
            for h in handles:
                h.remove()
        return Activations(logits=logits, features=feats)


def tokens_to_map(out: torch.Tensor, prefix: int) -> torch.Tensor:
    """(B, tokens, dim) -> (B, dim, h, w): the patch tokens (after the `prefix` class and register
    tokens) in their square grid, or (B, dim, 1, patches) when they do not form a square."""
    patches = out[:, prefix:, :].transpose(1, 2)
    n = patches.shape[-1]
    side = int(round(n**0.5))
    return patches.reshape(patches.shape[0], patches.shape[1], *((side, side) if side * side == n else (1, n)))


def _probe_layers(model: nn.Module, size: int, prefix: int | None = None) -> tuple[dict[str, int], set[str]]:
    """Find the filter layers with one dummy forward pass: the modules whose output is a 4-D
    feature map and, for a transformer (`prefix` not None), the token layers, those whose output
    is (B, tokens, dim) with the whole token sequence (the most tokens any module returns). In a
    transformer, the 4-D outputs after the first token layer are attention internals (heads x
    tokens x head dim), not feature maps, and are left out. Returns the layers (name -> channels,
    forward order) and the names of the token layers."""
    seen: list[tuple[str, tuple[int, ...]]] = []
    names: set[str] = set()
    handles = []

    def make(name: str):  # noqa: ANN202 - a hook factory
        def hook(_m: nn.Module, _i: object, out: object) -> None:
            if isinstance(out, torch.Tensor) and out.dim() in (3, 4) and name not in names:
                names.add(name)
                seen.append((name, tuple(out.shape)))

        return hook

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(make(name)))
    dummy_pass(model, size, handles)
    if prefix is None:
        return {name: shape[1] for name, shape in seen if len(shape) == 4}, set()
    tokens = max((shape[1] for _, shape in seen if len(shape) == 3), default=None)
    shapes: dict[str, int] = {}
    token_layers: set[str] = set()
    for name, shape in seen:
        if len(shape) == 3 and shape[1] == tokens and tokens > prefix:
            shapes[name] = shape[2]
            token_layers.add(name)
        elif len(shape) == 4 and not token_layers:
            shapes[name] = shape[1]
    return shapes, token_layers


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
