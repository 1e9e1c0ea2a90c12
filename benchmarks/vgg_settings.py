"""Benchmark: do the VGG-16 config's method settings move VGG-16's targets? (plumbing, on a CPU)

    uv run python benchmarks/vgg_settings.py [--steps 30] [--image-size 64] [--classes 9,30] \
        [--filter features.9:0] [--methods scratch,...] [--set KEY=VALUE] [--config FILE]

Reads the `methods` section of the config (workflow/configs/imagenet-vgg16.yaml by default: each
method's preset and settings, turned into `--set` text as workflow/rules/common.smk does) and runs
each method through `atlas.generate.generate`, in process, on `torchvision:vgg16` with seeded
random weights (the real ones cannot be downloaded everywhere) at a reduced input size, on two
classes and one filter in one chunk. The pretrained method gets `--decoder random`: an untrained
decoder of the settings' own width. `--steps N` caps every method's steps at N (0: the config's
budgets); a capped method's `snapshot_every` is scaled by the same factor, so its final image is
still the median of the config's number of snapshots over the same share of the run. `--set`
overrides a setting of every method after the config's (a control, e.g. transforms=false).

Each method runs twice: once for 1 step at lr 1e-12, which renders the starting point (as
tests/test_convergence.py does), and once with the settings. Prints a line of settings per
method, then per target:

    start, end   the target's activation as `atlas generate` records it on the saved PNG:
                 relu(logit) for a class, the channel's spatial mean for a filter
    change       end - start
    logit 0, logit   a class's raw logit on the PNG at the start and at the end (what the
                 `default` presets ascend; relu(logit) stays 0 while it is negative)
    rank         D's rank of a class at the end (1: top)
    s/target     the settings' run: the chunk's wall seconds over its targets

and each method's wall seconds. Exits 1 if any method fails to raise every target's activation
(or a target's loss goes NaN), 0 otherwise.

With random weights VGG-16's logits are of order 0.01 and start negative, and a random network is
not invariant to the random transformations the presets apply before D: a class logit can fall
under them where it rises without them (`--set transforms=false`). A filter's activation is the
plumbing check that does not depend on that.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from PIL import Image

from atlas.classifier import Classifier, load_classifier
from atlas.errors import AtlasError
from atlas.generate import GenerateConfig, generate
from atlas.methods import METHODS, MethodSettings, settings_for, takes
from atlas.pixels import dequantise
from atlas.targets import Target, check_targets, parse_specs

CONFIG = Path(__file__).resolve().parents[1] / "workflow" / "configs" / "imagenet-vgg16.yaml"
START_LR = 1e-12  # one step this small renders the starting point


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(CONFIG), help="workflow config whose `methods` section is run")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods (default: all five)")
    p.add_argument("--steps", type=int, default=0, help="cap every method's steps at N (default 0: no cap)")
    p.add_argument("--image-size", type=int, default=64, help="VGG-16's input size in pixels (default 64)")
    p.add_argument("--classes", default="9,30", help="comma-separated class indices (default 9,30)")
    p.add_argument(
        "--filter", default="features.9:0", metavar="LAYER:CHANNEL", help="filter target (default features.9:0)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting of every method, after the config's (repeatable), e.g. transforms=false",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of VGG-16's random weights and of the run")
    p.add_argument("--out", default=None, metavar="DIR", help="keep the images here (default: a temporary folder)")
    return p.parse_args(argv)


def config_overrides(entry: dict[str, Any]) -> dict[str, str]:
    """A method's non-null config settings as `--set` text, as workflow/rules/common.smk makes them."""
    out = {}
    for key, value in sorted((entry.get("settings") or {}).items()):
        if value is not None:
            out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def capped(settings: MethodSettings, cap: int) -> MethodSettings:
    """`settings` with at most `cap` steps (0: unchanged), snapshot_every scaled alike."""
    if cap <= 0 or cap >= settings.steps:
        return settings
    every = max(1, settings.snapshot_every * cap // settings.steps)
    return replace(settings, steps=cap, snapshot_every=every)


def run_method(
    classifier: Classifier, settings: MethodSettings, targets: list[Target], seed: int, out: Path
) -> tuple[pd.DataFrame, float]:
    """Generate every target in one chunk; the records (by target id) and the wall seconds."""
    image_size = classifier.input_size
    cfg = GenerateConfig(
        settings=settings,
        seed=seed,
        batch_size=len(targets),
        image_size=image_size,
        on_nan="record",
        decoder="random" if takes(settings.method, "decoder") else None,
    )
    t0 = time.perf_counter()
    records = generate(classifier, targets, cfg, out, torch.device("cpu"))
    seconds = time.perf_counter() - t0
    records = records.set_index("target_id")
    records["logit"] = pd.Series({t.id: target_logit(classifier, t, out, records.loc[t.id]) for t in targets})
    return records, seconds


@torch.no_grad()
def target_logit(classifier: Classifier, target: Target, out: Path, record: pd.Series) -> float:
    """D's raw logit of a class target on its saved PNG (NaN for a filter or a failed target)."""
    if target.kind == "filter" or record["failed"]:
        return float("nan")
    pixels = torch.from_numpy(np.array(Image.open(out / str(record["image"])).convert("RGB")))[None]
    logits = classifier.forward(dequantise(classifier, pixels), need_logits=True).logits
    assert logits is not None
    return float(logits[0, list(target.classes)].sum())


def describe(s: MethodSettings) -> str:
    parts = [f"steps {s.steps}", f"{s.optimiser} lr {s.lr:g}", "raw logit" if not s.target_relu else "relu(logit)"]
    if s.method == "scratch":
        parts.append(f"width {s.width:g}, noise {s.noise_std:g}")
    if s.method == "pretrained":
        parts.append(f"decoder random width {s.width:g}" + (", code_norm" if s.code_norm else ""))
    if s.snapshots > 1:
        parts.append(f"median of {s.snapshots} snapshots every {s.snapshot_every}")
    parts.append("transforms" if s.transforms else "no transforms")
    return ", ".join(parts)


def check(
    classifier: Classifier,
    section: dict[str, Any],
    methods: list[str],
    targets: list[Target],
    args: argparse.Namespace,
    extra: dict[str, str],
    root: Path,
) -> list[str]:
    """Run and print every method; the targets whose activation did not rise (or that failed)."""
    failures: list[str] = []
    walls: dict[str, float] = {}
    for m in methods:
        entry = section.get(m) or {}
        full = settings_for(m, entry.get("preset", "default"), {**config_overrides(entry), **extra})
        settings = capped(full, args.steps)
        begin = replace(settings, steps=1, lr=START_LR)
        start, _ = run_method(classifier, begin, targets, args.seed, root / f"{m}-start")
        end, walls[m] = run_method(classifier, settings, targets, args.seed, root / m)
        print(f"{m:<11}{describe(settings)}")
        for t in targets:
            a, b = start.loc[t.id], end.loc[t.id]
            rank = "" if t.kind == "filter" or b["failed"] else str(int(b["rank"]))
            logits = "" if t.kind == "filter" else f"{a['logit']:>11.4g}{b['logit']:>11.4g}"
            print(
                f"{'':<11}{t.id:<26}{a['activation']:>10.4g}{b['activation']:>10.4g}"
                f"{b['activation'] - a['activation']:>+10.3g}{logits:>22}{rank:>6}{b['seconds']:>10.1f}"
            )
            if b["failed"] or a["failed"]:
                failures.append(f"{m} {t.id}: {b['reason'] or a['reason']}")
            elif not b["activation"] > a["activation"]:
                failures.append(f"{m} {t.id}: activation {a['activation']:.4g} -> {b['activation']:.4g}")
    print("wall seconds per method (the settings' run): " + ", ".join(f"{m} {s:.0f}" for m, s in walls.items()))
    return failures


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; use some of {', '.join(METHODS)}")
    extra = dict(item.split("=", 1) for item in args.set if "=" in item)
    if len(extra) != len(args.set):
        raise SystemExit("malformed --set; write KEY=VALUE, e.g. --set transforms=false")
    try:
        section = yaml.safe_load(Path(args.config).read_text())["methods"]
        targets = parse_specs([f"class:{args.classes}", f"filter:{args.filter}"])
        classifier = load_classifier("torchvision:vgg16", "random", seed=args.seed, image_size=args.image_size)
        check_targets(targets, classifier)
        print(
            f"torchvision:vgg16 (random weights, seed {args.seed}) at {args.image_size} px, CPU, "
            f"{torch.get_num_threads()} threads; settings from {args.config}"
            + (f", steps capped at {args.steps}" if args.steps > 0 else "")
            + "".join(f", {k}={v}" for k, v in extra.items())
        )
        print(
            f"{'method':<11}{'target':<26}{'start':>10}{'end':>10}{'change':>10}"
            f"{'logit 0':>11}{'logit':>11}{'rank':>6}{'s/target':>10}"
        )
        folder = contextlib.nullcontext(args.out) if args.out else tempfile.TemporaryDirectory(prefix="atlas-vgg-")
        with folder as root:
            failures = check(classifier, section, methods, targets, args, extra, Path(root))
    except AtlasError as exc:
        raise SystemExit(f"error: {exc}") from None
    if failures:
        print("FAILED to raise: " + "; ".join(failures))
        return 1
    print(f"every method raised every target's activation ({len(methods)} methods, {len(targets)} targets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
