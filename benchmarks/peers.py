"""Benchmark: Atlas beside its peers, lucent and horama (MACO), on the same model, classes and judge.

    uv sync --group peers          # lucent and horama are not in the default install
    uv run --group peers python benchmarks/peers.py --dataset DATASET_DIR [--out DIR]

Prints one row per tool and budget, and the dataset's photos as the reference row:

    | tool, steps | judge top-1 | judge top-5 | mean judge p | saturation | RMS contrast | colourfulness | CPU s / image |

The tools (`--tools`, comma-separated; default all):

    atlas-fourier, atlas-maco   `atlas.generate.generate` at the method's default settings
            (`atlas.methods.settings_for`), as benchmarks/quality.py runs them, so they follow the
            defaults of the code that runs; all classes in one chunk; maco's magnitude is the mean
            spectrum of the dataset's photos (`--spectrum-from`), as the workflow gives it.
    lucent-100, lucent-512   torch-lucent 0.1.8's `render.render_vis` on the class's logit (the
            objective "out:<c>"), at lucid's settings: a 224 px Fourier image in decorrelated colour
            (`param.image(224, fft=True, decorrelate=True)`), the standard transformations, Adam lr
            0.05; 100 or 512 steps. `preprocess=False`: lucent's own preprocessing is torchvision's
            ImageNet mean and std, wrong for the Lite models; the normalisation is inside the model.
    horama-100   horama 0.3.0's `maco` on the mean logit of its crops, 100 steps, its defaults
            otherwise: a 1280 px canvas, 6 crops per step, NAdam lr 1.0 on the phase, noise 0.05;
            `values_range=(0, 1)`, the model's input range. Its crops: `box_size=(0.20, 0.25)`
            draws sides of 25-30 % of the canvas (horama adds the spread to the upper bound), centred
            at N(0.5, 0.15), so D sees mostly the middle of the canvas. Offline, horama cannot fetch
            the ImageNet magnitude spectrum it would download; it reads the 1/f law instead
            (`atlas.parameterise.power_law`, the same for the three channels), written where horama
            looks for its file, in a temporary working folder.

What every tool shares:

- D, the classifier optimised: EfficientNet-Lite0 (`load_classifier("efficientnet-lite0")`).
  Lucent and horama call one model, `RGBModel`: RGB in [0, 1] in, D's logits out, Atlas's own
  normalisation (`Classifier.normalise`) and D's forward pass (`Classifier.forward`: resized
  bilinearly to D's 224 px, as Atlas's generation shows D its transformed frame) inside. Atlas
  runs D as its defaults do (BatchNorm folded into the convolutions: the same function, faster).
- One thread (`torch.set_num_threads(1)`); a tool's CPU s / image is this process's CPU time
  (`time.process_time`, user + sys) of its generation alone, over the images: model loading,
  judging and the peers' PNG writing excluded (Atlas's includes writing its PNGs and D's scores of
  them, as in quality.py: a small part of a second per image).
- The judge: EfficientNet-Lite2 on the saved 8-bit PNG, as `atlas score` reads it
  (`to_input(judge, rgb)`: resized, antialiased, to its 260 px); top-1 and top-5 count the images
  the judge puts in the target class; mean judge p is its mean probability of the target.
- Naturalness (`atlas.naturalness`: saturation, RMS contrast, colourfulness) of the saved PNG at
  224 px (a larger one resized, antialiased). The photos row: the dataset's photos (not their
  crops), `--photos`.

Horama's pictures are judged as horama shows them: `horama.plots.plot_maco` clips the image at its
1st and 99th percentiles (over all its values) and stretches it to [0, 1] (min-max); the PNG is
saved after that same normalisation (without the transparency overlay). The judged picture
(`horama-100`) is the centre 352 px of the 1280 px canvas (27.5 %: the size of horama's middle
crop), resized to the judge's input by `to_input`; `horama-frame` judges the whole 1280 px canvas,
resized the same way (no extra generation).

Classes (`--classes`, default): 94 hummingbird, 145 king penguin, 291 lion, 323 monarch, 388 giant
panda, 417 balloon, 483 castle, 779 school bus, 963 pizza, 970 alp: birds, a big cat, an insect, a
bear, objects, a building, a vehicle, a food and a landscape, none of them in quality.py's
development set or the embedded default's 13. `dev` and `config` name those sets.

The dataset: `--dataset DIR` (an extracted dataset, `atlas extract --out DIR`: the bundled photos by
default) gives both the photos row and Atlas maco's spectrum; `--photos DIR` and `--spectrum-from
DIR` set them apart. Without any, the bundled photos are extracted into a temporary folder first.

`--out DIR` keeps the PNGs (DIR/<tool>/), a contact sheet (DIR/sheet.png: a row per tool, a column
per class, the judge's top-1 under each image, marked * when the target is in its top 5) and the
results (DIR/peers.json); without it they go to a temporary folder, which is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import numpy as np
import pandas as pd
import torch
from PIL import Image
from quality import CONFIG_CLASSES, DEV_CLASSES, contact_sheet, judge_rows, photo_naturalness, summarise
from torch import nn

from atlas import allocator
from atlas.classifier import Classifier, load_classifier
from atlas.errors import AtlasError
from atlas.generate import GenerateConfig, generate
from atlas.image_scores import class_scores
from atlas.io import write_text
from atlas.methods import settings_for, takes
from atlas.parameterise import power_law
from atlas.pixels import to_input, unit_rgb
from atlas.targets import Target

TOOLS = ("atlas-fourier", "atlas-maco", "lucent-100", "lucent-512", "horama-100")
PEER_CLASSES = (94, 145, 291, 323, 388, 417, 483, 779, 963, 970)
# Horama's canvas and the centre of it that is judged (the size of its middle crop, 27.5 %).
HORAMA_CANVAS = 1280
HORAMA_CENTRE = 352
# The file horama reads its magnitude spectrum from (and downloads when it is missing).
HORAMA_SPECTRUM_FILE = "spectrum_decorrelated.npy"
INSTALL = "uv sync --group peers"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not the usage: every bad input is a one-line error."""
        self.exit(2, f"{self.prog}: {message}\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _Parser(prog="peers.py", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--tools", default=",".join(TOOLS), help=f"comma-separated, some of {', '.join(TOOLS)} (default: all)"
    )
    p.add_argument(
        "--classes", default="peers", help="peers (the default 10), dev, config, or comma-separated class indices"
    )
    p.add_argument("--dataset", metavar="DIR", help="an extracted dataset: the photos row and Atlas maco's spectrum")
    p.add_argument("--photos", metavar="DIR", help="an extracted dataset whose photos give the reference row")
    p.add_argument("--spectrum-from", metavar="DIR", help="an extracted dataset whose photos give maco's magnitude")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="DIR", help="keep the PNGs, sheet.png and peers.json here")
    return p.parse_args(argv)


