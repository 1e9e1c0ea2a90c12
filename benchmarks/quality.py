"""Benchmark: can a person read the images? Each method on a list of classes, judged independently.

    uv run python benchmarks/quality.py --methods pixel,fourier,maco,scratch,pretrained \\
        --classes dev --decoder DIR/decoder.pt --spectrum-from DATASET_DIR [--out DIR]

Runs `atlas.generate.generate` for every method at its default settings (or `--preset paper`,
`--set METHOD:KEY=VALUE` overrides) on class targets, all classes of a method in one chunk, and
scores each saved 8-bit PNG with D (the classifier the images were made for) and with an
independent judge (EfficientNet-Lite2 by default), as `atlas score` does. Prints, per method:

    D>0.5      images D gives the target a probability above 0.5
    top-1      images the judge puts in the target class
    top-5      images whose class is in the judge's top 5
    judge p    the judge's mean probability of the target class
    labels     the number of distinct judge top-1 labels (1: the same picture for every class)
    s/img      wall seconds per image (generation only)
    CPU-s/img  CPU seconds (user + sys of this process) per image, generation only
    CPU-s/top5 CPU seconds per image the judge puts in its top 5: the price of a readable image
    sat, contr, colourf.   naturalness (`atlas.naturalness`): mean saturation, RMS contrast and
               colourfulness; `--photos DATASET_DIR` adds the same figures of the dataset's photos

`--variant LABEL=METHOD,KEY=VALUE,...` adds a row for a method under other settings (any method
setting, or `fold_bn=on|off`), so old and new settings are measured in one run, e.g.

    uv run python benchmarks/quality.py --methods "" --classes spread \
        --variant old=fourier,fold_bn=off --variant new=fourier,coarse_size=160,coarse_fraction=0.75

and a contact sheet (OUT/sheet.png: a row per method, a column per class, the judge's top-1 under
each image) to look at. `--classes dev` is the development set the defaults were chosen on;
`--classes config` the 13 classes of the embedded default (config.yaml), to report once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw

from atlas import allocator
from atlas.classifier import load_classifier
from atlas.generate import GenerateConfig, generate
from atlas.image_scores import class_scores
from atlas.io import write_text
from atlas.methods import METHODS, settings_for, takes
from atlas.naturalness import FIELDS, naturalness, of_photos
from atlas.pixels import to_input, unit_rgb
from atlas.targets import Target

# Chosen for variety (animals, objects, food, scenes) and kept apart from config.yaml's 13 classes.
DEV_CLASSES = (1, 22, 130, 207, 285, 340, 409, 430, 812, 948, 954, 980)
# 40 classes spread over the 1000, every 25th from 12 (the speed settings were measured here).
SPREAD_CLASSES = tuple(range(12, 1000, 25))
# config.yaml's classes: the paper's figure classes that are ImageNet-1k classes.
CONFIG_CLASSES = (0, 9, 30, 304, 470, 516, 520, 593, 611, 621, 655, 668, 676)

log = logging.getLogger("benchmarks.quality")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods (default: all)")
    p.add_argument("--classes", default="dev", help="dev, config, spread, or comma-separated class indices")
    p.add_argument("--preset", default="default", choices=("default", "paper"))
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD:KEY=VALUE",
        help="override one setting of one method (repeatable), e.g. fourier:lr=0.1",
    )
    p.add_argument("--decoder", default=None, help="pretrained method: decoder file (`atlas train-dae`)")
    p.add_argument("--spectrum-from", default=None, metavar="DIR", help="maco method: extracted dataset folder")
    p.add_argument(
        "--photos", default=None, metavar="DIR", help="an extracted dataset folder: print its photos' naturalness"
    )
    p.add_argument("--classifier", default="efficientnet-lite0")
    p.add_argument("--judge", default="efficientnet-lite2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--fold-bn", default="auto", choices=("auto", "on", "off"), help="as `atlas generate --fold-bn`")
    p.add_argument("--out", default=None, metavar="DIR", help="keep images, sheet and results here")
    p.add_argument("--verbose", action="store_true", help="also print every image's scores")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=METHOD,KEY=VALUE,...",
        help="one more row: METHOD under these settings (method settings or fold_bn=on|off); repeatable",
    )
    return p.parse_args(argv)


def class_list(text: str) -> tuple[int, ...]:
    if text == "dev":
        return DEV_CLASSES
    if text == "config":
        return CONFIG_CLASSES
    if text == "spread":
        return SPREAD_CLASSES
    return tuple(int(c) for c in text.split(","))


def overrides(items: list[str], methods: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {m: {} for m in methods}
    for item in items:
        method, sep, rest = item.partition(":")
        key, sep2, value = rest.partition("=")
        if not sep or not sep2 or method not in out:
            raise SystemExit(f"malformed --set {item!r}; write METHOD:KEY=VALUE with METHOD one of {methods}")
        out[method][key] = value
    return out


def judge_rows(classifier, judge, records: pd.DataFrame, folder: Path) -> list[dict[str, object]]:  # noqa: ANN001
    ok = records[~records["failed"]]
    pixels = np.stack([np.asarray(Image.open(folder / str(name)).convert("RGB")) for name in ok["image"]])
    rgb = unit_rgb(torch.from_numpy(pixels))
    targets = [Target("class", (int(c),)) for c in ok["class_index"]]
    with torch.no_grad():
        logits = judge.forward(to_input(judge, rgb), need_logits=True).logits
    js = class_scores(logits, targets)
    nat = naturalness(rgb)
    rows = []
    for b, (_, r) in enumerate(ok.iterrows()):
        top1 = int(js.top5[b][0])
        rows.append(
            {
                "class": int(r["class_index"]),
                "label": r["label"],
                "image": str(folder / str(r["image"])),
                "d_prob": float(r["prob"]),
                "judge_prob": float(js.prob[b]),
                "judge_rank": int(js.rank[b]),
                "judge_top1": judge.class_names[top1],
                **{f: float(getattr(nat, f)[b]) for f in FIELDS},
            }
        )
    return rows


def photo_naturalness(folder: Path) -> dict[str, float | int]:
    """The mean naturalness of an extracted dataset's photos (not their crops)."""
    from atlas.dataset import load_dataset

    images, manifest = load_dataset(folder)
    rows = manifest.loc[manifest["parent"].isna(), "index"].to_numpy(dtype=np.int64)
    return of_photos(images, rows)


