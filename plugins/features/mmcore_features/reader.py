"""Reading rows of a ``.npy`` file without loading it: ``NpyRows(path).read(rows)``; files checked before and while.

The header (dtype, shape, data offset) is parsed once, from the file itself (``np.lib.format``; nothing is
unpickled). Rows are then read in one of two ways (``io``):

* ``"pread"`` (default): ``os.preadv`` of each run of consecutive rows straight into the output array. The process
  holds only the rows it asked for; the kernel's page cache does the caching, outside the process.
* ``"mmap"``: fancy indexing of a memory map kept open for the reader's life. Every page the map touches counts in
  the process's resident set (``VmRSS``, as ``RssFile``) until the kernel reclaims it, and with large page-cache
  folios (Linux 6.x on ext4) one random row maps up to hundreds of KiB: random batches soon show the whole file as
  resident. That memory is clean page cache, reclaimable, not a copy; ``pread`` simply does not map it.

A reader is picklable (DataLoader workers started by ``spawn``): the open file is dropped and reopened lazily, and
``pread`` needs no shared file position, so forked workers can share one reader.

The file's identity (device, inode, size, mtime) is recorded when its header is read. Every ``read`` first compares
it with ``os.stat(path)`` (about 2 us), and every (re)opening compares it with the opened file and re-reads the
header: a file replaced, rewritten, truncated or removed while a run reads it raises :class:`mmcore.DataError` naming
it, instead of rows decoded with the old header, or a SIGBUS from a memory map read past the new end of the file.
What remains: a file that shrinks in the microseconds between that check and an ``mmap`` read still faults (with
``pread`` a short read is detected). Everything that is not a regular file is refused before it is opened (a FIFO
would block the open, ``/dev/zero`` would read without end).
"""

from __future__ import annotations

import mmap
import os

import numpy as np

import mmcore

IO_MODES = ("pread", "mmap")  # also in plugin.py, which must not import numpy
MAX_HEADER = 10000  # bytes of .npy header parsed (numpy's own default bound)

def _fail(path, message: str) -> mmcore.DataError:
    return mmcore.DataError(f"{path}: {message}")


def identity(st: os.stat_result) -> tuple:
    """What must stay the same while a file is read: ``(device, inode, size in bytes, mtime in ns)``."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def open_regular(path) -> int:
    """:func:`mmcore.open_regular` (a read-only descriptor of a regular file, never blocking on a FIFO), its
    errors as DataError naming the file."""
    try:
        return mmcore.open_regular(path)
    except mmcore.NotARegularFile as exc:
        raise _fail(path, str(exc)) from exc
    except OSError as exc:
        raise _fail(path, f"cannot be read: {exc.strerror or exc}") from exc


def read_small(path, limit: int) -> bytes:
    """:func:`mmcore.read_regular`: the bytes of the regular file ``path``, at most ``limit`` of them; errors as
    DataError naming the file."""
    try:
        return mmcore.read_regular(path, limit, "such a file")
    except OSError as exc:
        raise _fail(path, f"cannot be read: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise _fail(path, str(exc)) from exc


def read_header(f, path) -> tuple:
    """``(dtype, shape, fortran_order, data offset)`` from the ``.npy`` header of the open binary file ``f``."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=MAX_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=MAX_HEADER)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]} is not supported (np.save writes 1.0)")
    except (ValueError, SyntaxError, TypeError, OverflowError) as exc:
        raise _fail(path, f"not a .npy array file ({exc}); save one array with np.save") from exc
    if dtype.hasobject:
        raise _fail(path, f"cannot be memory-mapped: holds Python objects (dtype {dtype}), which are never "
                         "unpickled; save a numeric array with np.save")
    return dtype, tuple(int(n) for n in shape), bool(fortran), f.tell()


def _peek(path) -> tuple | None:
    """The header of whatever is at ``path`` now, or None (for messages only)."""
    try:
        fd = open_regular(path)
    except mmcore.DataError:
        return None
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return read_header(f, path)
    except mmcore.DataError:
        return None
    finally:
        os.close(fd)


