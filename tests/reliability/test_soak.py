"""A short soak: concurrent storescu senders, dozens of small studies, the real ``serve``
with a small model. Nothing lost, the queue drains, memory stays bounded.
The longer run is ``bench/soak.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import run_soak

pytestmark = [pytest.mark.peers, pytest.mark.slow]

#: growth of the node's resident memory allowed from start to peak; generous: the first
#: studies load torch kernels, codecs and output builders
RSS_GROWTH_MB = 600


def test_soak_loses_nothing_and_memory_stays_bounded(tmp_path: Path) -> None:
    report = run_soak(tmp_path, studies=24, senders=4, seed=61, timeout=240)
    print(report.table())
    assert report.acknowledged == report.instances == 96
    assert report.recorded == report.instances
    assert report.done == report.studies
    assert report.rss_peak_mb - report.rss_start_mb < RSS_GROWTH_MB
