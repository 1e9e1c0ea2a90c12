"""`atlas collect`: merge the records of every generation chunk into one table for the run.

Each chunk folder (from `atlas generate`) holds its PNGs and a `records.parquet` with one row per
target, the image named relative to the chunk. The merged table has the same columns, one row per
target and method (failed targets included, with no image), with

- `image` rewritten relative to the run folder (`generate/scratch/class/chunk-0000/class-0009.png`),
  so the run folder can be moved or published as a whole;
- `chunk`: the chunk folder, relative to the run folder.

It refuses, with the chunk to blame, records that cannot be one run's: the same (method, target)
twice, more than one classifier, or an image that a record lists but that is not on disk. The file
is written atomically.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq

from atlas.errors import AtlasError
from atlas.io import atomic_path

log = logging.getLogger(__name__)

KEY = ("method", "target_id")


def run_relative(path: Path, root: Path, what: str) -> PurePosixPath:
    try:
        return PurePosixPath(path.resolve().relative_to(root.resolve()).as_posix())
    except ValueError:
        raise AtlasError(f"{what} {path} is not inside the run folder {root}; pass --run-dir of the run it belongs to") from None


def _read_chunk(records: Path, run_dir: Path) -> pa.Table:
    if not records.is_file():
        raise AtlasError(f"chunk records {records} do not exist; run `atlas generate` for that chunk first")
    try:
        table = pq.read_table(records)
    except (OSError, pa.ArrowException) as exc:
        raise AtlasError(f"cannot read {records} ({exc}); rerun the chunk that wrote it") from exc
    missing = [c for c in (*KEY, "image", "failed", "classifier") if c not in table.column_names]
    if missing:
        raise AtlasError(f"{records} lacks column(s) {', '.join(missing)}: it is not from `atlas generate`")
    chunk = run_relative(records.parent, run_dir, "chunk")
    images: list[str | None] = []
    for name, failed in zip(table.column("image").to_pylist(), table.column("failed").to_pylist(), strict=True):
        if name is None:
            if not failed:
                raise AtlasError(f"{records} has a target that neither failed nor has an image: a damaged chunk; rerun it")
            images.append(None)
            continue
        if not (records.parent / name).is_file():
            raise AtlasError(
                f"{records.parent / name} is listed in {records} but missing: rerun its chunk "
                "(the workflow does that by itself: run snakemake again)"
            )
        images.append(str(chunk / name))
    table = table.set_column(table.column_names.index("image"), "image", pa.array(images, pa.string()))
    return table.append_column("chunk", pa.array([str(chunk)] * table.num_rows, pa.string()))


def collect(records: Sequence[Path], run_dir: Path, out: Path) -> pa.Table:
    """Merge `records` (chunk records.parquet files inside `run_dir`) into `out`; return the table."""
    if not records:
        raise AtlasError("no chunk records given; pass the records.parquet of every chunk")
    tables = [_read_chunk(Path(r), run_dir) for r in records]
    try:
        # Columns that are all-null in one chunk (a class chunk's `layer`) take the other chunks' type.
        merged = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException as exc:
        raise AtlasError(f"chunk records do not share one schema ({exc}); regenerate the chunks with one Atlas version") from exc

    classifiers = sorted(set(merged.column("classifier").to_pylist()))
    if len(classifiers) > 1:
        raise AtlasError(
            f"the chunks come from {len(classifiers)} classifiers ({', '.join(classifiers)}); a run has one: "
            "regenerate the stale chunks or collect them into separate runs"
        )
    seen: dict[tuple[str, str], str] = {}
    for method, target, chunk in zip(
        merged.column("method").to_pylist(), merged.column("target_id").to_pylist(), merged.column("chunk").to_pylist(),
        strict=True,
    ):
        if (method, target) in seen:
            raise AtlasError(
                f"target {target} of method {method} is twice in the records ({seen[method, target]} and {chunk}); "
                "each target belongs to one chunk: check the chunk list"
            )
        seen[method, target] = chunk

    with atomic_path(out) as tmp:
        pq.write_table(merged, tmp)
    failed = sum(bool(f) for f in merged.column("failed").to_pylist())
    log.info("collected %d records (%d failed) from %d chunks into %s", merged.num_rows, failed, len(records), out)
    return merged


def run(args: argparse.Namespace) -> int:
    collect([Path(r) for r in args.records], Path(args.run_dir), Path(args.out))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "collect",
        help="merge the chunks' records into the run's records.parquet",
        description="Merge the records.parquet of generation chunks into one table (one row per target "
        "and method), with image paths relative to the run folder; refuses duplicate targets, mixed "
        "classifiers and missing images. Written atomically.",
    )
    p.add_argument("records", nargs="+", metavar="RECORDS", help="records.parquet of each chunk (from `atlas generate`)")
    p.add_argument("--run-dir", required=True, metavar="DIR", help="the run folder that holds the chunks; image paths become relative to it")
    p.add_argument("--out", required=True, metavar="FILE", help="merged Parquet file to write")
    p.set_defaults(func=run)
