"""The iteration-based training loop with hooks (detectron2's TrainerBase / SimpleTrainer design).

:class:`TrainerBase` runs ``before_train``, then for every iteration ``before_step``, ``run_step``,
``after_step``, and finally ``after_train`` on its hooks.  :class:`SimpleTrainer` implements ``run_step`` for a
model that returns a dict of losses: forward (bf16 or fp16 autocast when asked), a check that every loss is
finite, backward (through a gradient scaler for fp16, whose skipped steps are counted and logged), gradient
clipping, optimizer step.
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
        amp_dtype: autocast dtype (``torch.bfloat16`` or ``torch.float16``), or None for plain fp32.
        grad_scaler: a ``torch.amp.GradScaler`` for fp16 (detectron2's AMPTrainer): the loss is scaled before
            backward, gradients are unscaled before clipping, and a step whose gradients are not finite is skipped
            (counted in ``amp_skipped_steps``, logged); None without scaling.
        amp_device: the device type autocast runs on ("cuda"; "cpu" for tests of the fp16 path).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        data_loader: Optional[Iterable],
        optimizer: torch.optim.Optimizer,
        clip_gradients: Optional[Callable[[Iterable[torch.nn.Parameter]], torch.Tensor]] = None,
        amp_dtype: Optional[torch.dtype] = None,
        grad_scaler: Optional["torch.amp.GradScaler"] = None,
        amp_device: str = "cuda",
    ) -> None:
        super().__init__()
        model.train()
        self.model = model
        self.data_loader = data_loader
        self._data_iter = None
        self.optimizer = optimizer
        self.clip_gradients = clip_gradients
        self.amp_dtype = amp_dtype
        self.grad_scaler = grad_scaler
        self.amp_device = amp_device
        self.amp_skipped_steps = 0

    def run_step(self) -> None:
        if self._data_iter is None:
            self._data_iter = iter(self.data_loader)
        start = time.perf_counter()
        batch = next(self._data_iter)
        data_time = time.perf_counter() - start

        autocast = (
            torch.autocast(self.amp_device, dtype=self.amp_dtype) if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            loss_dict = self.model(batch)
        if not isinstance(loss_dict, dict) or not loss_dict:
            raise TypeError(f"In training mode the model must return a non-empty dict of losses, got {type(loss_dict)}")
        losses = sum(loss_dict.values())
        self._check_finite_and_record(loss_dict, data_time)

        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is None:
            losses.backward()
        else:
            self.grad_scaler.scale(losses).backward()
            self.grad_scaler.unscale_(self.optimizer)  # clip the true gradients
        if self.clip_gradients is not None:
            grad_norm = self.clip_gradients(self.model.parameters())
            self.storage.put_scalar("grad_norm", grad_norm)
        if self.grad_scaler is None:
            self.optimizer.step()
        else:
            self._scaled_step()

    def _scaled_step(self) -> None:
        """fp16: the scaler steps unless a gradient is inf/NaN (then it skips the step and halves the scale)."""
        scale_before = self.grad_scaler.get_scale()
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        scale_after = self.grad_scaler.get_scale()
        if scale_after < scale_before:  # update() lowers the scale only after non-finite gradients
            self.amp_skipped_steps += 1
            logger.warning("fp16: non-finite gradients at iteration %d, step skipped, loss scale %g -> %g "
                           "(%d skipped so far)", self.iter, scale_before, scale_after, self.amp_skipped_steps)
        self.storage.put_scalar("amp_loss_scale", scale_after)
        self.storage.put_scalar("amp_skipped_steps", self.amp_skipped_steps)

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
