"""What bf16 does to the outcome: the same targets generated in fp32 and in bf16, compared.

    uv run python benchmarks/precision.py --method scratch --steps 60          # CPU, embedded D
    uv run python benchmarks/precision.py --classifier torchvision:vgg16 --weights random \
        --method pretrained --steps 200 --classes 0-15 --device cuda            # on a GPU

Runs `atlas.generate.generate` once per precision on the same targets and seed, and prints per
precision the wall and CPU seconds, the targets' mean probability and activation as scored on
the saved images (always in fp32), how many reached rank 1, and the mean and largest difference
of the saved images from the first precision's, in 8-bit levels. Pixel-level differences are
expected with sign-like optimisers (docs/benchmarks.md, "Speed on the CPU"); the outcome columns say whether bf16
optimises as well. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _bench import Clock, describe_device
from PIL import Image

from atlas.classifier import load_classifier
from atlas.generate import GenerateConfig, generate
from atlas.methods import settings_for, takes
from atlas.runtime import pick_device
from atlas.targets import parse_specs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classifier", default="efficientnet-lite0")
    ap.add_argument("--weights", default="default")
    ap.add_argument("--method", default="scratch")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--width", type=float, default=0.25, help="scratch generator width")
    ap.add_argument("--classes", default="285,967")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument(
        "--decoder", default="random", help="pretrained: a decoder from `atlas train-dae` (random: untrained)"
    )
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = pick_device(args.device)
    clf = load_classifier(args.classifier, args.weights)
    overrides = {"steps": str(args.steps)} | ({"width": str(args.width)} if args.method == "scratch" else {})
    settings = settings_for(args.method, args.preset, overrides)
    targets = parse_specs([f"class:{args.classes}"])
    print(
        f"{describe_device(device)}; {args.classifier} ({args.weights}), {args.method} ({args.preset}), "
        f"{args.steps} steps, classes {args.classes}"
    )
    print(
        f"{'precision':<10}{'wall s':>8}{'cpu s':>8}{'mean prob':>10}{'mean act':>9}{'rank 1':>7}"
        f"{'mean |diff|':>12}{'max |diff|':>11}"
    )
    first = None
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precisions.split(","):
            cfg = GenerateConfig(
                settings=settings,
                batch_size=len(targets),
                precision=precision,
                decoder=args.decoder if takes(args.method, "decoder") else None,
            )
            out = Path(tmp) / precision
            with Clock(device) as clock:
                rec = generate(clf, targets, cfg, out, device)
            ok = rec[~rec["failed"]]
            images = np.stack([np.asarray(Image.open(out / name), dtype=np.int16) for name in ok["image"]])
            first = images if first is None else first
            diff = np.abs(images - first) if images.shape == first.shape else np.full(1, -1)
            print(
                f"{precision:<10}{clock.wall:>8.1f}{clock.cpu:>8.1f}{ok['prob'].mean():>10.4f}{ok['activation'].mean():>9.2f}"
                f"{int((ok['rank'] == 1).sum()):>4}/{len(rec):<2}{diff.mean():>12.2f}{int(diff.max()):>11}",
                flush=True,
            )


if __name__ == "__main__":
    main()
