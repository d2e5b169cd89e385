"""Index plans for training (infinite, resumable, aspect-ratio grouped) and inference (sharded, exactly once).

Training: ``TrainingBatchPlan.global_batch(i)`` is the list of dataset indices of iteration ``i`` over *all*
processes, a pure function of ``(seed, i)``; rank ``r`` takes the ``r``-th slice.  Resuming at iteration ``i``
therefore sees exactly the batches an uninterrupted run would have seen, whatever the number of workers.

Each "epoch" of the plan permutes every aspect-ratio group (landscape / portrait) with a generator seeded by
``(seed, epoch)``, cuts each group into full batches, puts the groups' leftovers together into mixed batches (the
last partial batch is dropped — a different one every epoch), and shuffles the batch order.  The number of batches
per epoch is the same for every epoch, so iteration -> (epoch, position) is a division.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
from torch.utils.data import Sampler

__all__ = ["TrainingBatchPlan", "IterationSampler", "InferenceSampler", "shard_range"]


class TrainingBatchPlan:
    """Global batches of ``batch_size`` dataset indices for every iteration.

    Args:
        group_ids: (n,) int group of each dataset index (all zeros = no aspect-ratio grouping).
        batch_size: images per iteration over all processes.
        seed: non-negative seed.
    """

    def __init__(self, group_ids: np.ndarray, batch_size: int, seed: int):
        group_ids = np.asarray(group_ids, dtype=np.int64)
        if len(group_ids) == 0:
            raise ValueError("TrainingBatchPlan needs a non-empty dataset")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if seed < 0:
            raise ValueError(f"SEED must be >= 0 to build the training order, got {seed}")
        # A dataset smaller than one batch is repeated so that every epoch has at least one batch.
        repeats = math.ceil(batch_size / len(group_ids))
        index = np.tile(np.arange(len(group_ids)), repeats)
        groups = np.tile(group_ids, repeats)
        self.groups = [index[groups == g] for g in np.unique(groups)]
        self.batch_size = batch_size
        self.seed = int(seed)
        leftover = sum(len(g) % batch_size for g in self.groups)
        self.batches_per_epoch = sum(len(g) // batch_size for g in self.groups) + leftover // batch_size
        self._cached_epoch = -1
        self._cached_batches = None

    def _epoch_batches(self, epoch: int) -> np.ndarray:
        if epoch != self._cached_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            full, rest = [], []
            for members in self.groups:
                permuted = members[rng.permutation(len(members))]
                cut = len(permuted) - len(permuted) % self.batch_size
                full.append(permuted[:cut].reshape(-1, self.batch_size))
                rest.append(permuted[cut:])
            rest = np.concatenate(rest)
            cut = len(rest) - len(rest) % self.batch_size
            batches = np.concatenate(full + [rest[:cut].reshape(-1, self.batch_size)])
            self._cached_batches = batches[rng.permutation(len(batches))]
            self._cached_epoch = epoch
        return self._cached_batches

    def global_batch(self, iteration: int) -> np.ndarray:
        """Dataset indices of iteration ``iteration`` (>= 0) over all processes."""
        if iteration < 0:
            raise ValueError(f"iteration must be >= 0, got {iteration}")
        epoch, position = divmod(int(iteration), self.batches_per_epoch)
        return self._epoch_batches(epoch)[position].copy()


class IterationSampler(Sampler):
    """Yields ``start_iter, start_iter + 1, ...`` forever (the training dataset maps an iteration to its batch)."""

    def __init__(self, start_iter: int = 0):
        if start_iter < 0:
            raise ValueError(f"start_iter must be >= 0, got {start_iter}")
        self.start_iter = int(start_iter)

    def __iter__(self) -> Iterator[int]:
        i = self.start_iter
        while True:
            yield i
            i += 1


def shard_range(size: int, rank: int, world_size: int) -> range:
    """Contiguous shard of ``range(size)`` for ``rank``; shards differ in length by at most one and cover it once."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, {world_size})")
    base, extra = divmod(size, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


class InferenceSampler(Sampler):
    """This rank's contiguous shard of ``range(size)``, in order (every index exactly once over all ranks)."""

    def __init__(self, size: int, rank: int, world_size: int):
        self.indices = shard_range(size, rank, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
