"""The methods' settings: every knob is a field here, with two presets per method.

- `paper`: the authors' exact settings (docs/method.md, read from their Keras notebooks; tuned for
  Keras VGG-16 on 0-255 inputs). For `fourier` and `maco`, which are not the paper's, the settings
  of their own authors' reference code (lucid; MACO's Horama).
- `default`: what was measured to make images a person (and an independent classifier) can read,
  on the embedded classifier (docs/method.md, "Image quality").

The methods: `scratch` and `pretrained` are the paper's two; `pixel` is the naive pixel ascent
the paper contrasts them with (its Figure 1); `fourier` (lucid's colour-decorrelated Fourier
image) and `maco` (its magnitude fixed to photos', only the phase optimised; Fel et al. 2023) are
the field's standard since.

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
  contrast         maco: the standard deviation each image is standardised to before the colour
                   recorrelation and the sigmoid (MACO's own: 1)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from atlas.errors import AtlasError

METHODS = ("scratch", "pretrained", "pixel", "fourier", "maco")
PRESETS = ("default", "paper")
OPTIMISERS = ("adamax", "adam", "nadam", "sgd")
REGULARISERS = ("l1_gamma", "l2_sq", "l2_norm", "pixel_l2", "none")
# The regularisers each method can apply (R needs the method's own parameters).
METHOD_REGULARISERS = {
    "scratch": ("l1_gamma", "none"),
    "pretrained": ("l2_sq", "l2_norm", "none"),
    "pixel": ("pixel_l2", "none"),
    "fourier": ("none",),
    "maco": ("none",),
}

# Keras GaussianDropout(0.05) multiplies by N(1, rate / (1 - rate)).
_GAUSSIAN_DROPOUT_STD = math.sqrt(0.05 / 0.95)


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

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise AtlasError(f"unknown method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.optimiser not in OPTIMISERS:
            raise AtlasError(f"unknown optimiser {self.optimiser!r}; use one of {', '.join(OPTIMISERS)}")
        if self.reg not in REGULARISERS:
            raise AtlasError(f"unknown regulariser {self.reg!r}; use one of {', '.join(REGULARISERS)}")
        if self.reg not in METHOD_REGULARISERS[self.method]:
            allowed = METHOD_REGULARISERS[self.method]
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
        if not 0 <= self.coarse_fraction <= 1:
            raise AtlasError(f"coarse_fraction is a share of the steps, 0..1; got {self.coarse_fraction}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def coarse_steps(self, size: int) -> int:
        """How many of the first steps D sees the images at `coarse_size` instead of `size`."""
        if self.coarse_size == 0 or self.coarse_size >= size:
            return 0
        return round(self.coarse_fraction * self.steps)

    def snapshot_steps(self) -> list[int]:
        """The (1-based) steps after which a snapshot is rendered, oldest first."""
        steps = [self.steps - i * self.snapshot_every for i in range(self.snapshots)]
        return sorted(s for s in steps if s >= 1)


_PAPER: dict[str, MethodSettings] = {
    "scratch": MethodSettings(
        method="scratch",
        steps=500,
        optimiser="adamax",
        lr=0.002,
        penalty=0.01,
        target_relu=True,
        noise_std=2.0,
        reg="l1_gamma",
        reg_weight=0.01,
        snapshots=1,
        width=1.0,
    ),
    "pretrained": MethodSettings(
        method="pretrained",
        steps=1200,
        optimiser="sgd",
        lr=0.01,
        momentum=0.1,
        nesterov=True,
        penalty=0.01,
        target_relu=True,
        noise_std=_GAUSSIAN_DROPOUT_STD,
        reg="l2_sq",
        reg_weight=0.1,
        snapshots=10,
        snapshot_every=40,
        alpha_relu=True,
    ),
    # The paper's Figure 1 baseline has no published settings; these are the classic ones.
    "pixel": MethodSettings(
        method="pixel",
        steps=200,
        optimiser="adam",
        lr=0.05,
        penalty=0.01,
        target_relu=True,
        reg="pixel_l2",
        reg_weight=0.01,
        jitter=8,
    ),
    # Not the paper's: the field's standard since, with their authors' settings. lucid's render:
    # Adam lr 0.05 on the raw logit, no other-class term, the standard transformations, 512 steps.
    "fourier": MethodSettings(
        method="fourier",
        steps=512,
        optimiser="adam",
        lr=0.05,
        penalty=0.0,
        target_relu=False,
        transforms=True,
    ),
    # MACO's reference code (Horama): NAdam lr 1.0 on the phase.
    "maco": MethodSettings(
        method="maco",
        steps=512,
        optimiser="nadam",
        lr=1.0,
        penalty=0.0,
        target_relu=False,
        transforms=True,
    ),
}

# Measured on EfficientNet-Lite0, judged by EfficientNet-Lite2 on the saved PNGs of a development
# set of 12 classes (benchmarks/quality.py --classes dev; docs/method.md, "Image quality").
# Every method: the random transformations (lucid's standard set) before D; without them judge
# top-5 was 1 of 12 for fourier (11 with), 4 for scratch (7), 4 for the first pretrained (5); the
# pixel method's noise is no more readable either way (6 without, 5 with).
# Scratch: with the paper's Adamax lr 0.002 and N(0, 2^2) noise, p(class 285) was still 0.03 after
# 400 steps at width 0.25; lr 0.01 and noise std 0.5 reach 0.90 (285) and 0.995 (967) by step 150
# without the transformations. With them it needs longer: judge top-5 7 of 12 at 150 steps, 9 at
# 300 (lr 0.02, noise std 0.25 or 1.0, or no other-class term did no better at 150).
# Pretrained: the literal settings do not move there (the target's logit starts negative); the
# raw logit and Adam do. Every target started from the same code (alpha = 1, no zeros, unlike any
# training code) and moved from it by 0.55 on average in 150 steps, so every image kept that
# code's style; the code standardised as the encoders end it (`code_norm`), from a random start,
# Adam lr 0.1 and no other-class term: judge top-5 7 of 12 instead of 5, 12 distinct labels.
# Fourier: lr 0.1 and no other-class term; crops of half the image's side or more instead of
# lucid's set: whole objects (a perched eagle, zebras standing in grass) instead of a collage of
# parts, judge p 0.70 instead of 0.58 on the development set; and the first 75 % of the steps at
# 160 px (coarse to fine): on 40 held-out classes judge top-1 37 of 40 and p 0.80 for 3.5 CPU-s an
# image, against 36, 0.78 and 5.1 CPU-s at 224 px throughout.
# Maco: Adam lr 0.1 (MACO's NAdam lr 1.0 in 100 steps: top-5 2 of 12); the image standardised to
# a standard deviation of 1.75, which gives photos' saturation, contrast and colourfulness (MACO's
# own 1: 0.15, 0.14, 23 against photos' 0.28, 0.19, 37); the same crops (judge top-1 11 of 12).
_DEFAULT: dict[str, MethodSettings] = {
    "scratch": replace(_PAPER["scratch"], target_relu=False, lr=0.01, noise_std=0.5, transforms=True),
    "pretrained": replace(
        _PAPER["pretrained"],
        optimiser="adam",
        lr=0.1,
        momentum=0.0,
        nesterov=False,
        penalty=0.0,
        target_relu=False,
        reg="none",
        reg_weight=0.0,
        code_norm=True,
        transforms=True,
    ),
    "pixel": replace(_PAPER["pixel"], target_relu=False, jitter=0, transforms=True),
    "fourier": replace(_PAPER["fourier"], steps=100, lr=0.1, crop=0.5, coarse_size=160, coarse_fraction=0.75),
    "maco": replace(_PAPER["maco"], steps=100, optimiser="adam", lr=0.1, contrast=1.75, crop=0.5),
}


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
    if method not in METHODS:
        raise AtlasError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if preset not in PRESETS:
        raise AtlasError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    base = (_PAPER if preset == "paper" else _DEFAULT)[method]
    names = {f.name for f in fields(MethodSettings)} - {"method"}
    changes: dict[str, Any] = {}
    for key, text in (overrides or {}).items():
        if key not in names:
            raise AtlasError(f"unknown setting {key!r}; valid settings: {', '.join(sorted(names))}")
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
