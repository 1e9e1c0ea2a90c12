"""`atlas compare`: two runs of the same targets, drawn for two classifiers, each read by the other
(`atlas.compare`)."""

from __future__ import annotations

import argparse

from atlas.cli.options import (
    CLASSIFIERS_HELP,
    WEIGHTS_HELP,
    add_batch_size,
    add_classifier,
    add_device,
    add_model_options,
    add_seed,
    classifier_spec,
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "compare",
        help="read two runs' images (one config, two classifiers) each with the other model",
        description="For every class and pair target and method that run A (drawn for classifier A) and run B "
        "(drawn for classifier B) share: B's probability of the target on A's image and A's on B's (the transfer), "
        "beside each model's own probability and the judge's reading of each image. Writes one Parquet table, "
        "which `atlas site --compare` shows.",
    )
    p.add_argument("--index", required=True, metavar="FILE", help="run A's index.parquet")
    p.add_argument("--other-index", required=True, metavar="FILE", help="run B's index.parquet")
    add_classifier(p, as_generated=True)
    b = p.add_argument_group("the other classifier B")
    b.add_argument("--other-classifier", required=True, help=f"B: {CLASSIFIERS_HELP}, as run B was generated with")
    b.add_argument("--other-weights", default="default", help=f"B's weights: {WEIGHTS_HELP}")
    b.add_argument("--other-image-size", type=int, default=None, metavar="PX", help="run B at PX x PX, as run B did")
    add_model_options(b, "other-", "B")
    p.add_argument("--label", default=None, help="A's name on the site (default: its classifier name)")
    p.add_argument("--other-label", default=None, help="B's name on the site (default: its classifier name)")
    p.add_argument("--out", required=True, metavar="FILE", help="the comparison Parquet file to write")
    add_seed(p, "the runs' seed (random weights are seeded with it, as in generate)")
    add_device(p)
    add_batch_size(p, 16)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from atlas.classifier_spec import ClassifierSpec
    from atlas.compare import Side, compare

    spec_a = classifier_spec(args)
    spec_b = ClassifierSpec.of(
        args.other_classifier,
        args.other_weights,
        args.other_image_size,
        args.other_mean,
        args.other_std,
        args.other_classes,
    )
    label_a, label_b = args.label or spec_a.name, args.other_label or spec_b.name
    if label_a == label_b:  # e.g. a fine-tuned checkpoint and its base, of one architecture
        label_a, label_b = f"{label_a} (A)", f"{label_b} (B)"
    a = Side(Path(args.index), spec_a, label_a)
    b = Side(Path(args.other_index), spec_b, label_b)
    compare(a, b, Path(args.out), seed=args.seed, device=args.device, batch_size=args.batch_size)
    return 0
