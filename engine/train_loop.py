"""The iteration-based training loop with hooks (detectron2's TrainerBase / SimpleTrainer design).

:class:`TrainerBase` runs ``before_train``, then for every iteration ``before_step``, ``run_step``,
``after_step``, and finally ``after_train`` on its hooks.  :class:`SimpleTrainer` implements ``run_step`` for a
model that returns a dict of losses: forward (bf16 autocast on CUDA when asked), a check that every loss is
finite, backward, gradient clipping, optimizer step.
"""
import contextlib
import logging
import math
import time
import weakref
from typing import Callable, Dict, Iterable, List, Optional

import torch

from utils import comm
from utils.events import EventStorage

__all__ = ["HookBase", "TrainerBase", "SimpleTrainer"]

logger = logging.getLogger(__name__)


class HookBase:
    """A callback of the training loop; ``self.trainer`` is set (as a weak proxy) when the hook is registered."""

    trainer: "TrainerBase"

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass


class TrainerBase:
    """Runs iterations ``start_iter .. max_iter - 1`` and calls the hooks around them.

    Attributes:
        iter: the current iteration (after ``train`` returns: the last one run).
        storage: the :class:`EventStorage` of this run.
    """

    def __init__(self) -> None:
        self._hooks: List[HookBase] = []
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self.storage: EventStorage = EventStorage()

    def register_hooks(self, hooks: Iterable[Optional[HookBase]]) -> None:
        """Append hooks (``None`` entries are skipped); they run in registration order."""
        for hook in hooks:
            if hook is None:
                continue
            hook.trainer = weakref.proxy(self)  # avoid a reference cycle trainer <-> hook
            self._hooks.append(hook)

    def train(self, start_iter: int, max_iter: int) -> None:
        logger.info("Starting training from iteration %d", start_iter)
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        self.storage = EventStorage(start_iter)
        try:
            self.before_train()
            for self.iter in range(start_iter, max_iter):
                self.storage.iter = self.iter
                self.before_step()
                self.run_step()
                self.after_step()
        except Exception:
            logger.exception("Exception during training at iteration %d:", self.iter)
            raise
        finally:
            self.after_train()

    def before_train(self) -> None:
        for hook in self._hooks:
            hook.before_train()

    def after_train(self) -> None:
        for hook in self._hooks:
            hook.after_train()

    def before_step(self) -> None:
        for hook in self._hooks:
            hook.before_step()

    def after_step(self) -> None:
        for hook in self._hooks:
            hook.after_step()

    def run_step(self) -> None:
        raise NotImplementedError


class SimpleTrainer(TrainerBase):
    """One optimisation step per iteration on a model whose training-mode output is a dict of scalar losses.

    Args:
        model: in training mode ``model(batch) -> dict[str, Tensor]``; the total loss is the sum.
        data_loader: iterable of batches (may be set later, before ``train``).
        optimizer: the optimizer.
        clip_gradients: ``f(parameters) -> total norm`` applied between backward and step, or None.
        amp_dtype: autocast dtype on CUDA (``torch.bfloat16``), or None for plain fp32.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        data_loader: Optional[Iterable],
        optimizer: torch.optim.Optimizer,
        clip_gradients: Optional[Callable[[Iterable[torch.nn.Parameter]], torch.Tensor]] = None,
        amp_dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        model.train()
        self.model = model
        self.data_loader = data_loader
        self._data_iter = None
        self.optimizer = optimizer
        self.clip_gradients = clip_gradients
        self.amp_dtype = amp_dtype

    def run_step(self) -> None:
        if self._data_iter is None:
            self._data_iter = iter(self.data_loader)
        start = time.perf_counter()
        batch = next(self._data_iter)
        data_time = time.perf_counter() - start

        autocast = (
            torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype is not None else contextlib.nullcontext()
        )
        with autocast:
            loss_dict = self.model(batch)
        if not isinstance(loss_dict, dict) or not loss_dict:
            raise TypeError(f"In training mode the model must return a non-empty dict of losses, got {type(loss_dict)}")
        losses = sum(loss_dict.values())
        self._check_finite_and_record(loss_dict, data_time)

        self.optimizer.zero_grad(set_to_none=True)
        losses.backward()
        if self.clip_gradients is not None:
            grad_norm = self.clip_gradients(self.model.parameters())
            self.storage.put_scalar("grad_norm", grad_norm)
        self.optimizer.step()

    def _check_finite_and_record(self, loss_dict: Dict[str, torch.Tensor], data_time: float) -> None:
        """Average the losses over processes, stop on any NaN/inf (on every process alike) and record them."""
        values = comm.all_reduce_mean(loss_dict)
        bad = {name: value for name, value in values.items() if not math.isfinite(value)}
        if bad:
            raise FloatingPointError(
                f"Loss became NaN or infinite at iteration {self.iter}: {bad} (all losses: {values}); "
                "training stopped, no checkpoint was written after this iteration"
            )
        self.storage.put_scalar("total_loss", sum(values.values()))
        self.storage.put_scalars(**values)
        self.storage.put_scalar("data_time", data_time)
