"""Optimizer, learning-rate schedule and gradient clipping built from ``cfg.SOLVER``.

The recipe of the released model: AdamW, parameters named ``backbone.*`` at ``BASE_LR * BACKBONE_MULTIPLIER``,
weight decay on every parameter, a multi-step schedule with a short linear warm-up, and one gradient-norm clip over
the whole model.
"""
import logging
from typing import Dict, Iterable, List

import torch
from fvcore.common.param_scheduler import CompositeParamScheduler, ConstantParamScheduler, CosineParamScheduler
from fvcore.common.param_scheduler import LinearParamScheduler, MultiStepParamScheduler, ParamScheduler

__all__ = [
    "build_optimizer",
    "build_lr_scheduler",
    "WarmupParamScheduler",
    "LRMultiplier",
    "clip_gradients",
]

logger = logging.getLogger(__name__)


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; ``backbone.*`` gets ``SOLVER.BACKBONE_MULTIPLIER`` x the LR."""
    if cfg.SOLVER.OPTIMIZER.upper() != "ADAMW":
        raise ValueError(f'SOLVER.OPTIMIZER must be "ADAMW", got {cfg.SOLVER.OPTIMIZER!r}')
    backbone, others = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (backbone if name.startswith("backbone.") else others).append(param)
    base_lr = cfg.SOLVER.BASE_LR
    groups = [
        {"params": others, "lr": base_lr},
        {"params": backbone, "lr": base_lr * cfg.SOLVER.BACKBONE_MULTIPLIER},
    ]
    groups = [group for group in groups if group["params"]]
    if not groups:
        raise ValueError("The model has no trainable parameters")
    params = [param for group in groups for param in group["params"]]
    return torch.optim.AdamW(groups, lr=base_lr, weight_decay=cfg.SOLVER.WEIGHT_DECAY, fused=_can_fuse(params))


def _can_fuse(params: List[torch.Tensor]) -> bool:
    """AdamW's fused kernel (the same update as the per-parameter loop, one kernel per device and dtype instead of
    about ten operators per parameter: a CPU demo step dispatches 3,554 ATen operators instead of 6,670) where torch has
    it for every parameter."""
    return all(param.device.type in ("cpu", "cuda") and param.dtype in (torch.float32, torch.float16, torch.bfloat16)
               for param in params)


class WarmupParamScheduler(CompositeParamScheduler):
    """``scheduler`` preceded by a warm-up over the first ``warmup_length`` (fraction of training).

    "linear" ramps the multiplier from ``warmup_factor * scheduler(0)`` to ``scheduler(warmup_length)``;
    "constant" holds ``warmup_factor * scheduler(0)``.
    """

    def __init__(
        self, scheduler: ParamScheduler, warmup_factor: float, warmup_length: float, warmup_method: str = "linear"
    ) -> None:
        start = warmup_factor * scheduler(0.0)
        if warmup_method == "linear":
            warmup: ParamScheduler = LinearParamScheduler(start, scheduler(warmup_length))
        elif warmup_method == "constant":
            warmup = ConstantParamScheduler(start)
        else:
            raise ValueError(f'SOLVER.WARMUP_METHOD must be "linear" or "constant", got {warmup_method!r}')
        super().__init__(
            [warmup, scheduler],
            interval_scaling=["rescaled", "fixed"],
            lengths=[warmup_length, 1 - warmup_length],
        )


class LRMultiplier(torch.optim.lr_scheduler.LRScheduler):
    """A torch LR scheduler whose LR is ``base_lr * multiplier(iteration / max_iter)`` for every param group.

    Being a torch scheduler, it is checkpointed with the optimizer; its state is plain numbers so checkpoints load
    with ``torch.load(weights_only=True)``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, multiplier: ParamScheduler, max_iter: int,
                 last_iter: int = -1) -> None:
        self._multiplier = multiplier
        self._max_iter = max_iter
        super().__init__(optimizer, last_epoch=last_iter)

    def state_dict(self) -> Dict[str, object]:
        return {"base_lrs": list(self.base_lrs), "last_epoch": self.last_epoch}

    def get_lr(self) -> List[float]:
        multiplier = self._multiplier(self.last_epoch / self._max_iter)
        return [base_lr * multiplier for base_lr in self.base_lrs]


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> LRMultiplier:
    """Warm-up (``SOLVER.WARMUP_*``), then over ``SOLVER.MAX_ITER`` either LR x ``GAMMA`` at each of
    ``SOLVER.STEPS`` (``SOLVER.LR_SCHEDULER_NAME "WarmupMultiStepLR"``) or half a cosine down to ``BASE_LR_END``
    (``"WarmupCosineLR"``), as detectron2 names them."""
    max_iter = cfg.SOLVER.MAX_ITER
    if max_iter < 1:
        raise ValueError(f"SOLVER.MAX_ITER must be >= 1, got {max_iter}")
    name = cfg.SOLVER.LR_SCHEDULER_NAME
    if name == "WarmupMultiStepLR":
        schedule = _multistep(cfg, max_iter)
    elif name == "WarmupCosineLR":
        if cfg.SOLVER.BASE_LR <= 0 or not 0 <= cfg.SOLVER.BASE_LR_END <= cfg.SOLVER.BASE_LR:
            raise ValueError(f"SOLVER.BASE_LR_END must lie in [0, SOLVER.BASE_LR = {cfg.SOLVER.BASE_LR}], "
                             f"got {cfg.SOLVER.BASE_LR_END}")
        schedule = CosineParamScheduler(1.0, cfg.SOLVER.BASE_LR_END / cfg.SOLVER.BASE_LR)
    else:
        raise ValueError(f'SOLVER.LR_SCHEDULER_NAME must be "WarmupMultiStepLR" or "WarmupCosineLR", got {name!r}')
    warmup_length = min(cfg.SOLVER.WARMUP_ITERS / max_iter, 1.0)
    scheduler = WarmupParamScheduler(
        schedule, cfg.SOLVER.WARMUP_FACTOR, warmup_length, cfg.SOLVER.WARMUP_METHOD
    ) if warmup_length > 0 else schedule
    return LRMultiplier(optimizer, scheduler, max_iter=max_iter)


