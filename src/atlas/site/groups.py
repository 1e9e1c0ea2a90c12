"""Groups of related classes, for browsing a large atlas: the grid's group filter, groups.html and
one page per group.

For an ImageNet-1k classifier (every class target's label is ImageNet-1k's name of its index) the
groups are the ranges of atlas/imagenet_groups.tsv (fish, birds, dogs, ..., food and drink), the
artefacts split by the first letter of the class name into groups of about `LETTER_GROUP_SIZE`
classes. For any other classifier the classes are grouped by first letter alone. Torch-free.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from atlas.errors import AtlasError

GROUPS_FILE = "imagenet_groups.tsv"
ARTEFACTS = "artefacts"  # the group of imagenet_groups.tsv that is split by first letter
LETTER_GROUP_SIZE = 60  # about this many classes per first-letter group
IMAGENET = "ImageNet-1k groups"
LETTERS = "first letters of the class names"


@dataclass(frozen=True)
class Group:
    name: str
    slug: str  # [a-z0-9-] only
    classes: tuple[int, ...]  # class indices, ascending

    @property
    def page(self) -> str:
        return f"groups-{self.slug}.html"


@cache
def imagenet_names() -> tuple[str, ...]:
    """ImageNet-1k's 1000 class names in index order (atlas/imagenet_classes.txt)."""
    names = resources.files("atlas").joinpath("imagenet_classes.txt").read_text(encoding="utf-8").splitlines()
    if len(names) != 1000:
        raise AtlasError("atlas/imagenet_classes.txt is damaged (need 1000 class names): reinstall atlas")
    return tuple(names)


@cache
def imagenet_ranges() -> tuple[tuple[int, int, str], ...]:
    """The rows (first, last, group) of atlas/imagenet_groups.tsv, each checked against the class
    names it gives, together covering 0-999 once."""
    names = imagenet_names()
    text = resources.files("atlas").joinpath(GROUPS_FILE).read_text(encoding="utf-8")
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        try:
            first, last, group, named = int(fields[0]), int(fields[1]), fields[2], fields[3]
        except (IndexError, ValueError):
            raise AtlasError(
                f"atlas/{GROUPS_FILE} line {n} is not first<TAB>last<TAB>group<TAB>names: reinstall atlas"
            ) from None
        if not 0 <= first <= last < 1000 or named != f"{names[first]} .. {names[last]}":
            raise AtlasError(
                f"atlas/{GROUPS_FILE} line {n}: {first}-{last} is not {named!r} "
                f"(it is {names[min(max(first, 0), 999)]!r} .. {names[min(max(last, 0), 999)]!r}); reinstall atlas"
            )
        rows.append((first, last, group))
    covered = sorted(i for first, last, _ in rows for i in range(first, last + 1))
    if covered != list(range(1000)):
        raise AtlasError(f"atlas/{GROUPS_FILE} does not cover the classes 0-999 once each: reinstall atlas")
    return tuple(rows)


def _initial(label: str) -> str:
    c = label.strip()[:1].upper()
    return c if c.isalpha() else "#"


def _partition(counts: list[int], k: int) -> list[int]:
    """Where to cut `counts` into `k` contiguous runs of sums as even as can be (the sum of the
    squared run sums smallest): the start of each run after the first."""
    n = len(counts)
    k = max(1, min(k, n))
    prefix = [0]
    for c in counts:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    # best[j][i]: the smallest sum of squares over counts[:i] in j runs; cut[j][i]: the last run's start.
    best = [[inf] * (n + 1) for _ in range(k + 1)]
    cut = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = 0
    for j in range(1, k + 1):
        for i in range(j, n + 1):
            for s in range(j - 1, i):
                v = best[j - 1][s] + (prefix[i] - prefix[s]) ** 2
                if v < best[j][i]:
                    best[j][i], cut[j][i] = v, s
    starts, i = [], n
    for j in range(k, 0, -1):
        i = cut[j][i]
        starts.append(i)
    return sorted(starts)[1:]


def letter_groups(labels: dict[int, str], prefix: str = "") -> list[tuple[str, list[int]]]:
    """`labels` (class index -> name) in groups of consecutive first letters, about
    `LETTER_GROUP_SIZE` classes each, named "<prefix>A–C" ("#" for a name that starts with no letter)."""
    by_letter: dict[str, list[int]] = {}
    for c, label in labels.items():
        by_letter.setdefault(_initial(label), []).append(c)
    letters = sorted(by_letter, key=lambda x: (x != "#", x))
    if not letters:
        return []
    counts = [len(by_letter[x]) for x in letters]
    k = max(1, round(sum(counts) / LETTER_GROUP_SIZE))
    bounds = [0, *_partition(counts, k), len(letters)]
    out = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        run = letters[a:b]
        name = run[0] if len(run) == 1 else f"{run[0]}\u2013{run[-1]}"
        out.append((f"{prefix}{name}", sorted(c for x in run for c in by_letter[x])))
    return out


def is_imagenet(labels: dict[int, str]) -> bool:
    """Whether every class (index -> label) is ImageNet-1k's class of that index, by name."""
    names = imagenet_names()
    return bool(labels) and all(0 <= c < 1000 and names[c] == label for c, label in labels.items())


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "group"


def class_groups(labels: dict[int, str]) -> tuple[list[Group], str]:
    """The groups of the classes `labels` (index -> label) in browsing order, each with the run's
    classes only (empty groups left out), and which scheme made them (`IMAGENET` or `LETTERS`)."""
    named: list[tuple[str, list[int]]]
    if is_imagenet(labels):
        scheme = IMAGENET
        order: dict[str, list[int]] = {}
        for first, last, group in imagenet_ranges():
            order.setdefault(group, []).extend(c for c in range(first, last + 1) if c in labels)
        named = []
        for group, classes in order.items():
            if group == ARTEFACTS:
                named.extend(letter_groups({c: labels[c] for c in classes}, f"{ARTEFACTS} "))
            else:
                named.append((group, classes))
    else:
        scheme = LETTERS
        named = letter_groups(labels, "classes ")
    groups, seen = [], set()
    for name, classes in named:
        if not classes:
            continue
        s = base = _slug(name)
        k = 2
        while s in seen:
            s, k = f"{base}-{k}", k + 1
        seen.add(s)
        groups.append(Group(name, s, tuple(sorted(classes))))
    return groups, scheme
