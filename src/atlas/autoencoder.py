"""`atlas train-dae`: the denoising autoencoder whose decoder becomes G of the pretrained method.

Paper Fig. 3 and DESIGN.md §2: an encoder E maps a noisy image to a 3200-d feature vector, and the
decoder, which is exactly `atlas.generator.Decoder` (G after the alpha layer), maps it back. The loss
is the MSE between the clean image and the reconstruction. Only the decoder is kept (`decoder.pt`,
read by `atlas generate --method pretrained --decoder PATH`). E is not part of G, so it is ours to
choose: the default `--encoder thumbnail` (`ThumbnailEncoder`) hands the decoder a 20 x 20 thumbnail
laid out on the decoder's own 5 x 5 grid; `--encoder paper` is the authors' (five conv blocks
32->64->128->256->512, each pooled, then dense 2048 and dense 3200).

Image space. The decoder feeds the classifier D directly (G never knows D's mean/std), so it is
trained to output images in D's normalised input space: the clean target is
`(rgb - mean) / std` with `atlas.classifier.normalisation(--classifier)`, and the classifier's name,
mean and std are written into the decoder file's meta. Every MSE reported (training, validation,
mean-image baseline) is in that space. The noise is added in RGB units (rgb in [0, 1]) before
normalising, so `--noise-std` means the same for every classifier. The decoder always outputs
224 x 224; dataset images of another size are resized to 224 (bilinear, antialiased).

Augmentation (`--augment`, on by default: the bundled set is ~40 photos): every training image is
a random square crop of 80-100 % of its side (resized back to 224, bilinear) flipped horizontally
with probability 1/2, drawn afresh each epoch. Validation images are never augmented.

Defaults are for the embedded CPU run on a 2-core CPU (`atlas extract --source bundled`: 315 train
/ 36 val rows at 224 px): the thumbnail encoder, width 0.0625, Adam lr 3e-3 with a cosine decay to
0, batch 8, 40 epochs, noise std 0.1 (README, "Autoencoder": validation ratio 0.37, 239 CPU-s).
Measured there (validation MSE over the MSE of the mean training image, "ratio", lower is better):
- the decoder paints seed cell c around output pixel 64 c - 33.5 (`decoder_cell_centres`), so the
  224 pixels span only cells 0.5..4; an encoder whose cells tile the image evenly (or a dense one,
  which must learn the layout) leaves the decoder a non-local remapping to learn. Aligning the
  thumbnail's cells with the painted ones was the one change that mattered: ratio 0.60 instead of
  0.68-0.74 after 3 epochs;
- before that, every variant followed nearly the same curve per epoch (~0.66 after 15 epochs,
  ~0.60 after 31 at 224 px): widths 0.0625 / 0.125 / 0.25, hidden 256 or 2048, max or average
  pooling, a conv head, with and without augmentation, a multi-scale loss, a one-cycle schedule to
  lr 1e-2 (worse: 0.74 after 9 of 12 epochs), positive initial conv biases (no change), random
  colour-channel permutations (0.63 -> 0.62, but the decoder then lost the photos' colour balance:
  blue too high, orange shown pink). A dataset extracted at 64 px gives lower ratios still (the
  decoder reproduces little detail finer than its seed's grid): 0.39 after 6 epochs;
- Adam lr 3e-3 at batch 8 beat lr 1e-3 at batch 16, lr 1e-2, batch 4, SGD (Nesterov, lr 0.05)
  and the authors' Adadelta lr 1.0, which all learned more slowly over 15 epochs.
The authors' settings are their encoder, width 1.0, Adadelta lr 1.0, batch 24, 400 epochs on the
ImageNet dog images (`--paper`).

Restartable: `checkpoint.pt` is written (atomically) after every epoch with E's and the decoder's
weights, the optimiser state, the epoch, the config, every RNG state and the loss history. Run
again with the same arguments, training resumes after the last finished epoch; a finished run does
nothing. Different arguments are refused (delete the folder to start over).

Outputs in `--out`: `decoder.pt`, `checkpoint.pt`, `losses.parquet`, `losses.png`,
`reconstructions.png` and `train.json` (written last: its presence means the run finished).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from atlas import __version__
from atlas.errors import AtlasError
from atlas.generator import DECODER_FORMAT, FEATURES, OUTPUT_SIZE, SEED_SHAPE, Decoder, count_trainable, save_decoder
from atlas.io import atomic_path, save_torch, write_parquet, write_text

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
DECODER = "decoder.pt"
LOSSES = "losses.parquet"
LOSSES_PNG = "losses.png"
RECONSTRUCTIONS_PNG = "reconstructions.png"
TRAIN_JSON = "train.json"
OUTPUTS = (CHECKPOINT, DECODER, LOSSES, LOSSES_PNG, RECONSTRUCTIONS_PNG, TRAIN_JSON)
CHECKPOINT_FORMAT = "atlas-dae-checkpoint/1"

# Encoder: conv channels of the five blocks and the hidden dense layer at width 1.0 (DESIGN.md §2).
_ENCODER_CHANNELS = (32, 64, 128, 256, 512)
_ENCODER_HIDDEN = 2048
ENCODERS = ("thumbnail", "paper")
# Side of the thumbnail encoder's thumbnail: 4 x 4 pixels per cell of the decoder's 5 x 5 seed.
_THUMBNAIL = 20
# Where the decoder paints its seed's cells: cell c (row or column, 0..4) is centred on output pixel
# 64 c - 33.5 (measured with `decoder_cell_centres`; the five "valid" convs crop 1.5 cells, the
# even-kernel "same" convs pad one side more), so the 224-pixel image spans cells 0.53..4.03 and
# cell 0 lies mostly outside it. The thumbnail encoder pads the image by these many pixels
# (before, after) to 320 = 5 x 64 so that its cell c covers the pixels that decoder cell c paints.
_CELL_PIXELS = 64
_THUMBNAIL_PAD = (66, 30)
# Smallest random crop, as a fraction of the image side: the dataset's own crops already go down
# to 50 %, so on-the-fly crops only need to vary the framing a little.
_CROP_MIN = 0.8
# Columns of losses.parquet, in order.
LOSS_COLUMNS = ("epoch", "train_mse", "val_mse", "mean_image_val_mse", "seconds")
OPTIMISERS = ("adam", "adadelta", "sgd")
SCHEDULES = ("cosine", "constant")
# Validation images shown in reconstructions.png.
_SHOWN = 8
# Initial gamma of the decoder's image-layer BatchNorm (see Autoencoder).
_IMAGE_GAMMA = 0.1


# --------------------------------------------------------------------------------------------
# Networks


def encoder_channels(width: float) -> list[int]:
    """Conv channels of E's five blocks for a width multiplier (1.0: 32, 64, 128, 256, 512)."""
    if not (0 < width <= 4):
        raise AtlasError(f"autoencoder width {width} is out of range; use a multiplier in (0, 4], 1.0 is the paper's")
    return [max(1, round(c * width)) for c in _ENCODER_CHANNELS]


