"""The iteration-based training loop with hooks (detectron2's TrainerBase / SimpleTrainer design).

:class:`TrainerBase` runs ``before_train``, then for every iteration ``before_step``, ``run_step``,
``after_step``, and finally ``after_train`` on its hooks.  :class:`SimpleTrainer` implements ``run_step`` for a
model that returns a dict of losses: forward (bf16 or fp16 autocast when asked), backward (through a gradient
scaler for fp16, whose skipped steps are counted and logged), gradient clipping, optimizer step.  Without fp16,
nothing in a step reads a value back from the device: the losses and the gradient norm stay device tensors until
the metrics are flushed (:meth:`SimpleTrainer.flush_metrics`: every ``metrics_period`` iterations, before a
checkpoint is written, after the last iteration and when a step fails), which reads them in one copy, stops on a
NaN/inf loss naming its iteration, and records them.
"""
import contextlib
import logging
import math
import time
import weakref
from typing import Callable, Dict, Iterable, List, Optional, Tuple

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

    def flush_metrics(self) -> None:
        """Read back and check what the steps recorded on the device (nothing to do here); hooks call it before
        they persist anything (checkpoints)."""


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
        metrics_period: the losses and gradient norms of the steps are read back (one device sync) and checked for
            NaN/inf every ``metrics_period`` iterations (the trainer passes ``SOLVER.LOG_PERIOD``), after the last
            iteration and before every checkpoint; 1 reads them after every step.
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
        metrics_period: int = 1,
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
        self.metrics_period = max(int(metrics_period), 1)
        # (iteration, loss names, stacked detached losses) of the steps whose losses were not read back yet
        self._pending_losses: List[Tuple[int, List[str], torch.Tensor]] = []

    def run_step(self) -> None:
        try:
            self._run_step()
        except Exception as error:
            # A NaN/inf loss of an earlier step (read back lazily) is usually why a step fails (NaN weights make the
            # matcher's costs NaN): report that first, from this process's values (no collective on a failing path).
            self.flush_metrics(reduce=False, cause=error)
            raise
        if (self.iter + 1) % self.metrics_period == 0 or self.iter + 1 >= self.max_iter:
            self.flush_metrics()

    def _run_step(self) -> None:
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
        self._record_losses(loss_dict, data_time)

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

    def _record_losses(self, loss_dict: Dict[str, torch.Tensor], data_time: float) -> None:
        """Keep this step's losses on the device (one stack, no sync) until :meth:`flush_metrics`."""
        names = sorted(loss_dict)
        values = torch.stack([loss_dict[name].detach().float().reshape(()) for name in names])
        self._pending_losses.append((self.iter, names, values))
        self.storage.put_scalar("data_time", data_time)

    def flush_metrics(self, reduce: bool = True, cause: Optional[BaseException] = None) -> None:
        """Read the losses of the steps since the last flush in one device-to-host copy (averaged over processes
        when ``reduce``: every process flushes at the same iterations), stop on the first step with a NaN/inf loss
        (on every process alike) and record the others under their own iterations.  ``cause``: the exception of a
        failing step, chained to the NaN error."""
        pending, self._pending_losses = self._pending_losses, []
        if not pending:
            return
        flat = torch.cat([values for _, _, values in pending])
        if reduce:
            flat = comm.average_across_processes(flat)
        flat = flat.tolist()
        offset = 0
        for iteration, names, _ in pending:
            step_values = dict(zip(names, flat[offset:offset + len(names)]))
            offset += len(names)
            bad = {name: value for name, value in step_values.items() if not math.isfinite(value)}
            if bad:
                raise FloatingPointError(
                    f"Loss became NaN or infinite at iteration {iteration}: {bad} (all losses: {step_values}); "
                    "training stopped, no checkpoint was written after this iteration"
                ) from cause
            self.storage.put_scalar("total_loss", sum(step_values.values()), iteration=iteration)
            self.storage.put_scalars(iteration=iteration, **step_values)
