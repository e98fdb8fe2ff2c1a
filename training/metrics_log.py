"""Per-epoch metrics: a CSV file, and TensorBoard scalars when tensorboard is installed."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

__all__ = ["MetricsLog", "read_metrics"]

METRICS_FILE = "metrics.csv"


class MetricsLog:
    """Appends one row per epoch to ``folder/metrics.csv`` (or ``name``; columns fixed by
    the first row).

    Resuming keeps the rows of finished epochs and drops any later ones.
    """

    def __init__(
        self, folder: Path, *, name: str = METRICS_FILE, resume_after: int | None = None
    ) -> None:
        self.path = folder / name
        folder.mkdir(parents=True, exist_ok=True)
        self._columns: list[str] | None = None
        if resume_after is not None and self.path.exists():
            rows = [r for r in read_metrics(self.path) if int(float(r["epoch"])) <= resume_after]
            self._rewrite(rows)
        elif self.path.exists():
            self.path.unlink()
        self._writer: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            board = "tensorboard" if name == METRICS_FILE else f"tensorboard-{Path(name).stem}"
            self._writer = SummaryWriter(str(folder / board))
        except ImportError:
            self._writer = None

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        if not rows:
            self.path.unlink(missing_ok=True)
            return
        self._columns = list(rows[0])
        with self.path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, self._columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)

    def log(self, row: dict[str, float | int]) -> None:
        """Append one epoch's metrics (must contain ``epoch``)."""
        new = not self.path.exists()
        if self._columns is None:
            self._columns = list(row)
        with self.path.open("a", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(
                handle, self._columns, lineterminator="\n", extrasaction="ignore"
            )
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self._writer is not None:
            for key, value in row.items():
                if key != "epoch":
                    self._writer.add_scalar(key, value, int(row["epoch"]))
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_metrics(path: Path) -> list[dict[str, str]]:
    """The rows of a metrics CSV."""
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))
