"""`atlas index`: the run's records, scores, exemplars and provenance as one table, index.parquet.

Inputs, all inside the run folder: the merged records (`atlas collect`), the scores of every chunk
(`atlas score`), optionally the exemplars (`atlas exemplars`), and each chunk's run.json (found
through the records' `chunk` column) for the weights' sha256. The columns and their meaning are
`atlas.schema`; the table is checked with `check_index` before it is written (atomically), with
the run's provenance as JSON in the Parquet schema metadata under `PROVENANCE_KEY`.

Refused, with the target or file to blame: a record without scores or scores without a record
(a chunk scored before it was regenerated), a target scored twice, class and pair targets missing
from the exemplars, chunks whose classifier weights differ, and scores under different judges.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from atlas import __version__
from atlas.errors import AtlasError
from atlas.formatting import finite_or_none
from atlas.io import read_table, run_relative, write_table
from atlas.metadata import git_commit, software
from atlas.schema import (
    EXEMPLARS_KEY,
    INDEX_COLUMNS,
    INDEX_FORMAT,
    PROVENANCE_KEY,
    SCORE_COLUMNS,
    SCORE_KEY_COLUMNS,
    SCORES_KEY,
    check_index,
)
from atlas.targets import seeded_id

log = logging.getLogger(__name__)

# Record columns that the index renames: D's scores become d_*.
_RENAMED = {"activation": "d_activation", "prob": "d_prob", "rank": "d_rank", "top5": "d_top5"}
# What the scores add to a record (the rest of SCORE_COLUMNS is the join key).
_SCORE_COLUMNS = tuple(c for c in SCORE_COLUMNS if c not in SCORE_KEY_COLUMNS)


def config_sha256(config: Any) -> str:
    """sha256 of a config as JSON with sorted keys and no spaces."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _meta(table: pa.Table, key: bytes) -> dict[str, Any]:
    raw = (table.schema.metadata or {}).get(key)
    return json.loads(raw) if raw else {}


