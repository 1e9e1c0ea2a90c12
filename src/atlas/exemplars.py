"""`atlas exemplars`: the real images of the extracted dataset that D scores highest per target.

The paper puts a training image beside each generated one (its Figures 6 and 7): that is how a
bias such as "harmonica includes the player's hands" is seen. For every target, the top-k images
of the dataset (`atlas extract`) by the target's activation, the same quantity as the generated
image's `d_activation`: relu(logit) of the class, for a pair (or group) the sum over its classes
(so a pair's exemplars are the photos that show both, or one strongly), and for a filter the
spatial mean of its channel (summed over a compound's channels): the photos that drive the filter
hardest, the usual companion of a filter's preferred input.

One batched pass of D over the dataset serves every target. Only the dataset's own images are
candidates, not the augmented crops `atlas extract` adds (a crop would repeat its photo). Each
photo is resized to D's input size as `atlas score` resizes for a judge (bilinear, antialiased,
in RGB), then normalised D's way. Ties keep the dataset's order.

The output folder (written atomically) holds `dataset-<row>.png` for each image that is an
exemplar of some target (once, at the dataset's resolution) and `exemplars.parquet`: one row per
target with `target_id`, `kind`, `classes`, `exemplars` (file names, best first),
`exemplar_scores`, `exemplar_rows` (rows of the dataset), `exemplar_labels`, `exemplar_classes`
(each photo's class index, null when the dataset does not say) and `class_photos` (how many of
the dataset's photos are labelled with one of the target's classes; null for a filter). The page
of a target says where its exemplars come from and, when no photo of the class is among the
candidates, that they are the photos D scores highest, not photos of the class. The dataset's
class labels are ImageNet-1k's: for a D with another label set (a classes file) they do not name
D's classes, so `class_photos` is null and the metadata's `labels_are_d_classes` is false (the
page says the exemplars are the photos D scores highest, whatever they show).

The schema metadata also records the naturalness of the candidate photos (`atlas.naturalness`),
the reference row the site sets beside each method's figures.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from tqdm import tqdm

from atlas.classifier import Classifier
from atlas.dataset import load_dataset, recorded_sha256
from atlas.errors import AtlasError
from atlas.io import atomic_dir
from atlas.metadata import classifier_record, software
from atlas.naturalness import of_photos
from atlas.pixels import to_input, unit_rgb
from atlas.schema import EXEMPLARS, EXEMPLARS_KEY
from atlas.targets import Target, check_targets

log = logging.getLogger(__name__)


@torch.no_grad()
def dataset_activations(
    classifier: Classifier,
    images: np.ndarray,
    rows: np.ndarray,
    classes: Sequence[int],
    batch_size: int,
    layers: Sequence[str] = (),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """For the dataset images `rows` (N): relu(logit) of `classes` (K), a (N, K) float tensor, and
    the spatial mean of every channel of each of `layers`, a (N, C) tensor per layer. One pass of D,
    which stops after the last layer when no class is asked for."""
    cls = torch.tensor(list(classes), dtype=torch.long)
    out = torch.empty(len(rows), len(cls))
    means = {layer: torch.empty(len(rows), classifier.layers[layer]) for layer in layers}
    for start in tqdm(range(0, len(rows), batch_size), desc="dataset under D", unit="batch", disable=None):
        part = rows[start : start + batch_size]
        rgb = unit_rgb(torch.from_numpy(np.ascontiguousarray(images[part])))
        acts = classifier.forward(
            to_input(classifier, rgb).to(classifier.device), layers=layers, need_logits=len(cls) > 0
        )
        if len(cls):
            assert acts.logits is not None
            out[start : start + len(part)] = torch.relu(acts.logits.float().cpu()[:, cls])
        for layer in layers:
            means[layer][start : start + len(part)] = acts.features[layer].float().mean(dim=(2, 3)).cpu()
    return out, means


def exemplars(
    classifier: Classifier, data: Path, targets: Sequence[Target], top_k: int, out: Path, batch_size: int = 32
) -> pa.Table:
    """Find the top-k exemplars of every target and write them into `out` (replaced as a whole)."""
    if top_k < 1:
        raise AtlasError(f"--top-k must be at least 1, got {top_k}")
    if not targets:
        raise AtlasError("no targets given; pass --targets class:..., pair:... or filter:...")
    if batch_size < 1:
        raise AtlasError(f"--batch-size must be at least 1, got {batch_size}")
    check_targets(targets, classifier)
    images, manifest = load_dataset(data)
    rows = manifest.loc[manifest["parent"].isna(), "index"].to_numpy(dtype=np.int64)
    if len(rows) == 0:
        raise AtlasError(f"the dataset {data} has no images; extract one with `atlas extract`")
    classes = sorted({c for t in targets for c in t.classes})
    column = {c: k for k, c in enumerate(classes)}
    layers = list(dict.fromkeys(t.layer for t in targets if t.layer is not None))
    acts, means = dataset_activations(classifier, images, rows, classes, batch_size, layers)
    labels = manifest["label"].astype(object).where(manifest["label"].notna(), None).tolist()
    class_of = [None if pd.isna(c) else int(c) for c in manifest["class_index"]]
    per_class = Counter(class_of[r] for r in rows if class_of[r] is not None)
    labels_apply = classifier.imagenet  # the dataset's class indices are ImageNet-1k's
    table: dict[str, list[object]] = {k: [] for k in _SCHEMA.names}
    used: set[int] = set()
    for t in targets:
        if t.kind == "filter":
            assert t.layer is not None
            total = means[t.layer][:, list(t.channels)].sum(dim=1)
        else:
            total = acts[:, [column[c] for c in t.classes]].sum(dim=1)
        order = torch.sort(total, descending=True, stable=True).indices[:top_k].tolist()
        picked = [int(rows[i]) for i in order]
        used.update(picked)
        table["target_id"].append(t.id)
        table["kind"].append(t.kind)
        table["classes"].append(list(t.classes))
        table["exemplars"].append([_name(r) for r in picked])
        table["exemplar_scores"].append([float(total[i]) for i in order])
        table["exemplar_rows"].append(picked)
        table["exemplar_labels"].append([labels[r] for r in picked])
        table["exemplar_classes"].append([class_of[r] for r in picked])
        table["class_photos"].append(
            None if t.kind == "filter" or not labels_apply else sum(per_class[c] for c in t.classes)
        )
    result = pa.Table.from_pydict(table, schema=_SCHEMA)
    info = {
        **software(),
        "top_k": top_k,
        "dataset": str(data),
        "candidates": len(rows),
        "labelled": sum(per_class.values()),
        "labels_are_d_classes": labels_apply,
        "sources": sorted({str(v) for v in manifest["source"].iloc[rows].dropna()}),
        "naturalness": of_photos(images, rows),
        "images_sha256": recorded_sha256(data),
        "classifier": classifier_record(classifier),
    }
    result = result.replace_schema_metadata({EXEMPLARS_KEY: json.dumps(info).encode()})
    with atomic_dir(out) as tmp:
        for r in sorted(used):
            Image.fromarray(np.asarray(images[r])).save(tmp / _name(r), format="PNG")
        pq.write_table(result, tmp / EXEMPLARS)
    log.info(
        "wrote the top %d of %d dataset images for %d targets (%d images) to %s",
        top_k,
        len(rows),
        len(targets),
        len(used),
        out,
    )
    return result


def _name(row: int) -> str:
    return f"dataset-{row:06d}.png"


_SCHEMA = pa.schema(
    [
        ("target_id", pa.string()),
        ("kind", pa.string()),
        ("classes", pa.list_(pa.int64())),
        ("exemplars", pa.list_(pa.string())),
        ("exemplar_scores", pa.list_(pa.float64())),
        ("exemplar_rows", pa.list_(pa.int64())),
        ("exemplar_labels", pa.list_(pa.string())),
        ("exemplar_classes", pa.list_(pa.int64())),
        ("class_photos", pa.int64()),
    ]
)
