"""`atlas train-dae`: the denoising autoencoder whose decoder the pretrained method uses
(`atlas.train_dae`)."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from atlas.cli.options import DEFAULT_CLASSIFIER, add_device, add_out, add_seed
from atlas.train_dae.config import ENCODERS, OPTIMISERS, PAPER, SCHEDULES, TrainConfig


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d: dict[str, Any] = {f.name: f.default for f in fields(TrainConfig)}
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
    add_out(p, "output folder (decoder.pt, checkpoint.pt, losses, plots, train.json); resumed if it holds a run")
    p.add_argument(
        "--classifier",
        default=DEFAULT_CLASSIFIER,
        help=f"whose normalised input space the decoder outputs (default {DEFAULT_CLASSIFIER}; "
        "efficientnet-lite2, torchvision:<name> or timm:<name>)",
    )
    p.add_argument(
        "--encoder",
        choices=ENCODERS,
        default=d["encoder"],
        help=f"E: thumbnail (a 20 x 20 thumbnail mapped cell by cell onto the decoder's 5 x 5 seed; "
        f"fast, generalises from few photos) or paper (5 conv blocks, dense 2048, dense 3200); "
        f"default {d['encoder']}; the decoder is the same",
    )
    p.add_argument(
        "--width",
        type=float,
        default=d["width"],
        help=f"channel multiplier of the decoder and of the paper encoder (default {d['width']}; "
        f"{PAPER['width']}: the paper's)",
    )
    p.add_argument("--epochs", type=int, default=d["epochs"], help=f"default {d['epochs']} (paper: {PAPER['epochs']})")
    p.add_argument(
        "--batch-size",
        type=int,
        default=d["batch_size"],
        help=f"default {d['batch_size']} (paper: {PAPER['batch_size']})",
    )
    p.add_argument(
        "--optimiser",
        choices=OPTIMISERS,
        default=d["optimiser"],
        help=f"default {d['optimiser']} (paper: {PAPER['optimiser']}); sgd is Nesterov with momentum 0.9",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=d["lr"],
        help=f"learning rate (default {d['lr']}; paper: {PAPER['optimiser']} {PAPER['lr']})",
    )
    p.add_argument(
        "--noise-std",
        type=float,
        default=d["noise_std"],
        help=f"std of the Gaussian noise added to the input, in RGB units of [0, 1] (default {d['noise_std']})",
    )
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=d["augment"],
        help="random crops (80-100 %% of the side) and flips of the training images, for small "
        "sets like the bundled one (default on)",
    )
    p.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=d["schedule"],
        help=f"learning rate over the run: cosine (from --lr down to 0) or constant (default {d['schedule']})",
    )
    p.add_argument(
        "--perceptual",
        type=float,
        default=d["perceptual"],
        metavar="W",
        help="weight of a perceptual term (the classifier's early and middle features of the "
        f"reconstruction against the clean image's) added to the MSE (default {d['perceptual']}: MSE alone)",
    )
    p.add_argument(
        "--paper",
        action="store_true",
        help="the authors' settings: their encoder, width 1.0, adadelta lr 1.0 constant, batch 24, 400 "
        "epochs, no augmentation (overrides those flags; meant for the ImageNet dogs on a GPU)",
    )
    add_seed(p, "initial weights, order, noise, crops", default=d["seed"])
    add_device(p)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads for torch (default: torch's own choice, one per core); on a machine "
        "that other jobs keep busy, 1 can be several times faster than 2",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from atlas.train_dae import train_from_folder

    train_from_folder(
        args.data,
        args.out,
        classifier=args.classifier,
        device=args.device,
        threads=args.threads,
        paper=args.paper,
        encoder=args.encoder,
        width=args.width,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimiser=args.optimiser,
        lr=args.lr,
        noise_std=args.noise_std,
        augment=args.augment,
        schedule=args.schedule,
        seed=args.seed,
        perceptual=args.perceptual,
    )
    return 0
