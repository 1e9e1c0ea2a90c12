"""The generator G of Despraz et al. (2017), as the authors' code ran it
(docs/design.md, "The generator").

    input 3200 -> noise -> alpha (elementwise) -> reshape 128x5x5
    up x2 -> 10   conv 512 k2 valid -> 9    BN   conv 512 k2 same -> 9    BN
    up x2 -> 18   conv 256 k3 valid -> 16   BN   conv 256 k3 same -> 16   BN
    up x2 -> 32   conv 256 k3 valid -> 30   BN   conv 256 k3 same -> 30   BN
    up x2 -> 60   conv 128 k3 valid -> 58   BN   conv 128 k3 same -> 58   BN
    up x2 -> 116  conv 128 k4 valid -> 113  BN   conv 128 k4 same -> 113  BN
    up x2 -> 226  conv 3   k3 valid -> 224  BN  ("image" layer)

Every conv is followed by a ReLU, then BatchNorm; upsampling is nearest-neighbour.

`Decoder` is everything after the alpha layer: it is also the decoder of the denoising
autoencoder, so a trained decoder loads straight into G.

Batching: `Decoder(copies=B)` holds B independent decoders as one network of grouped convolutions
(every layer's channels times B, `groups=B`) run on a batch of one. Group b only ever sees its own
channels, and BatchNorm over a batch of one normalises each channel with its own image's
statistics, so copy b computes exactly what a lone decoder with copy b's weights would (up to
float rounding). This is how the scratch method optimises a chunk of targets, each with its own G,
as one computation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from atlas.errors import AtlasError

FEATURES = 3200  # m in the paper's Eq. 1
SEED_SHAPE = (128, 5, 5)  # FEATURES reshaped
OUTPUT_SIZE = 224
DECODER_FORMAT = "atlas-decoder/1"
BN_EPS = 1e-3

# (out_channels, kernel) of the two convs of each upsampling block, then the image layer.
_BLOCKS: tuple[tuple[int, int], ...] = ((512, 2), (256, 3), (256, 3), (128, 3), (128, 4))
_IMAGE_KERNEL = 3


def block_channels(width: float) -> list[int]:
    """Channels of each of the five blocks for a width multiplier (1.0 is the paper's G)."""
    if not (0 < width <= 4):
        raise AtlasError(f"generator width {width} is out of range; use a multiplier in (0, 4], 1.0 is the paper's")
    return [max(1, round(c * width)) for c, _ in _BLOCKS]


def _glorot_uniform_(weight: torch.Tensor, fan_in: int, fan_out: int, gen: torch.Generator) -> None:
    # Keras' default kernel initialiser (glorot_uniform), which the authors' G used.
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        weight.uniform_(-limit, limit, generator=gen)


class _ConvBN(nn.Module):
    """conv -> ReLU -> BatchNorm, for `copies` independent decoders at once (grouped conv)."""

    def __init__(self, cin: int, cout: int, kernel: int, padding: str, copies: int) -> None:
        super().__init__()
        self.cin, self.cout, self.kernel, self.copies = cin, cout, kernel, copies
        # Keras/TF "same" pads (k-1)//2 before and the rest after, also for even kernels.
        lo = (kernel - 1) // 2
        hi = kernel - 1 - lo
        self.pad = nn.ZeroPad2d((lo, hi, lo, hi)) if padding == "same" else nn.Identity()
        self.conv = nn.Conv2d(cin * copies, cout * copies, kernel, groups=copies)
        # Keras' BatchNormalization (the authors') uses epsilon 1e-3, not PyTorch's 1e-5: on a batch
        # of one image, a nearly constant channel divided by sqrt(var + eps) amplifies rounding.
        self.bn = nn.BatchNorm2d(cout * copies, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(torch.relu(self.conv(self.pad(x))))

    def init_copy(self, b: int, gen: torch.Generator) -> None:
        """Initialise copy b exactly as a lone Keras layer: Glorot kernel, zero bias, BN (1, 0)."""
        sl = slice(b * self.cout, (b + 1) * self.cout)
        k2 = self.kernel * self.kernel
        w = torch.empty(self.cout, self.cin, self.kernel, self.kernel)
        _glorot_uniform_(w, self.cin * k2, self.cout * k2, gen)
        with torch.no_grad():
            assert self.conv.bias is not None
            self.conv.weight[sl] = w.to(self.conv.weight)
            self.conv.bias[sl] = 0.0
            self.bn.weight[sl] = 1.0
            self.bn.bias[sl] = 0.0


class Decoder(nn.Module):
    """G after the alpha layer: (B, 3200) features -> (B, 3, 224, 224) image in D's input space."""

    def __init__(self, width: float = 1.0, copies: int = 1) -> None:
        super().__init__()
        self.width = float(width)
        self.copies = int(copies)
        chans = block_channels(width)
        layers: list[nn.Module] = []
        cin = SEED_SHAPE[0]
        for cout, (_, k) in zip(chans, _BLOCKS, strict=True):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                _ConvBN(cin, cout, k, "valid", copies),
                _ConvBN(cout, cout, k, "same", copies),
            ]
            cin = cout
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), _ConvBN(cin, 3, _IMAGE_KERNEL, "valid", copies)]
        self.layers = nn.Sequential(*layers)

    @property
    def image_bn(self) -> nn.BatchNorm2d:
        """The final ("image") BatchNorm, whose gammas the scratch method regularises."""
        bn = self.layers[-1].bn
        assert isinstance(bn, nn.BatchNorm2d)
        return bn

    def conv_blocks(self) -> list[_ConvBN]:
        return [m for m in self.layers if isinstance(m, _ConvBN)]

    def init_copy(self, b: int, gen: torch.Generator) -> None:
        for block in self.conv_blocks():
            block.init_copy(b, gen)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        batch = f.shape[0]
        if self.copies == 1:
            x = f.reshape(batch, *SEED_SHAPE)
            return self.layers(x)
        if batch != self.copies:
            raise ValueError(f"a decoder of {self.copies} copies takes {self.copies} feature vectors, got {batch}")
        # Copies side by side in the channel dimension of a batch of one (see module docstring).
        x = f.reshape(1, batch * SEED_SHAPE[0], *SEED_SHAPE[1:])
        y = self.layers(x)
        return y.reshape(batch, 3, *y.shape[-2:])

    def copy_state(self, b: int) -> dict[str, torch.Tensor]:
        """The state dict of copy b as a lone (copies=1) decoder."""
        out: dict[str, torch.Tensor] = {}
        for name, t in self.state_dict().items():
            if t.dim() == 0:  # num_batches_tracked
                out[name] = t.clone()
                continue
            n = t.shape[0] // self.copies
            out[name] = t[b * n : (b + 1) * n].clone()
        return out

    def load_copy_state(self, b: int, state: dict[str, torch.Tensor]) -> None:
        """Load a lone decoder's state dict into copy b."""
        own = self.state_dict()
        with torch.no_grad():
            for name, t in own.items():
                if t.dim() == 0:
                    continue
                n = t.shape[0] // self.copies
                t[b * n : (b + 1) * n] = state[name].to(t)


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@dataclass(frozen=True)
class DecoderFile:
    """A decoder checkpoint: its weights and the width it was built with."""

    width: float
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, object]


