"""Provenance recorded with every output: versions, git commit, weights hashes.

Every stage records the same keys for the same facts: `software()` (the Atlas version, the git
commit, the package versions) and `classifier_record()` (a classifier and its weights' sha256).
"""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atlas import __version__
from atlas.io import sha256_file

if TYPE_CHECKING:
    from atlas.classifier import Classifier

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
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout.strip()
    return res.stdout.strip() + ("-dirty" if dirty else "")


@functools.cache
def file_sha256(path: str) -> str:
    return sha256_file(path)


def software() -> dict[str, Any]:
    """What ran: the Atlas version, its git commit and the versions of Python and the packages."""
    return {"atlas": __version__, "git_commit": git_commit(), "versions": versions()}


def classifier_record(classifier: Classifier) -> dict[str, Any]:
    """A classifier as an output records it: its name, weights, input size and weights' sha256,
    and for a label set other than ImageNet-1k's, its class count and the sha256 of its names."""
    record: dict[str, Any] = {
        "name": classifier.name,
        "weights": classifier.weights,
        "input_size": classifier.input_size,
        "sha256": file_sha256(classifier.weights_file) if classifier.weights_file else None,
    }
    if not classifier.imagenet:
        names = "\n".join(classifier.class_names).encode()
        record["classes"] = {"count": classifier.num_classes, "sha256": hashlib.sha256(names).hexdigest()}
    return record
