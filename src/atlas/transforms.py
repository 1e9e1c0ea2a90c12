"""Transformation robustness: a small random geometric change of every image before D, each step.

The feature-visualisation standard (lucid's `standard_transforms`, also lucent's): pad the image by
12 px of grey, jitter it by up to 8 px, scale it by a factor from {1, 0.975, 1.025, 0.95, 1.05},
rotate it by up to +-5 degrees, jitter it by up to 4 px. An image that keeps its class under all
of these cannot be a pixel-exact adversarial pattern: the optimiser has to paint features that
survive being moved, i.e. larger, smoother, more natural ones. Measured on the embedded classifier
(docs/method.md), this is the single largest lever on what a person can read in the images.

Here the five steps are one affine map per image, applied to the whole chunk as one
`affine_grid` + `grid_sample` (the operations a step dispatches do not grow with the chunk). The
output keeps D's input size and shows the transformed frame of side `size + 2 pad - j1 - j2`
(what lucid hands D), resampled to `size`. Each image draws its own transformation from its
target's own generator, so a target's image does not depend on the chunk it ran in. The final
render and every score are on the untransformed image.

`TransformSpec.crops` replaces the standard set with random square crops of a share of the image
(MACO's, there of a larger canvas): D sees a part of the image at its full input size, so each
part has to read as the class on its own, at the scale of the crop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from atlas.draws import Draws


@dataclass(frozen=True)
class TransformSpec:
    """The random transformation's ranges (lucid's standard set by default)."""

    pad: int = 12  # grey border, px
    jitter: tuple[int, int] = (8, 4)  # before and after scale/rotation: a shift of up to j/2 px each way
    scales: tuple[float, ...] = (1.0, 0.975, 1.025, 0.95, 1.05)
    rotate: float = 5.0  # largest angle, degrees
    # Crops instead (when > 0): a square of side c x the image's, c uniform in [crop, 1], anywhere
    # inside the image, rotated as above, with no padding and no jitter (the crop moves it).
    crop: float = 0.0

    @staticmethod
    def crops(smallest: float, rotate: float = 5.0) -> TransformSpec:
        """The crop transformation: random squares of side `smallest`..1 of the image."""
        if not 0 < smallest <= 1:
            raise ValueError(f"the smallest crop is a fraction of the side, 0 < c <= 1; got {smallest}")
        return TransformSpec(pad=0, jitter=(0, 0), scales=(1.0,), rotate=rotate, crop=smallest)

    def frame(self, size: int) -> int:
        """Side, in the image's pixels, of the transformed frame D sees (lucid's output size)."""
        return size + 2 * self.pad - self.jitter[0] - self.jitter[1]


# Columns of one drawn transformation: first jitter (x, y), scale, angle (radians), second jitter (x, y).
_COLUMNS = 6


class RandomTransforms:
    """`t(x)`: image b of `x` (B, 3, H, W, D's input space) under its own random transformation.

    `fill` (3,) is the padding's colour in D's input space (grey: D's normalisation of RGB 0.5).
    """

    def __init__(
        self, spec: TransformSpec, seeds: Sequence[int], fill: torch.Tensor, device: torch.device, size: int = 224
    ) -> None:
        """`size`: the images' side, px (the crops' offsets are drawn in its pixels)."""
        self.spec = spec
        self.fill = fill.detach().float().view(1, 3, 1, 1).to(device)
        scales = torch.tensor(spec.scales, dtype=torch.float64)
        j1, j2 = spec.jitter
        max_angle = math.radians(spec.rotate)

        def crops(n: int, g: torch.Generator) -> torch.Tensor:
            # Side c, then the crop's centre anywhere that keeps it inside the image, as an offset
            # from the image's centre in the frame's pixels, then the angle.
            u = torch.rand(n, 6, generator=g, dtype=torch.float64)
            c = spec.crop + u[:, 2] * (1 - spec.crop)
            centre = (u[:, 0:2] - 0.5) * (1 - c[:, None]) * size
            a = (u[:, 3] * 2 - 1) * max_angle
            return torch.cat([centre, (1 / c)[:, None], a[:, None], torch.zeros(n, 2, dtype=torch.float64)], dim=1)

        def draw(n: int, g: torch.Generator) -> torch.Tensor:
            # One row of 6 uniforms per step (so drawing n steps at once gives the same numbers
            # as n single draws), mapped to integer offsets as lucid's crops take them (0..j-1,
            # centred on no shift), a scale from the set and an angle.
            u = torch.rand(n, 6, generator=g, dtype=torch.float64)
            o1 = (u[:, 0:2] * max(j1, 1)).floor() - (max(j1, 1) - 1) / 2
            s = scales[(u[:, 2] * len(scales)).long().clamp(max=len(scales) - 1)]
            a = (u[:, 3] * 2 - 1) * max_angle
            o2 = (u[:, 4:6] * max(j2, 1)).floor() - (max(j2, 1) - 1) / 2
            return torch.cat([o1, s[:, None], a[:, None], o2], dim=1)

        # The transformations' generators: the target's seed + 2 (+1 is the pixel method's rolls).
        self.draws = Draws([int(s) + 2 for s in seeds], crops if spec.crop > 0 else draw, torch.device("cpu"))

    def next_params(self) -> torch.Tensor:
        """The next step's transformations, (B, 6) float64 rows (see `_COLUMNS`)."""
        return self.draws.next()

    def __call__(self, x: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """The next step's transformed images, sampled at `size` px (default: x's own)."""
        return apply(x, self.next_params(), self.spec, self.fill, size)


def theta(params: torch.Tensor, spec: TransformSpec, size: int) -> torch.Tensor:
    """(B, 2, 3) affine maps, in `affine_grid`'s normalised coordinates, from output to source.

    Output pixel v (centred, in the frame's pixels) reads the source at
    x = R(-angle) (v + c2) / s + c1, with the frame of side `spec.frame(size)` spread over the
    output's `size` pixels; the source outside the image is the grey padding.
    """
    o1, s, a, o2 = params[:, 0:2], params[:, 2], params[:, 3], params[:, 4:6]
    zoom = spec.frame(size) / size  # output normalised unit -> source normalised unit, before s
    cos, sin = torch.cos(a), torch.sin(a)
    rot = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # R(-a)
    lin = rot * (zoom / s)[:, None, None]
    half = size / 2
    shift = torch.einsum("bij,bj->bi", rot / s[:, None, None], o2 / half) + o1 / half
    return torch.cat([lin, shift[:, :, None]], dim=2)


def apply(
    x: torch.Tensor, params: torch.Tensor, spec: TransformSpec, fill: torch.Tensor, size: int | None = None
) -> torch.Tensor:
    """Images `x` (B, C, H, W, square) under the transformations `params` (B, 6), as one
    `affine_grid` + `grid_sample` (bilinear) onto a `size` x `size` grid (default H: the same frame
    at another resolution otherwise); what falls outside the image is `fill` (1, C, 1, 1)."""
    b, c, h, w = x.shape
    if h != w:
        raise ValueError(f"the transformations need square images, got {h} x {w}")
    mat = theta(params, spec, h).to(device=x.device, dtype=x.dtype)
    out = size or h
    grid = F.affine_grid(mat, [b, c, out, out], align_corners=False)
    fill = fill.to(device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