class NpyRows:
    """Rows of a C-ordered ``.npy`` array ``[N, ...]``. ``dtype``, ``shape`` and ``offset`` come from its header,
    ``identity`` from the file when the header was read; every read checks that the file is still that one."""

    def __init__(self, path, io: str = "pread"):
        if io not in IO_MODES:
            raise ValueError(f"io must be one of {IO_MODES}, got {io!r}")
        self.path = os.fspath(path)
        self.io = io
        fd = open_regular(self.path)
        try:
            with os.fdopen(fd, "rb", closefd=False) as f:
                self.dtype, self.shape, self.fortran, self.offset = read_header(f, self.path)
            self.identity = identity(os.fstat(fd))
        finally:
            os.close(fd)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        needed = self.offset + self.shape[0] * self.row_bytes if self.shape else self.offset + self.dtype.itemsize
        if needed > self.identity[2]:
            raise _fail(self.path, f"truncated: its header promises {self.dtype} {self.shape} ({needed} bytes with "
                                   f"the header), the file has {self.identity[2]} bytes")
        self._fd = None
        self._map = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self):
        return {**self.__dict__, "_fd": None, "_map": None}

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def _changed(self, now: os.stat_result | None, exc: OSError | None = None) -> mmcore.DataError:
        """The error for a file that is no longer the one whose header was read (``now``: what is there now)."""
        if now is None:
            return _fail(self.path, f"removed or unreadable while the run was reading it ({exc.strerror or exc})")
        dev, ino, size, mtime = identity(now)
        details = []
        if (dev, ino) != self.identity[:2]:
            details.append("replaced by another file")
        if size != self.identity[2]:
            details.append(f"size {self.identity[2]} -> {size} bytes" + (" (it shrank)" if size < self.identity[2]
                                                                        else ""))
        if mtime != self.identity[3]:
            details.append("modified (mtime changed)")
        header = _peek(self.path)
        if header is None:
            details.append("no longer a readable .npy file")
        elif header[:2] != (self.dtype, self.shape) or header[3] != self.offset:
            details.append(f"header {self.dtype} {self.shape} -> {header[0]} {header[1]}")
        return _fail(self.path, f"changed while the run was reading it: {', '.join(details) or 'header rewritten'}; "
                                "rows read from it now would not be the rows the run was built on (restore the "
                                "original file, or start a new run on the new one)")

    def check(self) -> None:
        """Raise DataError unless the file at ``path`` is still the one whose header was read (same device, inode,
        size and mtime): one ``os.stat``."""
        try:
            now = os.stat(self.path)
        except OSError as exc:
            raise self._changed(None, exc) from exc
        if identity(now) != self.identity:
            raise self._changed(now)

    def _open(self) -> int:
        """Open the file again (first read, a new DataLoader worker) and check it is the same file, header too."""
        try:
            fd = open_regular(self.path)
        except mmcore.DataError:
            self.check()  # the message that says what changed
            raise
        try:
            if identity(os.fstat(fd)) != self.identity:
                raise self._changed(os.fstat(fd))
            with os.fdopen(fd, "rb", closefd=False) as f:
                if read_header(f, self.path) != (self.dtype, self.shape, self.fortran, self.offset):
                    raise self._changed(os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _mapped(self) -> np.ndarray:
        if self._map is None:
            fd = self._open()
            try:
                buffer = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            finally:
                os.close(fd)
            self._map = np.ndarray(self.shape, self.dtype, buffer=buffer, offset=self.offset,
                                   order="F" if self.fortran else "C")
        return self._map

    def read(self, rows) -> np.ndarray:
        """``rows``: sorted, unique ``[n]`` int row numbers -> a new array ``[n, ...]`` of the file's dtype. Raises
        DataError when the file changed since its header was read (:meth:`check`, before every read)."""
        rows = np.asarray(rows, dtype=np.int64)
        self.check()
        if self.io == "mmap":
            return np.array(self._mapped()[rows])
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        if len(rows) == 0 or self.row_bytes == 0:
            return out
        if self._fd is None:
            self._fd = self._open()
        buffer = memoryview(out.reshape(-1).view(np.uint8))
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1  # runs of consecutive rows: one read each
        first = np.concatenate(([0], breaks))
        last = np.concatenate((breaks, [len(rows)]))
        at = self.offset + rows[first] * self.row_bytes
        for begin, end, position in zip((first * self.row_bytes).tolist(), (last * self.row_bytes).tolist(),
                                        at.tolist()):
            while begin < end:  # a read may return short on huge runs
                try:
                    got = os.preadv(self._fd, [buffer[begin:end]], position)
                except OSError as exc:
                    raise _fail(self.path, f"reading byte {position} failed: {exc.strerror or exc}") from exc
                if got <= 0:
                    self.check()
                    raise _fail(self.path, f"file ended early at byte {position} (truncated while the run was "
                                           "reading it?)")
                begin, position = begin + got, position + got
        return out

    def read_range(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (contiguous) -> a new array."""
        return self.read(np.arange(start, stop, dtype=np.int64))