def parse_variant(text: str) -> tuple[str, str, dict[str, str], str]:
    """LABEL=METHOD,KEY=VALUE,... -> (label, method, setting overrides, fold_bn)."""
    label, sep, rest = text.partition("=")
    method, *pairs = rest.split(",")
    if not sep or not label or method not in METHODS:
        raise SystemExit(f"malformed --variant {text!r}; write LABEL=METHOD,KEY=VALUE,... with METHOD one of {METHODS}")
    sets = {}
    for pair in pairs:
        key, sep2, value = pair.partition("=")
        if not sep2:
            raise SystemExit(f"malformed --variant {text!r}: {pair!r} is not KEY=VALUE")
        sets[key] = value
    return label, method, {k: v for k, v in sets.items() if k != "fold_bn"}, sets.get("fold_bn", "auto")


def summarise(
    method: str, rows: list[dict[str, object]], n: int, seconds: float, cpu: float = float("nan")
) -> dict[str, object]:
    top5 = sum(int(r["judge_rank"]) <= 5 for r in rows)  # type: ignore[call-overload]
    return {
        "method": method,
        "images": n,
        "d_over_half": sum(float(r["d_prob"]) > 0.5 for r in rows),  # type: ignore[arg-type]
        "judge_top1": sum(int(r["judge_rank"]) == 1 for r in rows),  # type: ignore[call-overload]
        "judge_top5": sum(int(r["judge_rank"]) <= 5 for r in rows),  # type: ignore[call-overload]
        "judge_prob": float(np.mean([float(r["judge_prob"]) for r in rows])) if rows else float("nan"),  # type: ignore[arg-type]
        "labels": len({r["judge_top1"] for r in rows}),
        "seconds_per_image": seconds / max(n, 1),
        "cpu_seconds_per_image": cpu / max(n, 1),
        "cpu_seconds_per_top5": cpu / top5 if top5 else float("nan"),
        **{f: float(np.mean([float(r[f]) for r in rows])) if rows else float("nan") for f in FIELDS},  # type: ignore[arg-type]
    }


