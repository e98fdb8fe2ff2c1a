"""Small helpers shared by the adapters (CSV reading, label words)."""

from __future__ import annotations

import csv
from pathlib import Path

__all__ = ["read_csv", "require_columns"]


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts; header names stripped of surrounding spaces."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            return []
        return [dict(zip(header, (v.strip() for v in row), strict=False)) for row in reader if row]


def require_columns(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...]) -> None:
    """:class:`ValueError` naming the file and the first missing column."""
    if rows:
        missing = [c for c in columns if c not in rows[0]]
        if missing:
            raise ValueError(f"{path}: missing column {missing[0]!r}")
