"""Progress of ``breast-node send`` on the terminal, or in a log when there is none.

On a terminal: one bar redrawn in place (files and megabytes sent, rate, time left). Off
a terminal (a pipe, a log file, cron): one line per group of files, a group being the
files of one folder (a study, as ``breast-train synth`` writes them), printed when its
last file has been sent; no control characters.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

__all__ = ["SendProgress"]

_WIDTH = 30


class SendProgress:
    """A :class:`node.dicom.scu.SendObserver` that shows progress on ``out``."""

    def __init__(self, out: TextIO, *, terminal: bool | None = None) -> None:
        self.out = out
        self.terminal = out.isatty() if terminal is None else terminal
        self.total = self.total_bytes = self.done = self.bytes = 0
        self.started = time.monotonic()
        self._left: dict[Path, int] = {}
        self._group: dict[Path, list[int]] = {}

    def start(self, files: Sequence[Path]) -> None:
        self.total = len(files)
        self.total_bytes = sum(_size(f) for f in files)
        self.started = time.monotonic()
        for path in files:
            self._left[path.parent] = self._left.get(path.parent, 0) + 1

    def sent(self, path: Path, *, failed: bool) -> None:
        self.done += 1
        self.bytes += _size(path)
        if self.terminal:
            self._draw()
            return
        folder = path.parent
        counts = self._group.setdefault(folder, [0, 0])
        counts[1 if failed else 0] += 1
        self._left[folder] = self._left.get(folder, 1) - 1
        if self._left[folder] <= 0:
            sent, refused = counts
            print(
                f"{folder.name or folder}: {sent} sent, {refused} failed "
                f"({self.done}/{self.total} files)",
                file=self.out,
                flush=True,
            )

    def _draw(self) -> None:
        seconds = max(time.monotonic() - self.started, 1e-6)
        fraction = self.done / self.total if self.total else 1.0
        filled = round(_WIDTH * fraction)
        rate = self.bytes / seconds
        left = (self.total_bytes - self.bytes) / rate if rate > 0 else 0.0
        line = (
            f"\r[{'#' * filled}{'.' * (_WIDTH - filled)}] {self.done}/{self.total} files "
            f"{self.bytes / 1e6:.1f}/{self.total_bytes / 1e6:.1f} MB "
            f"{rate / 1e6:.1f} MB/s, {left:.0f} s left "
        )
        end = "\n" if self.done >= self.total else ""
        print(line, end=end, file=self.out, flush=True)


def _size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
