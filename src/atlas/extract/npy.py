"""images.npy written row by row: a uint8 N x S x S x 3 .npy file whose N is only known at the end."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


class NpyWriter:
    """Streams rows into a .npy file whose length is only known at the end.

    numpy pads its header so that the first axis can grow to 21 digits in place, so we write the
    header for 0 rows, append rows, then rewrite the header: no second copy of a large array and no
    need to hold it in memory.
    """

    def __init__(self, path: Path, size: int) -> None:
        self.size = size
        self.count = 0
        self._fh = open(path, "wb")  # noqa: SIM115 -- held open across writes; closed by close()
        self._header_len = self._write_header()

    def _write_header(self) -> int:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "|u1", "fortran_order": False, "shape": (self.count, self.size, self.size, 3)}
        )
        self._fh.write(header.getvalue())
        return len(header.getvalue())

    def append(self, row: np.ndarray) -> int:
        assert row.shape == (self.size, self.size, 3) and row.dtype == np.uint8
        self._fh.write(np.ascontiguousarray(row).tobytes())
        self.count += 1
        return self.count - 1

    def close(self) -> None:
        self._fh.seek(0)
        if self._write_header() != self._header_len:  # pragma: no cover - numpy's padding guarantees it
            raise RuntimeError("npy header changed length")
        self._fh.close()

    def abort(self) -> None:
        self._fh.close()
