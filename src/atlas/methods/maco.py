"""The maco method (Fel et al. 2023): a Fourier image whose magnitude is fixed to that of the
dataset's photos (the 1/f law without them), only its phase optimised
(`atlas.parameterise.MagnitudeFourier`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from atlas.methods import Build, Method

if TYPE_CHECKING:
    from atlas.parameterise import Parameterisation

# MACO's reference code (Horama): NAdam lr 1.0 on the phase.
PAPER = {
    "steps": 512,
    "optimiser": "nadam",
    "lr": 1.0,
    "penalty": 0.0,
    "target_relu": False,
    "transforms": True,
}
# Adam lr 0.1 (MACO's NAdam lr 1.0 in 100 steps: judge top-5 2 of 12 on the development set of
# benchmarks/quality.py); the image standardised to a standard deviation of 1.75, which gives
# photos' saturation, contrast and colourfulness (MACO's own 1: 0.15, 0.14, 23 against photos'
# 0.28, 0.19, 37); the fourier method's crops (judge top-1 11 of 12). Only the phase moves, so
# maco needs more steps than fourier for the same judge figures: 200 steps, the first 75 % of them
# at 160 px (coarse to fine), read 19 of 22 classes (development set and 10 held out) at judge top-1
# and p 0.61, against 18 and 0.45 for 100 steps at 224 px, for 7.1 CPU-s an image against 5.8.
DEFAULT = {
    **PAPER,
    "steps": 200,
    "optimiser": "adam",
    "lr": 0.1,
    "contrast": 1.75,
    "crop": 0.5,
    "coarse_size": 160,
    "coarse_fraction": 0.75,
}


def build(b: Build) -> Parameterisation:
    from atlas.parameterise import MagnitudeFourier

    return MagnitudeFourier(b.settings, b.seeds, b.size, b.normalise, b.device, b.inputs.get("spectrum"))


METHOD = Method(
    name="maco",
    order=50,
    description="only the phase of a Fourier image is optimised, its magnitude fixed to that of natural photos "
    "(MACO, Fel et al. 2023), through the same crops",
    paper=PAPER,
    default=DEFAULT,
    build=build,
    inputs=("spectrum",),
)
