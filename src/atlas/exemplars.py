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
`exemplar_scores`, `exemplar_rows` (rows of the dataset) and `exemplar_labels`.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from tqdm import tqdm

from atlas import __version__
from atlas.classifier import Classifier, load_classifier
from atlas.data import load_dataset, recorded_sha256
from atlas.errors import AtlasError
from atlas.io import atomic_dir
from atlas.scores import to_input, to_rgb
from atlas.targets import Target, check_targets, parse_specs

log = logging.getLogger(__name__)

EXEMPLARS = "exemplars.parquet"
EXEMPLARS_KEY = b"atlas.exemplars"


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
        rgb = to_rgb(torch.from_numpy(np.ascontiguousarray(images[part])))
        acts = classifier.forward(to_input(classifier, rgb).to(classifier.device), layers=layers, need_logits=len(cls) > 0)
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
    table: dict[str, list[object]] = {k: [] for k in ("target_id", "kind", "classes", "exemplars", "exemplar_scores", "exemplar_rows", "exemplar_labels")}  # fmt: skip
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
    result = pa.Table.from_pydict(table, schema=_SCHEMA)
    info = {
        "atlas": __version__, "top_k": top_k, "dataset": str(data), "candidates": len(rows),
        "images_sha256": recorded_sha256(data),
        "classifier": {"name": classifier.name, "weights": classifier.weights, "input_size": classifier.input_size},
    }  # fmt: skip
    result = result.replace_schema_metadata({EXEMPLARS_KEY: json.dumps(info).encode()})
    with atomic_dir(out) as tmp:
        for r in sorted(used):
            Image.fromarray(np.asarray(images[r])).save(tmp / _name(r), format="PNG")
        pq.write_table(result, tmp / EXEMPLARS)
    log.info("wrote the top %d of %d dataset images for %d targets (%d images) to %s", top_k, len(rows), len(targets), len(used), out)  # fmt: skip
    return result


def _name(row: int) -> str:
    return f"dataset-{row:06d}.png"


_SCHEMA = pa.schema(
    [
        ("target_id", pa.string()), ("kind", pa.string()), ("classes", pa.list_(pa.int64())),
        ("exemplars", pa.list_(pa.string())), ("exemplar_scores", pa.list_(pa.float64())),
        ("exemplar_rows", pa.list_(pa.int64())), ("exemplar_labels", pa.list_(pa.string())),
    ]
)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from atlas.generate import pick_device

    device = pick_device(args.device)
    classifier = load_classifier(args.classifier, args.weights, seed=args.seed, image_size=args.image_size)
    targets = parse_specs(args.targets)
    if args.batch_size < 1:
        raise AtlasError(f"--batch-size must be at least 1, got {args.batch_size}")
    classifier.to(device)
    exemplars(classifier, Path(args.data), targets, args.top_k, Path(args.out), args.batch_size)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "exemplars",
        help="the dataset images D scores highest for each target",
        description="One batched pass of D over an extracted dataset (`atlas extract`); for every "
        "target (class, pair, group or filter), the top-k images by the target's activation, written "
        "as PNGs with exemplars.parquet into OUT (replaced as a whole).",
    )
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder from `atlas extract`")
    p.add_argument("--targets", required=True, action="append", metavar="SPEC", help="class:0-9, pair:9+30, filter:LAYER:0-3, ... (repeatable)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (replaced as a whole)")
    p.add_argument("--top-k", type=int, default=4, help="exemplars per target")
    p.add_argument("--classifier", default="efficientnet-lite0", help="D")
    p.add_argument("--weights", default="default", help="D's weights: default, random or a state-dict file")
    p.add_argument("--image-size", type=int, default=None, metavar="PX", help="run D at PX x PX (default: its own)")
    p.add_argument("--seed", type=int, default=0, help="the run's seed (random weights are seeded with it)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.set_defaults(func=run)
