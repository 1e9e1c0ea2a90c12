"""Chunk planning for the Snakemake workflow: which targets each generation job optimises.

The workflow imports this at DAG time, for every `snakemake` invocation (and on a cluster, in every
job), so it must stay cheap: no torch, no classifier. Target ids and index ranges come from
`atlas.targets` (torch-free, the one definition of both), and class indices are
checked against the size of D's label set (`atlas.classifier_spec`: its classes file, or
ImageNet-1k's 1000 classes) rather than against a loaded model. Layer names and channel counts
are checked against `atlas.layer_table` where it has the classifier, otherwise by `atlas generate`
itself, when the job loads the classifier.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from atlas.errors import AtlasError
from atlas.targets import KINDS as TARGET_KINDS
from atlas.targets import class_id, filter_id, parse_range, seeded_id

# The size of the default label set, ImageNet-1k's.
NUM_CLASSES = 1000
# Target kinds the workflow fans out over, in the order its jobs are listed (groups are for the
# command line only).
KINDS = ("class", "filter", "pair")
assert set(KINDS) <= set(TARGET_KINDS)
# Layer names end up in target ids, file names and shell commands: keep them to these characters.
LAYER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


@dataclass(frozen=True)
class PlannedTarget:
    id: str  # as atlas.targets.Target.id: the PNG's stem and the records' target_id
    kind: str
    classes: tuple[int, ...] = ()
    layer: str | None = None
    channel: int | None = None


@dataclass(frozen=True)
class Chunk:
    """One generation job: `targets` of one kind, optimised by one method as one batch.

    `index` is the chunk's bin (see `plan_chunks`); a filter chunk also names its `layer`."""

    method: str
    kind: str
    index: int
    targets: tuple[PlannedTarget, ...]
    layer: str | None = None
    seeds: int = 1  # each target drawn from this many seeds (atlas.targets.with_seeds), all in this chunk

    @property
    def name(self) -> str:
        """The chunk's folder name under generate/<method>/<kind>/: chunk-NNNN, or for filters
        <layer>-chunk-NNNN."""
        bin_name = f"chunk-{self.index:04d}"
        return bin_name if self.layer is None else f"{self.layer}-{bin_name}"

    @property
    def key(self) -> str:
        """The chunk as a part of a job's name: NNNN, or for filters <layer>_NNNN with every
        character of the layer other than letters, digits and _ written as _."""
        index = f"{self.index:04d}"
        return index if self.layer is None else re.sub(r"[^A-Za-z0-9_]", "_", self.layer) + "_" + index

    @property
    def ids(self) -> list[str]:
        """The target ids the chunk's records hold: each target's seeds, side by side."""
        return [seeded_id(t.id, k) for t in self.targets for k in range(self.seeds)]

    @property
    def size(self) -> int:
        """Images the chunk makes: its targets times their seeds."""
        return len(self.targets) * self.seeds

    def specs(self) -> list[str]:
        """`--targets` SPECs naming exactly this chunk's targets, for `atlas generate`."""
        return target_specs(self.kind, self.targets)


def target_specs(kind: str, targets: Sequence[PlannedTarget]) -> list[str]:
    """`--targets` SPECs naming exactly `targets`, all of `kind` (one per class list, pair list or
    layer)."""
    if not targets:
        return []
    if kind == "class":
        return ["class:" + ",".join(str(t.classes[0]) for t in targets)]
    if kind == "pair":
        return ["pair:" + ",".join("+".join(map(str, t.classes)) for t in targets)]
    by_layer: dict[str, list[int]] = {}
    for t in targets:
        assert t.layer is not None and t.channel is not None
        by_layer.setdefault(t.layer, []).append(t.channel)
    return [f"filter:{layer}:" + ",".join(map(str, chans)) for layer, chans in by_layer.items()]


def parse_indices(items: Iterable[int | str], what: str, limit: int | None) -> list[int]:
    """Sorted unique indices from ints and "lo-hi" strings (inclusive); each must be < `limit`."""
    out: set[int] = set()
    for item in items:
        if isinstance(item, bool):
            raise AtlasError(f'{what}: {item!r} is not an index; write integers or ranges such as "0-9"')
        if isinstance(item, int):
            lo = hi = item
        else:
            bounds = parse_range(str(item))
            if bounds is None:
                raise AtlasError(f'{what}: malformed item {item!r}; write integers or ranges such as "0-9"')
            lo, hi = bounds
            if hi < lo:
                raise AtlasError(f'{what}: range {item!r} runs backwards; write it as "{hi}-{lo}"')
        if lo < 0 or (limit is not None and hi >= limit):
            bound = f"0..{limit - 1}" if limit is not None else "0 or more"
            raise AtlasError(f"{what}: {item!r} is out of range; indices are {bound}")
        out.update(range(lo, hi + 1))
    return sorted(out)


