"""Option groups that several subcommands share, declared once.

Only argparse here: no stage module, no torch. Defaults that the library also holds are imported
from torch-free modules, so the help texts and the library cannot drift apart.
"""

from __future__ import annotations

import argparse

from atlas.classifier_spec import NAMES_HELP, ClassifierSpec
from atlas.targets import SPEC_HELP

DEFAULT_CLASSIFIER = "efficientnet-lite0"
DEFAULT_JUDGE = "efficientnet-lite2"
CLASSIFIERS_HELP = NAMES_HELP
WEIGHTS_HELP = "default (the package's, torchvision's or timm's), random, or a local state-dict file"


def add_classifier(p: argparse.ArgumentParser, as_generated: bool = False, image_size: bool = True) -> None:
    """D: `--classifier`, `--weights` and (where the stage runs D) `--image-size`.

    as_generated: the stage reads images another stage made, so D must be given as it was then.
    """
    same = "; as the images were generated with" if as_generated else ""
    group = p.add_argument_group("the classifier D")
    group.add_argument(
        "--classifier", default=DEFAULT_CLASSIFIER, help=f"D: {CLASSIFIERS_HELP} (default {DEFAULT_CLASSIFIER}{same})"
    )
    group.add_argument("--weights", default="default", help=f"D's weights: {WEIGHTS_HELP}{same}")
    if image_size:
        group.add_argument(
            "--image-size",
            type=int,
            default=None,
            metavar="PX",
            help=f"run D at PX x PX (default: its own input size{same})",
        )
    add_model_options(group, "", "D")


def add_model_options(group: argparse._ArgumentGroup, prefix: str, who: str) -> None:
    """--[prefix]mean, --[prefix]std and --[prefix]classes: what a model that does not declare
    them (python:, torchscript:, export:) needs, and any model's own label set."""
    group.add_argument(
        f"--{prefix}mean", default=None, metavar="R,G,B", help=f"{who}'s input mean on RGB in [0, 1] (default: its own)"
    )
    group.add_argument(f"--{prefix}std", default=None, metavar="R,G,B", help=f"{who}'s input std (default: its own)")
    group.add_argument(
        f"--{prefix}classes",
        default=None,
        metavar="FILE",
        help=f"{who}'s class names, one a line, in class-index order (default: ImageNet-1k's 1000)",
    )


def classifier_spec(args: argparse.Namespace) -> ClassifierSpec:
    """D as the options `add_classifier` declared name it."""
    return ClassifierSpec.of(
        args.classifier, args.weights, getattr(args, "image_size", None), args.mean, args.std, args.classes
    )


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present, the default), cpu or cuda")


def add_seed(p: argparse.ArgumentParser, what: str, default: int = 0) -> None:
    p.add_argument("--seed", type=int, default=default, help=f"{what} (default {default})")


def add_targets(p: argparse.ArgumentParser) -> None:
    p.add_argument("--targets", required=True, action="append", metavar="SPEC", help=f"{SPEC_HELP} (repeatable)")


def add_out(p: argparse.ArgumentParser, what: str, metavar: str = "DIR", required: bool = True) -> None:
    p.add_argument("--out", required=required, default=None, metavar=metavar, help=what)


def add_batch_size(p: argparse.ArgumentParser, default: int) -> None:
    p.add_argument("--batch-size", type=int, default=default, help=f"images per forward pass (default {default})")
