"""Tiny stand-ins for the model, data and evaluation parts, used by the engine tests.

``StandInTrainer`` is the real :class:`engine.trainer.Trainer` with its part builders overridden: a two-layer
model with dropout (so RNG state matters), a data loader whose batch of iteration ``i`` is a function of
``(SEED, i, rank)`` only (the contract of ``data.build.build_train_loader``), and an "evaluation" whose
``mR@100`` is read from ``StandInTrainer.METRIC_BY_STEP`` at the model's step count (so tests script it).
"""
import math
from typing import Any, Dict, Iterator, List, Optional

import torch
from torch import nn

from configs.defaults import get_cfg
from utils import comm
from engine.trainer import Trainer


class TinyModel(nn.Module):
    """``backbone.*`` and ``head.*`` parameters; training mode returns two losses, eval mode one dict per item.
    ``unused`` never takes part in the loss (like FPN levels a P5 encoder does not read)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(4, 8)
        self.head = nn.Linear(8, 1)
        self.unused = nn.Linear(1, 1)
        self.dropout = nn.Dropout(0.5)
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))  # training forwards seen

    def forward(self, batch: List[Dict[str, torch.Tensor]]):
        x = torch.stack([item["x"] for item in batch])
        target = torch.stack([item["y"] for item in batch])
        out = self.head(self.dropout(torch.relu(self.backbone(x)))).squeeze(-1)
        if not self.training:
            return [{"score": value} for value in out]
        self.steps += 1
        return {"loss_mse": ((out - target) ** 2).mean(), "loss_l1": (out - target).abs().mean()}


class StandInTrainLoader:
    """Infinite batches; batch ``i`` depends on ``(seed, i, rank)`` only.  ``nan_at``/``crash_at``: iteration at
    which the targets become NaN / the loader raises (a simulated crash)."""

    def __init__(self, seed: int, start_iter: int, batch_size: int, nan_at: Optional[int] = None,
                 crash_at: Optional[int] = None) -> None:
        self.seed, self.start_iter, self.batch_size = seed, start_iter, batch_size
        self.nan_at, self.crash_at = nan_at, crash_at

    def __iter__(self) -> Iterator[List[Dict[str, torch.Tensor]]]:
        iteration = self.start_iter
        while True:
            if iteration == self.crash_at:
                raise RuntimeError(f"simulated crash at iteration {iteration}")
            generator = torch.Generator().manual_seed(self.seed * 100003 + iteration * 101 + comm.get_rank())
            batch = []
            for _ in range(self.batch_size):
                x = torch.randn(4, generator=generator)
                y = x.sum() * 3.0 + 1.0
                if iteration == self.nan_at:
                    y = torch.tensor(math.nan)
                batch.append({"x": x, "y": y})
            yield batch
            iteration += 1


class StandInTrainer(Trainer):
    NAN_AT: Optional[int] = None
    CRASH_AT: Optional[int] = None
    METRIC_BY_STEP: Dict[int, float] = {}

    @classmethod
    def build_model(cls, cfg, training: bool = True) -> nn.Module:
        return TinyModel().to(cfg.MODEL.DEVICE)

    @classmethod
    def build_train_loader(cls, cfg, start_iter: int):
        batch_size = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
        return StandInTrainLoader(cfg.SEED, start_iter, batch_size, nan_at=cls.NAN_AT, crash_at=cls.CRASH_AT)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        return [dataset_name]

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_dir: str):
        return output_dir

    @classmethod
    def run_inference(cls, model: nn.Module, data_loader, evaluator) -> Dict[str, Any]:
        assert not model.training, "evaluation must run in eval mode"
        if not comm.is_main_process():
            return {}
        return {"mR@100": cls.METRIC_BY_STEP.get(int(model.steps), 0.0), "output_dir": evaluator}


def tiny_cfg(output_dir: str, *overrides: Any):
    """A CPU config for the stand-ins (6 iterations, batch 4, checkpoint and evaluation every 2 iterations),
    then ``overrides`` (KEY, VALUE, ...)."""
    cfg = get_cfg()
    cfg.merge_from_list([
        "OUTPUT_DIR", output_dir,
        "MODEL.DEVICE", "cpu",
        "SEED", 7,
        "DETERMINISTIC", True,
        "SOLVER.MAX_ITER", 6,
        "SOLVER.STEPS", (4,),
        "SOLVER.WARMUP_ITERS", 2,
        "SOLVER.BASE_LR", 0.01,
        "SOLVER.IMS_PER_BATCH", 4,
        "SOLVER.CHECKPOINT_PERIOD", 2,
        "SOLVER.LOG_PERIOD", 1,
        "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 0.5,
        "TEST.EVAL_PERIOD", 2,
        "DATASETS.VAL", ("VG_val",),
        "DATASETS.TEST", ("VG_test",),
    ])
    cfg.merge_from_list(list(overrides))
    cfg.freeze()
    return cfg


def train_stand_in(cfg, resume: bool = False) -> StandInTrainer:
    """Build a StandInTrainer for ``cfg`` (torch seeded with ``cfg.SEED``), resume or load, train; returns it."""
    torch.manual_seed(cfg.SEED)
    trainer = StandInTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


def reset_stand_in_switches() -> None:
    """Undo what a test set on StandInTrainer (NaN/crash points, scripted metrics) and determinism."""
    StandInTrainer.NAN_AT = StandInTrainer.CRASH_AT = None
    StandInTrainer.METRIC_BY_STEP = {}
    torch.use_deterministic_algorithms(False)
