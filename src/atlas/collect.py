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

import logging
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from atlas.errors import AtlasError
from atlas.io import read_table, run_relative, write_table

log = logging.getLogger(__name__)

KEY = ("method", "target_id")


def _read_chunk(records: Path, run_dir: Path) -> pa.Table:
    table = read_table(
        records,
        "chunk records",
        "run `atlas generate` for that chunk (snakemake reruns it)",
        (*KEY, "image", "failed", "classifier"),
        "atlas generate",
    )
    chunk = run_relative(records.parent, run_dir, "chunk")
    images: list[str | None] = []
    for name, failed in zip(table.column("image").to_pylist(), table.column("failed").to_pylist(), strict=True):
        if name is None:
            if not failed:
                raise AtlasError(
                    f"{records} has a target that neither failed nor has an image: a damaged chunk; rerun it"
                )
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
        raise AtlasError(
            f"chunk records do not share one schema ({exc}); regenerate the chunks with one Atlas version"
        ) from exc

    classifiers = sorted(set(merged.column("classifier").to_pylist()))
    if len(classifiers) > 1:
        raise AtlasError(
            f"the chunks come from {len(classifiers)} classifiers ({', '.join(classifiers)}); a run has one: "
            "regenerate the stale chunks or collect them into separate runs"
        )
    seen: dict[tuple[str, str], str] = {}
    for method, target, chunk in zip(
        merged.column("method").to_pylist(),
        merged.column("target_id").to_pylist(),
        merged.column("chunk").to_pylist(),
        strict=True,
    ):
        if (method, target) in seen:
            raise AtlasError(
                f"target {target} of method {method} is twice in the records ({seen[method, target]} and {chunk}); "
                "each target belongs to one chunk: check the chunk list"
            )
        seen[method, target] = chunk

    write_table(merged, out)
    failed = sum(bool(f) for f in merged.column("failed").to_pylist())
    log.info("collected %d records (%d failed) from %d chunks into %s", merged.num_rows, failed, len(records), out)
    return merged
