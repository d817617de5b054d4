"""Writing output files safely: atomic writes, and claiming an output path that may already exist.

A reader (or a kill) never sees a half-written file: everything is written under a temporary name in the same
directory (``.<name>.tmp-<pid>``: the rename never becomes a copy across filesystems) and renamed into place with
one ``os.replace``; the directory is then fsync'ed, so that the rename survives a power cut. An existing output is
never replaced unless the caller was asked to (``--overwrite``), and then only once the new one is complete.

    import mmcore

    mmcore.check_output(out, overwrite)                 # before any work: refuse an existing --out
    with mmcore.atomic_output(out, directory=True) as tmp:
        np.save(tmp / "Q.npy", q)                       # fill the temporary directory ...
        mmcore.write_atomic(tmp / "report.json", text)
    # ... now renamed to `out` (whatever was there is gone); on an exception the temporary one is removed
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
from pathlib import Path


class NotARegularFile(ValueError):
    """A path that must be a regular file is a FIFO (reading would block forever), a device (``/dev/zero`` reads
    without end), a directory or a socket. The message is the reason, without the path: callers name it."""


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_kind(mode: int) -> str:
    """What an ``os.stat`` ``st_mode`` is, in words: ``"a directory"``, ``"a FIFO (named pipe)"``, ..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")


def open_regular(path: str | Path) -> int:
    """A read-only file descriptor of ``path``, which must be a regular file: checked before it is opened, opened
    non-blocking (a FIFO swapped in between cannot block) and checked again. Raises :class:`NotARegularFile`, or
    the ``OSError`` of ``os.stat``/``os.open`` (missing, unreadable). Close it with ``os.close``."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotARegularFile(f"not a regular file ({file_kind(mode)})")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotARegularFile(f"not a regular file ({file_kind(mode)}, swapped in while it was opened)")
    return fd


def read_regular(path: str | Path, limit: int, what: str = "this file") -> bytes:
    """The bytes of the regular file ``path`` (:func:`open_regular`), of which at most ``limit`` are read: a
    larger file raises ``ValueError`` saying its size (``what`` it is meant to be), instead of being read without
    bound."""
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{max(size, len(data)):,} bytes is too large for {what} (at most {limit:,})")
    return data


class OutputExists(Exception):
    """The output path already exists and overwriting was not asked for."""


def _temporary(path: Path, suffix: str = "") -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")


TEMPORARY_NAME = re.compile(r"\.(?P<name>.+)\.tmp-(?P<pid>\d+)(?P<suffix>\.\w+)?")
"""The names :func:`atomic_output` gives its temporary files: ``.<name>.tmp-<pid>[<suffix>]``."""


def temporary_target(path: str | Path) -> str | None:
    """The name of the output a temporary file of :func:`atomic_output` was to become (``".last.ckpt.tmp-12"``
    -> ``"last.ckpt"``), or None when ``path`` is not named like one."""
    found = TEMPORARY_NAME.fullmatch(Path(path).name)
    return found["name"] if found else None


def fsync_directory(path: str | Path) -> None:
    """Make the entries of directory ``path`` (a rename into it) durable: fsync the directory itself (POSIX).
    A no-op where a directory cannot be opened or synced (Windows, some network filesystems); real I/O errors
    are raised."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def replace_refusal(path: str | Path, marker: str, owned, what: str) -> str | None:
    """Why ``--overwrite`` must not delete the existing folder ``path``, or None when it may: it is a link or a
    file, the working directory or a folder above it, or it is not ``what`` mmcore wrote (it holds no ``marker``,
    or names that ``owned(name)`` does not accept). An empty folder may be replaced."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        kind = "a symbolic link" if path.is_symlink() else file_kind(path.stat().st_mode)
        return f"--out {path} is {kind}; --overwrite replaces only {what}: remove it yourself or choose another --out"
    here = Path.cwd().resolve()
    if path.resolve() == here or path.resolve() in here.parents:
        return (f"--overwrite would delete {path}, the working directory"
                f"{'' if path.resolve() == here else ' or a folder above it'}; choose another --out")
    names = sorted(p.name for p in path.iterdir())
    if not names:
        return None
    if marker not in names:
        return (f"--overwrite replaces only {what}; {path} holds no {marker}, so it is not one: remove it yourself "
                "or choose another --out")
    foreign = [name for name in names if not owned(name)]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        return (f"--overwrite would delete files in {path} that mmcore did not write ({shown}); move them or "
                "choose another --out")
    return None


def check_output(path: str | Path, overwrite: bool = False, empty_dir_ok: bool = False) -> None:
    """Raise :class:`OutputExists` when ``path`` exists and ``overwrite`` is false (nothing is removed here).

    ``empty_dir_ok``: an existing empty directory is not in the way (an output directory made beforehand)."""
    path = Path(path)
    if overwrite or not (path.exists() or path.is_symlink()):
        return
    if empty_dir_ok:
        if path.is_dir() and not any(path.iterdir()):
            return
        raise OutputExists(f"{path} already exists and is not empty; pass --overwrite to replace it, or choose "
                           "another --out")
    raise OutputExists(f"{path} already exists; pass --overwrite or choose another --out")


@contextlib.contextmanager
def atomic_output(path: str | Path, directory: bool = False, suffix: str = ""):
    """Yield a temporary path next to ``path`` (an empty directory when ``directory``) to write the output into;
    when the block ends it replaces ``path`` (a file or directory already there is removed) by one rename, and
    the parent directory is fsync'ed. On an exception the temporary path is removed and ``path`` is left as it
    was. ``suffix`` ends the temporary name (``".npy"`` for writers that insist on one). Check ``path`` first with
    :func:`check_output`; flushing and fsyncing what is written into the temporary path is the caller's part."""
    path = Path(path)
    tmp = _temporary(path, suffix)
    _remove(tmp)
    if directory:
        tmp.mkdir(parents=True)
    try:
        yield tmp
        if directory and (path.is_dir() and not path.is_symlink()):
            shutil.rmtree(path)  # os.replace cannot replace a non-empty directory
        elif directory and (path.exists() or path.is_symlink()):
            path.unlink()
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    fsync_directory(path.parent)


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text, UTF-8, or bytes) to ``path``: a temporary file in the same directory, flushed and
    fsync'ed, then renamed over ``path``, so a reader or a kill sees the old file or the new one, never a part."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
