"""Option groups that several subcommands share, declared once.

Only argparse here: no stage module, no torch. Defaults that the library also holds are imported
from torch-free modules, so the help texts and the library cannot drift apart.
"""

from __future__ import annotations

import argparse

from atlas.targets import SPEC_HELP

DEFAULT_CLASSIFIER = "efficientnet-lite0"
DEFAULT_JUDGE = "efficientnet-lite2"
CLASSIFIERS_HELP = "efficientnet-lite0, efficientnet-lite2 or torchvision:<name>"
WEIGHTS_HELP = "default (the package's or torchvision's), random, or a local state-dict file"


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
