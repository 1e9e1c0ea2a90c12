"""Scores of generated images under a classifier: the target's activation, probability and rank.

Images are scored as saved (after the display mapping and 8-bit quantisation), so a score can be
reproduced from the PNG alone. Three views of each image (`atlas score`, one chunk at a time):

- D's own (`score`, computed by `atlas generate` for the records), plus its top-5 class names;
- an independent **judge** classifier's: the PNG's RGB is resized bilinearly to the judge's input
  size, then normalised the judge's way (`to_input`). An image that only fools D is adversarial
  noise; one that the judge also reads as the class carries features that transfer;
- **robustness**: D's score after each transformation of a fixed, seeded set (`robustness_set`).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from tqdm import tqdm

from atlas import __version__
from atlas.classifier import Classifier, load_classifier
from atlas.errors import AtlasError
from atlas.io import atomic_path
from atlas.metadata import file_sha256
from atlas.schema import INDEX_SCHEMA
from atlas.targets import Target

log = logging.getLogger(__name__)


@dataclass
class Scores:
    """Per image (B,): `activation` is relu(logit) summed over the target classes, or the spatial
    mean of the target channels (summed) for a filter; `prob` the softmax probability of the target
    classes (summed; NaN for a filter); `rank` the 1-based rank of the best target class (-1 for a
    filter); `top5` D's five best class indices."""

    activation: torch.Tensor
    prob: torch.Tensor
    rank: torch.Tensor
    top5: torch.Tensor


def class_scores(logits: torch.Tensor, targets: Sequence[Target]) -> Scores:
    """Scores read from logits alone (B, C): a filter target gets activation NaN (no layer here)."""
    logits = logits.float().cpu()
    probs = torch.softmax(logits, dim=1)
    order = torch.argsort(logits, dim=1, descending=True)
    n = len(targets)
    activation = torch.full((n,), float("nan"))
    prob = torch.full((n,), float("nan"))
    rank = torch.full((n,), -1, dtype=torch.long)
    for b, t in enumerate(targets):
        if t.kind != "filter":
            cls = list(t.classes)
            activation[b] = torch.relu(logits[b, cls]).sum()
            prob[b] = probs[b, cls].sum()
            rank[b] = min(int((order[b] == c).nonzero()) + 1 for c in cls)
    return Scores(activation=activation, prob=prob, rank=rank, top5=order[:, :5].clone())


@torch.no_grad()
def score(classifier: Classifier, targets: Sequence[Target], images: torch.Tensor) -> Scores:
    """Score images (B, 3, H, W) in `classifier`'s input space."""
    layers = tuple(dict.fromkeys(t.layer for t in targets if t.layer is not None))
    acts = classifier.forward(images, layers=layers, need_logits=True)
    assert acts.logits is not None
    out = class_scores(acts.logits, targets)
    for b, t in enumerate(targets):
        if t.kind == "filter":
            fmap = acts.features[t.layer].float().cpu()  # type: ignore[index]
            out.activation[b] = fmap[b, list(t.channels)].mean(dim=(1, 2)).sum()
    return out


