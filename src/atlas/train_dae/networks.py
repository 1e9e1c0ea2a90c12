"""The autoencoder's networks: the encoders E (the thumbnail one and the paper's), the decoder's
geometry, and `Autoencoder` (E followed by `atlas.generator.Decoder`, so that the trained decoder
loads straight into G)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from atlas.errors import AtlasError
from atlas.generator import FEATURES, OUTPUT_SIZE, SEED_SHAPE, Decoder
from atlas.train_dae.config import ENCODERS, check_width

# The authors' encoder: conv channels of the five blocks and the hidden dense layer at width 1.0.
_ENCODER_CHANNELS = (32, 64, 128, 256, 512)
_ENCODER_HIDDEN = 2048
# Side of the thumbnail encoder's thumbnail: 4 x 4 pixels per cell of the decoder's 5 x 5 seed.
_THUMBNAIL = 20
# Where the decoder paints its seed's cells: cell c (row or column, 0..4) is centred on output pixel
# 64 c - 33.5 (as `decoder_cell_centres` finds; the five "valid" convs crop 1.5 cells, the
# even-kernel "same" convs pad one side more), so the 224-pixel image spans cells 0.53..4.03 and
# cell 0 lies mostly outside it. The thumbnail encoder pads the image by these many pixels
# (before, after) to 320 = 5 x 64 so that its cell c covers the pixels that decoder cell c paints.
_CELL_PIXELS = 64
_THUMBNAIL_PAD = (66, 30)
# Initial gamma of the decoder's image-layer BatchNorm (see Autoencoder).
_IMAGE_GAMMA = 0.1


def encoder_channels(width: float) -> list[int]:
    """Conv channels of E's five blocks for a width multiplier (1.0: 32, 64, 128, 256, 512)."""
    check_width(width)
    return [max(1, round(c * width)) for c in _ENCODER_CHANNELS]


