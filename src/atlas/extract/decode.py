"""Decoding and resizing for `atlas extract`: file bytes -> RGB image -> S x S uint8 views.

Each image is converted to RGB (alpha composited over white, 16-bit grey scaled to 8 bits, the EXIF
orientation applied); its centred square of side min(width, height) is resized to S x S (bicubic,
antialiased): the same pixels as "resize the short side to S, centre-crop S x S", in one resampling
step. Augmented views are seeded random square crops with a random horizontal flip.
"""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np
from PIL import Image, ImageOps

log = logging.getLogger(__name__)

# Smallest crop side, as a fraction of the short side: smaller crops of 224-512 px photos would be
# upsampled so much that the autoencoder would mostly learn blur.
CROP_MIN_FRACTION = 0.5


def decode_image(data: bytes) -> Image.Image:
    """Decode file bytes into an RGB PIL image, raising on anything unreadable."""
    # PIL reports harmless oddities (corrupt EXIF, big images) as warnings: they must not turn a
    # good image into a skipped one (pytest runs with warnings as errors), so log them instead.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Image.open(io.BytesIO(data)) as im:
            # Image.open only reads the header: decode now so a truncated file fails here.
            im.load()
            rgb = _to_rgb(ImageOps.exif_transpose(im))
    for w in caught:
        log.debug("PIL warning while decoding: %s", w.message)
    if rgb.width < 1 or rgb.height < 1:
        raise ValueError("image has no pixels")
    return rgb


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # PIL's convert clips 16-bit grey at 255 instead of scaling it: scale to 8 bits ourselves.
        arr = np.asarray(im, dtype=np.float64)
        scale = 257.0 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 1.0
        im = Image.fromarray(np.clip(np.rint(arr / scale), 0, 255).astype(np.uint8), mode="L")
    if im.mode in ("P", "PA", "LA", "La", "RGBa") or "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        # Transparent pixels hold arbitrary colours; white is what a viewer would show.
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB")


Box = tuple[int, int, int, int]


def centre_box(width: int, height: int) -> Box:
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def crop_boxes(width: int, height: int, k: int, rng: np.random.Generator) -> list[tuple[Box, bool]]:
    """K random square crops (side CROP_MIN_FRACTION..1 of the short side) with random flips."""
    short = min(width, height)
    out: list[tuple[Box, bool]] = []
    for _ in range(k):
        side = max(1, int(round(short * rng.uniform(CROP_MIN_FRACTION, 1.0))))
        left = int(rng.integers(0, width - side + 1))
        top = int(rng.integers(0, height - side + 1))
        flip = bool(rng.random() < 0.5)
        out.append(((left, top, left + side, top + side), flip))
    return out


def render(im: Image.Image, box: Box, flip: bool, size: int) -> np.ndarray:
    """The region `box` of `im` resized to size x size, as a uint8 H x W x 3 array."""
    out = im.resize((size, size), Image.Resampling.BICUBIC, box=box)
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(out, dtype=np.uint8)
