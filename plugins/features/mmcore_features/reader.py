"""Reading rows of a ``.npy`` file without loading it: ``NpyRows(path).read(rows)``.

The header (dtype, shape, data offset) is parsed once with ``np.load(path, mmap_mode="r")``. Rows are then read in
one of two ways (``io``):

* ``"pread"`` (default): ``os.preadv`` of each run of consecutive rows straight into the output array. The process
  holds only the rows it asked for; the kernel's page cache does the caching, outside the process.
* ``"mmap"``: fancy indexing of a memory map kept open for the reader's life. Every page the map touches counts in
  the process's resident set (``VmRSS``, as ``RssFile``) until the kernel reclaims it, and with large page-cache
  folios (Linux 6.x on ext4) one random row maps up to hundreds of KiB: random batches soon show the whole file as
  resident. That memory is clean page cache, reclaimable, not a copy; ``pread`` simply does not map it.

A reader is picklable (DataLoader workers started by ``spawn``): the open file is dropped and reopened lazily, and
``pread`` needs no shared file position, so forked workers can share one reader.
"""

from __future__ import annotations

import os

import numpy as np

IO_MODES = ("pread", "mmap")  # also in plugin.py, which must not import numpy


class NpyRows:
    """Rows of a C-ordered ``.npy`` array ``[N, ...]``. ``dtype``, ``shape`` and ``offset`` come from its header."""

    def __init__(self, path, io: str = "pread"):
        if io not in IO_MODES:
            raise ValueError(f"io must be one of {IO_MODES}, got {io!r}")
        self.path = os.fspath(path)
        self.io = io
        header = np.load(self.path, mmap_mode="r")  # raises ValueError for object arrays, OSError for non-npy
        self.dtype, self.shape, self.offset = header.dtype, header.shape, header.offset
        self.fortran = bool(header.flags.f_contiguous and not header.flags.c_contiguous)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        del header
        self._fd = None
        self._map = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self):
        return {**self.__dict__, "_fd": None, "_map": None}

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def read(self, rows) -> np.ndarray:
        """``rows``: sorted, unique ``[n]`` int row numbers -> a new array ``[n, ...]`` of the file's dtype."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.io == "mmap":
            if self._map is None:
                self._map = np.load(self.path, mmap_mode="r")
            return np.array(self._map[rows])
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        if len(rows) == 0 or self.row_bytes == 0:
            return out
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        buffer = memoryview(out.reshape(-1).view(np.uint8))
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1  # runs of consecutive rows: one read each
        first = np.concatenate(([0], breaks))
        last = np.concatenate((breaks, [len(rows)]))
        at = self.offset + rows[first] * self.row_bytes
        for begin, end, position in zip((first * self.row_bytes).tolist(), (last * self.row_bytes).tolist(),
                                        at.tolist()):
            while begin < end:  # a read may return short on huge runs
                got = os.preadv(self._fd, [buffer[begin:end]], position)
                if got <= 0:
                    raise OSError(f"{self.path}: file ended early (truncated?) at byte {position}")
                begin, position = begin + got, position + got
        return out

    def read_range(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (contiguous) -> a new array."""
        return self.read(np.arange(start, stop, dtype=np.int64))