class _Code(nn.Module):
    """The end of both encoders: each image's 3200 values standardised over its own units (a
    LayerNorm without affine), then a ReLU. The pretrained method feeds the decoder
    relu(alpha * eps), non-negative and near 1 at the start, so the decoder is trained on
    non-negative codes of about that scale, the region the generation starts in and can reach.
    Per image, not per batch: with a BatchNorm here an image's code would depend on the other
    images of its batch, and training is slower."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(FEATURES, elementwise_affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(x.flatten(1)))


class Encoder(nn.Module):
    """The paper's E: (B, 3, 224, 224) noisy image -> (B, 3200) feature vector (`--encoder paper`).

    Each block is conv 3x3 (same) -> ReLU -> BatchNorm -> max-pool 2 (the decoder's conv -> ReLU
    -> BN order), so 224 -> 112 -> 56 -> 28 -> 14 -> 7; then dense `hidden` (ReLU), dense 3200 and
    `_Code`.
    """

    def __init__(self, width: float = 1.0, hidden: int = _ENCODER_HIDDEN, size: int = OUTPUT_SIZE) -> None:
        super().__init__()
        chans = encoder_channels(width)
        layers: list[nn.Module] = []
        cin = 3
        for cout in chans:
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(cout), nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        side = size // 2 ** len(chans)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cin * side * side, hidden),
            nn.ReLU(),
            nn.Linear(hidden, FEATURES),
            _Code(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ThumbnailEncoder(nn.Module):
    """The default E (`--encoder thumbnail`): a fixed 20 x 20 average-pooled thumbnail of the noisy
    image, cut into the decoder's 5 x 5 grid (each cell's 4 x 4 pixels x 3 colours = 48 values),
    mapped per cell by one learned 1 x 1 conv to the 128 channels of the decoder's seed, then `_Code`.

    The grid is the decoder's own: the image is padded (replicating its border) by `_THUMBNAIL_PAD`
    to 5 x 64 pixels, so code cell (i, j) describes the 64-pixel square that the decoder paints from
    seed cell (i, j) (`decoder_cell_centres`). The decoder then only has to learn to paint each
    cell's thumbnail where it lies, a local rule that carries over to photos it never saw; an
    encoder whose cells tile the image evenly, or a dense one, leaves it a non-local remapping to
    learn. E costs almost nothing next to the decoder. Only E differs from the paper.
    """

    def __init__(self) -> None:
        super().__init__()
        self.cell = _THUMBNAIL // SEED_SHAPE[1]
        self.mix = nn.Conv2d(3 * self.cell**2, SEED_SHAPE[0], 1)
        self.code = _Code()

    @staticmethod
    def cell_centres() -> list[float]:
        """Pixel column (of the 224-pixel input) on which each of the code's 5 cell columns is centred."""
        return [(c + 0.5) * _CELL_PIXELS - _THUMBNAIL_PAD[0] for c in range(SEED_SHAPE[2])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = (round(p * x.shape[-1] / OUTPUT_SIZE) for p in _THUMBNAIL_PAD)
        x = F.pad(x, (lo, hi, lo, hi), mode="replicate")
        thumb = F.adaptive_avg_pool2d(x, _THUMBNAIL)
        return self.code(self.mix(F.pixel_unshuffle(thumb, self.cell)))


def decoder_cell_centres(decoder: Decoder) -> list[float]:
    """Output column on which the decoder centres each of its seed's 5 cell columns.

    Geometry only: a copy of `decoder` whose convs average their window (weights 1/n, no bias,
    BatchNorm as identity) runs on a seed 9 cells wide (the layers are convolutional, so a wider
    seed gives a wider image with the same cell -> pixel map), one seed column at a time set to 1;
    a column's centre is the middle of the output columns it reaches. Cells whose reach the image
    border cuts are placed by the uncut cells' spacing."""
    probe = Decoder(decoder.width).eval()
    wide = 9
    with torch.no_grad():
        for block in probe.conv_blocks():
            assert block.conv.bias is not None
            block.conv.weight.fill_(1.0 / block.conv.weight[0].numel())
            block.conv.bias.zero_()
        base = probe.layers(torch.zeros(1, SEED_SHAPE[0], SEED_SHAPE[1], wide))[0, 0].mean(0)
        uncut: dict[int, float] = {}
        for c in range(wide):
            seed = torch.zeros(1, SEED_SHAPE[0], SEED_SHAPE[1], wide)
            seed[0, :, :, c] = 1.0
            column = probe.layers(seed)[0, 0].mean(0) - base
            idx = torch.nonzero(column.abs() > 1e-6).flatten()
            lo, hi = int(idx.min()), int(idx.max())
            if lo > 0 and hi < len(column) - 1:
                uncut[c] = (lo + hi) / 2
    first, last = min(uncut), max(uncut)
    step = (uncut[last] - uncut[first]) / (last - first)
    return [uncut[first] + step * (c - first) for c in range(SEED_SHAPE[2])]


def make_encoder(kind: str, width: float) -> nn.Module:
    if kind == "thumbnail":
        return ThumbnailEncoder()
    if kind == "paper":
        return Encoder(width, hidden=max(1, round(_ENCODER_HIDDEN * width)))
    raise AtlasError(f"unknown encoder {kind!r}; use one of {', '.join(ENCODERS)}")


class Autoencoder(nn.Module):
    """E followed by the decoder (`atlas.generator.Decoder`, so its weights load straight into G)."""

    def __init__(self, width: float, seed: int = 0, encoder: str = "thumbnail") -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = make_encoder(encoder, width)
        self.decoder = Decoder(width)
        # The decoder starts as the authors' Keras layers did (Glorot uniform, zero bias).
        self.decoder.init_copy(0, torch.Generator().manual_seed(seed))
        # ...except the scale of the image layer's BatchNorm, which starts small: at gamma = 1
        # every output channel starts with unit variance around 0, far more than the images'
        # (~0.25 in a classifier's normalised space), and the first epochs would go into undoing it.
        with torch.no_grad():
            self.decoder.image_bn.weight.fill_(_IMAGE_GAMMA)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
