"""The `atlas` command: one subcommand per pipeline stage.

All command-line parsing lives in this package; the library (`atlas.*` outside it) has no
argparse, and every input check is in the library function or its config dataclass, so a Python
caller gets the same one-line errors as the command line. Each subcommand is a module here named
after the command (`atlas.cli.train_dae` for `atlas train-dae`) with `add_parser(subparsers)` and
`run(args)`; `run` imports its stage module when it runs, so `atlas --help` and
`atlas COMMAND --help` load neither torch nor the stages.

`main(argv)` returns the exit code: 0 on success, 2 on an `AtlasError` (a one-line message on
stderr), 130 on Ctrl-C and 143 on SIGTERM, so tests can call it directly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Sequence

from atlas import __version__, allocator
from atlas.errors import AtlasError

# The subcommands' modules, in the order `atlas --help` lists them (the pipeline's order).
COMMANDS: tuple[str, ...] = (
    "extract",
    "generate",
    "collect",
    "train_dae",
    "score",
    "exemplars",
    "index",
    "compare",
    "site",
)


def main_parser() -> argparse.ArgumentParser:
    """The whole command line: `atlas [-v] COMMAND ...`."""
    parser = argparse.ArgumentParser(prog="atlas", description="Draw an atlas of what an image classifier has learned.")
    parser.add_argument("--version", action="version", version=f"atlas {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"atlas.cli.{name}").add_parser(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM (a cancelled cluster job, `kill`, snakemake stopping its jobs) as an exception, so
    that every `with` block unwinds: temporary outputs are removed, nothing half-written stays."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = main_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    allocator.tune()  # before any stage allocates: see atlas.allocator
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args) or 0)
    except AtlasError as exc:
        print(f"atlas {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"atlas {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"atlas {args.command}: terminated (SIGTERM); nothing half-written was kept", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)
