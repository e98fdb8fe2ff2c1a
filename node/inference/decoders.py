"""The decoding processes (``inference.decode_processes``), and what happens when one dies.

A decoding process can die under an image: a codec that crashes, or the kernel's
out-of-memory killer. Python's :class:`~concurrent.futures.ProcessPoolExecutor` then
fails every task it holds, and every later one, with ``BrokenProcessPool``: without
care, one bad image would fail every study the node infers until it is restarted.

:class:`DecoderPool` replaces a broken pool with a new one and decodes the images the
crash took down once more, one at a time: an image that kills its process again fails
alone, with the reason naming it, and its neighbours are decoded normally.
:meth:`DecoderPool.state` tells ``/healthz`` whether the processes are alive.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import structlog

from node.errors import InferenceError

__all__ = ["DecoderPool", "DecoderState"]

log = structlog.get_logger(__name__)

T = TypeVar("T")
Outcome = tuple[T | InferenceError, float]
"""What a decoding task returns: its result (or the problem) and the seconds it took."""


@dataclass(frozen=True)
class DecoderState:
    """How the decoding processes are, for ``/healthz``."""

    ok: bool
    detail: str


class DecoderPool(Generic[T]):
    """``processes`` spawned processes running ``task`` (a picklable callable) on paths.

    The pool starts on first use. ``initializer`` runs once in each process.
    """

    def __init__(
        self,
        processes: int,
        task: Callable[[Path], Outcome[T]],
        initializer: Callable[[], None] | None = None,
    ) -> None:
        self.processes = processes
        self._task = task
        self._initializer = initializer
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._closed = False
        self.replaced = 0
        """How many times a broken pool was replaced since start."""

    def run(self, paths: Sequence[Path]) -> list[Outcome[T]]:
        """``task`` on every path, in order; never raises ``BrokenProcessPool``.

        The paths a dead process took down are run once more, one at a time, in a new
        pool; one that kills its process again gets an :class:`InferenceError`.
        """
        executor = self._current()
        outcomes: list[Outcome[T] | None] = [None] * len(paths)
        crashed: list[int] = []
        futures: list[Future[Outcome[T]] | None] = []
        for path in paths:
            try:
                futures.append(executor.submit(self._task, path))
            except BrokenProcessPool:
                futures.append(None)
        for index, future in enumerate(futures):
            outcome = None if future is None else self._outcome(future)
            if outcome is None:
                crashed.append(index)
            else:
                outcomes[index] = outcome
        if crashed:
            log.error(
                "decoders.crashed",
                images=len(crashed),
                consequence="the pool is replaced and these images decoded once more, one by one",
            )
            self._replace(executor)
            for index in crashed:
                outcomes[index] = self._alone(paths[index])
        return [outcome for outcome in outcomes if outcome is not None]

    def state(self) -> DecoderState:
        """Whether every started decoding process is alive (a dead one breaks the pool)."""
        with self._lock:
            executor = self._executor
        replaced = f"; replaced {self.replaced} time(s) since start" if self.replaced else ""
        if executor is None:
            return DecoderState(
                True, f"{self.processes} process(es), started on first use{replaced}"
            )
        # the executor's own bookkeeping: its manager thread marks it broken as soon as a
        # process dies; there is no public way to ask
        broken = executor._broken
        processes = list(executor._processes.values())
        dead = [p.pid for p in processes if not p.is_alive()]
        if broken or dead:
            return DecoderState(
                False,
                f"a decoding process died ({broken or 'pid ' + str(dead[0])}); the pool is "
                f"replaced before the next images are decoded{replaced}",
            )
        return DecoderState(
            True, f"{len(processes)} of {self.processes} process(es) alive{replaced}"
        )

    def close(self) -> None:
        """Stop the processes (waiting for the tasks they run)."""
        with self._lock:
            executor, self._executor = self._executor, None
            self._closed = True
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    # ---------------------------------------------------------------- helpers
    def _current(self) -> ProcessPoolExecutor:
        """The pool, started or replaced (when broken) as needed."""
        with self._lock:
            if self._closed:
                raise InferenceError("the decoding processes were stopped")
            executor = self._executor
            if executor is not None and executor._broken:
                self._retire(executor)
                executor = None
            if executor is None:
                executor = ProcessPoolExecutor(
                    self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=self._initializer,
                )
                self._executor = executor
            return executor

    def _replace(self, executor: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is executor:
                self._retire(executor)

    def _retire(self, executor: ProcessPoolExecutor) -> None:
        """Drop a broken pool (lock held); the next use starts a new one."""
        executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None
        self.replaced += 1
        log.warning("decoders.replaced", times=self.replaced)

    def _outcome(self, future: Future[Outcome[T]]) -> Outcome[T] | None:
        """The task's outcome; ``None`` when its process died."""
        try:
            return future.result()
        except BrokenProcessPool:
            return None
        except Exception as exc:  # e.g. a result that cannot be sent back
            return InferenceError(f"decoding failed: {type(exc).__name__}: {exc}"), 0.0

    def _alone(self, path: Path) -> Outcome[T]:
        """``task`` on ``path`` with no other task in the pool, after a crash."""
        executor = self._current()
        try:
            outcome = self._outcome(executor.submit(self._task, path))
        except BrokenProcessPool:
            outcome = None
        if outcome is None:
            self._replace(executor)
            log.error("decoders.crashed_again", file=path.name)
            return (
                InferenceError(
                    "its decoding process died while decoding it, twice (a codec crash, "
                    "or the process ran out of memory)"
                ),
                0.0,
            )
        return outcome
