"""Progress bars: tqdm when installed, else a plain line every so often."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

__all__ = ["progress_bar"]

T = TypeVar("T")


def progress_bar(items: Iterable[T], label: str, *, enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` with a progress display on stderr (nothing when not ``enabled``)."""
    if not enabled:
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:
        total = len(items) if isinstance(items, Sized) else None
        step = max(1, (total or 100) // 10)
        for i, item in enumerate(items, 1):
            if i % step == 0 or i == total:
                print(f"{label}: {i}/{total if total is not None else '?'}", file=sys.stderr)
            yield item
        return
    yield from tqdm(items, desc=label, leave=False, dynamic_ncols=True, file=sys.stderr)