def _scores(paths: Sequence[Path]) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, Any]]:
    """Every scores file's rows by (method, target_id), and the judge/robustness they were made with."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    where: dict[tuple[str, str], Path] = {}
    info: dict[str, Any] = {}
    for path in paths:
        table = read_table(
            path, "scores", "run `atlas score` on its chunk (snakemake does it)", SCORE_COLUMNS, "atlas score"
        )
        meta = _meta(table, SCORES_KEY)
        judge = {k: meta.get(k) for k in ("judge", "robustness")}
        if info and judge != info:
            raise AtlasError(
                f"{path} was scored under another judge or robustness set than {paths[0]}: "
                "rescore every chunk with one setting (snakemake does it)"
            )
        info = judge
        for row in table.to_pylist():
            key = (row["method"], row["target_id"])
            if key in rows:
                raise AtlasError(
                    f"target {key[1]} of method {key[0]} is scored twice ({where[key]} and {path}); score each chunk once"
                )
            rows[key], where[key] = row, path
    return rows, info


_EXEMPLAR_COLUMNS = ("exemplars", "exemplar_scores", "exemplar_classes", "class_photos")


def _exemplars(path: Path | None, run_dir: Path) -> tuple[dict[str, dict[str, Any]] | None, dict[str, Any]]:
    """target id -> its index columns from `atlas exemplars` (paths made relative to the run)."""
    if path is None:
        return None, {}
    table = read_table(
        path,
        "exemplars",
        "run `atlas exemplars` (snakemake does it)",
        ("target_id", *_EXEMPLAR_COLUMNS),
        "atlas exemplars",
    )
    folder = run_relative(path.parent, run_dir, "the exemplars")
    out = {}
    for row in table.select(["target_id", *_EXEMPLAR_COLUMNS]).to_pylist():
        row["exemplars"] = [str(folder / name) for name in row["exemplars"]]
        out[row.pop("target_id")] = row
    return out, _meta(table, EXEMPLARS_KEY)


def _run_json(run_dir: Path, chunk: str) -> dict[str, Any]:
    path = run_dir / chunk / "run.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AtlasError(f"cannot read {path} ({type(exc).__name__}): rerun its chunk with `atlas generate`") from exc


def build_index(
    run_dir: Path, records: Path, scores: Sequence[Path], exemplars: Path | None = None, config: Any = None
) -> pa.Table:
    """The index table (checked, with its provenance metadata) from a run's parts."""
    rec = read_table(records, "records", "run `atlas collect` first (snakemake does it)")
    need = ("method", "target_id", "kind", "chunk", "classifier", *_RENAMED)
    missing = [c for c in need if c not in rec.column_names]
    if missing:
        raise AtlasError(f"{records} lacks column(s) {', '.join(missing)}: it is not from `atlas collect`; rerun it")
    if not scores:
        raise AtlasError("no scores given; pass the scores.parquet of every chunk (from `atlas score`)")
    by_key, judge_info = _scores(scores)
    ex, ex_info = _exemplars(exemplars, run_dir)

    runs = {chunk: _run_json(run_dir, chunk) for chunk in dict.fromkeys(rec.column("chunk").to_pylist())}
    classifier_sha = {json.dumps(r.get("classifier", {}).get("sha256")) for r in runs.values()}
    if len(classifier_sha) > 1:
        raise AtlasError(
            "the chunks were generated with different classifier weights (their run.json differ): regenerate the stale chunks"
        )
    judge = judge_info.get("judge") or {}
    cfg_sha = None if config is None else config_sha256(config)
    commit = git_commit()
    cols: dict[str, list[Any]] = {c.name: [] for c in INDEX_COLUMNS}
    seen: set[tuple[str, str]] = set()
    for row in rec.to_pylist():
        key = (row["method"], row["target_id"])
        if key not in by_key:
            raise AtlasError(
                f"no scores for target {key[1]} of method {key[0]} (chunk {row['chunk']}): "
                "run `atlas score` on that chunk (snakemake does it)"
            )
        seen.add(key)
        out = {c: finite_or_none(row.get(c)) for c in cols}
        for old, new in _RENAMED.items():
            out[new] = finite_or_none(row[old])
        k = int(row.get("seed_index") or 0)
        out["seed_index"] = k
        out["base_id"] = row["target_id"].removesuffix(seeded_id("", k))
        if out["d_rank"] is not None and out["d_rank"] < 1:
            out["d_rank"] = None  # -1: a filter, or a failed target
        out.update({c: by_key[key][c] for c in _SCORE_COLUMNS})
        if ex is not None:
            if out["base_id"] not in ex:
                raise AtlasError(
                    f"target {out['base_id']} has no exemplars in {exemplars}: rerun `atlas exemplars` with every target of the run"
                )
            out.update(ex[out["base_id"]])  # a target's seeds share its exemplars
        else:
            out["exemplars"], out["exemplar_scores"], out["exemplar_classes"] = [], [], []
        run = runs[row["chunk"]]
        out["classifier_sha256"] = run.get("classifier", {}).get("sha256")
        out["decoder_sha256"] = (run.get("decoder") or {}).get("sha256")
        out["judge_sha256"] = judge.get("sha256")
        out["config_sha256"] = cfg_sha
        out["atlas_version"] = __version__
        out["git_commit"] = commit
        for c, v in out.items():
            cols[c].append(v)
    extra = sorted(set(by_key) - seen)
    if extra:
        method, target = extra[0]
        raise AtlasError(
            f"scores for target {target} of method {method} match no record ({len(extra)} in all): "
            "stale scores of a regenerated chunk; rerun `atlas score` on it (snakemake does it)"
        )
    first = next(iter(runs.values()), {})
    provenance = {
        "format": INDEX_FORMAT,
        "config": config,
        "config_sha256": cfg_sha,
        **software(),
        "classifier": first.get("classifier"),
        "judge": judge,
        "robustness": judge_info.get("robustness"),
        "decoders": sorted({s for s in cols["decoder_sha256"] if s is not None}),
        "exemplars": ex_info or None,
        "chunks": {
            chunk: {"git_commit": r.get("git_commit"), "atlas": r.get("atlas"), "device": r.get("device")}
            for chunk, r in runs.items()
        },
    }
    table = pa.Table.from_pydict(cols, schema=pa.schema([pa.field(c.name, c.type) for c in INDEX_COLUMNS]))
    table = table.replace_schema_metadata({PROVENANCE_KEY: json.dumps(provenance, sort_keys=True).encode()})
    return check_index(table, "the new index")


def write_index(table: pa.Table, out: Path) -> None:
    write_table(table, out)


def read_provenance(path: Path) -> dict[str, Any]:
    """The provenance JSON of an index file."""
    return json.loads((pq.read_schema(path).metadata or {})[PROVENANCE_KEY])
