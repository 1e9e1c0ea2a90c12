"""`atlas score`: one generation chunk's images under a judge and small transformations.

Images are scored as saved (after the display mapping and 8-bit quantisation), so a score can be
reproduced from the PNG alone. Three views of each image:

- D's own (`atlas.image_scores.score`, computed by `atlas generate` for the records), plus its
  top-5 class names;
- an independent **judge** classifier's: the PNG's RGB is resized bilinearly to the judge's input
  size, then normalised the judge's way (`atlas.pixels.to_input`). An image that only fools D is
  adversarial noise; one that the judge also reads as the class carries features that transfer;
  With no judge (`--judge none`: D's label set is not one any judge at hand was trained on), the
  judge's columns are null and the index's `judge` column says none;
- **robustness**: D's score after each transformation of a fixed, seeded set (`robustness_set`).

And the image's naturalness (`atlas.naturalness`): saturation, RMS contrast, colourfulness.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn
from tqdm import tqdm

from atlas.classifier import Classifier
from atlas.classifier_spec import NONE as NO_JUDGE
from atlas.errors import AtlasError
from atlas.formatting import finite_or_none
from atlas.image_scores import class_scores, diversity, logits_and_features, score
from atlas.io import read_table, sha256_file, write_table
from atlas.metadata import classifier_record, software
from atlas.naturalness import FIELDS, naturalness
from atlas.pixels import load_png, to_input, unit_rgb
from atlas.schema import INDEX_SCHEMA, RECORDS, SCORE_COLUMNS, SCORES_KEY
from atlas.targets import Target

log = logging.getLogger(__name__)

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
                dtype=rgb.dtype,
                device=rgb.device,
            ).expand(b, 2, 3)
            grid = nn.functional.affine_grid(theta, [b, 3, h, w], align_corners=False)
            out = nn.functional.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.flip:
            out = torch.flip(out, dims=(3,))
        return out


DEFAULT_SCALES = (0.9, 1.1)


def robustness_set(
    jitter_px: int = 4,
    jitter_count: int = 4,
    scales: Sequence[float] = DEFAULT_SCALES,
    flip: bool = True,
    seed: int = 0,
) -> tuple[Transform, ...]:
    """The transformations robustness is measured over, in this order:

    - `jitter_count` shifts, each coordinate drawn uniformly from -jitter_px..jitter_px with a
      generator seeded by `seed` (a draw of (0, 0) is drawn again);
    - one zoom about the centre per entry of `scales` (0.9: the image shrunk, its border repeated
      around it; 1.1: the centre enlarged, the edges cut);
    - the horizontal flip, when `flip`.

    The embedded default: 4 shifts of up to 4 px, zooms 0.9 and 1.1, the flip (7 in all).
    """
    if jitter_px < 0 or jitter_count < 0 or any(not 0.25 <= s <= 4 for s in scales):
        raise AtlasError(
            "--jitter-px and --jitter-count must be >= 0 and --scale factors in 0.25..4; e.g. --scale 0.9 --scale 1.1"
        )
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


def _target(row: dict[str, Any]) -> Target:
    return Target(
        kind=str(row["kind"]),
        classes=tuple(row["classes"] or ()),
        layer=row["layer"],
        channels=tuple(row["channels"] or ()),
        seed_index=int(row.get("seed_index") or 0),
    )


def _finite(value: float) -> float | None:
    return finite_or_none(float(value))


def read_records(chunk: Path) -> list[dict[str, Any]]:
    """A chunk's records (from `atlas generate`), checked for the columns scoring needs."""
    table = read_table(
        chunk / RECORDS,
        "chunk records",
        "run `atlas generate` for that chunk (snakemake reruns it)",
        required=(
            "method",
            "target_id",
            "kind",
            "classes",
            "layer",
            "channels",
            "top5",
            "image",
            "failed",
            "classifier",
        ),
        made_by="atlas generate",
    )
    return table.to_pylist()


