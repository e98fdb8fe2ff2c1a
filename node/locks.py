"""A lock on a study's files in the spool, shared by every process on this machine.

Placing a received file and recording its row are two steps, and so are deciding that a
file is no longer wanted and deleting it. Without a lock around each pair, a file can be
deleted after it was acknowledged: purge deletes a study's rows, the same instance
arrives again and is stored and acknowledged, and purge then deletes the file it had
listed; or one association's failed recording removes the file another association has
just acknowledged. So the listener holds the study's lock from placing a file until its
row is committed, and whoever deletes a received file does so under the same lock, after
checking that no row names it (:func:`node.db.queue.unreferenced_files`).

The lock is an exclusive ``flock`` on one of 256 files under ``<spool>/locks/``, chosen
by the study's UID: processes on the same machine (``serve``, ``breast-node purge``)
exclude each other, threads of one process too (each holds its own open file), and
studies that share a file only wait for each other for a few milliseconds.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["study_lock"]

_STRIPES = 256


@contextmanager
def study_lock(spool_root: Path, study_uid: str) -> Iterator[None]:
    """Hold the lock on ``study_uid``'s files under ``spool_root`` for the block.

    Raises :class:`OSError` when the lock file cannot be created or locked.
    """
    folder = spool_root / "locks"
    folder.mkdir(mode=0o700, exist_ok=True)
    digest = hashlib.sha256(study_uid.encode("utf-8", "surrogateescape")).digest()
    stripe = int.from_bytes(digest[:4], "big") % _STRIPES
    fd = os.open(folder / f"{stripe:03d}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor of this open file releases the lock
