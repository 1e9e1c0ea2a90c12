"""`atlas compare`: the same targets drawn for two classifiers, A and B, each read by the other.

Two runs of one config differ only in the classifier (the workflow's `compare:` section draws the
second): run A's images were optimised for A, run B's for B. For every class and pair target
that both runs drew, with every method both ran, this reads each model's image with the *other*
model (the transfer: does B see A's ostrich as an ostrich?) and puts it beside what each index
already holds (each model's own probability, the judge's reading of each image). A target whose
images transfer poorly both ways is one the two models represent differently: the audit's
starting point. Filter targets are not compared: a channel of A's layer has no counterpart in B.

The table (one row per target and method, seed 0) is written atomically with its provenance
(both runs, both classifiers, the package version) in the Parquet metadata.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from atlas import __version__
from atlas.classifier_spec import ClassifierSpec
from atlas.errors import AtlasError
from atlas.io import read_table, write_table

log = logging.getLogger("atlas.compare")

META_KEY = b"atlas.compare"
COMPARED_KINDS = ("class", "pair", "group")

_str, _int, _float = pa.string(), pa.int64(), pa.float64()
SCHEMA = pa.schema(
    [
        pa.field("target_id", _str),
        pa.field("method", _str),
        pa.field("kind", _str),
        pa.field("label", _str),
        pa.field("classes", pa.list_(_int)),
        pa.field("a_image", _str),  # relative to run A's folder; null when A's target failed
        pa.field("b_image", _str),  # relative to run B's folder
        pa.field("a_prob", _float),  # A's probability of the target on A's image (A's index)
        pa.field("b_prob", _float),  # B's on B's image (B's index)
        pa.field("b_reads_a", _float),  # B's probability of the target on A's image
        pa.field("b_reads_a_rank", _int),
        pa.field("a_reads_b", _float),  # A's on B's image
        pa.field("a_reads_b_rank", _int),
        pa.field("a_judge_prob", _float),  # the judge's on A's image (A's index)
        pa.field("b_judge_prob", _float),
        pa.field("a_judge_rank", _int),
        pa.field("b_judge_rank", _int),
        pa.field("transfer", _float),  # mean of b_reads_a and a_reads_b; null unless both images exist
    ]
)


@dataclass(frozen=True)
class Side:
    """One of the two runs: its index, the classifier its images were drawn for, its name on the site."""

    index: Path
    spec: ClassifierSpec
    label: str


def _rows(index: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The index's seed-0 class, pair and group rows by (target id, method)."""
    from atlas.schema import check_index

    table = check_index(read_table(index, "index", "run the workflow (snakemake) to make it first"), str(index))
    out = {}
    for r in table.to_pylist():
        if r["kind"] in COMPARED_KINDS and int(r.get("seed_index") or 0) == 0:
            out[(r["base_id"] or r["target_id"], r["method"])] = r
    return out


def _finite(v: Any) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


def pair_rows(
    a: dict[tuple[str, str], dict[str, Any]], b: dict[tuple[str, str], dict[str, Any]]
) -> list[tuple[dict, dict]]:
    """The (A row, B row) of every target and method both runs drew, in A's order; the two must
    name the same classes (the same config's targets), else the runs are not comparable."""
    shared = [k for k in a if k in b]
    if not shared:
        raise AtlasError(
            "the two runs share no class or pair target with the same method: compare runs of one config "
            "that differ only in the classifier"
        )
    for k in shared:
        if list(a[k]["classes"] or []) != list(b[k]["classes"] or []):
            raise AtlasError(
                f"target {k[0]} names classes {a[k]['classes']} in run A and {b[k]['classes']} in run B: "
                "the runs are not of the same targets"
            )
    return [(a[k], b[k]) for k in shared]


def _read_with(
    classifier: Any, run_dir: Path, rows: Sequence[dict[str, Any]], batch_size: int
) -> list[tuple[float, int]]:
    """`classifier`'s probability and rank of each row's target classes on the row's image."""
    import torch

    from atlas.image_scores import class_scores
    from atlas.pixels import load_png, to_input, unit_rgb
    from atlas.targets import Target

    out: list[tuple[float, int]] = []
    for start in range(0, len(rows), batch_size):
        part = rows[start : start + batch_size]
        pixels = np.stack([load_png(run_dir / r["image"]) for r in part])
        rgb = unit_rgb(torch.from_numpy(pixels))
        with torch.no_grad():
            logits = classifier.forward(to_input(classifier, rgb).to(classifier.device), need_logits=True).logits
        targets = [Target(kind=r["kind"], classes=tuple(r["classes"])) for r in part]
        s = class_scores(logits, targets)
        out += [(float(s.prob[i]), int(s.rank[i])) for i in range(len(part))]
    return out


