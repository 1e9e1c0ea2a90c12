"""What is optimised, for a chunk of B targets at once: a parameterisation makes B images.

- `ScratchG`: B independent generators (all of G incl. alpha trained), batched as grouped convs;
- `PretrainedG`: a B x 3200 alpha in front of one frozen, trained decoder;
- `Pixels`: the B images' pixels directly (the classic baseline).

Each target draws its initial values and its noise from its own `torch.Generator`, seeded by the
target alone, so an image does not depend on which chunk it ran in. Images are in D's normalised
input space (docs/design.md, "The classifier's input space").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from atlas.draws import Draws, cpu_generators
from atlas.generator import FEATURES, Decoder
from atlas.methods import MethodSettings
from atlas.runtime import Runtime


def per_target(seeds: Sequence[int], draw: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
    """The chunk's initial values (B, ...): row b drawn by `draw` from target b's own generator."""
    return torch.stack([draw(g) for g in cpu_generators(seeds)])


class _RollRows(torch.autograd.Function):
    """out[b] = x[b] rolled by shifts[b] over (H, W), as one gather whose backward is the gather
    of the inverse roll (a permutation: no scatter-add, exact and deterministic on every device)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(inverse)
        return x.flatten(2).gather(2, index).view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: ANN001
        (inverse,) = ctx.saved_tensors
        return grad.flatten(2).gather(2, inverse).view_as(grad), None, None


def _roll_index(shifts: torch.Tensor, c: int, h: int, w: int) -> torch.Tensor:
    """(B, C, H*W) flat source index of torch.roll(x[b], shifts=(dy, dx), dims=(1, 2))."""
    rows = (torch.arange(h)[None, :] - shifts[:, :1]) % h
    cols = (torch.arange(w)[None, :] - shifts[:, 1:]) % w
    flat = rows[:, :, None] * w + cols[:, None, :]
    return flat.view(len(shifts), 1, h * w).expand(len(shifts), c, h * w)