def score_chunk(
    classifier: Classifier,
    judge: Classifier | None,
    chunk: Path,
    transforms: Sequence[Transform],
    batch_size: int = 16,
) -> pa.Table:
    """The scores of every image of a chunk folder (from `atlas generate`), one row per record;
    with no judge (None), its columns are null."""
    if batch_size < 1:
        raise AtlasError(f"--batch-size must be at least 1, got {batch_size}")
    rows = read_records(chunk)
    if judge is not None and judge.class_names != classifier.class_names:
        raise AtlasError(
            f"the judge {judge.name} has other classes than D ({judge.num_classes} and {classifier.num_classes} "
            "classes): choose a judge trained on D's classes (the same classes file), or no judge (none)"
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
    features: dict[str, torch.Tensor] = {}
    for start in tqdm(range(0, len(ok), batch_size), desc=f"scoring {chunk.name}", unit="batch", disable=None):
        batch = ok[start : start + batch_size]
        pixels = [load_png(chunk / str(r["image"])) for r in batch]
        if len({p.shape for p in pixels}) > 1:
            raise AtlasError(f"{chunk} holds images of different sizes: a damaged chunk; rerun it")
        rgb = unit_rgb(torch.from_numpy(np.stack(pixels)))
        targets = [_target(r) for r in batch]
        if judge is not None:
            logits, feats = logits_and_features(judge, to_input(judge, rgb).to(judge.device))
            js = class_scores(logits, targets)
        rob = robustness(classifier, targets, rgb, transforms)
        nat = naturalness(rgb)
        for b, r in enumerate(batch):
            filt = r["kind"] == "filter"
            by_id[str(r["target_id"])] = {
                "robust_prob": None if filt else _finite(float(rob.prob[b])),
                "robust_prob_min": None if filt else _finite(float(rob.prob_min[b])),
                "robust_activation": _finite(float(rob.activation[b])),
                **{f: float(getattr(nat, f)[b]) for f in FIELDS},
            }
            if judge is None:
                continue
            by_id[str(r["target_id"])].update(
                {
                    "judge_prob": None if filt else _finite(float(js.prob[b])),
                    "judge_rank": None if filt else int(js.rank[b]),
                    "judge_top5": [int(c) for c in js.top5[b]],
                    "judge_top5_labels": [judge.class_names[int(c)] for c in js.top5[b]],
                }
            )
            if feats is not None:
                features[str(r["target_id"])] = feats[b]
    # A target drawn from several seeds: how different its images are to the judge.
    seeds_of: dict[str, list[str]] = {}
    for r in ok:
        seeds_of.setdefault(_target(r).base_id, []).append(str(r["target_id"]))
    for ids in seeds_of.values():
        if len(ids) > 1 and all(i in features for i in ids):
            div = diversity(torch.stack([features[i] for i in ids]))
            for i in ids:
                by_id[i]["diversity"] = div
    for r in rows:
        got = by_id.get(str(r["target_id"]), {})
        out["method"].append(r["method"])
        out["target_id"].append(r["target_id"])
        out["d_top5_labels"].append([classifier.class_names[int(c)] for c in r["top5"] or []])
        out["judge"].append(NO_JUDGE if judge is None else judge.name)
        for c in SCORE_COLUMNS[4:]:
            out[c].append(got.get(c))
    schema = pa.schema([INDEX_SCHEMA.field(c) for c in SCORE_COLUMNS])
    return pa.Table.from_pydict(out, schema=schema)


def inputs_of(
    chunk: Path, classifier: Classifier, judge: Classifier | None, transforms: Sequence[Transform]
) -> dict[str, Any]:
    """What a chunk's scores depend on: its records (rewritten whenever the chunk is generated
    again), D, the judge and the robustness set. Recorded with the scores; equal inputs, equal
    scores, so a chunk whose recorded inputs are these is not scored again."""
    return {
        "records_sha256": sha256_file(chunk / RECORDS),
        "classifier": classifier_record(classifier),
        "judge": None if judge is None else classifier_record(judge),
        "robustness": [asdict(t) for t in transforms],
        "columns": list(SCORE_COLUMNS),  # a scores file of an older layout is made again
    }


def _recorded_inputs(out: Path) -> Any:
    try:
        meta = pq.read_schema(out).metadata or {}
        return json.loads(meta[SCORES_KEY]).get("inputs")
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None


def score_chunks(
    chunks: Sequence[Path],
    outs: Sequence[Path],
    classifier: Classifier,
    judge: Classifier | None,
    transforms: Sequence[Transform],
    batch_size: int = 16,
) -> int:
    """Score each chunk folder into its scores file (`outs[i]` for `chunks[i]`), with D and the
    judge loaded once; a scores file already made from the same inputs (`inputs_of`) is kept.
    Returns the number of chunks scored."""
    if len(chunks) != len(outs):
        raise AtlasError(f"{len(chunks)} --chunk but {len(outs)} --out: give one --out per --chunk, in the same order")
    if len(set(outs)) != len(outs):
        raise AtlasError("two chunks have the same --out; give each chunk a scores file of its own")
    for chunk in chunks:
        read_records(chunk)  # every chunk's errors before the first is scored
    scored = 0
    for chunk, out in zip(chunks, outs, strict=True):
        inputs = inputs_of(chunk, classifier, judge, transforms)
        if out.is_file() and _recorded_inputs(out) == json.loads(json.dumps(inputs)):
            log.info("%s: its scores in %s are current; kept", chunk, out)
            continue
        table = score_chunk(classifier, judge, chunk, transforms, batch_size)
        write_scores(table, classifier, judge, transforms, out, inputs)
        log.info("scored %d images of %s into %s", table.num_rows, chunk, out)
        scored += 1
    return scored


def write_scores(
    table: pa.Table,
    classifier: Classifier,
    judge: Classifier | None,
    transforms: Sequence[Transform],
    out: Path,
    inputs: dict[str, Any] | None = None,
) -> None:
    """Write a chunk's scores atomically, with what made them as JSON under `SCORES_KEY`."""
    info = {
        "classifier": classifier_record(classifier),
        "judge": None if judge is None else classifier_record(judge),
        "robustness": [asdict(t) for t in transforms],
        **software(),
        "device": str(classifier.device),
        "inputs": inputs,
    }
    table = table.replace_schema_metadata({SCORES_KEY: json.dumps(info).encode()})
    write_table(table, out)
