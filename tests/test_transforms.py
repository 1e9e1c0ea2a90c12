"""Transformation robustness: the affine maps, per-target draws, identity when off, the presets."""

from __future__ import annotations

import math

import pytest
import torch

from atlas.draws import Draws
from atlas.methods import METHODS, settings_for
from atlas.transforms import RandomTransforms, TransformSpec, apply, theta

CPU = torch.device("cpu")
NONE = TransformSpec(pad=0, jitter=(0, 0), scales=(1.0,), rotate=0.0)


def _params(o1=(0.0, 0.0), s=1.0, a=0.0, o2=(0.0, 0.0)) -> torch.Tensor:
    return torch.tensor([[*o1, s, a, *o2]], dtype=torch.float64)


def test_no_change_is_the_identity() -> None:
    x = torch.randn(2, 3, 16, 16)
    out = apply(x, _params().expand(2, 6), NONE, torch.zeros(3))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_a_whole_pixel_jitter_shifts_the_image_and_pads_with_the_fill() -> None:
    x = torch.randn(1, 3, 16, 16)
    fill = torch.tensor([0.1, -0.2, 0.3])
    out = apply(x, _params(o1=(2.0, -1.0)), NONE, fill)
    # output pixel (i, j) reads the source at (i + dy, j + dx) = (i - 1, j + 2)
    torch.testing.assert_close(out[..., 1:, :-2], x[..., :-1, 2:], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[..., :, -2:], fill.view(1, 3, 1, 1).expand(1, 3, 16, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[..., 0, :], fill.view(1, 3, 1).expand(1, 3, 16), atol=1e-5, rtol=0)


def test_the_maps_of_scale_rotation_and_padding() -> None:
    spec = TransformSpec(pad=12, jitter=(8, 4), scales=(1.0,), rotate=5.0)
    size = 224
    zoom = (224 + 24 - 12) / 224  # the frame D sees is 236 px of the padded, jittered image
    # no rotation, scale 1: the output spans the frame
    torch.testing.assert_close(
        theta(_params(), spec, size)[0], torch.tensor([[zoom, 0, 0], [0, zoom, 0]], dtype=torch.float64)
    )
    # scale 1.05 zooms in: the output reads a 1.05 times smaller part of the source
    m = theta(_params(s=1.05), spec, size)[0]
    assert m[0, 0].item() == pytest.approx(zoom / 1.05)
    # a rotation is orthogonal up to the zoom
    a = math.radians(5)
    m = theta(_params(a=a), spec, size)[0, :, :2] / zoom
    torch.testing.assert_close(m @ m.T, torch.eye(2, dtype=torch.float64))
    assert m[0, 1].item() == pytest.approx(math.sin(a))
    # the second jitter moves in the rotated, scaled frame; the first in the source's
    m = theta(_params(o1=(2.0, 0.0), s=2.0, o2=(4.0, 0.0)), spec, size)[0]
    assert m[0, 2].item() == pytest.approx((2.0 + 4.0 / 2.0) / 112)


def test_draws_lie_in_the_spec_ranges_and_are_the_targets_own() -> None:
    spec = TransformSpec()
    t = RandomTransforms(spec, [5, 6], torch.zeros(3), CPU)
    rows = torch.cat([t.next_params() for _ in range(200)])  # (400, 6): targets interleaved
    assert rows[:, 0:2].abs().max() <= 3.5 and rows[:, 4:6].abs().max() <= 1.5
    assert set(rows[:, 2].tolist()) == set(spec.scales)
    assert rows[:, 3].abs().max() <= math.radians(spec.rotate)
    assert rows[:, 3].abs().max() > math.radians(spec.rotate) * 0.9  # the whole range is used
    # target 5 draws the same transformations alone as beside target 6
    alone = RandomTransforms(spec, [5], torch.zeros(3), CPU)
    pair = RandomTransforms(spec, [5, 6], torch.zeros(3), CPU)
    for _ in range(20):
        a, p = alone.next_params(), pair.next_params()
        assert torch.equal(a[0], p[0])
        assert not torch.equal(p[0], p[1])


def test_drawing_a_block_at_once_draws_the_same_transformations(monkeypatch) -> None:
    def sequence(block: int) -> list[torch.Tensor]:
        monkeypatch.setattr(Draws, "BLOCK", block)
        t = RandomTransforms(TransformSpec(), [3, 4], torch.zeros(3), CPU)
        return [t.next_params() for _ in range(9)]

    assert all(torch.equal(a, b) for a, b in zip(sequence(1), sequence(4), strict=True))


def test_a_chunk_is_transformed_image_by_image() -> None:
    x = torch.randn(3, 3, 32, 32, requires_grad=True)
    params = torch.cat([_params(o1=(1.0, 2.0), s=0.95, a=0.05), _params(s=1.05, a=-0.08), _params(o2=(-1.5, 0.5))])
    together = apply(x, params, TransformSpec(), torch.zeros(3))
    for b in range(3):
        alone = apply(x[b : b + 1], params[b : b + 1], TransformSpec(), torch.zeros(3))
        torch.testing.assert_close(together[b : b + 1], alone)
    (grad,) = torch.autograd.grad(together[1].sum(), x)
    assert grad[0].abs().max() == 0 and grad[2].abs().max() == 0 and grad[1].abs().sum() > 0


def test_on_in_the_default_presets_off_in_the_papers() -> None:
    for m in ("scratch", "pretrained", "pixel"):
        assert settings_for(m, "paper").transforms is False, m
    for m in METHODS:
        assert settings_for(m, "default").transforms is True, m
    # the field's methods keep their own authors' setting, which is on
    assert settings_for("fourier", "paper").transforms and settings_for("maco", "paper").transforms


def test_crops_show_a_square_of_the_image_that_stays_inside_it() -> None:
    size = 64
    # A ramp in x and one in y: a crop's mean is its centre, its range its side.
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    image = torch.stack([xs, ys, xs * 0]).unsqueeze(0).repeat(50, 1, 1, 1).double()
    t = RandomTransforms(
        TransformSpec.crops(0.4, rotate=0.0), list(range(50)), torch.zeros(3), torch.device("cpu"), size
    )
    params = t.next_params()
    out = apply(image, params, t.spec, torch.zeros(3))
    sides = 1 / params[:, 2]
    assert ((sides >= 0.4) & (sides <= 1)).all() and sides.min() < 0.5 and sides.max() > 0.9
    for b in range(50):
        x, y = out[b, 0], out[b, 1]
        side = float(sides[b]) * size
        centre = size / 2 + params[b, 0:2]
        assert float(x.mean()) == pytest.approx(float(centre[0]), abs=0.5)
        assert float(y.mean()) == pytest.approx(float(centre[1]), abs=0.5)
        assert float(x.max() - x.min()) == pytest.approx(side * (1 - 1 / size), abs=1.0)
        # inside the image: the fill (0) never shows beyond bilinear sampling at the very edge
        assert x.min() > 0.45 and x.max() < size - 0.45
    with pytest.raises(ValueError, match="smallest crop"):
        TransformSpec.crops(0.0)