def quantise(classifier: Classifier, images: torch.Tensor) -> torch.Tensor:
    """Display mapping: D's input space -> uint8 RGB (B, H, W, 3), as every PNG is saved."""
    rgb = classifier.to_rgb(images.detach().float())
    return (rgb * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()


def dequantise(classifier: Classifier, pixels: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (B, H, W, 3) -> D's input space (B, 3, H, W), the inverse of `quantise`."""
    return classifier.normalise(to_rgb(pixels))


def to_rgb(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (B, H, W, 3) -> float RGB in [0, 1] (B, 3, H, W)."""
    return pixels.permute(0, 3, 1, 2).float() / 255.0


def to_input(classifier: Classifier, rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] (B, 3, H, W) of any size -> `classifier`'s input: resized bilinearly in RGB to
    its input size (antialiased when shrinking), then its own normalisation. How a judge, with its
    own input size and normalisation, sees a PNG made for D, and how D sees a dataset photo."""
    size = classifier.input_size
    if rgb.shape[-2:] != (size, size):
        shrink = rgb.shape[-1] > size or rgb.shape[-2] > size
        rgb = nn.functional.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    return classifier.normalise(rgb)


# --------------------------------------------------------------------------------------------
# Robustness


@dataclass(frozen=True)
class Transform:
    """A small change of the saved image: a shift by (dx, dy) pixels (content moves right/down),
    a zoom by `scale` about the centre, and/or a horizontal flip. Pixels that come in from outside
    repeat the border ones (no black edges that D would read as a frame)."""

    name: str
    dx: int = 0
    dy: int = 0
    scale: float = 1.0
    flip: bool = False

    def __call__(self, rgb: torch.Tensor) -> torch.Tensor:
        """Apply to RGB (B, 3, H, W); the result is the same size, not re-quantised."""
        out = rgb
        if self.dx or self.dy or self.scale != 1.0:
            b, _, h, w = rgb.shape
            # affine_grid maps output to input coordinates in [-1, 1] (align_corners=False): a zoom
            # by s reads the input at x / s, a shift by d pixels reads it d pixels back (2d / W).
            theta = torch.tensor(
                [[1.0 / self.scale, 0.0, -2.0 * self.dx / w], [0.0, 1.0 / self.scale, -2.0 * self.dy / h]],
                dtype=rgb.dtype, device=rgb.device,
            ).expand(b, 2, 3)  # fmt: skip
            grid = nn.functional.affine_grid(theta, [b, 3, h, w], align_corners=False)
            out = nn.functional.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.flip:
            out = torch.flip(out, dims=(3,))
        return out


DEFAULT_SCALES = (0.9, 1.1)


def robustness_set(
    jitter_px: int = 4, jitter_count: int = 4, scales: Sequence[float] = DEFAULT_SCALES, flip: bool = True, seed: int = 0
) -> tuple[Transform, ...]:
    """The transformations robustness is measured over, in this order:

    - `jitter_count` shifts, each coordinate drawn uniformly from -jitter_px..jitter_px with a
      generator seeded by `seed` (a draw of (0, 0) is drawn again);
    - one zoom about the centre per entry of `scales` (0.9: the image shrunk, its border repeated
      around it; 1.1: the centre enlarged, the edges cut);
    - the horizontal flip, when `flip`.

    The embedded default: 4 shifts of up to 4 px, zooms 0.9 and 1.1, the flip (7 in all).
    """
    gen = torch.Generator().manual_seed(seed)
    out: list[Transform] = []
    while jitter_px > 0 and len(out) < jitter_count:
        dx, dy = (int(v) for v in torch.randint(-jitter_px, jitter_px + 1, (2,), generator=gen))
        if dx or dy:
            out.append(Transform(name=f"shift({dx:+d},{dy:+d})", dx=dx, dy=dy))
    out.extend(Transform(name=f"scale({s:g})", scale=float(s)) for s in scales)
    if flip:
        out.append(Transform(name="flip", flip=True))
    return tuple(out)


@dataclass
class Robustness:
    """Per image (B,): mean and minimum of D's target probability over the transformations, and
    the mean target activation over them divided by the activation on the unperturbed image
    (NaN where that is not positive, or where the set is empty)."""

    prob: torch.Tensor
    prob_min: torch.Tensor
    activation: torch.Tensor


@torch.no_grad()
def robustness(
    classifier: Classifier, targets: Sequence[Target], rgb: torch.Tensor, transforms: Sequence[Transform]
) -> Robustness:
    """D's scores on every transformation of each image (RGB in [0, 1], B x 3 x H x W)."""
    n = len(targets)
    if not transforms:
        nan = torch.full((n,), float("nan"))
        return Robustness(prob=nan, prob_min=nan.clone(), activation=nan.clone())
    base = score(classifier, targets, classifier.normalise(rgb).to(classifier.device))
    probs, acts = [], []
    for t in transforms:
        s = score(classifier, targets, classifier.normalise(t(rgb)).to(classifier.device))
        probs.append(s.prob)
        acts.append(s.activation)
    prob = torch.stack(probs)  # (T, B)
    act = torch.stack(acts).mean(dim=0)
    ratio = torch.where(base.activation > 0, act / base.activation, torch.full_like(act, float("nan")))
    return Robustness(prob=prob.mean(dim=0), prob_min=prob.min(dim=0).values, activation=ratio)


# --------------------------------------------------------------------------------------------
# `atlas score`: one generation chunk's images -> its scores.parquet

SCORES_KEY = b"atlas.scores"
# The columns `atlas score` writes, keyed by (method, target_id); `atlas index` joins them to the
# records. Names and types are the index's (atlas.schema).
SCORE_COLUMNS = (
    "method", "target_id", "d_top5_labels", "judge", "judge_prob", "judge_rank", "judge_top5",
    "judge_top5_labels", "robust_prob", "robust_prob_min", "robust_activation",
)  # fmt: skip


def _target(row: dict[str, object]) -> Target:
    return Target(
        kind=str(row["kind"]), classes=tuple(row["classes"] or ()), layer=row["layer"],  # type: ignore[arg-type]
        channels=tuple(row["channels"] or ()),  # type: ignore[arg-type]
    )  # fmt: skip


def _finite(value: float) -> float | None:
    return None if value != value else float(value)  # NaN -> null


def _read_records(chunk: Path) -> list[dict[str, object]]:
    records = chunk / "records.parquet"
    if not records.is_file():
        raise AtlasError(f"chunk records {records} do not exist; run `atlas generate` for that chunk first")
    try:
        table = pq.read_table(records)
    except (OSError, pa.ArrowException) as exc:
        raise AtlasError(f"cannot read {records} ({exc}); rerun the chunk that wrote it") from exc
    need = ("method", "target_id", "kind", "classes", "layer", "channels", "top5", "image", "failed", "classifier")
    missing = [c for c in need if c not in table.column_names]
    if missing:
        raise AtlasError(f"{records} lacks column(s) {', '.join(missing)}: it is not from `atlas generate`")
    return table.to_pylist()


def _load_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise AtlasError(f"cannot read image {path} ({exc}); rerun the chunk that wrote it") from exc


def score_chunk(
    classifier: Classifier, judge: Classifier, chunk: Path, transforms: Sequence[Transform],
    batch_size: int = 16,
) -> pa.Table:
    """The scores of every image of a chunk folder (from `atlas generate`), one row per record."""
    rows = _read_records(chunk)
    if judge.num_classes != classifier.num_classes:
        raise AtlasError(
            f"the judge {judge.name} has {judge.num_classes} classes and D {classifier.num_classes}: "
            "choose a judge trained on the same classes"
        )
    for row in rows:
        if row["classifier"] != classifier.name:
            raise AtlasError(
                f"{chunk} was generated with {row['classifier']}, not {classifier.name}: "
                "score a chunk with the classifier that made it"
            )
    out: dict[str, list[object]] = {c: [] for c in SCORE_COLUMNS}
    ok = [r for r in rows if not r["failed"]]
    by_id: dict[str, dict[str, object]] = {}
    for start in tqdm(range(0, len(ok), batch_size), desc=f"scoring {chunk.name}", unit="batch", disable=None):
        batch = ok[start : start + batch_size]
        pixels = [_load_png(chunk / str(r["image"])) for r in batch]
        if len({p.shape for p in pixels}) > 1:
            raise AtlasError(f"{chunk} holds images of different sizes: a damaged chunk; rerun it")
        rgb = to_rgb(torch.from_numpy(np.stack(pixels)))
        targets = [_target(r) for r in batch]
        with torch.no_grad():
            logits = judge.forward(to_input(judge, rgb).to(judge.device), need_logits=True).logits
        assert logits is not None
        js = class_scores(logits, targets)
        rob = robustness(classifier, targets, rgb, transforms)
        for b, r in enumerate(batch):
            filt = r["kind"] == "filter"
            by_id[str(r["target_id"])] = {
                "judge_prob": None if filt else _finite(float(js.prob[b])),
                "judge_rank": None if filt else int(js.rank[b]),
                "judge_top5": [int(c) for c in js.top5[b]],
                "judge_top5_labels": [judge.class_names[int(c)] for c in js.top5[b]],
                "robust_prob": None if filt else _finite(float(rob.prob[b])),
                "robust_prob_min": None if filt else _finite(float(rob.prob_min[b])),
                "robust_activation": _finite(float(rob.activation[b])),
            }
    for r in rows:
        got = by_id.get(str(r["target_id"]), {})
        out["method"].append(r["method"])
        out["target_id"].append(r["target_id"])
        out["d_top5_labels"].append([classifier.class_names[int(c)] for c in r["top5"] or []])  # type: ignore[union-attr]
        out["judge"].append(judge.name)
        for c in SCORE_COLUMNS[4:]:
            out[c].append(got.get(c))
    schema = pa.schema([INDEX_SCHEMA.field(c) for c in SCORE_COLUMNS])
    return pa.Table.from_pydict(out, schema=schema)


def _weights_info(c: Classifier) -> dict[str, object]:
    return {
        "name": c.name, "weights": c.weights, "input_size": c.input_size,
        "sha256": file_sha256(c.weights_file) if c.weights_file else None,
    }  # fmt: skip


def write_scores(table: pa.Table, classifier: Classifier, judge: Classifier, transforms: Sequence[Transform], out: Path) -> None:
    """Write a chunk's scores atomically, with what made them as JSON under `SCORES_KEY`."""
    info = {
        "classifier": _weights_info(classifier),
        "judge": _weights_info(judge),
        "robustness": [asdict(t) for t in transforms],
        "atlas": __version__,
        "device": str(classifier.device),
    }
    table = table.replace_schema_metadata({SCORES_KEY: json.dumps(info).encode()})
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)


def run(args: argparse.Namespace) -> int:
    from atlas.generate import pick_device

    if args.batch_size < 1:
        raise AtlasError(f"--batch-size must be at least 1, got {args.batch_size}")
    scales = DEFAULT_SCALES if args.scales is None else tuple(args.scales)
    if args.jitter_px < 0 or args.jitter_count < 0 or any(not 0.25 <= s <= 4 for s in scales):
        raise AtlasError("--jitter-px and --jitter-count must be >= 0 and --scale factors in 0.25..4; e.g. --scale 0.9 --scale 1.1")
    transforms = robustness_set(args.jitter_px, args.jitter_count, scales, args.flip, args.robust_seed)
    _read_records(Path(args.chunk))  # before loading two classifiers
    device = pick_device(args.device)
    classifier = load_classifier(args.classifier, args.weights, seed=args.seed, image_size=args.image_size)
    judge = load_classifier(args.judge, args.judge_weights, seed=args.seed)
    classifier.to(device)
    judge.to(device)
    table = score_chunk(classifier, judge, Path(args.chunk), transforms, args.batch_size)
    write_scores(table, classifier, judge, transforms, Path(args.out))
    log.info("scored %d images of %s under %s and %d transformations into %s",
             table.num_rows, args.chunk, judge.name, len(transforms), args.out)  # fmt: skip
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "score",
        help="score one generation chunk's images under a judge and small transformations",
        description="Score every image of a chunk folder (from `atlas generate`): D's top-5 names, the "
        "judge classifier's probability, rank and top-5 of the target, and D's target probability and "
        "activation under a fixed, seeded set of shifts, zooms and a flip. Writes one Parquet table.",
    )
    p.add_argument("--chunk", required=True, metavar="DIR", help="chunk folder: records.parquet and its PNGs")
    p.add_argument("--out", required=True, metavar="FILE", help="scores Parquet file to write")
    p.add_argument("--classifier", default="efficientnet-lite0", help="D, as the chunk was generated with")
    p.add_argument("--weights", default="default", help="D's weights, as the chunk was generated with")
    p.add_argument("--image-size", type=int, default=None, metavar="PX", help="D's input size, as the chunk was generated with")
    p.add_argument("--seed", type=int, default=0, help="the run's seed (random weights are seeded with it, as in generate)")
    p.add_argument("--judge", default="efficientnet-lite2", help="the judge: efficientnet-lite0/2 or torchvision:<name>")
    p.add_argument("--judge-weights", default="default", help="the judge's weights: default, random or a state-dict file")
    p.add_argument("--jitter-px", type=int, default=4, help="largest shift, in pixels")
    p.add_argument("--jitter-count", type=int, default=4, help="number of seeded shifts")
    p.add_argument("--scale", dest="scales", type=float, action="append", default=None, metavar="S",
                   help="a zoom factor about the centre (repeatable; default 0.9 and 1.1)")
    p.add_argument("--no-scale", dest="scales", action="store_const", const=[], help="no zooms")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True, help="include the horizontal flip")
    p.add_argument("--robust-seed", type=int, default=0, help="seed of the shifts")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.set_defaults(func=run, scales=None)
