"""The order of training images in each epoch, for one process or several (``torchrun``).

One draw per epoch, seeded by ``(seed, epoch)`` and so the same in every
process: a permutation of the training images, or with class-balanced
sampling ``N`` weighted draws with replacement. The draw is padded to a
multiple of the number of processes (wrapping round) and process ``r`` takes
every ``world_size``-th index from ``r``: the processes share out exactly the
images a single process would see, weighted sampling included.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["EpochSampler"]


class EpochSampler(Sampler[int]):
    """Indices of one process for one epoch; call :meth:`set_epoch` before each epoch."""

    def __init__(
        self,
        size: int,
        seed: int,
        weights: torch.Tensor | None = None,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.size, self.seed, self.weights = size, seed, weights
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.size // self.world_size)

    def draw(self) -> torch.Tensor:
        """This epoch's indices for all processes together (``len(self) * world_size``)."""
        generator = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        total = len(self) * self.world_size
        if self.weights is not None:
            return torch.multinomial(self.weights, total, replacement=True, generator=generator)
        order = torch.randperm(self.size, generator=generator)
        return order.repeat(-(-total // max(self.size, 1)))[:total]

    def __iter__(self) -> Iterator[int]:
        return iter(self.draw()[self.rank :: self.world_size].tolist())
