"""The spool: received instances on disk, written so that a crash never exposes half a file.

Layout under ``storage.spool``::

    tmp/                                  files being written (emptied at start-up)
    studies/<StudyInstanceUID>/<SOPInstanceUID>.dcm
    results/<StudyInstanceUID>/<generation>/<kind>-<SOPInstanceUID>.dcm
    pictures/<StudyInstanceUID>/<generation>/<SOPInstanceUID>[-thumb|-heatmap].png

A file is written to ``tmp/``, fsynced, renamed into ``studies/`` and the folder is
fsynced, so a path under ``studies/`` always holds a complete file and survives a crash
once :meth:`Spool.write` returns.

Received images carry patient data: every file is created readable by the service user
only (0600) and every folder accessible by it only (0700), whatever the umask.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from node.errors import SpoolFullError, StorageError

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "IncomingFile",
    "Spool",
    "uid_component",
    "write_atomically",
]

_SAFE_UID = re.compile(r"^[0-9][0-9.]{0,63}$")
FILE_MODE = 0o600
"""Mode of every file in the spool."""
DIR_MODE = 0o700
"""Mode of every folder in the spool."""
CHECK_EVERY = 1 << 20
"""An incoming file checks the watermark before each write that completes this many bytes
since its last check (and before any write at least this big), bytes; at the same points
it starts writing the bytes before them to disk (:func:`start_writeback`)."""


def _sync_file_range() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):  # not Linux, or no C library to ask
        return None


_SYNC_FILE_RANGE = _sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> bool:
    """Have the kernel start writing ``length`` bytes of ``fd`` from ``offset`` to disk, and
    return without waiting (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``).

    A file written this way while it arrives is mostly on disk when it is complete, so its
    fsync, which the sender waits for, only has the last bytes and the metadata left to
    write. Durability never depends on it: the fsync still follows. Does nothing where the
    call is missing or fails; True when the kernel took the request.
    """
    if _SYNC_FILE_RANGE is None:
        return False
    args = (ctypes.c_longlong(offset), ctypes.c_longlong(length))
    return bool(_SYNC_FILE_RANGE(fd, *args, ctypes.c_uint(_SYNC_FILE_RANGE_WRITE)) == 0)


def uid_component(uid: str) -> str:
    """A file-name-safe form of a UID: the UID itself when it is well formed."""
    if _SAFE_UID.match(uid) and ".." not in uid:
        return uid
    return "x" + hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(
    final: Path, chunks: Iterable[bytes | memoryview], *, tmp: Path, mode: int = FILE_MODE
) -> int:
    """Write ``chunks`` so that ``final`` is either absent, as it was, or whole; the size.

    The data go to ``tmp`` (same file system, created with ``mode``), which is fsynced
    and renamed over ``final``; then ``final``'s folder, which must exist, is fsynced.
    A failure removes ``tmp`` and raises :class:`OSError`.
    """
    size = 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                    size += written
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(final.parent)
    return size


class Spool:
    """Durable storage of received instances under one root folder."""

    def __init__(self, root: Path, *, min_free_bytes: int = 0, max_used_percent: float = 100.0):
        self.root = root
        self.tmp = root / "tmp"
        self.studies = root / "studies"
        self.min_free_bytes = min_free_bytes
        self.max_used_percent = max_used_percent

    def prepare(self) -> int:
        """Create the folders and delete leftover temporary files; returns how many."""
        for folder in (self.root, self.tmp, self.studies):
            folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            os.chmod(folder, DIR_MODE)
        removed = 0
        for leftover in self.tmp.iterdir():
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
            removed += 1
        _fsync_dir(self.tmp)
        return removed

    def relative_path(self, study_uid: str, sop_instance_uid: str) -> str:
        """Where an instance lives, relative to the spool root (stored in the database)."""
        return f"studies/{uid_component(study_uid)}/{uid_component(sop_instance_uid)}.dcm"

    def result_path(self, study_uid: str, generation: int, filename: str) -> str:
        """Where a result object of a study generation lives, relative to the spool root."""
        return f"results/{uid_component(study_uid)}/{generation}/{filename}"

    def picture_path(self, study_uid: str, generation: int, name: str) -> str:
        """Where a study page picture of a study generation lives, relative to the root."""
        return f"pictures/{uid_component(study_uid)}/{generation}/{name}"

    def path(self, relative: str) -> Path:
        """The absolute path of a spool-relative path."""
        return self.root / relative

    def check_space(self, extra_bytes: int = 0) -> None:
        """Raise :class:`SpoolFullError` when the file system is over either watermark, or
        would be once ``extra_bytes`` more are written; :class:`StorageError` when it
        cannot be read."""
        try:
            stat = os.statvfs(self.root)
        except OSError as exc:
            raise StorageError(f"cannot stat spool {self.root}: {exc.strerror}") from exc
        total = stat.f_blocks * stat.f_frsize
        free = stat.f_bavail * stat.f_frsize
        after = free - extra_bytes
        used_percent = 100.0 * (total - after) / total if total else 100.0
        more = f" (with {extra_bytes} more bytes)" if extra_bytes else ""
        if after < self.min_free_bytes:
            raise SpoolFullError(
                f"spool has {free} bytes free{more}, below {self.min_free_bytes} "
                "(storage.min_free_bytes)"
            )
        if used_percent > self.max_used_percent:
            raise SpoolFullError(
                f"spool file system is {used_percent:.1f}% used{more}, above "
                f"{self.max_used_percent}% (storage.max_used_percent)"
            )

    def incoming(self) -> IncomingFile:
        """A new file in ``tmp/`` for a data set being received (see :class:`IncomingFile`)."""
        return IncomingFile(self, self.tmp / f"{uuid.uuid4().hex}.dcm")

    def write(self, relative: str, chunks: Iterable[bytes | memoryview]) -> int:
        """Write ``chunks`` to ``relative`` atomically and durably; returns the size.

        Replaces an existing file of the same name (a resent instance) atomically.
        Raises :class:`StorageError` when the file system fails.
        """
        final = self.root / relative
        try:
            self._folder(final)
            return write_atomically(final, chunks, tmp=self.tmp / f"{uuid.uuid4().hex}.part")
        except OSError as exc:
            raise StorageError(f"cannot write {relative}: {exc.strerror or exc}") from exc

    def settle(self, source: Path) -> int:
        """Make the complete file ``source`` durable where it is (mode :data:`FILE_MODE`,
        fsynced); its size. What :meth:`adopt` does first, and what a caller can do before
        taking a lock for it: :meth:`adopt`'s own fsync then finds nothing left to write.
        Raises :class:`StorageError`."""
        try:
            return _settle(source)
        except OSError as exc:
            raise StorageError(f"cannot store {source.name}: {exc.strerror or exc}") from exc

    def adopt(self, relative: str, source: Path) -> int:
        """Move the complete file ``source`` to ``relative`` atomically and durably.

        ``source`` is fsynced (:meth:`settle`) and renamed (copied through ``tmp/`` when it
        lives on another file system), and the folder it now lives in is fsynced; returns
        the size. Raises :class:`StorageError`.
        """
        final = self.root / relative
        try:
            size = _settle(source)
            folder = self._folder(final)
            try:
                os.replace(source, final)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                with source.open("rb") as data:
                    return self.write(relative, iter(lambda: data.read(1 << 20), b""))
            _fsync_dir(folder)
        except OSError as exc:
            raise StorageError(f"cannot store {relative}: {exc.strerror or exc}") from exc
        return size

    def discard(self, relative: str) -> None:
        """Remove the file at ``relative`` if it exists (an instance that was not recorded)."""
        try:
            (self.root / relative).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot remove {relative}: {exc.strerror or exc}") from exc

    def _folder(self, final: Path) -> Path:
        folder = final.parent
        if not folder.is_dir():
            for parent in reversed(folder.relative_to(self.root).parents):
                (self.root / parent).mkdir(mode=DIR_MODE, exist_ok=True)
            folder.mkdir(mode=DIR_MODE, exist_ok=True)
            _fsync_dir(folder.parent)
        return folder


def _settle(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        info = os.fstat(fd)
        if info.st_mode & 0o7777 != FILE_MODE:  # a change of mode is one more to fsync
            os.fchmod(fd, FILE_MODE)
        os.fsync(fd)
        return info.st_size
    finally:
        os.close(fd)


class IncomingFile:
    """A data set being received into ``tmp/``, with the spool's watermark kept as it grows.

    The watermark (``min_free_bytes``, ``max_used_percent``) is checked when the file is
    created (the C-STORE request has arrived), and before each write that completes
    another :data:`CHECK_EVERY` bytes, counting the bytes about to be written; at the same
    points the bytes written so far start going to disk (:func:`start_writeback`), so
    that the file's fsync, once it is whole, has little left to do. When space
    is short, or a write fails (``ENOSPC``), the file is *refused*: it is closed and removed
    at once, the rest of the data set is read and dropped, and :attr:`refusal` says why, so
    that the C-STORE can be answered (Out of Resources) instead of the association aborted.
    A file never created for lack of space leaves nothing behind.

    Written with unbuffered ``os.write``; offers what pynetdicom uses of the
    ``NamedTemporaryFile`` it would otherwise create: ``name``, ``write``, ``file.flush``
    and ``close``. :meth:`discard` removes a file whose transfer never finished.
    """

    def __init__(self, spool: Spool, path: Path) -> None:
        self.name = str(path)
        self.refusal: StorageError | None = None
        self.written = 0
        self.dropped = 0
        self._spool = spool
        self._fd: int | None = None
        self._unchecked = 0
        self._written_back = 0
        self._finished = False
        try:
            spool.check_space()
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        except StorageError as exc:
            self.refusal = exc
        except OSError as exc:
            self.refusal = _write_error(exc)

    @property
    def file(self) -> IncomingFile:
        """Itself (pynetdicom flushes ``file.file``)."""
        return self

    @property
    def finished(self) -> bool:
        """Closed after a complete transfer, refused, or discarded."""
        return self._finished or self.refusal is not None

    def flush(self) -> None:
        """Nothing to do: every write goes straight to the file."""

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data`` (or drop it, once refused); returns its length."""
        size = len(data)
        if self._fd is None:
            self.dropped += size
            return size
        if self._unchecked + size >= CHECK_EVERY:
            try:
                self._spool.check_space(size)
            except StorageError as exc:
                self._refuse(exc)
                self.dropped += size
                return size
            self._unchecked = 0
            start_writeback(self._fd, self._written_back, self.written - self._written_back)
            self._written_back = self.written
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            self._refuse(_write_error(exc))
            self.dropped += size
            return size
        self._unchecked += size
        self.written += size
        return size

    def close(self) -> None:
        """Close the file and keep it (the transfer is complete)."""
        self._finished = True
        self._close_fd()

    def discard(self) -> None:
        """Close and remove the file: its transfer did not finish (an abort, a dropped
        connection), or it was not stored."""
        self._finished = True
        self._close_fd()
        try:
            os.unlink(self.name)
        except FileNotFoundError:
            pass
        except OSError:  # the next start empties tmp/
            pass

    def _refuse(self, reason: StorageError) -> None:
        self.refusal = reason
        self.discard()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _write_error(exc: OSError) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return SpoolFullError(f"spool file system full: {exc.strerror}")
    return StorageError(f"cannot write to the spool: {exc.strerror or exc}")