def compare(a: Side, b: Side, out: Path, seed: int = 0, device: str = "auto", batch_size: int = 16) -> Path:
    """Write the comparison table of runs `a` and `b` to `out`; return `out`."""
    from atlas.classifier import load
    from atlas.runtime import pick_device

    if batch_size < 1:
        raise AtlasError(f"--batch-size {batch_size} must be at least 1")
    rows_a, rows_b = _rows(a.index), _rows(b.index)
    pairs = pair_rows(rows_a, rows_b)
    dev = pick_device(device)
    if a.spec.class_names() != b.spec.class_names():
        raise AtlasError(
            f"{a.label} and {b.label} have different label sets (--classes): two models are compared on the same classes"
        )
    model_a = load(a.spec, seed).to(dev)
    model_b = load(b.spec, seed).to(dev)
    if model_a.num_classes != model_b.num_classes:
        raise AtlasError(
            f"{a.label} has {model_a.num_classes} classes and {b.label} {model_b.num_classes}: "
            "two models are compared on the same label set"
        )
    drawn_a = [ra for ra, _ in pairs if not ra["failed"]]
    drawn_b = [rb for _, rb in pairs if not rb["failed"]]
    log.info(
        "%s reads %d images of %s; %s reads %d of %s", b.label, len(drawn_a), a.label, a.label, len(drawn_b), b.label
    )
    b_on_a = dict(zip((id(r) for r in drawn_a), _read_with(model_b, a.index.parent, drawn_a, batch_size), strict=True))
    a_on_b = dict(zip((id(r) for r in drawn_b), _read_with(model_a, b.index.parent, drawn_b, batch_size), strict=True))
    records = []
    for ra, rb in pairs:
        ba = b_on_a.get(id(ra))
        ab = a_on_b.get(id(rb))
        records.append(
            {
                "target_id": ra["target_id"],
                "method": ra["method"],
                "kind": ra["kind"],
                "label": ra["label"],
                "classes": list(ra["classes"]),
                "a_image": None if ra["failed"] else ra["image"],
                "b_image": None if rb["failed"] else rb["image"],
                "a_prob": _finite(ra["d_prob"]),
                "b_prob": _finite(rb["d_prob"]),
                "b_reads_a": None if ba is None else _finite(ba[0]),
                "b_reads_a_rank": None if ba is None else ba[1],
                "a_reads_b": None if ab is None else _finite(ab[0]),
                "a_reads_b_rank": None if ab is None else ab[1],
                "a_judge_prob": _finite(ra["judge_prob"]),
                "b_judge_prob": _finite(rb["judge_prob"]),
                "a_judge_rank": ra["judge_rank"],
                "b_judge_rank": rb["judge_rank"],
                "transfer": None if ba is None or ab is None else (ba[0] + ab[0]) / 2,
            }
        )
    table = pa.Table.from_pylist(records, schema=SCHEMA)

    def side(s: Side) -> dict[str, Any]:
        return {"label": s.label, "index": str(s.index), "classifier": s.spec.name} | {
            k: v for k, v in dataclasses.asdict(s.spec).items() if k != "name"
        }

    meta = {
        "a": side(a),
        "b": side(b) | {"run_dir": Path(_relpath(b.index.parent, out.parent)).as_posix()},
        "seed": seed,
        "atlas_version": __version__,
    }
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    write_table(table, out)
    log.info("wrote %d comparisons (%d targets x methods) to %s", table.num_rows, len(pairs), out)
    return out


def _relpath(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path.resolve(), start.resolve())


def read_comparison(path: Path) -> tuple[pa.Table, dict[str, Any]]:
    """The comparison table and its metadata; a file that is not one is a one-line error."""
    table = read_table(path, "comparison", "run `atlas compare` (the workflow's compare rule) first")
    meta = (table.schema.metadata or {}).get(META_KEY)
    missing = [f.name for f in SCHEMA if f.name not in table.column_names]
    if meta is None or missing:
        raise AtlasError(
            f"{path} is not an atlas comparison table (missing {missing or 'its metadata'}); remake it with `atlas compare`"
        )
    return table, json.loads(meta)
