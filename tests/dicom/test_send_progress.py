"""``breast-node send`` shows its progress: a bar redrawn in place on a terminal, one line
per folder (study) in a pipe or a log, against a real node."""

from __future__ import annotations

import os
import pty
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import write_config
from tests.helpers.node import BREAST_NODE, Node

pytestmark = [pytest.mark.peers]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Path]:
    config = write_config(tmp_path)
    running = Node(config, tmp_path / "node.log")
    running.start()
    yield config
    running.stop()


def test_off_a_terminal_one_line_per_study(node: Path, synthetic: Callable[..., Path]) -> None:
    source = synthetic(studies=2, seed=41, size="small")
    done = subprocess.run(
        [str(BREAST_NODE), "send", "--config", str(node), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = done.stderr.splitlines()
    folders = sorted(p.name for p in source.iterdir() if p.is_dir() and any(p.glob("*.dcm")))
    assert [line.split(":")[0] for line in lines] == folders
    assert all(" 4 sent, 0 failed" in line for line in lines)
    assert lines[-1].endswith("(8/8 files)")
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    assert done.stdout.startswith("8 sent")


def test_on_a_terminal_a_progress_bar(node: Path, synthetic: Callable[..., Path]) -> None:
    source = synthetic(studies=2, seed=41, size="small")
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [str(BREAST_NODE), "send", "--config", str(node), str(source)],
            stdout=subprocess.PIPE,
            stderr=terminal,
        )
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            shown += chunk
        assert proc.wait(timeout=120) == 0
        assert proc.stdout is not None and proc.stdout.read().startswith(b"8 sent")
        proc.stdout.close()
    finally:
        os.close(controller)
    text = shown.decode().replace("\r\n", "\n")  # the terminal writes a newline as CR LF
    redraws = text.split("\r")
    assert len(redraws) >= 9  # one redraw per file
    assert redraws[-1].strip().startswith("[" + "#" * 30 + "] 8/8 files")
    assert "MB/s" in redraws[-1]
