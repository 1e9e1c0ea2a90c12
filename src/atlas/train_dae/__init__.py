"""`atlas train-dae`: the denoising autoencoder whose decoder becomes G of the pretrained method.

The autoencoder of the paper (Fig. 3): an encoder E maps a noisy image to a 3200-value code, and
the decoder, which is exactly `atlas.generator.Decoder` (G after its alpha layer), maps the code
back to an image. The loss is the mean squared error between the clean image and the
reconstruction, optionally plus a perceptual term (the classifier's features of both). Only the
decoder is kept: `decoder.pt`, which `atlas generate --method pretrained --decoder PATH` loads into
G. E is not part of G, so it is ours to choose: the default thumbnail encoder hands the decoder a
20 x 20 thumbnail of the image laid out on the decoder's own 5 x 5 seed grid, so that each code
cell describes the region the decoder paints from that cell; `paper` is the authors' encoder (five
conv blocks 32->64->128->256->512, each pooled, then dense 2048 and dense 3200). See
docs/design.md, "The denoising autoencoder", for the choices and docs/benchmarks.md for the figures.

Image space. The decoder feeds the classifier D directly (G never knows D's mean and std), so it
is trained to output images in D's normalised input space: the clean target is
`(rgb - mean) / std` with `atlas.classifier.normalisation(classifier)`, and the classifier's name,
mean and std are written into the decoder file's meta. Every MSE reported (training, validation,
the mean training image's baseline) is in that space. The Gaussian noise is added in RGB units
(rgb in [0, 1]) before normalising, so a noise std means the same for every classifier. The
decoder always outputs 224 x 224; dataset images of another size are resized to 224. With
augmentation (on by default, for small sets such as the bundled one) every training image is a
random square crop of 80-100 % of its side, resized back and flipped horizontally with
probability 1/2, drawn afresh each epoch; validation images are never augmented.

Outputs in the run folder: `decoder.pt`, `checkpoint.pt`, `losses.parquet` (the MSEs per epoch),
`losses.png`, `reconstructions.png` and `train.json` (settings, versions and final figures; written
last, so its presence means the run finished).

Restartable: `checkpoint.pt` is written (atomically) after every epoch with E's and the decoder's
weights, the optimiser state, the epoch, the settings, every RNG state and the loss history. Run
again with the same settings, training resumes after the last finished epoch and draws what an
uninterrupted run would have drawn; a finished run does nothing. Different settings are refused
(delete the folder to start over).

Modules: `config` (`TrainConfig`, its choices and defaults, the file names; no torch, so the
command line reads its defaults there), `networks` (the encoders, `Autoencoder`), `images` (the
training images, crops, normalisation, the dataset's fingerprint), `perceptual`, `checkpoint`
(RNG state, checkpoint, resume comparison), `training` (the loop; `train_from_folder`, `train`) and
`plots`. This package imports only `config` until a name from another module is asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from atlas.train_dae.config import (
    CHECKPOINT,
    DECODER,
    ENCODERS,
    LOSS_COLUMNS,
    OPTIMISERS,
    OUTPUTS,
    PAPER,
    SCHEDULES,
    TRAIN_JSON,
    TrainConfig,
)

if TYPE_CHECKING:
    from atlas.train_dae.networks import Autoencoder, Encoder, ThumbnailEncoder, decoder_cell_centres, encoder_channels
    from atlas.train_dae.perceptual import Perceptual, perceptual_layers
    from atlas.train_dae.training import train, train_from_folder

# Names of the torch modules, imported on first use (PEP 562).
_LAZY = {
    "train": "training",
    "train_from_folder": "training",
    "Autoencoder": "networks",
    "Encoder": "networks",
    "ThumbnailEncoder": "networks",
    "decoder_cell_centres": "networks",
    "encoder_channels": "networks",
    "Perceptual": "perceptual",
    "perceptual_layers": "perceptual",
}

__all__ = [
    "CHECKPOINT",
    "DECODER",
    "ENCODERS",
    "LOSS_COLUMNS",
    "OPTIMISERS",
    "OUTPUTS",
    "PAPER",
    "SCHEDULES",
    "TRAIN_JSON",
    "TrainConfig",
    # _LAZY's names, spelled out for the linters:
    "train",
    "train_from_folder",
    "Autoencoder",
    "Encoder",
    "ThumbnailEncoder",
    "decoder_cell_centres",
    "encoder_channels",
    "Perceptual",
    "perceptual_layers",
]
assert set(__all__) >= set(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
