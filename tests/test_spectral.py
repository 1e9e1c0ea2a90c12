"""The Fourier parameterisations, with exact values on tiny images: a known spectrum gives a known
image, the colour decorrelation inverts, the magnitude constraint holds whatever the phase."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from atlas.methods import settings_for
from atlas.parameterise import (
    COLOUR,
    FourierImage,
    MagnitudeFourier,
    decorrelate,
    photo_magnitude,
    power_law,
    recorrelate,
    spectrum_frequencies,
)

CPU = torch.device("cpu")
SIZE = 8


def _identity(rgb: torch.Tensor) -> torch.Tensor:
    return rgb


def _fourier() -> FourierImage:
    return FourierImage(settings_for("fourier"), [0], SIZE, _identity, CPU)


def test_colour_decorrelation_inverts_and_matches_lucid() -> None:
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(decorrelate(recorrelate(x)), x, atol=1e-5, rtol=0)
    # lucid's matrix scaled so that its largest column norm is 1
    assert COLOUR.norm(dim=0).max().item() == 1.0
    assert COLOUR[0, 0].item() == pytest.approx(0.26 / math.sqrt(0.26**2 + 0.27**2 + 0.27**2))


def test_the_power_law_and_frequencies() -> None:
    f = spectrum_frequencies(SIZE, SIZE)
    assert f.shape == (SIZE, SIZE // 2 + 1)
    assert f[0, 0] == 0 and f[0, 1] == 1 / SIZE and f[1, 0] == 1 / SIZE
    # torch's vectorised sqrt may round the last bit differently from math.sqrt on some CPUs
    assert float(f[SIZE // 2, SIZE // 2]) == pytest.approx(math.sqrt(0.5), rel=1e-15)
    scale = power_law(SIZE, SIZE)
    assert scale[0, 0] == SIZE and scale[0, 1] == SIZE and scale[0, 2] == SIZE / 2  # 1 / max(f, 1/8)


def test_a_dc_coefficient_gives_a_flat_image_of_known_colour() -> None:
    p = _fourier()
    with torch.no_grad():
        p.spectrum.zero_()
        p.spectrum[0, 1, 0, 0, 0] = 2.0  # decorrelated channel 1, real part of the DC term
    # irfft2 (ortho) of X[0, 0] = 2 * 8 (the 1/f scale at DC) is 2 * 8 / 8 = 2 everywhere; lucid's / 4
    expected = torch.sigmoid(COLOUR[:, 1] * 0.5).view(3, 1, 1).expand(3, SIZE, SIZE)
    torch.testing.assert_close(p.images(noise=False)[0], expected, atol=1e-6, rtol=0)


def test_one_frequency_gives_a_cosine() -> None:
    p = _fourier()
    with torch.no_grad():
        p.spectrum.zero_()
        p.spectrum[0, 0, 0, 2, 1] = 0.5  # channel 0, frequency (0, 2/8), imaginary part
    col = torch.arange(SIZE, dtype=torch.float64)
    # X = 0.5i * (8/2) = 2i: its Hermitian pair makes 2 Re(2i e^{2 pi i 2n/8}) / 8 = -0.5 sin(pi n / 2)
    wave = (-0.5 * torch.sin(math.pi * col / 2)).float() / 4.0
    expected = torch.sigmoid(COLOUR[:, 0].view(3, 1, 1) * wave.view(1, 1, SIZE)).expand(3, SIZE, SIZE)
    torch.testing.assert_close(p.images(noise=False)[0], expected, atol=1e-6, rtol=0)


def test_the_magnitude_stays_fixed_whatever_the_phase() -> None:
    gen = torch.Generator().manual_seed(0)
    magnitude = torch.rand(3, SIZE, SIZE // 2 + 1, generator=gen) + 0.1
    p = MagnitudeFourier(settings_for("maco"), [1, 2], SIZE, _identity, CPU, magnitude)
    with torch.no_grad():
        p.phase.uniform_(-math.pi, math.pi)
        spec = torch.polar(p.magnitude.expand_as(p.phase), p.phase)
        x = torch.fft.irfft2(spec, s=(SIZE, SIZE), norm="ortho")
    got = torch.fft.rfft2(x, norm="ortho").abs()
    # the columns that hold their own conjugate (DC and Nyquist) keep only the real part
    torch.testing.assert_close(got[..., 1 : SIZE // 2], magnitude[None, :, :, 1 : SIZE // 2].expand(2, -1, -1, -1))


def test_a_single_frequency_maco_image_is_a_standardised_cosine() -> None:
    magnitude = torch.zeros(3, SIZE, SIZE // 2 + 1)
    magnitude[:, 1, 0] = 1.0  # every channel: vertical frequency 1/8
    p = MagnitudeFourier(settings_for("maco"), [0], SIZE, _identity, CPU, magnitude)
    with torch.no_grad():
        p.phase.zero_()
    row = torch.arange(SIZE, dtype=torch.float64)
    # X[1, 0] alone (its conjugate X[7, 0] left out) is cos(2 pi r / 8) / 8 after irfft2 (ortho):
    # the same cosine in every channel, standardised over all 3 x 8 x 8 values (std with n - 1)
    # and brought to the default's standard deviation `contrast`
    cos = torch.cos(2 * math.pi * row / SIZE) / SIZE
    std = math.sqrt((cos**2).sum().item() * 3 * SIZE / (3 * SIZE * SIZE - 1))
    contrast = settings_for("maco").contrast
    assert contrast == 1.75
    wave = (contrast * cos / (std + 1e-4)).float().view(1, SIZE, 1).expand(3, SIZE, SIZE)
    expected = torch.sigmoid(recorrelate(wave[None]))[0]
    torch.testing.assert_close(p.images(noise=False)[0], expected, atol=1e-5, rtol=0)


def test_the_photo_magnitude_of_a_known_photo() -> None:
    size = 32
    col = torch.arange(size, dtype=torch.float64)
    wave = torch.zeros(1, 3, size, size, dtype=torch.float64)
    wave[0, 2] = 0.1 * torch.cos(2 * math.pi * 6 * col / size)  # decorrelated channel 2, frequency 6/32
    rgb = (0.5 + recorrelate(wave)).float()
    got = photo_magnitude(torch.cat([rgb, rgb]), size)
    assert got.shape == (3, size, size // 2 + 1)
    # all its energy in channel 2, peaking at the cosine's frequency; the Hann window spreads it
    # over its near neighbours only (under 2 % of the peak two entries away), and leaves nothing on the other axis
    assert got[:2].abs().max() < 1e-5
    assert divmod(int(got[2].argmax()), size // 2 + 1) == (0, 6)
    assert got[2, :, :4].max() < 0.02 * got[2].max() and got[2, 2:-1].max() < 0.02 * got[2].max()
    # a smooth ramp from dark (left) to light (right): periodic, its edges would be a jump that
    # spreads over every horizontal frequency as 1/f; windowed, its high frequencies are empty
    ramp = torch.linspace(0, 1, size).expand(1, 3, size, size)
    spec = photo_magnitude(ramp, size)[0]
    assert spec[0, 8:].max() < 1e-2 * spec[0, 1]
    raw = torch.fft.rfft2(decorrelate(ramp.double() - 0.5), norm="ortho").abs()[0, 0, 0]
    assert raw[8:].max() > 0.1 * raw[1]


def test_the_1_over_f_law_without_photos() -> None:
    p = MagnitudeFourier(settings_for("maco"), [0], SIZE, _identity, CPU)
    torch.testing.assert_close(p.magnitude[0], power_law(SIZE, SIZE).expand(3, -1, -1))


def test_maco_takes_its_magnitude_from_a_dataset_and_records_it(tmp_path) -> None:
    from atlas.generate import GenerateConfig, generate, resolve_magnitude
    from atlas.targets import parse_specs
    from tests.tiny import tiny_classifier, write_dataset

    rng = np.random.default_rng(0)
    data = write_dataset(tmp_path / "ds", rng.integers(0, 256, (5, 48, 48, 3), dtype=np.uint8))
    clf = tiny_classifier()
    cfg = GenerateConfig(settings=settings_for("maco", overrides={"steps": "2"}), spectrum=str(data))
    magnitude = resolve_magnitude(cfg, clf.input_size)
    assert magnitude is not None and magnitude.shape == (3, 32, 17)
    # the photos' spectrum, each photo resized to D's input size first
    photos = torch.from_numpy(np.array(np.load(data / "images.npy"))).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(magnitude, photo_magnitude(photos, 32))
    generate(clf, parse_specs(["class:1"]), cfg, tmp_path / "out", CPU)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["spectrum"]["dataset"] == str(data)


def test_maco_starts_from_uniform_phases_with_no_bright_spot_at_the_origin() -> None:
    # Phases from N(0, 1) have a mean cosine of exp(-1/2): every coefficient then adds up in phase
    # at the origin, a bright spot in the image's corners. Uniform phases spread it evenly.
    size = 64
    magnitude = power_law(size, size).expand(3, size, size // 2 + 1)
    p = MagnitudeFourier(settings_for("maco"), list(range(8)), size, _identity, CPU, magnitude)
    phase = p.phase.detach()
    assert float(phase.min()) >= -math.pi and float(phase.max()) <= math.pi
    assert abs(float(torch.cos(phase).mean())) < 0.02
    with torch.no_grad():
        x = torch.fft.irfft2(torch.polar(p.magnitude.expand_as(p.phase), p.phase), s=(size, size), norm="ortho")
    z = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / x.std(dim=(1, 2, 3), keepdim=True)
    assert float(z[:, :, 0, 0].abs().max()) < 4.5  # the origin is an ordinary pixel
