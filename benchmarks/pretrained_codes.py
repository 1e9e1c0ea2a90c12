"""Benchmark: where the pretrained method's codes go, against the codes its decoder was trained on.

    uv run python benchmarks/pretrained_codes.py AUTOENCODER_DIR DATASET_DIR [--steps 150] [--set KEY=VALUE]

AUTOENCODER_DIR is an `atlas train-dae` folder (decoder.pt and checkpoint.pt, whose thumbnail
encoder gives the training codes), DATASET_DIR the `atlas extract` folder it trained on. Runs the
pretrained method on four classes and prints, for the dataset's codes, the starting code and the
optimised codes: the code's L2 norm, its share of zeros, its largest value, and the share of the
decoded image's values that the display mapping clips (outside RGB [0, 1]). A decoder only draws
what it learned inside the range of its training codes; outside it, its ReLUs extrapolate.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from atlas.classifier import load_classifier
from atlas.dataset import load_dataset
from atlas.generate import random_transforms
from atlas.generator import load_decoder
from atlas.methods import settings_for
from atlas.objectives import target_objective
from atlas.optimise import optimise
from atlas.parameterise import PretrainedG
from atlas.targets import Target
from atlas.train_dae.networks import ThumbnailEncoder

CLASSES = (1, 340, 430, 948)


def describe(name: str, codes: torch.Tensor, images: torch.Tensor, classifier) -> None:  # noqa: ANN001
    rgb = images * torch.tensor(classifier.std).view(1, 3, 1, 1) + torch.tensor(classifier.mean).view(1, 3, 1, 1)
    clipped = ((rgb < 0) | (rgb > 1)).float().mean().item()
    print(
        f"{name:<28} norm {codes.norm(dim=1).mean():7.1f}   zeros {(codes <= 0).float().mean():5.0%}   "
        f"max {codes.max():6.2f}   image clipped {clipped:5.1%}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("autoencoder")
    p.add_argument("dataset")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    classifier = load_classifier("efficientnet-lite0", "default")
    decoder = load_decoder(f"{args.autoencoder}/decoder.pt").eval()
    blob = torch.load(f"{args.autoencoder}/checkpoint.pt", map_location="cpu", weights_only=True)
    encoder = ThumbnailEncoder()
    encoder.load_state_dict(blob["encoder"])
    images, _ = load_dataset(args.dataset)
    rgb = torch.from_numpy(np.array(images[:64])).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        codes = encoder(classifier.normalise(rgb))
        describe("dataset photos' codes", codes, decoder(codes), classifier)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    overrides.setdefault("steps", str(args.steps))
    overrides.setdefault("snapshots", "1")
    s = settings_for("pretrained", "default", overrides)
    targets = [Target("class", (c,)) for c in CLASSES]
    seeds = [t.seed(0) for t in targets]
    param = PretrainedG(s, seeds, decoder, torch.device("cpu"))
    start = param.alpha.detach().clone()
    with torch.no_grad():
        describe("starting codes", param.code(noise=False), param.render(), classifier)
    objs = [target_objective(t, s.penalty, s.target_relu) for t in targets]
    result = optimise(
        classifier, objs, param, s, transforms=random_transforms(s, classifier, seeds, torch.device("cpu"))
    )
    with torch.no_grad():
        describe(f"codes after {s.steps} steps", param.code(noise=False), result.images, classifier)
        moved = (param.alpha - start).abs()
        print(
            f"alpha moved: mean |change| {moved.mean():.2f}, max {moved.max():.2f}, "
            f"negative coordinates {(param.alpha < 0).float().mean():.0%}"
        )
        logits = classifier.forward(result.images).logits
        probs = torch.softmax(logits, dim=1)
        print("D's probability of each class:", " ".join(f"{c}:{probs[b, c]:.2f}" for b, c in enumerate(CLASSES)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
