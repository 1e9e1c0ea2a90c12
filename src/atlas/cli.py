"""The `atlas` command: one subcommand per pipeline stage.

Each stage module exposes `add_parser(subparsers)` (which sets `func` on its parser) so that this
file stays a thin dispatcher. `main(argv)` returns the exit code: 0 on success, 2 on an
`AtlasError` (a one-line message on stderr), so tests can call it directly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Sequence

from atlas import __version__
from atlas.errors import AtlasError

log = logging.getLogger(__name__)

# Stage modules that contribute a subcommand, in the order `atlas --help` lists them.
_STAGES: tuple[str, ...] = (
    "atlas.data",
    "atlas.generate",
    "atlas.collect",
    "atlas.autoencoder",
    "atlas.scores",
    "atlas.exemplars",
    "atlas.index",
    "atlas.site",
)


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on a usage error already; keep its message on one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="atlas", description="Draw an atlas of what an image classifier has learned.")
    parser.add_argument("--version", action="version", version=f"atlas {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _STAGES:
        importlib.import_module(name).add_parser(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM (a cancelled cluster job, `kill`, snakemake stopping its jobs) as an exception, so
    that every `with` block unwinds: temporary outputs are removed, nothing half-written stays."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
