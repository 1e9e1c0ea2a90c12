"""`atlas exemplars`: the dataset images D scores highest for each target (`atlas.exemplars`)."""

from __future__ import annotations

import argparse

from atlas.cli.options import add_batch_size, add_classifier, add_device, add_out, add_seed, add_targets


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "exemplars",
        help="the dataset images D scores highest for each target",
        description="One batched pass of D over an extracted dataset (`atlas extract`); for every "
        "target (class, pair, group or filter), the top-k images by the target's activation, written "
        "as PNGs with exemplars.parquet into OUT (replaced as a whole).",
    )
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder from `atlas extract`")
    add_targets(p)
    add_out(p, "output folder (replaced as a whole)")
    p.add_argument("--top-k", type=int, default=4, help="exemplars per target (default 4)")
    add_classifier(p)
    add_seed(p, "the run's seed (random weights are seeded with it)")
    add_batch_size(p, 32)
    add_device(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from atlas.classifier import load
    from atlas.cli.options import classifier_spec
    from atlas.exemplars import exemplars
    from atlas.runtime import pick_device
    from atlas.targets import parse_specs

    targets = parse_specs(args.targets)
    device = pick_device(args.device)
    classifier = load(classifier_spec(args), seed=args.seed)
    classifier.to(device)
    exemplars(classifier, Path(args.data), targets, args.top_k, Path(args.out), args.batch_size)
    return 0
