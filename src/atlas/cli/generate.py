"""`atlas generate`: preferred inputs for targets, one PNG each, plus records.parquet
(`atlas.generate`)."""

from __future__ import annotations

import argparse

from atlas.cli.options import add_classifier, add_device, add_out, add_seed, add_targets
from atlas.methods import PRESETS, listed, names, taking


class _Renamed(argparse.Action):
    """An option that was renamed: using it is an error naming the new one."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs: object) -> None:
        self.new = new
        super().__init__(option_strings, dest, nargs="?", **kwargs)  # type: ignore[arg-type]

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object, option: str | None = None
    ) -> None:
        parser.error(f"{option} was renamed {self.new} (targets optimised at once); write {self.new} N")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "generate",
        help="generate preferred inputs for targets",
        description="Generate the classifier's preferred input for each target (one PNG each) and DIR/records.parquet.",
    )
    add_classifier(p)
    p.add_argument("--method", required=True, choices=names())
    p.add_argument(
        "--preset",
        default="default",
        choices=PRESETS,
        help="default: settings measured to work here; paper: the authors' exact settings",
    )
    add_targets(p)
    add_out(p, "output folder (replaced as a whole)")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps (default: the preset's)")
    add_seed(p, "the run's seed; each target's own seed derives from it and the target")
    p.add_argument("--batch-size", type=int, default=8, help="targets optimised at once, as one batch (default 8)")
    p.add_argument("--chunk-size", action=_Renamed, new="--batch-size", help=argparse.SUPPRESS)
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="draw each target from this many seeds: seed k >= 1 of a target is the target id plus -seed<k> (default 1)",
    )
    p.add_argument(
        "--decoder",
        default=None,
        metavar="PATH",
        help=f"{listed(taking('decoder'))} method: decoder file from `atlas train-dae`, or `random`",
    )
    p.add_argument(
        "--spectrum-from",
        default=None,
        metavar="DIR",
        help=f"{listed(taking('spectrum'))} method: an extracted dataset (`atlas extract`) whose photos' mean amplitude "
        "spectrum is the image's fixed magnitude (default: the 1/f law)",
    )
    p.add_argument("--width", type=float, default=None, help="scratch generator width multiplier (1.0: the paper's)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one method setting (repeatable)")
    add_device(p)
    p.add_argument(
        "--on-nan",
        default="fail",
        choices=("fail", "record"),
        help="a target whose loss goes NaN: fail the run (nothing written) or record it as failed",
    )
    p.add_argument(
        "--attempt",
        action="append",
        metavar="TARGET_ID=K",
        help="try a target again with the seed of its attempt K (0: the first; the workflow retries a target "
        "whose loss went NaN this way; repeatable)",
    )
    speed = p.add_argument_group("speed (what is optimised stays the same)")
    speed.add_argument(
        "--precision",
        default="auto",
        metavar="{auto,fp32,bf16}",
        help="the steps' forward/backward: auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16 autocast",
    )
    speed.add_argument(
        "--channels-last",
        default="auto",
        metavar="{auto,on,off}",
        help="NHWC memory layout of G and D: auto (on, on a GPU and a CPU), on or off",
    )
    speed.add_argument(
        "--fold-bn",
        default="auto",
        metavar="{auto,on,off}",
        help="fold D's BatchNorm layers into its convolutions: auto (on), on or off (same function, "
        "float rounding apart; about a sixth less CPU time per image)",
    )
    speed.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile G and D (opt-in: costs a compilation per job; see docs/benchmarks.md)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from atlas.classifier import load
    from atlas.cli.options import classifier_spec
    from atlas.generate import GenerateConfig, generate
    from atlas.methods import parse_overrides, settings_for
    from atlas.runtime import pick_device
    from atlas.targets import parse_attempts, parse_specs, with_seeds

    overrides = parse_overrides(args.set or [])
    if args.steps is not None:
        overrides["steps"] = str(args.steps)
    if args.width is not None:
        overrides["width"] = str(args.width)
    settings = settings_for(args.method, args.preset, overrides)
    targets = with_seeds(parse_specs(args.targets), args.seeds)
    cfg = GenerateConfig(
        settings=settings,
        seed=args.seed,
        batch_size=args.batch_size,
        decoder=args.decoder,
        image_size=args.image_size,
        on_nan=args.on_nan,
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
        fold_bn=args.fold_bn,
        spectrum=args.spectrum_from,
        attempts=parse_attempts(args.attempt or []),
    )
    device = pick_device(args.device)
    classifier = load(classifier_spec(args), seed=args.seed)
    generate(classifier, targets, cfg, Path(args.out), device)
    return 0