def tool_list(text: str) -> list[str]:
    tools = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not tools:
        raise SystemExit(f"--tools {text!r} names no tool; use some of {', '.join(TOOLS)}")
    for t in tools:
        if t not in TOOLS:
            raise SystemExit(f"unknown tool {t!r} in --tools; use some of {', '.join(TOOLS)}")
    return tools


def class_list(text: str, num_classes: int = 1000) -> tuple[int, ...]:
    named = {"peers": PEER_CLASSES, "dev": DEV_CLASSES, "config": CONFIG_CLASSES}
    if text in named:
        return named[text]
    try:
        classes = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise SystemExit(
            f"--classes {text!r} is not a list of class indices; write e.g. 94,145 or one of {', '.join(named)}"
        ) from None
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise SystemExit(f"--classes: {bad[0]} is not an ImageNet class index (0-{num_classes - 1})")
    if len(set(classes)) != len(classes):
        raise SystemExit(f"--classes {text!r} names a class twice; name each once")
    return classes


def load_peers(tools: Sequence[str]) -> dict[str, ModuleType]:
    """The peers' modules the chosen tools need; a one-line SystemExit naming the install command
    when they are not installed."""
    wanted = []
    if any(t.startswith("lucent") for t in tools):
        wanted += ["lucent.optvis.render", "lucent.optvis.param"]
    if any(t.startswith("horama") for t in tools):
        wanted += ["einops", "horama", "horama.maco_fv", "horama.plots"]
    modules = {}
    for name in wanted:
        try:
            with warnings.catch_warnings():
                # kornia 0.4.1 (lucent's pin) scripts functions with torch.jit.script, deprecated in torch 2.13.
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=DeprecationWarning)
                modules[name] = importlib.import_module(name)
        except ImportError as exc:
            peers = ", ".join(t for t in tools if not t.startswith("atlas"))
            raise SystemExit(
                f"{peers} need the peers group, which is not installed ({exc}): run `{INSTALL}` first, "
                "or `uv run --group peers python benchmarks/peers.py ...`"
            ) from None
    return modules