def class_targets(
    classes: Iterable[int | str], what: str = "classes", num_classes: int = NUM_CLASSES
) -> list[PlannedTarget]:
    """One target per class index, each checked against the label set's `num_classes`."""
    return [
        PlannedTarget(id=class_id("class", (c,)), kind="class", classes=(c,))
        for c in parse_indices(classes, what, num_classes)
    ]


def pair_targets(pairs: Sequence[Sequence[int]], num_classes: int = NUM_CLASSES) -> list[PlannedTarget]:
    """Pairs in the order given; a pair repeated (in either order) is an error, not a silent merge."""
    out: list[PlannedTarget] = []
    seen: set[frozenset[int]] = set()
    for pair in pairs:
        members = tuple(int(c) for c in pair)
        label = "+".join(map(str, members))
        if len(members) != 2 or members[0] == members[1]:
            raise AtlasError(f"pairs: {label} is not a pair of two different classes; write e.g. [9, 30]")
        parse_indices(members, f"pairs: {label}", num_classes)
        if frozenset(members) in seen:
            raise AtlasError(f"pairs: {label} is listed twice; list each pair once")
        seen.add(frozenset(members))
        out.append(PlannedTarget(id=class_id("pair", members), kind="pair", classes=members))
    return out


def filter_targets(filters: Sequence[dict[str, object]]) -> list[PlannedTarget]:
    """One target per (layer, channel); a layer listed twice is an error."""
    out: list[PlannedTarget] = []
    layers: set[str] = set()
    for entry in filters:
        layer = str(entry["layer"])
        if not LAYER_RE.fullmatch(layer):
            raise AtlasError(f"filters: layer name {layer!r} has characters other than letters, digits and _ . -")
        if layer in layers:
            raise AtlasError(f"filters: layer {layer} is listed twice; merge its channels into one entry")
        layers.add(layer)
        channels = entry.get("channels")
        assert isinstance(channels, list)
        for k in parse_indices(channels, f"filters: channels of {layer}", None):
            out.append(PlannedTarget(id=filter_id(layer, (k,)), kind="filter", layer=layer, channel=k))
    return out


def chunk_bin(target: PlannedTarget, chunk_size: int) -> tuple[str | None, int]:
    """The chunk a target belongs to, from the target alone: a class's index // chunk_size; a
    pair's by its smaller class the same way; a filter's channel // chunk_size within its layer."""
    if target.kind == "filter":
        assert target.channel is not None
        return target.layer, target.channel // chunk_size
    return None, min(target.classes) // chunk_size


def plan_chunks(
    method: str, kind: str, targets: Sequence[PlannedTarget], chunk_size: int, seeds: int = 1
) -> list[Chunk]:
    """Group `targets` into stable chunks: bins of `chunk_size` consecutive indices (`chunk_bin`).

    A chunk holds at most `chunk_size` targets, and which chunk a target is in depends on its own
    index only, so adding or removing a target changes its own chunk and no other: a rerun
    redoes that one job per method. (Sparse targets make small chunks: 13 classes spread over
    0..676 in bins of 8 are 13 chunks of one; a sparse config sets a larger chunk_size.) Chunks are in
    index order; filter chunks by layer in the order the layers are listed, then by index; the
    targets of a chunk keep their order in `targets`. With `seeds` > 1, each target's seeds are
    made in its own chunk, so a chunk makes up to `chunk_size` x `seeds` images.
    """
    if chunk_size < 1:
        raise AtlasError(f"methods.{method}.classes_per_job must be at least 1, got {chunk_size}")
    if seeds < 1:
        raise AtlasError(f"methods.{method}.seeds must be at least 1, got {seeds}")
    bins: dict[tuple[str | None, int], list[PlannedTarget]] = {}
    for t in targets:
        bins.setdefault(chunk_bin(t, chunk_size), []).append(t)
    layer_order = {layer: i for i, layer in enumerate(dict.fromkeys(t.layer for t in targets))}
    keys = sorted(bins, key=lambda k: (layer_order[k[0]], k[1]))
    return [
        Chunk(method=method, kind=kind, index=i, targets=tuple(bins[(layer, i)]), layer=layer, seeds=seeds)
        for layer, i in keys
    ]
