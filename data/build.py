"""Training and test DataLoaders over registered splits (``data.catalog``: VG150, PSG, COCO-relations files).

``build_train_loader(cfg, start_iter=0)`` is infinite; the batch of iteration ``i`` on rank ``r`` (images, their
order, augmentation and duplicate-relation sampling) depends on ``(cfg.SEED, i, r)`` only: the DataLoader's
"dataset" maps an iteration number to its whole per-rank batch, with a generator seeded by
``(SEED, i, r, position in batch)``, so worker count and resumption do not change the data.

``build_test_loader(cfg, name)`` yields this rank's contiguous shard of the split in order, batches of 1.
"""
from __future__ import annotations

import numpy as np
from torch.utils.data import DataLoader, Dataset

from utils import comm

from .mapper import VGDatasetMapper
from .samplers import InferenceSampler, IterationSampler, TrainingBatchPlan
from .catalog import DatasetCatalog, get_split
from .visual_genome import VGSplit

__all__ = ["build_train_loader", "build_test_loader", "TrainBatches", "MappedSplit", "images_per_process"]


def images_per_process(cfg, world_size: int) -> int:
    """``SOLVER.IMS_PER_BATCH // world_size``, which must divide exactly."""
    total = int(cfg.SOLVER.IMS_PER_BATCH)
    if total < 1 or total % world_size != 0:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH ({total}) must be a positive multiple of the number of processes ({world_size})"
        )
    return total // world_size


def _identity(item):
    return item


def _as_list(items):
    return list(items)


class TrainBatches(Dataset):
    """Map-style view whose item ``i`` is this rank's batch of iteration ``i`` (a list of mapped dicts)."""

    def __init__(self, split: VGSplit, mapper: VGDatasetMapper, plan: TrainingBatchPlan, seed: int, rank: int,
                 per_rank: int):
        self.split, self.mapper, self.plan = split, mapper, plan
        self.seed, self.rank, self.per_rank = int(seed), int(rank), int(per_rank)

    def indices(self, iteration: int) -> np.ndarray:
        """Dataset indices of this rank's batch at ``iteration``."""
        start = self.rank * self.per_rank
        return self.plan.global_batch(iteration)[start:start + self.per_rank]

    def __getitem__(self, iteration: int) -> list:
        batch = []
        for position, index in enumerate(self.indices(iteration)):
            rng = np.random.default_rng([self.seed, int(iteration), self.rank, position])
            batch.append(self.mapper(self.split.get_record(int(index), rng), rng))
        return batch

    def __len__(self) -> int:  # only informative: the sampler is infinite
        return self.plan.batches_per_epoch


class MappedSplit(Dataset):
    """Map-style dataset of mapped test items (no randomness)."""

    def __init__(self, split: VGSplit, mapper: VGDatasetMapper):
        self.split, self.mapper = split, mapper

    def __getitem__(self, index: int) -> dict:
        return self.mapper(self.split.get_record(int(index)))

    def __len__(self) -> int:
        return len(self.split)


def _train_split_name(cfg) -> str:
    names = tuple(cfg.DATASETS.TRAIN)
    if len(names) != 1:
        raise ValueError(f"DATASETS.TRAIN must name exactly one registered dataset (e.g. VG_train), got {names}")
    return names[0]


def _num_workers(cfg) -> int:
    workers = int(cfg.DATALOADER.NUM_WORKERS)
    if workers < 0:
        raise ValueError(f"DATALOADER.NUM_WORKERS must be >= 0, got {workers}")
    return workers


def build_train_loader(cfg, start_iter: int = 0) -> DataLoader:
    """Infinite loader of per-rank training batches (lists of ``IMS_PER_BATCH // world_size`` dicts)."""
    rank, world_size = (comm.get_rank(), comm.get_world_size())
    per_rank = images_per_process(cfg, world_size)
    split = DatasetCatalog.get(_train_split_name(cfg), cfg)
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING:
        group_ids = (split.widths < split.heights).astype(np.int64)  # 0 landscape/square, 1 portrait
    else:
        group_ids = np.zeros(len(split), dtype=np.int64)
    if int(cfg.SEED) < 0:
        raise ValueError(f"SEED must be >= 0 when the train loader is built (the engine draws one), got {cfg.SEED}")
    plan = TrainingBatchPlan(group_ids, per_rank * world_size, int(cfg.SEED))
    dataset = TrainBatches(split, VGDatasetMapper(cfg, is_train=True), plan, int(cfg.SEED), rank, per_rank)
    return DataLoader(
        dataset,
        sampler=IterationSampler(start_iter),
        batch_size=None,
        num_workers=_num_workers(cfg),
        collate_fn=_identity,
    )


def build_test_loader(cfg, name: str) -> DataLoader:
    """This rank's shard of split ``name`` (every image exactly once over all ranks), batches of one item."""
    rank, world_size = (comm.get_rank(), comm.get_world_size())
    split = get_split(cfg, name)
    return DataLoader(
        MappedSplit(split, VGDatasetMapper(cfg, is_train=False)),
        sampler=InferenceSampler(len(split), rank, world_size),
        batch_size=1,
        num_workers=_num_workers(cfg),
        collate_fn=_as_list,
    )