class _Code(nn.Module):
    """The end of both encoders: each image's 3200 values standardised over its own units (a
    LayerNorm without affine), then a ReLU. The pretrained method feeds the decoder
    relu(alpha * eps), non-negative and near 1 at the start, so the decoder is trained on
    non-negative codes of about that scale, the region the generation starts in and can reach.
    Per image, not per batch: with a BatchNorm here (the first version) an image's code depended
    on the 7 other images of its batch, and training was measured slower (ratio 0.66 -> 0.63 after
    12 epochs with the thumbnail encoder, 0.73 -> 0.71 after 5 with the paper's)."""

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
    cell's thumbnail where it lies, a local rule that carries over to photos it never saw. E costs
    almost nothing, so an epoch takes ~2/3 of the paper's E's time. Only E differs from the paper.
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
        # (~0.25 in a classifier's normalised space), and the first epochs went into undoing it
        # (measured: train MSE 0.84 instead of 0.21 after epoch 1 of the bundled set).
        with torch.no_grad():
            self.decoder.image_bn.weight.fill_(_IMAGE_GAMMA)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the result of a training run; a resume must match it exactly."""

    data: str  # the dataset folder (informational; `data_fingerprint` is what must match)
    data_fingerprint: str
    classifier: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    encoder: str = "thumbnail"
    width: float = 0.0625
    epochs: int = 40
    batch_size: int = 8
    optimiser: str = "adam"
    lr: float = 3e-3
    noise_std: float = 0.1
    augment: bool = True
    schedule: str = "cosine"
    seed: int = 0
    # Weight of the perceptual term: the classifier's features of the reconstruction against those
    # of the clean image, each layer's squared error over its features' mean square (0: MSE alone,
    # as the paper). The paper blames MSE for its decoder's blur; D's features reward the edges and
    # textures D reads.
    perceptual: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def check(self) -> None:
        if self.epochs < 1:
            raise AtlasError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            raise AtlasError(f"--batch-size must be at least 2 (BatchNorm needs two images), got {self.batch_size}")
        if self.encoder not in ENCODERS:
            raise AtlasError(f"unknown encoder {self.encoder!r}; use one of {', '.join(ENCODERS)}")
        if self.optimiser not in OPTIMISERS:
            raise AtlasError(f"unknown optimiser {self.optimiser!r}; use one of {', '.join(OPTIMISERS)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise AtlasError(f"--lr must be a positive number, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise AtlasError(f"unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        if not (self.noise_std >= 0 and math.isfinite(self.noise_std)):
            raise AtlasError(f"--noise-std must be a non-negative number, got {self.noise_std}")
        if not (self.perceptual >= 0 and math.isfinite(self.perceptual)):
            raise AtlasError(f"--perceptual must be a non-negative number, got {self.perceptual}")
        encoder_channels(self.width)


# Fields that change nothing in the result, so a resume may differ in them.
_NOT_COMPARED = ("data",)


def _differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    out = []
    for f in fields(TrainConfig):
        if f.name in _NOT_COMPARED:
            continue
        if saved.get(f.name) != now.get(f.name):
            out.append(f"{f.name} {saved.get(f.name)!r} there, {now.get(f.name)!r} now")
    return out


def _make_optimiser(cfg: TrainConfig, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimiser == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    if cfg.optimiser == "adadelta":
        # Keras 1's Adadelta defaults, which the authors trained with (rho 0.95, eps 1e-8).
        return torch.optim.Adadelta(params, lr=cfg.lr, rho=0.95, eps=1e-8)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True)


# --------------------------------------------------------------------------------------------
# Data


class _Images:
    """One split of the dataset as batches of float RGB in [0, 1], (B, 3, 224, 224), on `device`.

    Rows are read from the memory-mapped array batch by batch (sorted, so reads are sequential),
    so a dataset far larger than memory trains as well as the bundled one.
    """

    def __init__(self, images: np.ndarray, rows: np.ndarray, device: torch.device) -> None:
        self.images = images
        self.rows = rows
        self.device = device

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, positions: np.ndarray) -> torch.Tensor:
        """RGB of the split's rows at `positions` (in that order)."""
        rows = self.rows[positions]
        order = np.argsort(rows, kind="stable")
        block = np.empty((len(rows), *self.images.shape[1:]), dtype=np.uint8)
        block[order] = self.images[rows[order]]
        x = torch.from_numpy(block).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-1] != OUTPUT_SIZE:
            x = F.interpolate(x, size=(OUTPUT_SIZE, OUTPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
        return x.contiguous(memory_format=torch.channels_last)

    def batches(self, batch_size: int, order: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        order = np.arange(len(self)) if order is None else order
        for start in range(0, len(order), batch_size):
            pos = order[start : start + batch_size]
            yield pos, self.load(pos)


def _fingerprint(directory: Path, images: np.ndarray) -> str:
    """What identifies the dataset's content: the sha256 that `atlas extract` recorded, and the shape."""
    from atlas.data import IMAGES_FILE, recorded_sha256
    from atlas.io import sha256_file

    sha = recorded_sha256(directory) or sha256_file(directory / IMAGES_FILE)
    return f"{'x'.join(str(s) for s in images.shape)}:{sha}"


def _random_crops(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random square crop (side `_CROP_MIN`-100 %) of each image, resized back to its size,
    flipped horizontally with probability 1/2. One affine resampling, batched."""
    b = x.shape[0]
    u = torch.rand(b, 4, generator=gen)
    scale = _CROP_MIN + (1.0 - _CROP_MIN) * u[:, 0]
    # In grid_sample's [-1, 1] coordinates a crop of relative side s may move by up to 1 - s.
    tx = (2 * u[:, 1] - 1) * (1 - scale)
    ty = (2 * u[:, 2] - 1) * (1 - scale)
    flip = torch.where(u[:, 3] < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = scale
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# --------------------------------------------------------------------------------------------
# RNG state (so that a resumed run draws what an uninterrupted one would)


def _rng_state(gens: dict[str, torch.Generator]) -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "device_type": gens["device"].device.type,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # Plain ints and lists, so that the checkpoint loads with weights_only=True.
        "numpy": [np_state[0], [int(v) for v in np_state[1]], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "generators": {name: g.get_state() for name, g in gens.items()},
    }


def _set_rng_state(state: dict[str, Any], gens: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    gens["cpu"].set_state(state["generators"]["cpu"])
    if state["device_type"] == gens["device"].device.type:
        gens["device"].set_state(state["generators"]["device"])
    else:
        # A CPU generator's state does not fit a CUDA one: the run goes on, with other noise draws.
        log.warning(
            "the checkpoint was written on %s, this run is on %s: the input noise continues from a fresh "
            "seed, so the result will differ slightly from an uninterrupted run", state["device_type"],
            gens["device"].device.type,
        )
        gens["device"].manual_seed(gens["device"].initial_seed() + 1)


# --------------------------------------------------------------------------------------------
# Training


@dataclass
class _Run:
    """The state a checkpoint holds."""

    model: Autoencoder
    optimiser: torch.optim.Optimizer
    gens: dict[str, torch.Generator]
    history: list[dict[str, float]]
    epoch: int = 0  # epochs finished


def _save_checkpoint(run: _Run, cfg: TrainConfig, path: Path) -> None:
    save_torch(
        {
            "format": CHECKPOINT_FORMAT,
            "epoch": run.epoch,
            "config": cfg.as_dict(),
            "encoder": {k: v.detach().cpu() for k, v in run.model.encoder.state_dict().items()},
            "decoder": {k: v.detach().cpu() for k, v in run.model.decoder.state_dict().items()},
            "optimiser": run.optimiser.state_dict(),
            "rng": _rng_state(run.gens),
            "history": run.history,
            "atlas": __version__,
        },
        path,
    )


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise AtlasError(
            f"cannot read {path} ({type(exc).__name__}); delete {path.parent} to start the training over"
        ) from exc
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise AtlasError(f"{path} is not an `atlas train-dae` checkpoint; delete {path.parent} or choose another --out")
    return blob


def _normaliser(cfg: TrainConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(cfg.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, device=device).view(1, 3, 1, 1)
    return mean, std


@torch.no_grad()
def _mean_image(train: _Images, cfg: TrainConfig, device: torch.device) -> torch.Tensor:
    """Mean training image (no augmentation) in the normalised space, (1, 3, 224, 224)."""
    mean, std = _normaliser(cfg, device)
    total = torch.zeros(1, 3, OUTPUT_SIZE, OUTPUT_SIZE, dtype=torch.float64, device=device)
    for _, x in train.batches(max(cfg.batch_size, 64)):
        total += ((x - mean) / std).sum(0, keepdim=True, dtype=torch.float64)
    return (total / len(train)).float()


@torch.no_grad()
def _evaluate(
    model: Autoencoder, val: _Images, cfg: TrainConfig, device: torch.device, mean_image: torch.Tensor | None = None
) -> dict[str, float]:
    """Validation MSEs (normalised space, per pixel and channel), BatchNorm on running statistics
    as the pretrained method uses the decoder. The noise is the same at every call (seeded), so
    epochs are comparable. Returns val_mse (noisy input), val_mse_clean_input and, with a mean
    image, mean_image_val_mse."""
    was_training = model.training
    model.eval()
    mean, std = _normaliser(cfg, device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    sums = {"val_mse": 0.0, "val_mse_clean_input": 0.0, "mean_image_val_mse": 0.0}
    for _, x in val.batches(cfg.batch_size):
        target = (x - mean) / std
        noisy = (x + cfg.noise_std * torch.randn(x.shape, generator=gen, device=device) - mean) / std
        n = target[0].numel()
        sums["val_mse"] += float(((model(noisy) - target) ** 2).sum()) / n
        sums["val_mse_clean_input"] += float(((model(target) - target) ** 2).sum()) / n
        if mean_image is not None:
            sums["mean_image_val_mse"] += float(((mean_image - target) ** 2).sum()) / n
    model.train(was_training)
    out = {k: v / len(val) for k, v in sums.items()}
    if mean_image is None:
        del out["mean_image_val_mse"]
    return out


def _lr(cfg: TrainConfig, step: int, total: int) -> float:
    """Learning rate at a (0-based) step. Cosine: from lr down to 0 over the whole run, which
    gives a short run its best final loss; a function of the step alone, so resuming needs no
    scheduler state."""
    if cfg.schedule == "constant":
        return cfg.lr
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))


# The classifier's layers whose features the perceptual term compares: early and middle ones (edges,
# textures, parts), not the class evidence of the last ones.
_PERCEPTUAL_LAYERS = {
    "efficientnet-lite0": ("_blocks.1", "_blocks.3", "_blocks.5"),
    "efficientnet-lite2": ("_blocks.2", "_blocks.5", "_blocks.8"),
    "torchvision:vgg16": ("features.3", "features.8", "features.15"),
}


def perceptual_layers(classifier: Any) -> tuple[str, ...]:
    """The layers of `classifier` (an `atlas.classifier.Classifier`) the perceptual term uses:
    the table's, or three spread over the first third of its feature layers."""
    if classifier.name in _PERCEPTUAL_LAYERS:
        return _PERCEPTUAL_LAYERS[classifier.name]
    names = list(classifier.layers)
    last = min(len(names), max(3, len(names) // 3)) - 1
    return tuple(dict.fromkeys(names[round(k * last / 2)] for k in (0, 1, 2)))


class Perceptual:
    """sum over layers of mean((phi(x) - phi(y))^2) / mean(phi(y)^2), phi the frozen classifier's
    features (one pass over x and y together, stopped after the last layer)."""

    def __init__(self, classifier: Any, device: torch.device) -> None:
        self.classifier = classifier.to(device)
        self.layers = perceptual_layers(classifier)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        acts = self.classifier.forward(torch.cat([x, y]), layers=self.layers, need_logits=False)
        total = x.new_zeros(())
        for name in self.layers:
            fx, fy = acts.features[name].float().chunk(2)
            fy = fy.detach()
            total = total + ((fx - fy) ** 2).mean() / (fy**2).mean().clamp(min=1e-8)
        return total


def _train_epoch(
    run: _Run, train: _Images, cfg: TrainConfig, device: torch.device, epoch: int, perceptual: Perceptual | None = None
) -> float:
    model, opt = run.model, run.optimiser
    model.train()
    mean, std = _normaliser(cfg, device)
    order = torch.randperm(len(train), generator=run.gens["cpu"]).numpy()
    steps = -(-len(train) // cfg.batch_size)
    total, seen = 0.0, 0
    with tqdm(
        total=len(train), unit="img", desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
        mininterval=0.5 if sys.stderr.isatty() else 10.0, disable=None,
    ) as bar:
        for i, (_, x) in enumerate(train.batches(cfg.batch_size, order)):
            if len(x) < 2:
                continue  # BatchNorm cannot train on one image; it is in another batch next epoch
            for group in opt.param_groups:
                group["lr"] = _lr(cfg, (epoch - 1) * steps + i, cfg.epochs * steps)
            if cfg.augment:
                x = _random_crops(x, run.gens["cpu"])
            target = (x - mean) / std
            noise = torch.randn(x.shape, generator=run.gens["device"], device=device)
            noisy = (x + cfg.noise_std * noise - mean) / std
            recon = model(noisy)
            loss = F.mse_loss(recon, target)
            if perceptual is not None:
                loss = loss + cfg.perceptual * perceptual(recon, target)
            if not torch.isfinite(loss):
                raise AtlasError(
                    f"training loss became {float(loss)} in epoch {epoch}; lower --lr (now {cfg.lr}) and "
                    "delete the output folder to start over"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(x)
            seen += len(x)
            bar.update(len(x))
            bar.set_postfix(mse=f"{total / seen:.4f}")
    return total / seen


def _plot_losses(history: list[dict[str, float]], path: Path) -> None:
    # The Figure/Agg canvas API, not pyplot: no global backend state, no GUI, safe in threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    df = pd.DataFrame(history)
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(df["epoch"], df["train_mse"], marker=".", label="train (noisy input, augmented)")
    ax.plot(df["epoch"], df["val_mse"], marker=".", label="validation (noisy input)")
    ax.axhline(float(df["mean_image_val_mse"].iloc[-1]), color="grey", linestyle="--", label="mean training image")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (classifier's normalised space)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


@torch.no_grad()
def _plot_reconstructions(model: Autoencoder, val: _Images, cfg: TrainConfig, device: torch.device, path: Path) -> None:
    """Rows: clean, noisy input, reconstruction, for up to `_SHOWN` validation images. Shown via
    the inverse normalisation, clipped to [0, 1]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    model.eval()
    mean, std = _normaliser(cfg, device)
    n = min(_SHOWN, len(val))
    # Spread over the split: neighbouring rows are often crops of the same photo.
    pos = np.unique(np.linspace(0, len(val) - 1, n).round().astype(np.int64))
    x = val.load(pos)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 2)
    noisy_rgb = x + cfg.noise_std * torch.randn(x.shape, generator=gen, device=device)
    recon_rgb = model((noisy_rgb - mean) / std) * std + mean
    rows = [("clean", x), ("noisy input", noisy_rgb), ("reconstruction", recon_rgb)]
    fig = Figure(figsize=(1.6 * len(pos), 1.6 * len(rows) + 0.3), dpi=140)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), len(pos), squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        shown = imgs.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        for c in range(len(pos)):
            ax = axes[r][c]
            ax.imshow(shown[c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label)
    fig.suptitle(f"validation images, noise std {cfg.noise_std} (RGB units)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _write_losses(history: list[dict[str, float]], out: Path) -> None:
    df = pd.DataFrame(history, columns=list(LOSS_COLUMNS))
    df["epoch"] = df["epoch"].astype("int64")
    write_parquet(df, out / LOSSES)
    _plot_losses(history, out / LOSSES_PNG)


def _finished(out: Path, epochs: int, blob: dict[str, Any]) -> bool:
    return blob["epoch"] >= epochs and all((out / name).is_file() for name in OUTPUTS)


def train(cfg: TrainConfig, images: np.ndarray, manifest: pd.DataFrame, out: Path, device: torch.device) -> dict[str, Any]:
    """Train (or resume, or find finished) the run in `out`; returns the figures of train.json."""
    cfg.check()
    split = manifest["split"].astype(str).to_numpy()
    train_rows = np.flatnonzero(split == "train")
    val_rows = np.flatnonzero(split == "val")
    if len(train_rows) < 2 or len(val_rows) == 0:
        raise AtlasError(
            f"the dataset has {len(train_rows)} train and {len(val_rows)} val rows; at least 2 and 1 are needed: "
            "re-extract it with more images or a --val-fraction that leaves both splits non-empty"
        )
    train_set = _Images(images, train_rows, device)
    val_set = _Images(images, val_rows, device)

    ckpt_path = out / CHECKPOINT
    blob = None
    if ckpt_path.exists():
        blob = _load_checkpoint(ckpt_path)
        diff = _differences(blob["config"], cfg.as_dict())
        if diff:
            raise AtlasError(
                f"{out} holds a training run with other settings ({'; '.join(diff)}): delete {out} to start "
                "over, or rerun with the same arguments to resume it"
            )
        if _finished(out, cfg.epochs, blob):
            log.info("%s already holds a finished run (%d epochs); nothing to do", out, blob["epoch"])
            return json.loads((out / TRAIN_JSON).read_text(encoding="utf-8")).get("figures", {})
    elif out.exists() and any(p.name not in OUTPUTS and not p.name.startswith(".") for p in out.iterdir()):
        raise AtlasError(f"output folder {out} holds files that are not from `atlas train-dae`; choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)

    model = Autoencoder(cfg.width, seed=cfg.seed, encoder=cfg.encoder).to(device).to(memory_format=torch.channels_last)
    optimiser = _make_optimiser(cfg, model.parameters())
    gens = {"cpu": torch.Generator().manual_seed(cfg.seed), "device": torch.Generator(device=device).manual_seed(cfg.seed)}
    # Seed the global RNGs too: nothing here draws from them today, but a library might.
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    run = _Run(model, optimiser, gens, history=[])
    if blob is not None:
        model.encoder.load_state_dict(blob["encoder"])
        model.decoder.load_state_dict(blob["decoder"])
        optimiser.load_state_dict(blob["optimiser"])
        _set_rng_state(blob["rng"], gens)
        run.history = list(blob["history"])
        run.epoch = int(blob["epoch"])
        log.info("resuming from epoch %d of %d (checkpoint %s)", run.epoch, cfg.epochs, ckpt_path)
    else:
        log.info(
            "training from epoch 0: %s encoder, width %g (encoder %s, decoder %s trainable parameters), "
            "%d train / %d val images, "
            "%d epochs of batch %d, %s lr %g, noise std %g, augment %s, device %s",
            cfg.encoder, cfg.width, f"{count_trainable(model.encoder):,}", f"{count_trainable(model.decoder):,}",
            len(train_set), len(val_set), cfg.epochs, cfg.batch_size, cfg.optimiser, cfg.lr, cfg.noise_std,
            "on" if cfg.augment else "off", device,
        )

    perceptual = None
    if cfg.perceptual > 0:
        from atlas.classifier import load_classifier

        perceptual = Perceptual(load_classifier(cfg.classifier, "default", seed=cfg.seed), device)
        log.info("perceptual term, weight %g, on %s's layers %s", cfg.perceptual, cfg.classifier, ", ".join(perceptual.layers))
    mean_image = _mean_image(train_set, cfg, device)
    mean_mse = _evaluate(model, val_set, cfg, device, mean_image)["mean_image_val_mse"]
    while run.epoch < cfg.epochs:
        epoch = run.epoch + 1
        t0 = time.perf_counter()
        train_mse = _train_epoch(run, train_set, cfg, device, epoch, perceptual)
        val = _evaluate(model, val_set, cfg, device)
        seconds = time.perf_counter() - t0
        run.history.append(
            {"epoch": epoch, "train_mse": train_mse, "val_mse": val["val_mse"], "mean_image_val_mse": mean_mse, "seconds": seconds}
        )
        run.epoch = epoch
        _save_checkpoint(run, cfg, ckpt_path)
        _write_losses(run.history, out)
        log.info(
            "epoch %d/%d: train MSE %.4f, val MSE %.4f (mean image %.4f, ratio %.2f), %.1f s",
            epoch, cfg.epochs, train_mse, val["val_mse"], mean_mse, val["val_mse"] / mean_mse, seconds,
        )
    return _finish(run, cfg, val_set, mean_mse, mean_image, out, device)


def _finish(
    run: _Run, cfg: TrainConfig, val_set: _Images, mean_mse: float, mean_image: torch.Tensor, out: Path, device: torch.device
) -> dict[str, Any]:
    from atlas.metadata import file_sha256, git_commit, versions

    model = run.model
    val = _evaluate(model, val_set, cfg, device, mean_image)
    figures = {
        "epochs": run.epoch,
        "val_mse": val["val_mse"],
        "val_mse_clean_input": val["val_mse_clean_input"],
        "mean_image_val_mse": mean_mse,
        "ratio": val["val_mse"] / mean_mse,
        "train_mse": run.history[-1]["train_mse"],
        "train_seconds": float(sum(h["seconds"] for h in run.history)),
    }
    decoder = model.decoder.to("cpu").to(memory_format=torch.contiguous_format)
    meta = {
        "classifier": cfg.classifier,
        "mean": list(cfg.mean),
        "std": list(cfg.std),
        "space": "the classifier's normalised input, x = (rgb - mean) / std with rgb in [0, 1]",
        "trained_by": f"atlas train-dae {__version__}",
        "config": cfg.as_dict(),
        **{k: figures[k] for k in ("epochs", "val_mse", "mean_image_val_mse", "ratio")},
    }
    save_decoder(decoder, str(out / DECODER), meta=meta)
    model.to(device)
    _plot_reconstructions(model, val_set, cfg, device, out / RECONSTRUCTIONS_PNG)
    _write_losses(run.history, out)
    info = {
        "atlas": __version__,
        "git_commit": git_commit(),
        "versions": versions(),
        "argv": sys.argv,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "config": cfg.as_dict(),
        "decoder": {
            "file": DECODER,
            "format": DECODER_FORMAT,
            "width": cfg.width,
            "parameters": count_trainable(model.decoder),
            "sha256": file_sha256(str(out / DECODER)),
        },
        "encoder_parameters": count_trainable(model.encoder),
        "figures": figures,
        "finished": True,
    }
    # Written last: a train.json means every other output is complete.
    write_text(out / TRAIN_JSON, json.dumps(info, indent=2))
    log.info(
        "finished %d epochs in %.0f s: validation MSE %.4f vs %.4f for the mean training image (ratio %.2f); "
        "decoder in %s",
        run.epoch, figures["train_seconds"], figures["val_mse"], mean_mse, figures["ratio"], out / DECODER,
    )
    return figures


# --------------------------------------------------------------------------------------------
# CLI


def run(args: argparse.Namespace) -> int:
    from atlas.classifier import normalisation
    from atlas.data import load_dataset
    from atlas.generate import pick_device

    if args.paper:
        args.width, args.optimiser, args.lr, args.batch_size, args.epochs = 1.0, "adadelta", 1.0, 24, 400
        args.schedule, args.augment, args.encoder, args.perceptual = "constant", False, "paper", 0.0
    if args.threads is not None:
        if args.threads < 1:
            raise AtlasError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    mean, std = normalisation(args.classifier)
    data = Path(args.data)
    images, manifest = load_dataset(data)
    cfg = TrainConfig(
        data=str(data.resolve()),
        data_fingerprint=_fingerprint(data, images),
        classifier=args.classifier,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        encoder=args.encoder,
        width=float(args.width),
        epochs=int(args.epochs),
        batch_size=int(args.batch_size),
        optimiser=args.optimiser,
        lr=float(args.lr),
        noise_std=float(args.noise_std),
        augment=bool(args.augment),
        schedule=args.schedule,
        seed=int(args.seed),
        perceptual=float(args.perceptual),
    )
    device = pick_device(args.device)
    train(cfg, images, manifest, Path(args.out), device)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    d = {f.name: f.default for f in fields(TrainConfig)}
    p = sub.add_parser(
        "train-dae",
        help="train the denoising autoencoder whose decoder the pretrained method uses",
        description="Train the denoising autoencoder of Despraz et al. (paper Fig. 3) on a dataset from "
        "`atlas extract`; keep its decoder as DIR/decoder.pt for `atlas generate --method pretrained "
        "--decoder DIR/decoder.pt`. The decoder outputs images in the classifier's normalised input "
        "space. Checkpoints every epoch: rerun the same command to resume. Defaults are sized for "
        "the bundled set on a 2-core CPU (a few minutes); --paper gives the authors' settings.",
    )
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder from `atlas extract`")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (decoder.pt, checkpoint.pt, losses, plots, train.json); resumed if it holds a run")
    p.add_argument("--classifier", default="efficientnet-lite0",
                   help="whose normalised input space the decoder outputs (default efficientnet-lite0; "
                   "efficientnet-lite2 or torchvision:<name>)")
    p.add_argument("--encoder", choices=ENCODERS, default=d["encoder"],
                   help=f"E: thumbnail (a 20 x 20 thumbnail mapped cell by cell onto the decoder's 5 x 5 seed; "
                   f"fast, generalises from few photos) or paper (5 conv blocks, dense 2048, dense 3200); "
                   f"default {d['encoder']}; the decoder is the same")
    p.add_argument("--width", type=float, default=d["width"],
                   help=f"channel multiplier of the decoder and of the paper encoder (default {d['width']}; "
                   "1.0: the paper's)")
    p.add_argument("--epochs", type=int, default=d["epochs"], help=f"default {d['epochs']} (paper: 400)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help=f"default {d['batch_size']} (paper: 24)")
    p.add_argument("--optimiser", choices=OPTIMISERS, default=d["optimiser"],
                   help=f"default {d['optimiser']} (paper: adadelta); sgd is Nesterov with momentum 0.9")
    p.add_argument("--lr", type=float, default=d["lr"], help=f"learning rate (default {d['lr']}; paper: adadelta 1.0)")
    p.add_argument("--noise-std", type=float, default=d["noise_std"],
                   help=f"std of the Gaussian noise added to the input, in RGB units of [0, 1] (default {d['noise_std']})")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=d["augment"],
                   help="random crops (80-100 %% of the side) and flips of the training images, for small "
                   "sets like the bundled one (default on)")
    p.add_argument("--schedule", choices=SCHEDULES, default=d["schedule"],
                   help=f"learning rate over the run: cosine (from --lr down to 0) or constant (default {d['schedule']})")
    p.add_argument("--perceptual", type=float, default=d["perceptual"], metavar="W",
                   help="weight of a perceptual term (the classifier's early and middle features of the "
                   f"reconstruction against the clean image's) added to the MSE (default {d['perceptual']}: MSE alone)")
    p.add_argument("--paper", action="store_true",
                   help="the authors' settings: their encoder, width 1.0, adadelta lr 1.0 constant, batch 24, 400 "
                   "epochs, no augmentation (overrides those flags; meant for the ImageNet dogs on a GPU)")
    p.add_argument("--seed", type=int, default=d["seed"], help=f"initial weights, order, noise, crops (default {d['seed']})")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, default), cpu or cuda")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for torch (default: torch's own choice, one per core); on a machine "
                   "that other jobs keep busy, 1 can be several times faster than 2")
    p.set_defaults(func=run)
