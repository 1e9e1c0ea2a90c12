"""`atlas index`: records, scores, exemplars and provenance -> index.parquet (`atlas.index`)."""

from __future__ import annotations

import argparse

from atlas.cli.options import add_out


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "index",
        help="merge the run's records, scores, exemplars and provenance into index.parquet",
        description="Join the run's records (`atlas collect`), every chunk's scores (`atlas score`) and the "
        "exemplars (`atlas exemplars`) into one atlas-index table, one row per image, with the run's "
        "provenance in the Parquet metadata. Checked against atlas.schema; written atomically.",
    )
    p.add_argument("scores", nargs="+", metavar="SCORES", help="scores.parquet of every chunk")
    p.add_argument(
        "--run-dir", required=True, metavar="DIR", help="the run folder (paths in the index are relative to it)"
    )
    p.add_argument("--records", required=True, metavar="FILE", help="the run's records.parquet (from `atlas collect`)")
    p.add_argument(
        "--exemplars",
        default=None,
        metavar="FILE",
        help="exemplars.parquet (from `atlas exemplars`); none: no exemplars",
    )
    p.add_argument(
        "--config-json", default=None, metavar="JSON", help="the run's resolved config, recorded with its sha256"
    )
    add_out(p, "index Parquet file to write", metavar="FILE")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import logging
    from pathlib import Path

    from atlas.errors import AtlasError
    from atlas.index import build_index, write_index

    config = None
    if args.config_json is not None:
        try:
            config = json.loads(args.config_json)
        except ValueError as exc:
            raise AtlasError(f"--config-json is not JSON ({exc}); pass the run's config as one JSON text") from exc
    table = build_index(
        Path(args.run_dir),
        Path(args.records),
        [Path(s) for s in args.scores],
        Path(args.exemplars) if args.exemplars else None,
        config,
    )
    write_index(table, Path(args.out))
    failed = sum(bool(f) for f in table.column("failed").to_pylist())
    logging.getLogger("atlas.index").info("indexed %d images (%d failed) into %s", table.num_rows, failed, args.out)
    return 0
