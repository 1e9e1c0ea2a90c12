"""`atlas score`: one generation chunk's images under a judge and small transformations
(`atlas.score`)."""

from __future__ import annotations

import argparse

from atlas.cli.options import (
    DEFAULT_JUDGE,
    WEIGHTS_HELP,
    add_batch_size,
    add_classifier,
    add_device,
    add_model_options,
    add_seed,
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "score",
        help="score one generation chunk's images under a judge and small transformations",
        description="Score every image of a chunk folder (from `atlas generate`): D's top-5 names, the "
        "judge classifier's probability, rank and top-5 of the target, and D's target probability and "
        "activation under a fixed, seeded set of shifts, zooms and a flip. Writes one Parquet table.",
    )
    p.add_argument(
        "--chunk",
        required=True,
        action="append",
        metavar="DIR",
        help="chunk folder: records.parquet and its PNGs (repeatable: D and the judge are loaded once)",
    )
    p.add_argument(
        "--out",
        required=True,
        action="append",
        metavar="FILE",
        help="scores Parquet file to write, one per --chunk in the same order; one already made from the "
        "same records, D, judge and robustness set is kept",
    )
    add_classifier(p, as_generated=True)
    add_seed(p, "the run's seed (random weights are seeded with it, as in generate)")
    judge = p.add_argument_group("the judge")
    judge.add_argument(
        "--judge",
        default=DEFAULT_JUDGE,
        help=f"the judge: a classifier name as for --classifier, trained on D's classes, or none: no judge "
        f"(default {DEFAULT_JUDGE})",
    )
    judge.add_argument("--judge-weights", default="default", help=f"the judge's weights: {WEIGHTS_HELP}")
    judge.add_argument(
        "--judge-image-size", type=int, default=None, metavar="PX", help="run the judge at PX x PX (default: its own)"
    )
    add_model_options(judge, "judge-", "the judge")
    robust = p.add_argument_group("robustness")
    robust.add_argument("--jitter-px", type=int, default=4, help="largest shift, in pixels (default 4)")
    robust.add_argument("--jitter-count", type=int, default=4, help="number of seeded shifts (default 4)")
    robust.add_argument(
        "--scale",
        dest="scales",
        type=float,
        action="append",
        default=None,
        metavar="S",
        help="a zoom factor about the centre (repeatable; default 0.9 and 1.1)",
    )
    robust.add_argument("--no-scale", dest="scales", action="store_const", const=[], help="no zooms")
    robust.add_argument(
        "--flip", action=argparse.BooleanOptionalAction, default=True, help="include the horizontal flip"
    )
    robust.add_argument("--robust-seed", type=int, default=0, help="seed of the shifts (default 0)")
    add_batch_size(p, 16)
    add_device(p)
    p.set_defaults(func=run, scales=None)


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from atlas.classifier import load
    from atlas.classifier_spec import NONE, ClassifierSpec
    from atlas.cli.options import classifier_spec
    from atlas.runtime import pick_device
    from atlas.score import DEFAULT_SCALES, read_records, robustness_set, score_chunks

    scales = DEFAULT_SCALES if args.scales is None else tuple(args.scales)
    transforms = robustness_set(args.jitter_px, args.jitter_count, scales, args.flip, args.robust_seed)
    chunks, outs = [Path(c) for c in args.chunk], [Path(o) for o in args.out]
    for chunk in chunks:
        read_records(chunk)  # their errors before two classifiers are loaded
    device = pick_device(args.device)
    classifier = load(classifier_spec(args), seed=args.seed)
    judge = None
    if args.judge != NONE:
        judge_spec = ClassifierSpec.of(
            args.judge, args.judge_weights, args.judge_image_size, args.judge_mean, args.judge_std, args.judge_classes
        )
        judge = load(judge_spec, seed=args.seed).to(device)
    classifier.to(device)
    scored = score_chunks(chunks, outs, classifier, judge, transforms, args.batch_size)
    logging.getLogger("atlas.score").info(
        "%d of %d chunks scored under %s and %d transformations",
        scored,
        len(chunks),
        "no judge" if judge is None else judge.name,
        len(transforms),
    )
    return 0
