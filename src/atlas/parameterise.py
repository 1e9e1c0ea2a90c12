"""What is optimised, for a chunk of B targets at once: a parameterisation makes B images.

- `ScratchG`: B independent generators (all of G incl. alpha trained), batched as grouped convs;
- `PretrainedG`: a B x 3200 alpha in front of one frozen, trained decoder;
- `Pixels`: the B images' pixels directly (the classic baseline).

Each target draws its initial values and its noise from its own `torch.Generator`, seeded by the
target alone, so an image does not depend on which chunk it ran in. Images are in D's normalised
input space (DESIGN.md §2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from atlas.generator import FEATURES, Decoder
from atlas.methods import MethodSettings
from atlas.runtime import Runtime


def _cpu_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per target, seeded by the target alone (the draws are then the same
    whichever device the target runs on)."""
    gens = []
    for s in seeds:
        g = torch.Generator()
        g.manual_seed(int(s))
        gens.append(g)
    return gens


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
        self.decoder.to(memory_format=runtime.memory_format())
        self._decode = torch.compile(self.decoder) if runtime.compile else self.decoder

    def _generate(self, f: torch.Tensor) -> torch.Tensor:
        # G runs in fp32 also under bf16 autocast (only D runs in bf16). Measured (README,
        # "Benchmarks"; tests/test_runtime.py): in bf16, the scratch G's BatchNorm over a single
        # image turned the rounding of nearly constant channels into noise and lost its targets,
        # and the pretrained G's backward cancels enough to err by a third of a step; with G in
        # fp32 and D in bf16 the images stay within one 8-bit level of fp32's.
        with torch.autocast(f.device.type, enabled=False):
            return self._decode(f.float())


class _Draws:
    """Each step's random draws of a chunk, row b from target b's own CPU generator.

    They are drawn BLOCK steps at a time and go to the device as one (B, BLOCK, ...) tensor: a
    step then costs one indexing instead of B draws (B kernel launches a step on a GPU), and the
    draws are the same on every device. BLOCK draws at once give the same numbers as BLOCK single
    draws (tested), so the images do not depend on BLOCK.
    """

    BLOCK = 16

    def __init__(
        self, seeds: Sequence[int], draw: Callable[[int, torch.Generator], torch.Tensor], device: torch.device
    ) -> None:
        self.gens = _cpu_generators(seeds)
        self._draw = draw  # (n, generator) -> n steps' draws of one target
        self.device = device
        self._block: torch.Tensor | None = None
        self._next = 0

    def next(self) -> torch.Tensor:
        if self._block is None or self._next == self._block.shape[1]:
            block = torch.stack([self._draw(self.BLOCK, g) for g in self.gens])
            self._block = block.to(self.device, non_blocking=True)
            self._next = 0
        self._next += 1
        return self._block[:, self._next - 1]


class _FeatureNoise:
    """Per-target noise on the constant input f0 = 1, drawn afresh at every step."""

    def __init__(self, seeds: Sequence[int], std: float, device: torch.device) -> None:
        self.std = std
        self.draws = _Draws(seeds, lambda n, g: torch.randn(n, FEATURES, generator=g), device)

    def draw(self) -> torch.Tensor:
        """(B, 3200) standard normal draws, row b from target b's generator."""
        return self.draws.next()


class ScratchG(_WithDecoder):
    """The scratch method: B randomly initialised generators, every weight trained (incl. alpha).

    f = alpha * (f0 + eps), eps ~ N(0, noise_std^2) (Keras GaussianNoise before the alpha layer);
    G's BatchNorm runs in train mode (each image's own statistics), also when rendering: the
    image is rendered the way it was optimised (DESIGN.md §2 measured p = 0.01 otherwise).
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
        for b, gen in enumerate(_cpu_generators(seeds)):
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
    """The pretrained method: alpha (B x 3200, init ones) before a frozen, trained decoder.

    f = relu(alpha * eps) (with `alpha_relu`), eps ~ N(1, noise_std^2) (Keras GaussianDropout);
    the decoder's BatchNorm uses its running statistics from autoencoder training (eval mode).
    R = reg_weight * sum alpha^2 (l2_sq, Keras' l2) or reg_weight * ||alpha||_2 (l2_norm).
    """

    def __init__(self, settings: MethodSettings, seeds: Sequence[int], decoder: Decoder, device: torch.device) -> None:
        self.settings = settings
        self.batch = len(seeds)
        self.decoder = decoder.to(device).eval()
        self._decode = self.decoder
        for p in self.decoder.parameters():
            p.requires_grad_(False)
        self.alpha = nn.Parameter(torch.ones(self.batch, FEATURES, device=device))
        self.noise = _FeatureNoise(seeds, settings.noise_std, device)

    def parameters(self) -> list[torch.Tensor]:
        return [self.alpha]

    def images(self, noise: bool = True) -> torch.Tensor:
        f = self.alpha
        if noise and self.noise.std > 0:
            f = f * (1.0 + self.noise.std * self.noise.draw())
        if self.settings.alpha_relu:
            f = torch.relu(f)
        return self._generate(f)

    def regulariser(self) -> torch.Tensor:
        s = self.settings
        if s.reg == "l2_sq":
            return s.reg_weight * (self.alpha**2).sum(dim=1)
        if s.reg == "l2_norm":
            return s.reg_weight * self.alpha.norm(dim=1)
        if s.reg == "none" or s.reg_weight == 0:
            return torch.zeros(self.batch, device=self.alpha.device)
        raise ValueError(f"the pretrained method regularises with l2_sq, l2_norm or none, not {s.reg}")


class Pixels(Parameterisation):
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
        self.settings = settings
        self.batch = len(seeds)
        self.size = size
        self.to_input = to_input  # rgb -> D's input space
        init = torch.empty(self.batch, 3, size, size)
        for b, gen in enumerate(_cpu_generators(seeds)):
            init[b] = 0.5 + 0.05 * torch.randn(3, size, size, generator=gen)
        self.rgb = nn.Parameter(init.clamp(0, 1).to(device))
        # (dy, dx) of each step's jitter; kept on the CPU, where roll_rows builds its index
        j = settings.jitter
        self.shifts = _Draws(
            [s + 1 for s in seeds], lambda n, g: torch.randint(-j, j + 1, (n, 2), generator=g), torch.device("cpu")
        )

    def parameters(self) -> list[torch.Tensor]:
        return [self.rgb]

    def images(self, noise: bool = True) -> torch.Tensor:
        x = self.rgb
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