def roll_rows(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Image b of `x` (B, C, H, W) rolled by `shifts[b]` = (dy, dx) pixels, as torch.roll does, in
    one operation whatever B (the per-image rolls were B kernel launches a step on a GPU)."""
    b, c, h, w = x.shape
    index = _roll_index(shifts, c, h, w).to(x.device, non_blocking=True)
    inverse = _roll_index(-shifts, c, h, w).to(x.device, non_blocking=True)
    return _RollRows.apply(x.contiguous(), index, inverse)


class Parameterisation:
    """B images from trainable tensors. `images(noise=True)` is what the optimiser sees;
    `render()` is the final, noise-free image in the mode it was optimised in."""

    settings: MethodSettings
    batch: int

    def parameters(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def images(self, noise: bool = True) -> torch.Tensor:
        raise NotImplementedError

    def regulariser(self) -> torch.Tensor:
        """R of Eq. 2, one value per target (B,)."""
        raise NotImplementedError

    @torch.no_grad()
    def render(self) -> torch.Tensor:
        return self.images(noise=False)

    def after_step(self) -> None:
        """Called after each optimiser step (e.g. to keep pixels in range)."""

    def prepare(self, runtime: Runtime) -> None:
        """Lay out and compile G for `runtime` (before the optimiser is made). Pixels have no G."""


class _WithDecoder(Parameterisation):
    decoder: Decoder
    _decode: Callable[[torch.Tensor], torch.Tensor]

    def prepare(self, runtime: Runtime) -> None:
        # In place: the parameters stay the same tensors, so an optimiser made after sees them.
        self.decoder.to(memory_format=runtime.memory_format())  # type: ignore[call-overload]  # torch accepts it; its stubs do not list it
        self._decode = torch.compile(self.decoder) if runtime.compile else self.decoder

    def _generate(self, f: torch.Tensor) -> torch.Tensor:
        # G runs in fp32 also under bf16 autocast (only D runs in bf16). Measured (docs/benchmarks.md,
        # "Speed on the CPU"; tests/test_runtime.py): in bf16, the scratch G's BatchNorm over a single
        # image turned the rounding of nearly constant channels into noise and lost its targets,
        # and the pretrained G's backward cancels enough to err by a third of a step; with G in
        # fp32 and D in bf16 the images stay within one 8-bit level of fp32's.
        with torch.autocast(f.device.type, enabled=False):
            return self._decode(f.float())


class _FeatureNoise:
    """Per-target noise on the constant input f0 = 1, drawn afresh at every step."""

    def __init__(self, seeds: Sequence[int], std: float, device: torch.device) -> None:
        self.std = std
        self.draws = Draws(seeds, lambda n, g: torch.randn(n, FEATURES, generator=g), device)

    def draw(self) -> torch.Tensor:
        """(B, 3200) standard normal draws, row b from target b's generator."""
        return self.draws.next()


class ScratchG(_WithDecoder):
    """The scratch method: B randomly initialised generators, every weight trained (incl. alpha).

    f = alpha * (f0 + eps), eps ~ N(0, noise_std^2) (Keras GaussianNoise before the alpha layer);
    G's BatchNorm runs in train mode (each image's own statistics), also when rendering: the
    image is rendered the way it was optimised (docs/design.md, "Rendering: the image as it was
    optimised": rendered with running statistics instead, D's probability fell to 0.01).
    R = reg_weight * sum |gamma| over the three gammas of the final BatchNorm.
    """

    def __init__(self, settings: MethodSettings, seeds: Sequence[int], device: torch.device) -> None:
        self.settings = settings
        self.batch = len(seeds)
        self.decoder = Decoder(width=settings.width, copies=self.batch)
        # Keras 1 gives LocallyConnected1D's (3200, 1, 1) kernel fan_in = fan_out = sqrt(3200) in
        # glorot_uniform, i.e. U(-l, l) with l = sqrt(6 / (2 sqrt(3200))) ~ 0.23.
        limit = math.sqrt(6.0 / (2.0 * math.sqrt(FEATURES)))
        alpha = torch.empty(self.batch, FEATURES)
        for b, gen in enumerate(cpu_generators(seeds)):
            self.decoder.init_copy(b, gen)
            alpha[b].uniform_(-limit, limit, generator=gen)
        self.decoder.to(device).train()
        self._decode = self.decoder
        self.alpha = nn.Parameter(alpha.to(device))
        self.noise = _FeatureNoise(seeds, settings.noise_std, device)

    def parameters(self) -> list[torch.Tensor]:
        return [self.alpha, *self.decoder.parameters()]

    def images(self, noise: bool = True) -> torch.Tensor:
        f0 = torch.ones_like(self.alpha)
        if noise and self.noise.std > 0:
            f0 = f0 + self.noise.std * self.noise.draw()
        return self._generate(self.alpha * f0)

    def regulariser(self) -> torch.Tensor:
        s = self.settings
        if s.reg == "none" or s.reg_weight == 0:
            return torch.zeros(self.batch, device=self.alpha.device)
        if s.reg != "l1_gamma":
            raise ValueError(f"the scratch method regularises with l1_gamma or none, not {s.reg}")
        gamma = self.decoder.image_bn.weight.view(self.batch, 3)
        return s.reg_weight * gamma.abs().sum(dim=1)


class PretrainedG(_WithDecoder):
    """The pretrained method: alpha (B x 3200) before a frozen, trained decoder.

    f = relu(alpha * eps) (with `alpha_relu`), eps ~ N(1, noise_std^2) (Keras GaussianDropout),
    alpha init ones (the paper's). With `code_norm`, f = relu(LayerNorm(alpha * eps)) instead: the
    code standardised over its 3200 values, as the autoencoder's encoders end, so that whatever
    alpha becomes the decoder sees a code of its training codes' scale; alpha then starts from
    N(0, 1), each target from its own draw (a constant alpha has no LayerNorm).
    The decoder's BatchNorm uses its running statistics from autoencoder training (eval mode).
    R = reg_weight * sum alpha^2 (l2_sq, Keras' l2) or reg_weight * ||alpha||_2 (l2_norm).
    """

    def __init__(self, settings: MethodSettings, seeds: Sequence[int], decoder: Decoder, device: torch.device) -> None:
        self.settings = settings
        self.batch = len(seeds)
        self.decoder = decoder.to(device).eval()
        self._decode = self.decoder
        for p in self.decoder.parameters():
            p.requires_grad_(False)
        # code_norm: a per-target N(0, 1) start; the paper's: all ones.
        init = (
            per_target(seeds, lambda g: torch.randn(FEATURES, generator=g))
            if settings.code_norm
            else torch.ones(self.batch, FEATURES)
        )
        self.alpha = nn.Parameter(init.to(device))
        self.noise = _FeatureNoise(seeds, settings.noise_std, device)

    def parameters(self) -> list[torch.Tensor]:
        return [self.alpha]

    def code(self, noise: bool = True) -> torch.Tensor:
        """The feature vector f fed to the decoder (B, 3200)."""
        f: torch.Tensor = self.alpha
        if noise and self.noise.std > 0:
            f = f * (1.0 + self.noise.std * self.noise.draw())
        if self.settings.code_norm:
            return torch.relu(nn.functional.layer_norm(f, (FEATURES,)))
        if self.settings.alpha_relu:
            f = torch.relu(f)
        return f

    def images(self, noise: bool = True) -> torch.Tensor:
        return self._generate(self.code(noise))

    def regulariser(self) -> torch.Tensor:
        s = self.settings
        if s.reg == "l2_sq":
            return s.reg_weight * (self.alpha**2).sum(dim=1)
        if s.reg == "l2_norm":
            return s.reg_weight * self.alpha.norm(dim=1)
        if s.reg == "none" or s.reg_weight == 0:
            return torch.zeros(self.batch, device=self.alpha.device)
        raise ValueError(f"the pretrained method regularises with l2_sq, l2_norm or none, not {s.reg}")


class _Image(Parameterisation):
    """A parameterisation of the image itself (no G): `size` x `size` RGB in [0, 1], mapped to D's
    input space by `to_input`."""

    def __init__(
        self,
        settings: MethodSettings,
        seeds: Sequence[int],
        size: int,
        to_input: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        self.settings = settings
        self.batch = len(seeds)
        self.size = size
        self.to_input = to_input  # rgb -> D's input space


class Pixels(_Image):
    """The classic baseline: optimise the pixels (RGB in [0, 1], kept in range after every step),
    with a random shift of up to `jitter` pixels per step and an L2 pull towards grey."""

    def __init__(
        self,
        settings: MethodSettings,
        seeds: Sequence[int],
        size: int,
        to_input: Callable[[torch.Tensor], torch.Tensor],
        device: torch.device,
    ) -> None:
        super().__init__(settings, seeds, size, to_input)
        init = per_target(seeds, lambda g: 0.5 + 0.05 * torch.randn(3, size, size, generator=g))
        self.rgb = nn.Parameter(init.clamp(0, 1).to(device))
        # (dy, dx) of each step's jitter; kept on the CPU, where roll_rows builds its index
        j = settings.jitter
        self.shifts = Draws(
            [s + 1 for s in seeds], lambda n, g: torch.randint(-j, j + 1, (n, 2), generator=g), torch.device("cpu")
        )

    def parameters(self) -> list[torch.Tensor]:
        return [self.rgb]

    def images(self, noise: bool = True) -> torch.Tensor:
        x: torch.Tensor = self.rgb
        j = self.settings.jitter
        if noise and j > 0:
            x = roll_rows(x, self.shifts.next())
        return self.to_input(x)

    def regulariser(self) -> torch.Tensor:
        s = self.settings
        if s.reg == "pixel_l2":
            return s.reg_weight * ((self.rgb - 0.5) ** 2).mean(dim=(1, 2, 3))
        if s.reg == "none" or s.reg_weight == 0:
            return torch.zeros(self.batch, device=self.rgb.device)
        raise ValueError(f"the pixel method regularises with pixel_l2 or none, not {s.reg}")

    @torch.no_grad()
    def after_step(self) -> None:
        self.rgb.clamp_(0.0, 1.0)


# lucid's colour correlation: the square root of ImageNet's RGB covariance (from its SVD), scaled
# so that its largest column has norm 1. A decorrelated image (one independent signal per
# principal colour axis) maps to RGB as rgb = COLOUR @ x per pixel.
_COLOUR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float64)
COLOUR = (_COLOUR_SQRT / _COLOUR_SQRT.norm(dim=0).max()).float()


def recorrelate(x: torch.Tensor) -> torch.Tensor:
    """Decorrelated colour channels (B, 3, H, W) -> RGB-correlated ones (COLOUR @ x per pixel)."""
    return torch.einsum("ij,bjhw->bihw", COLOUR.to(x.device, x.dtype), x)


def decorrelate(x: torch.Tensor) -> torch.Tensor:
    """The inverse of `recorrelate`."""
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(COLOUR.double()).to(x.device, x.dtype), x)


