"""The training loop and its entry points: `train_from_folder` (what `atlas train-dae` runs: a
dataset folder in, a run folder out) and `train` (a `TrainConfig` and the loaded dataset)."""

from __future__ import annotations

import json
import logging
import math
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from atlas import __version__
from atlas.classifier import load_classifier, normalisation
from atlas.dataset import load_dataset
from atlas.errors import AtlasError
from atlas.generator import DECODER_FORMAT, OUTPUT_SIZE, count_trainable, save_decoder
from atlas.io import write_parquet, write_text
from atlas.metadata import file_sha256, git_commit, versions
from atlas.runtime import pick_device
from atlas.train_dae.checkpoint import Run, differences, finished, load_checkpoint, save_checkpoint, set_rng_state
from atlas.train_dae.config import (
    CHECKPOINT,
    DECODER,
    LOSS_COLUMNS,
    LOSSES,
    LOSSES_PNG,
    OUTPUTS,
    PAPER,
    RECONSTRUCTIONS_PNG,
    TRAIN_JSON,
    TrainConfig,
    check_threads,
)
from atlas.train_dae.images import Images, fingerprint, normaliser, random_crops
from atlas.train_dae.networks import Autoencoder
from atlas.train_dae.perceptual import Perceptual
from atlas.train_dae.plots import plot_losses, plot_reconstructions

log = logging.getLogger(__name__)


def train_from_folder(
    data: str | Path,
    out: str | Path,
    *,
    classifier: str,
    device: str = "auto",
    threads: int | None = None,
    paper: bool = False,
    **settings: Any,
) -> dict[str, Any]:
    """Train the autoencoder on the dataset folder `data` (from `atlas extract`) into the run folder
    `out` (or resume the run there, or find it finished); returns the figures of train.json.

    classifier: whose normalised input space the decoder outputs. device: auto, cpu, cuda or
    cuda:N. threads: torch's CPU threads (None: torch's own choice). paper: the authors' settings
    (`PAPER`), overriding those in `settings`. settings: the other fields of `TrainConfig`
    (encoder, width, epochs, ...); those left out take its defaults.
    """
    if paper:
        settings = {**settings, **PAPER}
    check_threads(threads)
    if threads is not None:
        torch.set_num_threads(threads)
    mean, std = normalisation(classifier)
    data = Path(data)
    images, manifest = load_dataset(data)
    cfg = TrainConfig(
        data=str(data.resolve()),
        data_fingerprint=fingerprint(data, images),
        classifier=classifier,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        **settings,
    )
    return train(cfg, images, manifest, Path(out), pick_device(device))


def train(
    cfg: TrainConfig, images: np.ndarray, manifest: pd.DataFrame, out: Path, device: torch.device
) -> dict[str, Any]:
    """Train (or resume, or find finished) the run in `out`; returns the figures of train.json.

    images: the dataset's N x S x S x 3 uint8 array; manifest: its rows, whose `split` column
    (train or val) decides which images train and which validate.
    """
    split = manifest["split"].astype(str).to_numpy()
    train_rows = np.flatnonzero(split == "train")
    val_rows = np.flatnonzero(split == "val")
    if len(train_rows) < 2 or len(val_rows) == 0:
        raise AtlasError(
            f"the dataset has {len(train_rows)} train and {len(val_rows)} val rows; at least 2 and 1 are needed: "
            "re-extract it with more images or a --val-fraction that leaves both splits non-empty"
        )
    train_set = Images(images, train_rows, device)
    val_set = Images(images, val_rows, device)

    ckpt_path = out / CHECKPOINT
    blob = None
    if ckpt_path.exists():
        blob = load_checkpoint(ckpt_path)
        diff = differences(blob["config"], cfg.as_dict())
        if diff:
            raise AtlasError(
                f"{out} holds a training run with other settings ({'; '.join(diff)}): delete {out} to start "
                "over, or rerun with the same arguments to resume it"
            )
        if finished(out, cfg.epochs, blob):
            log.info("%s already holds a finished run (%d epochs); nothing to do", out, blob["epoch"])
            return json.loads((out / TRAIN_JSON).read_text(encoding="utf-8")).get("figures", {})
    elif out.exists() and any(p.name not in OUTPUTS and not p.name.startswith(".") for p in out.iterdir()):
        raise AtlasError(
            f"output folder {out} holds files that are not from `atlas train-dae`; choose an empty or new folder"
        )
    out.mkdir(parents=True, exist_ok=True)

    model = Autoencoder(cfg.width, seed=cfg.seed, encoder=cfg.encoder).to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch accepts it; its stubs do not list it
    optimiser = _make_optimiser(cfg, model.parameters())
    gens = {
        "cpu": torch.Generator().manual_seed(cfg.seed),
        "device": torch.Generator(device=device).manual_seed(cfg.seed),
    }
    # Seed the global RNGs too: nothing here draws from them today, but a library might.
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    run = Run(model, optimiser, gens, history=[])
    if blob is not None:
        model.encoder.load_state_dict(blob["encoder"])
        model.decoder.load_state_dict(blob["decoder"])
        optimiser.load_state_dict(blob["optimiser"])
        set_rng_state(blob["rng"], gens)
        run.history = list(blob["history"])
        run.epoch = int(blob["epoch"])
        log.info("resuming from epoch %d of %d (checkpoint %s)", run.epoch, cfg.epochs, ckpt_path)
    else:
        log.info(
            "training from epoch 0: %s encoder, width %g (encoder %s, decoder %s trainable parameters), "
            "%d train / %d val images, "
            "%d epochs of batch %d, %s lr %g, noise std %g, augment %s, device %s",
            cfg.encoder,
            cfg.width,
            f"{count_trainable(model.encoder):,}",
            f"{count_trainable(model.decoder):,}",
            len(train_set),
            len(val_set),
            cfg.epochs,
            cfg.batch_size,
            cfg.optimiser,
            cfg.lr,
            cfg.noise_std,
            "on" if cfg.augment else "off",
            device,
        )

    perceptual = None
    if cfg.perceptual > 0:
        perceptual = Perceptual(load_classifier(cfg.classifier, "default", seed=cfg.seed), device)
        log.info(
            "perceptual term, weight %g, on %s's layers %s",
            cfg.perceptual,
            cfg.classifier,
            ", ".join(perceptual.layers),
        )
    mean_image = _mean_image(train_set, cfg, device)
    mean_mse = _evaluate(model, val_set, cfg, device, mean_image)["mean_image_val_mse"]
    while run.epoch < cfg.epochs:
        epoch = run.epoch + 1
        t0 = time.perf_counter()
        train_mse = _train_epoch(run, train_set, cfg, device, epoch, perceptual)
        val = _evaluate(model, val_set, cfg, device)
        seconds = time.perf_counter() - t0
        run.history.append(
            {
                "epoch": epoch,
                "train_mse": train_mse,
                "val_mse": val["val_mse"],
                "mean_image_val_mse": mean_mse,
                "seconds": seconds,
            }
        )
        run.epoch = epoch
        save_checkpoint(run, cfg, ckpt_path)
        _write_losses(run.history, out)
        log.info(
            "epoch %d/%d: train MSE %.4f, val MSE %.4f (mean image %.4f, ratio %.2f), %.1f s",
            epoch,
            cfg.epochs,
            train_mse,
            val["val_mse"],
            mean_mse,
            val["val_mse"] / mean_mse,
            seconds,
        )
    return _finish(run, cfg, val_set, mean_mse, mean_image, out, device)


