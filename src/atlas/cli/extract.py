"""`atlas extract`: image sources -> the autoencoder's training set (library: `atlas.extract`)."""

from __future__ import annotations

import argparse

from atlas.cli import options
from atlas.extract.classes import DOG_CLASSES, DOG_SYNSET
from atlas.extract.config import BUNDLED_DEFAULT_CROPS, DEFAULT_SIZE
from atlas.extract.sources import SOURCES


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "extract",
        help="turn images into a training set for the denoising autoencoder",
        description=(
            "Turn image sources into a training set for the denoising autoencoder: OUT/images.npy "
            "(uint8 N x S x S x 3, RGB; the centred square of each image resized to S x S), "
            "OUT/manifest.parquet (one row per image: provenance, label, split, crop box), "
            "OUT/skipped.parquet (unusable inputs and why) and OUT/extract.json. The folder is "
            "written atomically."
        ),
    )
    options.add_out(p, "output folder (replaced as a whole; required)")
    p.add_argument(
        "--source",
        choices=SOURCES,
        default="bundled",
        help="imagenet: one folder per wnid under --root; folder: any tree of images under --root; "
        "bundled (default): photos shipped by scikit-image, scikit-learn, matplotlib and foolbox "
        "(no download)",
    )
    p.add_argument("--root", metavar="DIR", help="input folder (imagenet, folder)")
    p.add_argument(
        "--size",
        type=int,
        default=DEFAULT_SIZE,
        metavar="S",
        help=f"output side in pixels (default {DEFAULT_SIZE})",
    )
    p.add_argument(
        "--wnids",
        metavar="LIST",
        help=f"imagenet: comma-separated wnids to extract; {DOG_SYNSET} (dog) means the 118 dog breeds",
    )
    p.add_argument(
        "--classes",
        metavar="LIST",
        help="imagenet: 0-based class indices in the standard 1000-class order, e.g. 151-268 or 1,5,9 "
        f"(with --wnids: both; with neither: the dogs, {DOG_CLASSES[0]}-{DOG_CLASSES[1]})",
    )
    p.add_argument(
        "--per-class",
        type=int,
        metavar="N",
        help="keep at most N readable images per class (imagenet) or per label (folder; per tree "
        "without --labels-from-folders), the first in sorted order",
    )
    p.add_argument(
        "--labels-from-folders",
        action="store_true",
        help="folder: label each image with its parent folder's name",
    )
    p.add_argument(
        "--augment-crops",
        type=int,
        metavar="K",
        help=f"add K seeded random crops/flips per image (default: {BUNDLED_DEFAULT_CROPS} for bundled, 0 otherwise)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        metavar="F",
        help="fraction of the images (each with its crops) put in the val split (default 0.1)",
    )
    options.add_seed(p, "seed of the split and of the crops")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from atlas.extract import ExtractConfig, extract

    config = ExtractConfig(
        source=args.source,
        root=args.root,
        size=args.size,
        wnids=args.wnids,
        classes=args.classes,
        per_class=args.per_class,
        labels_from_folders=args.labels_from_folders,
        augment_crops=args.augment_crops,
        val_fraction=args.val_fraction,
        seed=args.seed,
    )
    extract(config, args.out)
    return 0
