"""`atlas.naturalness`: saturation, RMS contrast and colourfulness on hand-made images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atlas.naturalness import SIDE, naturalness, of_uint8


def _solid(rgb: tuple[int, int, int], side: int = SIDE) -> np.ndarray:
    return np.full((1, side, side, 3), rgb, dtype=np.uint8)


def test_grey_has_no_saturation_contrast_or_colour() -> None:
    n = of_uint8(_solid((128, 128, 128)))
    assert n.saturation[0] == 0 and n.rms_contrast[0] == 0 and n.colourfulness[0] == 0


def test_black_counts_as_unsaturated() -> None:
    assert of_uint8(_solid((0, 0, 0))).saturation[0] == 0


def test_pure_red_by_hand() -> None:
    n = of_uint8(_solid((255, 0, 0)))
    assert n.saturation[0] == pytest.approx(1.0)
    assert n.rms_contrast[0] == pytest.approx(0.0, abs=1e-12)
    # rg = 255 and yb = 127.5 everywhere: no spread, so 0.3 times the length of their mean
    assert n.colourfulness[0] == pytest.approx(0.3 * math.hypot(255.0, 127.5))


def test_half_black_half_white_has_contrast_one_half() -> None:
    img = _solid((0, 0, 0))
    img[0, :, : SIDE // 2] = 255
    n = of_uint8(img)
    assert n.rms_contrast[0] == pytest.approx(0.5)
    assert n.saturation[0] == pytest.approx(0.0)
    assert n.colourfulness[0] == pytest.approx(0.0)


def test_a_washed_out_image_scores_lower_than_its_vivid_self() -> None:
    rng = np.random.default_rng(0)
    vivid = rng.integers(0, 256, (2, SIDE, SIDE, 3)).astype(np.uint8)
    washed = (128 + (vivid.astype(np.int16) - 128) // 3).astype(np.uint8)
    a, b = of_uint8(vivid), of_uint8(washed)
    for f in ("saturation", "rms_contrast", "colourfulness"):
        assert (getattr(b, f) < getattr(a, f) * 0.6).all()


def test_other_sizes_are_resized_and_batches_agree() -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 64, 64, 3)).astype(np.uint8)
    whole = of_uint8(images, batch_size=5)
    parts = of_uint8(images, batch_size=2)
    for f in ("saturation", "rms_contrast", "colourfulness"):
        assert np.allclose(getattr(whole, f), getattr(parts, f))
    # a flat colour stays that colour through the resize
    assert of_uint8(_solid((255, 0, 0), side=300)).saturation[0] == pytest.approx(1.0)
    rgb = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    assert np.allclose(naturalness(rgb).saturation, whole.saturation)
    assert of_uint8(images[:0]).saturation.shape == (0,)
