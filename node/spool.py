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

import errno
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from node.errors import SpoolFullError, StorageError

__all__ = ["DIR_MODE", "FILE_MODE", "Spool", "uid_component", "write_atomically"]

_SAFE_UID = re.compile(r"^[0-9][0-9.]{0,63}$")
FILE_MODE = 0o600
"""Mode of every file in the spool."""
DIR_MODE = 0o700
"""Mode of every folder in the spool."""


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

    def check_space(self) -> None:
        """Raise :class:`SpoolFullError` when the file system is over either watermark."""
        try:
            stat = os.statvfs(self.root)
        except OSError as exc:
            raise StorageError(f"cannot stat spool {self.root}: {exc.strerror}") from exc
        total = stat.f_blocks * stat.f_frsize
        free = stat.f_bavail * stat.f_frsize
        used_percent = 100.0 * (total - free) / total if total else 100.0
        if free < self.min_free_bytes:
            raise SpoolFullError(f"spool has {free} bytes free, below {self.min_free_bytes}")
        if used_percent > self.max_used_percent:
            raise SpoolFullError(
                f"spool file system is {used_percent:.1f}% used, above {self.max_used_percent}%"
            )

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

    def adopt(self, relative: str, source: Path) -> int:
        """Move the complete file ``source`` to ``relative`` atomically and durably.

        ``source`` is fsynced and renamed (copied through ``tmp/`` when it lives on another
        file system); returns the size. Raises :class:`StorageError`.
        """
        final = self.root / relative
        try:
            fd = os.open(source, os.O_RDONLY)
            try:
                os.fchmod(fd, FILE_MODE)
                os.fsync(fd)
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
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