def contact_sheet(
    results: dict[str, list[dict[str, object]]], classes: tuple[int, ...], path: Path, cell: int = 160
) -> None:
    methods = list(results)
    pad, head = 4, 28
    sheet = Image.new("RGB", (90 + len(classes) * (cell + pad), head + len(methods) * (cell + 30)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, c in enumerate(classes):
        label = next((str(r["label"]) for rows in results.values() for r in rows if r["class"] == c), str(c))
        draw.text((90 + j * (cell + pad), 8), f"{c} {label}"[:26], fill="black")
    for i, m in enumerate(methods):
        y = head + i * (cell + 30)
        draw.text((4, y + cell // 2), m, fill="black")
        for r in results[m]:
            j = classes.index(int(r["class"]))  # type: ignore[call-overload]
            x = 90 + j * (cell + pad)
            sheet.paste(Image.open(str(r["image"])).convert("RGB").resize((cell, cell), Image.BILINEAR), (x, y))
            mark = "*" if int(r["judge_rank"]) <= 5 else ""  # type: ignore[call-overload]
            draw.text((x, y + cell + 2), f"{mark}{r['judge_top1']}"[:26], fill="darkgreen" if mark else "black")
    sheet.save(path)


def main(argv: list[str] | None = None) -> int:
    allocator.tune()  # as `atlas` does: the same allocator settings as the workflow's jobs
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            raise SystemExit(f"unknown method {m!r}; use some of {', '.join(METHODS)}")
    classes = class_list(args.classes)
    sets = overrides(args.set, methods)
    device = torch.device(args.device)
    judge = load_classifier(args.judge, "default", seed=args.seed).to(device)
    targets = [Target("class", (c,)) for c in classes]
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="atlas-quality-"))
    results: dict[str, list[dict[str, object]]] = {}
    table = []
    runs = [(m, m, sets[m], args.fold_bn) for m in methods] + [parse_variant(v) for v in args.variant]
    for label, m, changes, fold_bn in runs:
        settings = settings_for(m, args.preset, changes)
        cfg = GenerateConfig(
            settings=settings,
            seed=args.seed,
            batch_size=args.batch_size,
            on_nan="record",
            fold_bn=fold_bn,
            decoder=args.decoder if takes(m, "decoder") else None,
            spectrum=args.spectrum_from if takes(m, "spectrum") else None,
        )
        # A fresh D for each row: folding changes the classifier in place.
        classifier = load_classifier(args.classifier, "default", seed=args.seed)
        t0, c0 = time.perf_counter(), time.process_time()
        records = generate(classifier, targets, cfg, out / label, device)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        rows = judge_rows(classifier, judge, records, out / label)
        results[label] = rows
        table.append(summarise(label, rows, len(targets), seconds, cpu))
        if args.verbose:
            for r in rows:
                print(
                    f"  {m:<10} {r['class']:>4} {str(r['label'])[:22]:<22} D {float(r['d_prob']):.2f}  "  # type: ignore[arg-type]
                    f"judge {float(r['judge_prob']):.3f} rank {r['judge_rank']:>4}  top-1 {r['judge_top1']}"
                )  # type: ignore[arg-type]
    n = len(classes)
    print(
        f"{args.classifier} (D) and {args.judge} (judge), {n} classes ({args.classes}), preset {args.preset}, "
        f"seed {args.seed}, {torch.get_num_threads()} threads; images and sheet in {out}"
    )
    print(
        f"{'method':<11}{'D>0.5':>7}{'top-1':>7}{'top-5':>7}{'judge p':>9}{'labels':>8}{'s/img':>8}"
        f"{'CPU-s/img':>11}{'CPU-s/top5':>12}{'sat':>7}{'contr':>7}{'colourf.':>9}"
    )
    for t in table:
        print(
            f"{t['method']:<11}{t['d_over_half']:>4}/{n:<2}{t['judge_top1']:>4}/{n:<2}{t['judge_top5']:>4}/{n:<2}"
            f"{t['judge_prob']:>9.3f}{t['labels']:>8}{t['seconds_per_image']:>8.1f}"
            f"{t['cpu_seconds_per_image']:>11.2f}{t['cpu_seconds_per_top5']:>12.2f}"
            f"{t['saturation']:>7.3f}{t['rms_contrast']:>7.3f}{t['colourfulness']:>9.1f}"
        )
    if args.photos:
        ref = photo_naturalness(Path(args.photos))
        table.append({"method": "photos", **ref})
        print(
            f"{'photos':<11}{int(ref['photos']):>4} photos of {args.photos}{'':>44}"
            f"{ref['saturation']:>7.3f}{ref['rms_contrast']:>7.3f}{ref['colourfulness']:>9.1f}"
        )
    contact_sheet(results, classes, out / "sheet.png")
    write_text(out / "quality.json", json.dumps({"args": vars(args), "table": table, "images": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
