"""The settings of a training run (`TrainConfig`), their choices and defaults, and the run's files.

No torch, numpy or pandas here: the command line reads its defaults and choices from this module,
so `atlas train-dae --help` loads nothing heavy. Every check of a setting is in
`TrainConfig.__post_init__`, so a Python caller gets the command line's one-line errors.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from atlas.errors import AtlasError

# The files of a run folder (`--out`). train.json is written last: its presence means the run finished.
CHECKPOINT = "checkpoint.pt"
DECODER = "decoder.pt"
LOSSES = "losses.parquet"
LOSSES_PNG = "losses.png"
RECONSTRUCTIONS_PNG = "reconstructions.png"
TRAIN_JSON = "train.json"
OUTPUTS = (CHECKPOINT, DECODER, LOSSES, LOSSES_PNG, RECONSTRUCTIONS_PNG, TRAIN_JSON)
CHECKPOINT_FORMAT = "atlas-dae-checkpoint/1"
# Columns of losses.parquet, in order.
LOSS_COLUMNS = ("epoch", "train_mse", "val_mse", "mean_image_val_mse", "seconds")

ENCODERS = ("thumbnail", "paper")
OPTIMISERS = ("adam", "adadelta", "sgd")
SCHEDULES = ("cosine", "constant")

# The authors' settings (`--paper`): their encoder, width 1.0, Adadelta lr 1.0 without decay,
# batch 24, 400 epochs, no augmentation, MSE alone; they trained on the ImageNet dog images.
PAPER: dict[str, Any] = {
    "width": 1.0,
    "optimiser": "adadelta",
    "lr": 1.0,
    "batch_size": 24,
    "epochs": 400,
    "schedule": "constant",
    "augment": False,
    "encoder": "paper",
    "perceptual": 0.0,
}


def check_width(width: float) -> None:
    """The channel multiplier of the decoder and of the paper's encoder must be in (0, 4]."""
    if not (0 < width <= 4):
        raise AtlasError(f"autoencoder width {width} is out of range; use a multiplier in (0, 4], 1.0 is the paper's")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the result of a training run; a resume must match it exactly.

    The defaults are sized for the embedded CPU run (the bundled set from `atlas extract --source
    bundled` on a 2-core CPU): the thumbnail encoder, width 0.0625, Adam lr 3e-3 with a cosine decay
    to 0, batch 8, 40 epochs, noise std 0.1, augmentation on. `PAPER` holds the authors' settings.
    """

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

    def __post_init__(self) -> None:
        self.check()

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
        check_width(self.width)


def check_threads(threads: int | None) -> None:
    """`threads` (torch's CPU threads; None: torch's own choice) must be at least 1."""
    if threads is not None and threads < 1:
        raise AtlasError(f"--threads must be at least 1, got {threads}")
