"""Files in and out. Output is atomic: every file is written to a temporary name beside it, then
renamed, so a reader (or a rerun after a crash) sees either the old file or the whole new one,
never half of one. Input tables are read with their required columns checked, so a wrong or
damaged file is a one-line error that says which stage rewrites it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from atlas.errors import AtlasError

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_mode(path: Path, directory: bool) -> None:
    # mkstemp/mkdtemp create 0600/0700 for safety; a finished output gets the usual mode under
    # the umask, so that others on a shared cluster can read the atlas.
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def remove_leftovers(path: Path) -> None:
    """Remove what a writer of `path` killed by SIGKILL (which no handler sees) left beside it:
    its temporary file or folder (`.<name>.<8 random characters>.tmp`, mode 0600/0700) and the
    previous folder it had moved aside (`.<name>.old`). Run before `path` is written again; a
    writer of the same path that still runs (a job of a killed run) then fails instead of
    publishing over this one."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.([a-z0-9_]{{8}}\.tmp|old)")
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        log.info("removing %s, left by an earlier run that was killed", entry)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the same folder; rename it onto `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _publish_mode(tmp_path, directory=False)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; it replaces `path` only when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def save_png(image: Any, path: str | os.PathLike[str]) -> None:
    """Save a PIL image as PNG atomically."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def save_torch(obj: Any, path: str | os.PathLike[str]) -> None:
    import torch

    # Through a file object, torch names the archive inside the zip "archive"; given a path it
    # would use the temporary file's random name, so equal contents would differ in bytes.
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


def write_parquet(df: Any, path: str | os.PathLike[str]) -> None:
    """Write a pandas DataFrame as Parquet atomically (pyarrow engine, no index)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, engine="pyarrow", index=False)


def write_table(table: pa.Table, path: str | os.PathLike[str]) -> None:
    """Write an Arrow table (with its schema metadata) as Parquet atomically."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_table(path: Path, what: str, fix: str, required: tuple[str, ...] = (), made_by: str = "") -> pa.Table:
    """Read a Parquet table; a missing or unreadable file, or one without a `required` column, is
    an AtlasError naming the file and the fix (`made_by`: the command that writes such files)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise AtlasError(f"{what} {path} does not exist; {fix}")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise AtlasError(f"cannot read {what} {path} ({exc}); {fix}") from exc
    missing = [c for c in required if c not in table.column_names]
    if missing:
        source = f": it is not from `{made_by}`" if made_by else ""
        raise AtlasError(f"{path} lacks column(s) {', '.join(missing)}{source}; {fix}")
    return table


def run_relative(path: Path, root: Path, what: str) -> PurePosixPath:
    """`path` relative to the run folder `root`, as the index records it (POSIX separators)."""
    try:
        return PurePosixPath(path.resolve().relative_to(root.resolve()).as_posix())
    except ValueError:
        raise AtlasError(
            f"{what} {path} is not inside the run folder {root}; pass --run-dir of the run it belongs to"
        ) from None


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a directory under a temporary name; it replaces `path` only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _publish_mode(tmp, directory=True)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