def save_decoder(decoder: Decoder, path: str, meta: dict[str, object] | None = None) -> None:
    """Save a lone decoder so that `torch.load(path, weights_only=True)` reads it."""
    from atlas.io import save_torch

    if decoder.copies != 1:
        raise ValueError("save a lone decoder (copies=1)")
    state = {k: v.detach().cpu() for k, v in decoder.state_dict().items()}
    save_torch({"format": DECODER_FORMAT, "width": decoder.width, "state_dict": state, "meta": dict(meta or {})}, path)


def load_decoder(path: str) -> Decoder:
    """Load a decoder file from `atlas train-dae`; refuse anything else with a clear message."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise AtlasError(
            f"decoder file {path} does not exist; train one with `atlas train-dae` or pass --decoder random"
        )
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise AtlasError(
            f"cannot read decoder file {path} ({type(exc).__name__}); it must come from `atlas train-dae`"
        ) from exc
    if not isinstance(blob, dict) or blob.get("format") != DECODER_FORMAT:
        raise AtlasError(
            f"{path} is not an Atlas decoder file (format {DECODER_FORMAT}); it must come from `atlas train-dae`"
        )
    width = float(blob["width"])
    decoder = Decoder(width=width, copies=1)
    try:
        decoder.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise AtlasError(f"decoder file {path} does not fit the generator (width {width}): {first}") from exc
    return decoder