def _multistep(cfg, max_iter: int) -> MultiStepParamScheduler:
    steps = [step for step in cfg.SOLVER.STEPS if step < max_iter]
    if len(steps) != len(cfg.SOLVER.STEPS):
        logger.warning("SOLVER.STEPS %s: steps >= SOLVER.MAX_ITER %d are ignored", cfg.SOLVER.STEPS, max_iter)
    if list(steps) != sorted(set(steps)) or any(step <= 0 for step in steps):
        raise ValueError(f"SOLVER.STEPS must be increasing positive iterations, got {cfg.SOLVER.STEPS}")
    return MultiStepParamScheduler(
        values=[cfg.SOLVER.GAMMA ** k for k in range(len(steps) + 1)], milestones=steps, num_updates=max_iter
    )


def clip_gradients(cfg, parameters: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """Clip gradients in place as ``SOLVER.CLIP_GRADIENTS`` says; returns the total gradient norm before clipping.

    "full_model": one norm over every gradient (the released recipe); "norm": each parameter separately.
    """
    clip = cfg.SOLVER.CLIP_GRADIENTS
    params = [p for p in parameters if p.grad is not None]
    norm_type = clip.NORM_TYPE
    if not params:
        return torch.zeros(())
    if not clip.ENABLED:
        return torch.nn.utils.get_total_norm([p.grad for p in params], norm_type=norm_type)
    if clip.CLIP_TYPE == "full_model":
        return torch.nn.utils.clip_grad_norm_(params, max_norm=clip.CLIP_VALUE, norm_type=norm_type)
    if clip.CLIP_TYPE == "norm":
        norms = [torch.nn.utils.clip_grad_norm_([p], max_norm=clip.CLIP_VALUE, norm_type=norm_type) for p in params]
        return torch.linalg.vector_norm(torch.stack(norms), ord=norm_type)
    raise ValueError(f'SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be "full_model" or "norm", got {clip.CLIP_TYPE!r}')
