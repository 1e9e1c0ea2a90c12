"""`atlas collect`: the chunks' records -> the run's records.parquet (`atlas.collect`)."""

from __future__ import annotations

import argparse

from atlas.cli.options import add_out


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "collect",
        help="merge the chunks' records into the run's records.parquet",
        description="Merge the records.parquet of generation chunks into one table (one row per target "
        "and method), with image paths relative to the run folder; refuses duplicate targets, mixed "
        "classifiers and missing images. Written atomically.",
    )
    p.add_argument(
        "records", nargs="+", metavar="RECORDS", help="records.parquet of each chunk (from `atlas generate`)"
    )
    p.add_argument(
        "--run-dir",
        required=True,
        metavar="DIR",
        help="the run folder that holds the chunks; image paths become relative to it",
    )
    add_out(p, "merged Parquet file to write", metavar="FILE")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from atlas.collect import collect

    collect([Path(r) for r in args.records], Path(args.run_dir), Path(args.out))
    return 0
