"""Provenance recorded with every output: versions, git commit, weights hashes."""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

_PACKAGES = ("atlas", "torch", "torchvision", "numpy", "pandas", "pyarrow", "pillow", "snakemake")


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@functools.cache
def git_commit() -> str | None:
    """The commit of the Atlas checkout this package runs from (None outside a git checkout)."""
    root = Path(__file__).resolve().parents[2]
    try:
        res = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, timeout=10, check=False,
    ).stdout.strip()
    return res.stdout.strip() + ("-dirty" if dirty else "")


@functools.cache
def file_sha256(path: str) -> str:
    from atlas.io import sha256_file

    return sha256_file(path)
