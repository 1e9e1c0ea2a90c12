"""Targets and the SPEC language that names them.

    class:285          one class            class:0-9, class:1,5,9, class:0-4,10
    pair:9+30          two classes at once (the paper's Figure 9); pair:9+30,1+2 for several
    group:1+2+3        any number of classes at once
    filter:features.9:0-7          channels 0..7 of a layer, one target each
    filter:features.9:3+5          a compound of two channels of one layer

Several specs are separated by `;` or given as repeated --targets options.

A target can be drawn from several seeds (`--seeds N`, config `methods.<m>.seeds`): seed k of a
target is a target of its own, whose id is the target's with `-seed<k>` added for k >= 1 (seed 0
keeps the plain id, so a run with one seed is the same as before seeds existed), and whose own
seed derives from that id. The seeds of a target are always in the same chunk as the target.

This module is torch-free: the workflow's planning (`atlas.plan`) and the command line use it
without loading a model. It is the one definition of target kinds, target ids and index ranges.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from atlas.errors import AtlasError

KINDS = ("class", "pair", "group", "filter")
# The --targets help text of every command that takes targets.
SPEC_HELP = "class:285, class:0-9, class:1,5,9, pair:9+30, group:1+2+3, filter:LAYER:0-7"
# One index or an inclusive range of indices: "7", "0-9".
_RANGE_RE = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")


def parse_range(text: str) -> tuple[int, int] | None:
    """`"7"` -> (7, 7), `"0-9"` -> (0, 9); None when `text` is not an index or a range (a range
    that runs backwards is returned as written, for the caller's message)."""
    m = _RANGE_RE.fullmatch(text)
    if m is None:
        return None
    lo = int(m.group(1))
    return lo, int(m.group(2)) if m.group(2) is not None else lo


def class_id(kind: str, classes: Sequence[int]) -> str:
    """The id of a class, pair or group target: `class-0285`, `pair-0009+0030`."""
    return f"{kind}-" + "+".join(f"{c:04d}" for c in classes)


def filter_id(layer: str, channels: Sequence[int]) -> str:
    """The id of a filter target: `filter-features.9-0003`, `filter-features.9-0003+0005`."""
    return f"filter-{layer}-" + "+".join(f"{k:04d}" for k in channels)


def seeded_id(base: str, seed_index: int) -> str:
    """The id of seed `seed_index` of the target `base`: `class-0285`, `class-0285-seed1`, ..."""
    return base if seed_index == 0 else f"{base}-seed{seed_index}"


class _Model(Protocol):
    """What `check_targets` needs of a classifier (`atlas.classifier.Classifier` has it)."""

    name: str

    @property
    def num_classes(self) -> int: ...

    @property
    def layers(self) -> Mapping[str, int]: ...


@dataclass(frozen=True)
class Target:
    """One image to generate: a class, a compound of classes, or a filter (or compound of filters)."""

    kind: str
    classes: tuple[int, ...] = ()
    layer: str | None = None
    channels: tuple[int, ...] = ()
    seed_index: int = 0  # which of the target's seeds (module docstring)

    @property
    def base_id(self) -> str:
        """The target's id without its seed: the same for all of a target's seeds."""
        if self.kind == "filter":
            assert self.layer is not None
            return filter_id(self.layer, self.channels)
        return class_id(self.kind, self.classes)

    @property
    def id(self) -> str:
        """A stable, file-name-safe identifier (also the PNG's stem)."""
        return seeded_id(self.base_id, self.seed_index)

    def seed(self, base: int, attempt: int = 0) -> int:
        """This target's own seed: a function of the run's seed and the target alone, so an image
        does not depend on the chunk it ran in. `attempt` > 0 (a retry after the loss went NaN)
        gives another seed for the same target."""
        key = self.id if attempt == 0 else f"{self.id}#{attempt}"
        return (int(base) * 1_000_003 + zlib.crc32(key.encode())) % (2**63)

    def label(self, class_names: Sequence[str]) -> str:
        if self.kind == "filter":
            return f"{self.layer} channel " + " + ".join(map(str, self.channels))
        return " + ".join(class_names[c] for c in self.classes)


def _ints(text: str, what: str, spec: str) -> list[int]:
    """Parse `0-9`, `1,5,9` or a mixture into a sorted list of unique ints."""
    out: list[int] = []
    for part in text.split(","):
        bounds = parse_range(part)
        if bounds is None:
            raise AtlasError(f"malformed {what} list {text!r} in target spec {spec!r}; write e.g. 0-9 or 1,5,9")
        lo, hi = bounds
        if hi < lo:
            raise AtlasError(f"empty range {part.strip()!r} in target spec {spec!r}; write low-high with low <= high")
        out.extend(range(lo, hi + 1))
    return sorted(set(out))


def _compound(text: str, what: str, spec: str) -> list[tuple[int, ...]]:
    """Parse `9+30,1+2` into [(9, 30), (1, 2)]."""
    groups = []
    for part in text.split(","):
        if not re.fullmatch(r"\s*\d+(\s*\+\s*\d+)+\s*", part):
            raise AtlasError(f"malformed {what} {part!r} in target spec {spec!r}; write e.g. 9+30")
        members = tuple(int(x) for x in part.split("+"))
        if len(set(members)) != len(members):
            raise AtlasError(f"{what} {part.strip()!r} in target spec {spec!r} repeats a member; name each once")
        groups.append(members)
    return groups


def parse_spec(spec: str) -> list[Target]:
    """Parse one SPEC (see module docstring) into targets, without checking them against D."""
    kind, sep, rest = spec.strip().partition(":")
    if not sep or kind not in KINDS or not rest.strip():
        raise AtlasError(
            f"malformed target spec {spec!r}; write class:285, class:0-9, pair:9+30, group:1+2+3 or filter:LAYER:0-7"
        )
    if kind == "class":
        return [Target("class", (c,)) for c in _ints(rest, "class", spec)]
    if kind in ("pair", "group"):
        groups = _compound(rest, kind, spec)
        if kind == "pair" and any(len(g) != 2 for g in groups):
            raise AtlasError(f"a pair has two classes, got {rest!r} in {spec!r}; use group: for more")
        return [Target(kind, g) for g in groups]
    layer, sep, chans = rest.rpartition(":")
    if not sep or not layer:
        raise AtlasError(f"malformed filter spec {spec!r}; write filter:LAYER:CHANNELS, e.g. filter:features.9:0-7")
    if "+" in chans:
        return [Target("filter", layer=layer, channels=g) for g in _compound(chans, "filter compound", spec)]
    return [Target("filter", layer=layer, channels=(k,)) for k in _ints(chans, "channel", spec)]


def parse_specs(specs: Iterable[str]) -> list[Target]:
    """Parse several specs (each may hold several separated by `;`), keeping the first of duplicates."""
    out: dict[str, Target] = {}
    for spec in specs:
        for one in spec.split(";"):
            if one.strip():
                for t in parse_spec(one):
                    out.setdefault(t.id, t)
    if not out:
        raise AtlasError("no targets given; pass --targets SPEC, e.g. --targets class:285")
    return list(out.values())


def check_targets(targets: Sequence[Target], classifier: _Model) -> None:
    """Check every target against D: class indices in range, layers and channels that exist."""
    n = classifier.num_classes
    for t in targets:
        for c in t.classes:
            if not 0 <= c < n:
                raise AtlasError(f"class index {c} in {t.id} is out of range; {classifier.name} has classes 0..{n - 1}")
        if t.kind == "filter":
            assert t.layer is not None
            layers = classifier.layers
            if t.layer not in layers:
                raise AtlasError(f"unknown layer {t.layer!r} for {classifier.name}; valid layers: {', '.join(layers)}")
            for k in t.channels:
                if not 0 <= k < layers[t.layer]:
                    raise AtlasError(
                        f"channel {k} of layer {t.layer} is out of range; it has channels 0..{layers[t.layer] - 1}"
                    )


def with_seeds(targets: Sequence[Target], seeds: int) -> list[Target]:
    """Each target as `seeds` targets, its seeds 0 .. seeds - 1 side by side."""
    if seeds < 1:
        raise AtlasError(f"--seeds must be at least 1, got {seeds}")
    return [replace(t, seed_index=k) for t in targets for k in range(seeds)]


def parse_attempts(items: Iterable[str]) -> dict[str, int]:
    """`TARGET_ID=K` texts (the command line's `--attempt`) as {target id: attempt number}."""
    out: dict[str, int] = {}
    for item in items:
        target, sep, k = item.rpartition("=")
        if not sep or not target.strip() or not k.strip().isdigit():
            raise AtlasError(f"malformed --attempt {item!r}; write --attempt TARGET_ID=K, e.g. --attempt class-0009=1")
        out[target.strip()] = int(k)
    return out
