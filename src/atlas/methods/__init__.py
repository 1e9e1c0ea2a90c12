"""The method registry: every generation method is one module of this package.

A method module (`atlas/methods/<name>.py`) declares `METHOD = Method(...)`: its name, its place
in the order (runs, records and the site list methods in it), a one-line description (the site's
summary page, the records' schema), its two presets, the regularisers it can apply, the inputs it
takes from the workflow (`INPUTS`: the autoencoder's decoder, the dataset's photos) and the
function that builds its parameterisation for a chunk. Every module here whose name does not
start with an underscore is one (`pkgutil.iter_modules`), so adding a method is adding its
module; so is every module in the folders that the environment variable ATLAS_METHOD_PATH lists
(separated as PATH is), for a method kept outside the package. This part imports no torch (the
workflow reads it in every snakemake invocation); a method's `build` imports its torch code when
it is called.

The presets of each method:

- `paper`: the authors' exact settings (docs/method.md, read from their Keras notebooks; tuned for
  Keras VGG-16 on 0-255 inputs). For `fourier` and `maco`, which are not the paper's, the settings
  of their own authors' reference code (lucid; MACO's Horama).
- `default`: what was measured to make images a person (and an independent classifier) can read,
  on the embedded classifier (docs/method.md, "Image quality").

Fields (all methods):
  steps            optimisation steps
  optimiser        adamax | adam | nadam | sgd
  lr, beta1, beta2, eps      optimiser settings (betas/eps for adam/adamax)
  momentum, nesterov         SGD settings
  penalty          lambda of Eq. 2: weight of the sum of the other classes' ReLU activations
  target_relu      true: the target term is relu(logit) as in Eq. 2; false: the raw logit, which
                   still has a gradient while the logit is negative
  filter_penalty   the other-class weight for filter targets (0: none, as the paper)
  noise_std        std of the noise on the feature vector f0 (scratch: additive N(0, s^2);
                   pretrained: multiplicative N(1, s^2)); 0 turns it off
  reg              regulariser R: l1_gamma (scratch: |gamma| of the final BN), l2_sq (sum alpha^2,
                   Keras' l2), l2_norm (||alpha||_2, as the paper writes it), pixel_l2 (mean
                   squared distance of the pixels from grey), none
  reg_weight       weight of R
  snapshots, snapshot_every  the final image is the per-pixel median of `snapshots` renders taken
                   every `snapshot_every` steps at the end (1 snapshot: the last iterate)
  width            generator width multiplier (scratch; 1.0 is the paper's G)
  alpha_relu       pretrained: f = relu(alpha * eps(f0)) (the authors' pretrained G)
  jitter           pixel: random shift of up to this many pixels per step (a roll)
  transforms       each step, D sees every image under a random pad, jitter, scale and rotation
                   (lucid's standard set, `atlas.transforms`); renders and scores are untransformed
  code_norm        pretrained: f = relu(LayerNorm(alpha * eps)), the code standardised as the
                   autoencoder's encoders end, alpha started from N(0, 1) per target
  rotate           largest rotation of the transformations, degrees
  decay            fourier, maco: exponent of the 1/f^decay spectrum (maco: only without photos)
  coarse_size      coarse-to-fine: D's input side, px, during the first `coarse_fraction` of the
                   steps (D runs at that size natively; 0: never); the image itself and the last
                   steps stay at D's own size
  coarse_fraction  the share of the steps run at `coarse_size`, 0..1
  crop             with `transforms`: instead of lucid's set, each step D sees a random square crop
                   of side `crop`..1 of the image (0: lucid's set)
  lr_end           the learning rate of the last step as a share of `lr`, reached by a cosine decay
                   from `lr` at the first step (1: constant, no schedule)
  contrast         maco: the standard deviation each image is standardised to before the colour
                   recorrelation and the sigmoid (MACO's own: 1)
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import pkgutil
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from atlas.errors import AtlasError

PRESETS = ("default", "paper")
OPTIMISERS = ("adamax", "adam", "nadam", "sgd")
REGULARISERS = ("l1_gamma", "l2_sq", "l2_norm", "pixel_l2", "none")
# A method's name is a folder name, part of its jobs' rule names and of the config's keys.
_NAME = re.compile(r"[a-z][a-z0-9]*")


@dataclass(frozen=True)
class Input:
    """Something a method takes from the workflow besides D and the targets: the workflow makes it
    (the file `chunk_inputs` names in workflow/rules/common.smk) and passes it to `atlas generate`
    as `flag`. `required`: `atlas generate` refuses to run the method without it."""

    name: str
    flag: str
    required: bool
    what: str


INPUTS: dict[str, Input] = {
    i.name: i
    for i in (
        Input("decoder", "--decoder", True, "the decoder of the autoencoder trained on the dataset's photos"),
        Input("spectrum", "--spectrum-from", False, "the dataset's photos, whose mean amplitude spectrum it uses"),
    )
}


@dataclass(frozen=True)
class Build:
    """What a method's `build` gets for one chunk: its settings, one seed per target, D's input
    side and normalisation (RGB in [0, 1] -> D's input), the device, and its inputs, resolved by
    `atlas.generate` (`inputs["decoder"]`: an `atlas.generator.Decoder`; `inputs["spectrum"]`:
    the photos' magnitude spectrum, or None where no photos were given)."""

    settings: MethodSettings
    seeds: list[int]
    size: int
    normalise: Callable[[Any], Any]
    device: Any
    inputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """One generation method, as its module declares it (see the module docstring)."""

    name: str
    order: int  # methods are listed by it: runs, records, the site
    description: str  # one line, for the site's summary page and the records' schema
    paper: Mapping[str, Any]  # the `paper` preset: MethodSettings fields (all but `method`)
    default: Mapping[str, Any]  # the `default` preset
    # The chunk's `atlas.parameterise.Parameterisation` (not imported here: it imports this module).
    build: Callable[[Build], Any]
    regularisers: tuple[str, ...] = ("none",)  # the `reg` values it can apply (R needs its parameters)
    inputs: tuple[str, ...] = ()  # names in INPUTS

    def __post_init__(self) -> None:
        where = f"method {self.name!r}"
        if not _NAME.fullmatch(self.name):
            raise AtlasError(f"{where}: a method's name is lower-case letters and digits, starting with a letter")
        if not self.description or "\n" in self.description:
            raise AtlasError(f"{where}: give it a one-line description")
        unknown = [r for r in self.regularisers if r not in REGULARISERS]
        if unknown or not self.regularisers:
            raise AtlasError(f"{where}: regularisers {unknown or '()'} are not among {', '.join(REGULARISERS)}")
        unknown = [i for i in self.inputs if i not in INPUTS]
        if unknown:
            raise AtlasError(f"{where}: inputs {unknown} are not among {', '.join(INPUTS)}")

    def preset(self, preset: str) -> MethodSettings:
        return MethodSettings(method=self.name, **(self.paper if preset == "paper" else self.default))


@dataclass(frozen=True)
class MethodSettings:
    method: str
    steps: int
    optimiser: str
    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.0
    nesterov: bool = False
    penalty: float = 0.01
    target_relu: bool = True
    filter_penalty: float = 0.0
    noise_std: float = 0.0
    reg: str = "none"
    reg_weight: float = 0.0
    snapshots: int = 1
    snapshot_every: int = 40
    width: float = 1.0
    alpha_relu: bool = False
    jitter: int = 0
    transforms: bool = False
    code_norm: bool = False
    rotate: float = 5.0
    decay: float = 1.0
    coarse_size: int = 0
    coarse_fraction: float = 0.0
    contrast: float = 1.0
    crop: float = 0.0
    lr_end: float = 1.0

    def __post_init__(self) -> None:
        method = get(self.method)
        if self.optimiser not in OPTIMISERS:
            raise AtlasError(f"unknown optimiser {self.optimiser!r}; use one of {', '.join(OPTIMISERS)}")
        if self.reg not in REGULARISERS:
            raise AtlasError(f"unknown regulariser {self.reg!r}; use one of {', '.join(REGULARISERS)}")
        if self.reg not in method.regularisers:
            allowed = method.regularisers
            raise AtlasError(
                f"the {self.method} method cannot regularise with {self.reg}; set reg to {' or '.join(allowed)}"
            )
        if self.steps < 1:
            raise AtlasError(f"steps must be at least 1, got {self.steps}")
        if self.snapshots < 1 or self.snapshot_every < 1:
            raise AtlasError("snapshots and snapshot_every must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise AtlasError(f"lr must be a positive number, got {self.lr}")
        if self.noise_std < 0 or self.reg_weight < 0 or self.jitter < 0:
            raise AtlasError("noise_std, reg_weight and jitter must not be negative")
        if not 0 <= self.rotate <= 45:
            raise AtlasError(f"rotate is the largest rotation in degrees, 0..45; got {self.rotate}")
        if not (0 <= self.decay <= 4 and math.isfinite(self.decay)):
            raise AtlasError(f"decay is the spectrum's power-law exponent, 0..4; got {self.decay}")
        if self.coarse_size != 0 and not 8 <= self.coarse_size <= 1024:
            raise AtlasError(
                f"coarse_size is D's input side during the coarse steps, 8..1024 px or 0 (off); got {self.coarse_size}"
            )
        if not (0 < self.contrast <= 10 and math.isfinite(self.contrast)):
            raise AtlasError(
                f"contrast is the maco image's standard deviation before the sigmoid, 0..10; got {self.contrast}"
            )
        if not 0 <= self.crop <= 1:
            raise AtlasError(f"crop is the smallest crop's share of the image's side, 0..1 (0: off); got {self.crop}")
        if not 0 <= self.lr_end <= 1:
            raise AtlasError(
                f"lr_end is the last step's learning rate as a share of lr, 0..1 (1: constant); got {self.lr_end}"
            )
        if not 0 <= self.coarse_fraction <= 1:
            raise AtlasError(f"coarse_fraction is a share of the steps, 0..1; got {self.coarse_fraction}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def coarse_steps(self, size: int) -> int:
        """How many of the first steps D sees the images at `coarse_size` instead of `size`."""
        if self.coarse_size == 0 or self.coarse_size >= size:
            return 0
        return round(self.coarse_fraction * self.steps)

    def lr_at(self, step: int) -> float:
        """The learning rate of (1-based) `step`: `lr` at step 1, a cosine decay to `lr * lr_end` at
        the last step."""
        if self.steps == 1 or self.lr_end == 1:
            return self.lr
        t = (step - 1) / (self.steps - 1)
        return self.lr * (self.lr_end + (1 - self.lr_end) * 0.5 * (1 + math.cos(math.pi * t)))

    def snapshot_steps(self) -> list[int]:
        """The (1-based) steps after which a snapshot is rendered, oldest first."""
        steps = [self.steps - i * self.snapshot_every for i in range(self.snapshots)]
        return sorted(s for s in steps if s >= 1)


# The registry: name -> Method, in order; filled by `discover()` from this package's modules.
_REGISTRY: dict[str, Method] = {}


# Folders of method modules outside the package (os.pathsep-separated), searched as its own.
PATH_VARIABLE = "ATLAS_METHOD_PATH"


def discover() -> dict[str, Method]:
    """Import every method module of this package (those on its `__path__`, and in the folders
    of ATLAS_METHOD_PATH, whose names do not start with an underscore) and register its
    `METHOD`, in `order`; each preset is checked."""
    for folder in os.environ.get(PATH_VARIABLE, "").split(os.pathsep):
        if folder and folder not in __path__:
            if not os.path.isdir(folder):
                raise AtlasError(f"{PATH_VARIABLE} names {folder}, which is not a folder; fix or unset it")
            __path__.append(folder)
    found: dict[str, Method] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        method = getattr(module, "METHOD", None)
        if not isinstance(method, Method):
            raise AtlasError(f"{module.__name__} declares no METHOD = Method(...); add one or rename it _{info.name}")
        if method.name in found:
            raise AtlasError(f"two modules declare the method {method.name!r}; rename one")
        found[method.name] = method
    ordered = sorted(found.values(), key=lambda m: m.order)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a.order == b.order:
            raise AtlasError(f"the methods {a.name} and {b.name} have the same order {a.order}; give one another")
    _REGISTRY.clear()
    _REGISTRY.update((m.name, m) for m in ordered)
    for m in ordered:  # every preset a valid MethodSettings (its regulariser among the method's)
        for preset in PRESETS:
            m.preset(preset)
    module = sys.modules[__name__]
    module.METHODS = names()  # type: ignore[attr-defined]
    return dict(_REGISTRY)


def names() -> tuple[str, ...]:
    """The registered methods' names, in order."""
    return tuple(_REGISTRY)


def registry() -> list[Method]:
    """The registered methods, in order."""
    return list(_REGISTRY.values())


def get(name: str) -> Method:
    """The method called `name`; an unknown name is an AtlasError naming the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise AtlasError(f"unknown method {name!r}; use one of {', '.join(_REGISTRY)}") from None


def takes(method: str, input_name: str) -> bool:
    """Whether `method` takes the input `input_name` (INPUTS) from the workflow."""
    return input_name in get(method).inputs


def taking(input_name: str) -> tuple[str, ...]:
    """The methods that take the input `input_name` (INPUTS)."""
    return tuple(m.name for m in _REGISTRY.values() if input_name in m.inputs)


def listed(items: Sequence[str], conjunction: str = "or") -> str:
    """`a, b, c or d`: the methods' text in messages and the records' schema."""
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def schema_methods(schema: dict[str, Any]) -> dict[str, Any]:
    """The workflow's config schema (workflow/schemas/config.schema.yaml, as loaded) with an entry
    under `methods` for every registered method it does not describe itself (the shared method
    definition, the method's own description); a described method that is not registered is an
    AtlasError. The schema's `methods` lists its entries in the registry's order."""
    props = schema["properties"]["methods"]["properties"]
    stale = sorted(set(props) - set(_REGISTRY))
    if stale:
        raise AtlasError(f"the config schema describes methods that are not registered: {', '.join(stale)}")
    entries = {
        m.name: props.get(m.name) or {"$ref": "#/$defs/method", "default": {}, "description": m.description}
        for m in _REGISTRY.values()
    }
    out = dict(schema)
    out["properties"] = dict(schema["properties"])
    out["properties"]["methods"] = {**schema["properties"]["methods"], "properties": entries}
    return out


def _coerce(name: str, text: str, current: Any) -> Any:
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise AtlasError(f"setting {name} takes true or false, got {text!r}")
    try:
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
    except ValueError:
        raise AtlasError(f"setting {name} takes a {type(current).__name__}, got {text!r}") from None
    return text


def settings_for(method: str, preset: str = "default", overrides: dict[str, str] | None = None) -> MethodSettings:
    """The settings of `method` under `preset`, with `overrides` (name -> text) applied."""
    m = get(method)
    if preset not in PRESETS:
        raise AtlasError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    base = m.preset(preset)
    known = {f.name for f in fields(MethodSettings)} - {"method"}
    changes: dict[str, Any] = {}
    for key, text in (overrides or {}).items():
        if key not in known:
            raise AtlasError(f"unknown setting {key!r}; valid settings: {', '.join(sorted(known))}")
        changes[key] = _coerce(key, text, getattr(base, key))
    return replace(base, **changes)


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """`KEY=VALUE` texts (the command line's `--set`) as a dict for `settings_for`."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise AtlasError(f"malformed --set {item!r}; write --set KEY=VALUE, e.g. --set lr=0.01")
        out[key.strip()] = value.strip()
    return out


METHODS: tuple[str, ...] = ()  # the registered names, in order (set by `discover`; `names()` reads it live)
discover()
