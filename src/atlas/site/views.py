"""The index as the site sees it: the table read and checked, its rows grouped into one
`TargetView` per target (the methods side by side), and the file-name-safe names of the pages."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from atlas.errors import AtlasError
from atlas.formatting import finite_or_none
from atlas.io import read_table
from atlas.methods import names as method_names
from atlas.schema import PROVENANCE_KEY, check_index

log = logging.getLogger("atlas.site")  # one logger for the whole command, whichever module logs

# The kinds of target in the order the site shows them; others after these, by name.
KIND_ORDER = ("class", "pair", "group", "filter")
_PAGES = {"index", "layers", "pairs", "summary", "provenance", "downloads", "failures", "groups", "changed"}
_PREFIXES = ("layer-", "groups-")  # the prefixes of the layer and group pages
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def slug(text: str) -> str:
    """A file-name-safe stem for `text` (a target id, layer or method): itself when already safe and
    not a page name; otherwise its safe characters plus a hash of the original, so names stay unique."""
    safe = _UNSAFE.sub("_", text).lstrip(".")[:100]
    if safe == text and safe and safe.lower() not in _PAGES and not safe.lower().startswith(_PREFIXES):
        return safe
    return f"{safe or 'x'}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def inside(root: Path, *parts: str) -> Path:
    """`root / parts`, refused when it would land outside `root`."""
    path = root.joinpath(*parts)
    if not path.resolve().is_relative_to(root.resolve()):
        raise AtlasError(f"refusing to write {path}: it is outside the site folder {root}")
    return path


@dataclass
class TargetView:
    id: str
    slug: str
    kind: str
    label: str
    first: dict[str, Any]
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> row (with site paths)
    # method -> the rows of the target's other seeds (seed_index 1, 2, ...), in order
    seeds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    prev: TargetView | None = None
    next: TargetView | None = None

    @property
    def page(self) -> str:
        return f"{self.slug}.html"

    def sort_key(self) -> tuple[Any, ...]:
        kind = KIND_ORDER.index(self.kind) if self.kind in KIND_ORDER else len(KIND_ORDER)
        f = self.first
        return (kind, self.kind, f["layer"] or "", list(f["classes"] or []), list(f["channels"] or []), self.id)


def class_index(t: TargetView) -> int:
    """The class index of a class target (its `class_index`, else its one class)."""
    c = t.first["class_index"]
    return int(c if c is not None else (t.first["classes"] or [-1])[0])


def kind_order(kinds: Iterable[str]) -> list[str]:
    """`kinds` in the site's order: those of `KIND_ORDER` first, then the others by name."""
    return sorted(kinds, key=lambda k: (KIND_ORDER.index(k) if k in KIND_ORDER else 9, k))


def method_order(names: Iterable[str]) -> list[str]:
    """The distinct method `names` in the site's order: the known methods as `atlas.methods` lists
    them, then the others by name."""
    names = set(names)
    known = method_names()
    return [m for m in known if m in names] + sorted(names - set(known))


def load_index(path: Path) -> tuple[pa.Table, dict[str, Any]]:
    """The index table, checked against the schema, and its provenance (empty when absent)."""
    table = check_index(read_table(path, "index", "build it with `atlas index` (or run snakemake)"), str(path))
    raw = (table.schema.metadata or {}).get(PROVENANCE_KEY)
    provenance: dict[str, Any] = {}
    if raw is None:
        log.warning("%s has no provenance in its metadata; the provenance page lists only its columns", path)
    else:
        try:
            provenance = json.loads(raw)
        except ValueError as exc:
            raise AtlasError(
                f"{path} has unreadable provenance metadata ({exc}); rebuild it with `atlas index`"
            ) from exc
    return table, provenance


def target_views(rows: list[dict[str, Any]], where: Path) -> list[TargetView]:
    """The index's `rows` (read from `where`) as one view per target, in the site's order and
    linked to their neighbours; NaN and infinite scores become None."""
    by_id: dict[str, TargetView] = {}
    slugs: dict[str, str] = {}
    for row in rows:
        if not row["target_id"] or not row["method"]:
            raise AtlasError(f"{where} has a row with no target_id or method; rebuild it with `atlas index`")
        if not row["failed"] and not row["image"]:
            raise AtlasError(f"{where}: {row['method']} {row['target_id']} neither failed nor has an image; rebuild it")
        key = row.get("base_id") or row["target_id"]
        t = by_id.get(key)
        if t is None:
            s = slug(key)
            if s.lower() in slugs:
                raise AtlasError(f"{where}: targets {slugs[s.lower()]} and {key} share file name {s}; rename one")
            slugs[s.lower()] = key
            t = by_id[key] = TargetView(key, s, row["kind"], row["label"] or key, row)
        clean = {k: finite_or_none(v) for k, v in row.items()}
        if row.get("seed_index"):
            t.seeds.setdefault(row["method"], []).append(clean)
            continue
        if row["method"] in t.rows:
            raise AtlasError(
                f"{where}: target {row['target_id']} of method {row['method']} is twice in the index; rebuild it"
            )
        t.first = row if not t.rows else t.first
        t.rows[row["method"]] = clean
    for t in by_id.values():
        for method, extra in t.seeds.items():
            if method not in t.rows:
                raise AtlasError(f"{where}: {t.id} of method {method} has other seeds but not seed 0; rebuild it")
            extra.sort(key=lambda r: int(r["seed_index"]))
    targets = sorted(by_id.values(), key=TargetView.sort_key)
    for a, b in zip(targets, targets[1:], strict=False):
        a.next, b.prev = b, a
    return targets