def _make_optimiser(cfg: TrainConfig, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimiser == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    if cfg.optimiser == "adadelta":
        # Keras 1's Adadelta defaults, which the authors trained with (rho 0.95, eps 1e-8).
        return torch.optim.Adadelta(params, lr=cfg.lr, rho=0.95, eps=1e-8)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True)


def _lr(cfg: TrainConfig, step: int, total: int) -> float:
    """Learning rate at a (0-based) step. Cosine: from lr down to 0 over the whole run, which
    gives a short run its best final loss; a function of the step alone, so resuming needs no
    scheduler state."""
    if cfg.schedule == "constant":
        return cfg.lr
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))


@torch.no_grad()
def _mean_image(train: Images, cfg: TrainConfig, device: torch.device) -> torch.Tensor:
    """Mean training image (no augmentation) in the normalised space, (1, 3, 224, 224)."""
    mean, std = normaliser(cfg, device)
    total = torch.zeros(1, 3, OUTPUT_SIZE, OUTPUT_SIZE, dtype=torch.float64, device=device)
    for _, x in train.batches(max(cfg.batch_size, 64)):
        total += ((x - mean) / std).sum(0, keepdim=True, dtype=torch.float64)
    return (total / len(train)).float()


@torch.no_grad()
def _evaluate(
    model: Autoencoder, val: Images, cfg: TrainConfig, device: torch.device, mean_image: torch.Tensor | None = None
) -> dict[str, float]:
    """Validation MSEs (normalised space, per pixel and channel), BatchNorm on running statistics
    as the pretrained method uses the decoder. The noise is the same at every call (seeded), so
    epochs are comparable. Returns val_mse (noisy input), val_mse_clean_input and, with a mean
    image, mean_image_val_mse."""
    was_training = model.training
    model.eval()
    mean, std = normaliser(cfg, device)
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


def _train_epoch(
    run: Run, train: Images, cfg: TrainConfig, device: torch.device, epoch: int, perceptual: Perceptual | None = None
) -> float:
    model, opt = run.model, run.optimiser
    model.train()
    mean, std = normaliser(cfg, device)
    order = torch.randperm(len(train), generator=run.gens["cpu"]).numpy()
    steps = -(-len(train) // cfg.batch_size)
    total, seen = 0.0, 0
    with tqdm(
        total=len(train),
        unit="img",
        desc=f"epoch {epoch}/{cfg.epochs}",
        leave=False,
        mininterval=0.5 if sys.stderr.isatty() else 10.0,
        disable=None,
    ) as bar:
        for i, (_, x) in enumerate(train.batches(cfg.batch_size, order)):
            if len(x) < 2:
                continue  # BatchNorm cannot train on one image; it is in another batch next epoch
            for group in opt.param_groups:
                group["lr"] = _lr(cfg, (epoch - 1) * steps + i, cfg.epochs * steps)
            if cfg.augment:
                x = random_crops(x, run.gens["cpu"])
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


def _write_losses(history: list[dict[str, float]], out: Path) -> None:
    df = pd.DataFrame(history, columns=list(LOSS_COLUMNS))
    df["epoch"] = df["epoch"].astype("int64")
    write_parquet(df, out / LOSSES)
    plot_losses(history, out / LOSSES_PNG)


def _finish(
    run: Run,
    cfg: TrainConfig,
    val_set: Images,
    mean_mse: float,
    mean_image: torch.Tensor,
    out: Path,
    device: torch.device,
) -> dict[str, Any]:
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
    decoder = model.decoder.to("cpu").to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # as above
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
    plot_reconstructions(model, val_set, cfg, device, out / RECONSTRUCTIONS_PNG)
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
        run.epoch,
        figures["train_seconds"],
        figures["val_mse"],
        mean_mse,
        figures["ratio"],
        out / DECODER,
    )
    return figures