def spectrum_frequencies(h: int, w: int) -> torch.Tensor:
    """|f| (cycles per pixel) of each entry of an `rfft2` spectrum of an h x w image: (h, w // 2 + 1)."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    return (fy**2 + fx**2).sqrt()


def power_law(h: int, w: int, decay: float = 1.0) -> torch.Tensor:
    """lucid's spectrum scale 1 / max(|f|, 1 / max(h, w))^decay, (h, w // 2 + 1): natural images'
    amplitude falls roughly as 1/f, so equal steps in every coefficient give a 1/f image."""
    f = spectrum_frequencies(h, w)
    return (1.0 / f.clamp(min=1.0 / max(h, w)) ** decay).float()


def photo_magnitude(rgb: torch.Tensor, size: int) -> torch.Tensor:
    """The mean amplitude spectrum (3, size, size // 2 + 1) of photos `rgb` (N, 3, H, W) in [0, 1],
    in decorrelated colour (the space the magnitude-constrained image is built in), after resizing
    them to `size` (antialiased) so that each entry is the same frequency as in the image made.

    Each photo is windowed (a 2-D Hann window) before its transform: a photo is not periodic, and
    the jump between its opposite edges would otherwise put a cross of energy on the axes of the
    spectrum, which the image made with that magnitude shows as a grid of stripes."""
    if rgb.shape[-2:] != (size, size):
        shrink = rgb.shape[-1] > size
        rgb = nn.functional.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    x = decorrelate(rgb.double() - rgb.double().mean(dim=(2, 3), keepdim=True))
    hann = torch.hann_window(size, periodic=False, dtype=torch.float64)
    x = x * (hann[:, None] * hann[None, :])
    return torch.fft.rfft2(x, norm="ortho").abs().mean(dim=0).float()


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Each image (B, ...) to mean 0, std 1 over all its values."""
    flat = x.flatten(1)
    mean = flat.mean(dim=1).view(-1, *[1] * (x.dim() - 1))
    std = flat.std(dim=1).view(-1, *[1] * (x.dim() - 1))
    return (x - mean) / (std + 1e-4)


class _Spectral(_Image):
    """Images made in the Fourier domain of decorrelated colour, then RGB = sigmoid(COLOUR @ x)."""

    def _colour(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_input(torch.sigmoid(recorrelate(x)))

    def regulariser(self) -> torch.Tensor:
        s = self.settings
        if s.reg == "none" or s.reg_weight == 0:
            return torch.zeros(self.batch, device=self.parameters()[0].device)
        raise ValueError(f"the {s.method} method regularises with none, not {s.reg}")


class FourierImage(_Spectral):
    """lucid's `fft_image` + `to_valid_rgb`: a complex spectrum per colour channel (the `rfft2`
    layout, init N(0, 0.01^2) per real and imaginary part), scaled by the 1/f law `power_law`,
    `irfft2` (orthonormal), divided by lucid's constant 4, colour-recorrelated, sigmoid to RGB.
    Equal optimiser steps in every coefficient then change the image at every scale alike, which
    is what lets the optimiser find large structures before pixel noise."""

    def __init__(
        self,
        settings: MethodSettings,
        seeds: Sequence[int],
        size: int,
        to_input: Callable[[torch.Tensor], torch.Tensor],
        device: torch.device,
    ) -> None:
        super().__init__(settings, seeds, size, to_input)
        shape = (3, size, size // 2 + 1, 2)
        self.spectrum = nn.Parameter(per_target(seeds, lambda g: 0.01 * torch.randn(shape, generator=g)).to(device))
        self.scale = power_law(size, size, settings.decay).to(device)[None, None, :, :, None]

    def parameters(self) -> list[torch.Tensor]:
        return [self.spectrum]

    def images(self, noise: bool = True) -> torch.Tensor:
        spec = torch.view_as_complex((self.scale * self.spectrum).contiguous())
        x = torch.fft.irfft2(spec, s=(self.size, self.size), norm="ortho") / 4.0
        return self._colour(x)


class MagnitudeFourier(_Spectral):
    """MACO (Fel et al. 2023): the spectrum's magnitude is fixed to that of natural photos, only
    its phase is optimised (init uniform); `irfft2`, each image standardised, colour-recorrelated,
    sigmoid to RGB. The magnitude is `photo_magnitude` of the run's photos, or the 1/f law where
    there are none. Fixing the magnitude keeps the image's energy at every scale where photos have
    it, so the optimiser cannot pour it into the high frequencies an adversarial pattern needs."""

    def __init__(
        self,
        settings: MethodSettings,
        seeds: Sequence[int],
        size: int,
        to_input: Callable[[torch.Tensor], torch.Tensor],
        device: torch.device,
        magnitude: torch.Tensor | None = None,
    ) -> None:
        super().__init__(settings, seeds, size, to_input)
        shape = (3, size, size // 2 + 1)
        if magnitude is None:
            magnitude = power_law(size, size, settings.decay).expand(shape)
        if tuple(magnitude.shape) != shape:
            raise ValueError(f"the magnitude spectrum is {tuple(magnitude.shape)}, the image needs {shape}")
        self.magnitude = magnitude.float().to(device)[None]
        # Uniform phases: every coefficient's phase equally likely. MACO's reference code draws them
        # from N(0, 1), whose mean cosine is exp(-1/2): then every coefficient adds up in phase at
        # the origin, and the image starts with a bright spot of a third of its energy in its
        # corners (the origin of a periodic image), which standardising then leaves the rest of the
        # image too little contrast for.
        self.phase = nn.Parameter(
            per_target(seeds, lambda g: (torch.rand(shape, generator=g) * 2 - 1) * math.pi).to(device)
        )

    def parameters(self) -> list[torch.Tensor]:
        return [self.phase]

    def images(self, noise: bool = True) -> torch.Tensor:
        spec = torch.polar(self.magnitude.expand_as(self.phase), self.phase)
        x = torch.fft.irfft2(spec, s=(self.size, self.size), norm="ortho")
        return self._colour(self.settings.contrast * standardise(x))