def machine() -> str:
    """The CPU's model name (from /proc/cpuinfo, where there is one) and its logical cores."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores"


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


class RGBModel(nn.Module):
    """D as the peers call a model: RGB in [0, 1] (B, 3, H, W) in, logits (B, classes) out, with
    Atlas's own normalisation and `Classifier.forward` (resized to D's input size) inside. The
    logits pass through `out`, an identity, so that lucent can name them ("out:<c>")."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.net = classifier.model
        self.out = nn.Identity()

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        logits = self.classifier.forward(self.classifier.normalise(rgb), need_logits=True).logits
        assert logits is not None
        return self.out(logits)


def save_png(pixels: np.ndarray, path: Path) -> None:
    """uint8 (H, W, 3) -> PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] (H, W, 3) -> uint8, rounded, as Atlas saves its PNGs."""
    return (np.clip(rgb, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def centre(pixels: np.ndarray, side: int) -> np.ndarray:
    """The centre side x side of an (H, W, 3) image."""
    h, w = pixels.shape[:2]
    top, left = (h - side) // 2, (w - side) // 2
    return np.ascontiguousarray(pixels[top : top + side, left : left + side])


def records_of(classifier: Classifier, classes: Sequence[int], folder: Path, names: Sequence[str]) -> pd.DataFrame:
    """A peer's images as `atlas generate`'s records (what `quality.judge_rows` reads), with D's
    probability of the target on the saved PNG."""
    pixels = np.stack([np.asarray(Image.open(folder / n).convert("RGB")) for n in names])
    with torch.no_grad():
        logits = classifier.forward(to_input(classifier, unit_rgb(torch.from_numpy(pixels))), need_logits=True).logits
    assert logits is not None
    d = class_scores(logits, [Target("class", (c,)) for c in classes])
    return pd.DataFrame(
        {
            "class_index": list(classes),
            "label": [classifier.class_names[c] for c in classes],
            "image": list(names),
            "failed": False,
            "prob": [float(p) for p in d.prob],
        }
    )


def run_lucent(
    modules: dict[str, ModuleType],
    model: RGBModel,
    classes: Sequence[int],
    steps: int,
    seed: int,
    folder: Path,
    size: int = 224,
    progress: Callable[[str], None] = print,
) -> tuple[list[str], float]:
    """lucent's render_vis per class; returns the PNG names (in `folder`) and the CPU seconds of
    the renders."""
    render, param = modules["lucent.optvis.render"], modules["lucent.optvis.param"]
    names, cpu = [], 0.0
    for i, c in enumerate(classes):
        torch.manual_seed(seed)
        np.random.seed(seed)  # lucent's jitter, scale and rotation draw from numpy
        c0 = time.process_time()
        images = render.render_vis(
            model,
            f"out:{c}",
            param_f=lambda: param.image(size, fft=True, decorrelate=True),
            preprocess=False,
            show_image=False,
            progress=False,
            thresholds=(steps,),
        )
        spent = time.process_time() - c0
        cpu += spent
        # render_vis hooks every module of the model and never removes its hooks.
        for m in model.modules():
            m._forward_hooks.clear()
        names.append(f"{c:04d}.png")
        save_png(to_uint8(images[-1][0]), folder / names[-1])
        progress(f"  {i + 1}/{len(classes)} class {c} {model.classifier.class_names[c]}: {spent:.1f} CPU-s")
    return names, cpu


def horama_display(image: torch.Tensor, modules: dict[str, ModuleType]) -> np.ndarray:
    """Horama's image (3, H, W) as `horama.plots.plot_maco` shows it: clipped at its 1st and 99th
    percentiles, stretched to [0, 1]; as uint8 (H, W, 3)."""
    plots = modules["horama.plots"]
    shown = plots.normalize(plots.clip_percentile(plots.check_format(image), 1.0))
    return to_uint8(shown)


def run_horama(
    modules: dict[str, ModuleType],
    model: RGBModel,
    classes: Sequence[int],
    steps: int,
    seed: int,
    folder: Path,
    canvas: int = HORAMA_CANVAS,
    centre_side: int = HORAMA_CENTRE,
    progress: Callable[[str], None] = print,
) -> tuple[list[str], list[str], float]:
    """horama's maco per class, in a temporary working folder that holds the 1/f spectrum file it
    reads; returns the centre crops' and the whole canvases' PNG names and the CPU seconds."""
    maco_fv = modules["horama.maco_fv"]
    input_size = model.classifier.input_size
    spectrum = power_law(canvas, canvas).numpy()[None].repeat(3, axis=0)
    crops, frames, cpu = [], [], 0.0
    with tempfile.TemporaryDirectory(prefix="atlas-horama-") as tmp, contextlib.chdir(tmp):
        np.save(HORAMA_SPECTRUM_FILE, spectrum)
        quiet = maco_fv.tqdm
        maco_fv.tqdm = lambda iterable, **_: iterable  # horama's own progress bar (progress is printed here)
        try:
            for i, c in enumerate(classes):
                torch.manual_seed(seed)

                def objective(x: torch.Tensor, c: int = c) -> torch.Tensor:
                    return model(x)[:, c].mean()

                c0 = time.process_time()
                image, _alpha = maco_fv.maco(
                    objective,
                    total_steps=steps,
                    image_size=canvas,
                    model_input_size=input_size,
                    values_range=(0, 1),
                    device="cpu",
                )
                spent = time.process_time() - c0
                cpu += spent
                shown = horama_display(image, modules)
                frames.append(f"{c:04d}.png")
                crops.append(f"{c:04d}-centre.png")
                save_png(shown, folder / frames[-1])
                save_png(centre(shown, centre_side), folder / crops[-1])
                progress(f"  {i + 1}/{len(classes)} class {c} {model.classifier.class_names[c]}: {spent:.1f} CPU-s")
        finally:
            maco_fv.tqdm = quiet
    return crops, frames, cpu


def run_atlas(
    method: str, classes: Sequence[int], seed: int, spectrum: Path | None, folder: Path
) -> tuple[pd.DataFrame, float, int]:
    """Atlas's method at its default settings, as quality.py runs it; the records, the CPU seconds
    and the steps."""
    settings = settings_for(method)
    cfg = GenerateConfig(
        settings=settings,
        seed=seed,
        batch_size=max(len(classes), 1),
        on_nan="record",
        spectrum=str(spectrum) if takes(method, "spectrum") and spectrum is not None else None,
    )
    classifier = load_classifier("efficientnet-lite0", "default", seed=seed)  # fresh: folding changes it
    c0 = time.process_time()
    records = generate(classifier, [Target("class", (c,)) for c in classes], cfg, folder, torch.device("cpu"))
    return records, time.process_time() - c0, settings.steps


def dataset_folders(args: argparse.Namespace, tmp: Path) -> tuple[Path, Path]:
    """(photos, spectrum) folders, each an extracted dataset: checked, or the bundled photos
    extracted into `tmp` when none is given."""
    from atlas.dataset import load_dataset

    photos = args.photos or args.dataset
    spectrum = args.spectrum_from or args.dataset
    for flag, folder in (
        ("--photos", args.photos),
        ("--spectrum-from", args.spectrum_from),
        ("--dataset", args.dataset),
    ):
        if folder is None:
            continue
        if not Path(folder).is_dir():
            raise SystemExit(f"{flag} {folder}: no such folder; give an extracted dataset (`atlas extract --out DIR`)")
        try:
            load_dataset(Path(folder))
        except AtlasError as exc:
            raise SystemExit(f"{flag} {folder}: {exc}") from None
    if photos is None or spectrum is None:
        from atlas.extract import ExtractConfig, extract

        print("no --dataset: extracting the bundled photos (`atlas extract`'s default) into a temporary folder")
        extract(ExtractConfig(), tmp / "dataset")
        photos = photos or tmp / "dataset"
        spectrum = spectrum or tmp / "dataset"
    return Path(photos), Path(spectrum)


def markdown_table(table: Sequence[dict[str, object]], n: int) -> list[str]:
    lines = [
        "| tool, steps | judge top-1 | judge top-5 | mean judge p | saturation | RMS contrast | colourfulness | CPU s / image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in table:
        nat = f"{float(t['saturation']):.3f} | {float(t['rms_contrast']):.3f} | {float(t['colourfulness']):.1f}"  # type: ignore[arg-type]
        if t["method"] == "photos":
            lines.append(f"| {t['row']} | | | | {nat} | |")
            continue
        cpu = float(t["cpu_seconds_per_image"])  # type: ignore[arg-type]
        lines.append(
            f"| {t['row']} | {t['judge_top1']}/{n} | {t['judge_top5']}/{n} | {float(t['judge_prob']):.3f} | "  # type: ignore[arg-type]
            f"{nat} | {cpu:.1f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except AtlasError as exc:  # e.g. an --out folder whose tool folder is not Atlas's output
        raise SystemExit(str(exc)) from None


def _main(argv: list[str] | None) -> int:
    allocator.tune()  # as `atlas` does
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parse_args(argv)
    tools = tool_list(args.tools)
    classes = class_list(args.classes)
    modules = load_peers(tools)
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise SystemExit(f"--out {args.out} is a file; give a folder")
    torch.set_num_threads(1)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="atlas-peers-"))
    n = len(classes)
    results: dict[str, list[dict[str, object]]] = {}
    table: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="atlas-peers-data-") as tmp:
        photos, spectrum = dataset_folders(args, Path(tmp))
        judge = load_classifier("efficientnet-lite2", "default", seed=args.seed)
        d = load_classifier("efficientnet-lite0", "default", seed=args.seed)
        model = RGBModel(d)

        def add(key: str, row: str, records: pd.DataFrame, folder: Path, cpu: float) -> None:
            rows = judge_rows(d, judge, records, folder)
            results[key] = rows
            table.append({**summarise(key, rows, n, float("nan"), cpu), "row": row})
            t = table[-1]
            print(
                f"{key}: judge top-5 {t['judge_top5']}/{n}, mean judge p {float(t['judge_prob']):.3f}, "  # type: ignore[arg-type]
                f"{float(t['cpu_seconds_per_image']):.1f} CPU-s per image",  # type: ignore[arg-type]
                flush=True,
            )

        for k, tool in enumerate(tools):
            name, _, budget = tool.partition("-")
            print(f"[{k + 1}/{len(tools)}] {tool}: {n} classes", flush=True)
            folder = out / tool
            if name == "atlas":
                records, cpu, steps = run_atlas(budget, classes, args.seed, spectrum, folder)
                add(tool, f"Atlas {budget}, {steps}", records, folder, cpu)
            elif name == "lucent":
                names, cpu = run_lucent(modules, model, classes, int(budget), args.seed, folder)
                add(tool, f"lucent, {budget}", records_of(d, classes, folder, names), folder, cpu)
            else:
                crops, frames, cpu = run_horama(modules, model, classes, int(budget), args.seed, folder)
                add(
                    tool,
                    f"horama MACO, {budget} (centre {HORAMA_CENTRE} px of {HORAMA_CANVAS})",
                    records_of(d, classes, folder, crops),
                    folder,
                    cpu,
                )
                add(
                    "horama-frame",
                    f"horama MACO, {budget} (whole {HORAMA_CANVAS} px canvas)",
                    records_of(d, classes, folder, frames),
                    folder,
                    cpu,
                )
        ref = photo_naturalness(photos)
        table.append(
            {"method": "photos", "row": f"dataset photos ({int(ref['photos'])})", **ref, "folder": str(photos)}
        )
    versions = {p: package_version(p) for p in ("torch", "torch-lucent", "horama")}
    print(
        f"\nD efficientnet-lite0, judge efficientnet-lite2, {n} classes ({args.classes}), seed {args.seed}, "
        f"{torch.get_num_threads()} thread on {machine()}; " + ", ".join(f"{p} {v}" for p, v in versions.items())
    )
    print("\n".join(markdown_table(table, n)))
    contact_sheet(results, classes, out / "sheet.png")
    info = {"machine": machine(), "versions": versions, "classes": list(classes)}
    write_text(
        out / "peers.json", json.dumps({"args": vars(args), **info, "table": table, "images": results}, indent=2)
    )
    print(f"images, sheet.png and peers.json in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
