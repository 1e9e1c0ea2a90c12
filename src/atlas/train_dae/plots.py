"""The run's figures: `losses.png` (the MSEs per epoch) and `reconstructions.png` (validation
images, their noisy inputs and the reconstructions). Both use matplotlib's Figure/Agg canvas API,
not pyplot: no global backend state, no GUI, safe in threads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from atlas.io import atomic_path
from atlas.train_dae.config import TrainConfig
from atlas.train_dae.images import Images, normaliser
from atlas.train_dae.networks import Autoencoder

# Validation images shown in reconstructions.png.
_SHOWN = 8


def plot_losses(history: list[dict[str, float]], path: Path) -> None:
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
def plot_reconstructions(model: Autoencoder, val: Images, cfg: TrainConfig, device: torch.device, path: Path) -> None:
    """Rows: clean, noisy input, reconstruction, for up to `_SHOWN` validation images. Shown via
    the inverse normalisation, clipped to [0, 1]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    model.eval()
    mean, std = normaliser(cfg, device)
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
