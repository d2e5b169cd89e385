"""Hooks of the training loop: timing, LR schedule, periodic checkpoints, periodic evaluation with best-model
tracking, and metric writers.  Registration order matters: evaluation and best-model selection run before the
periodic checkpoint of the same iteration, so a checkpoint carries the best metric seen up to it."""
import logging
import math
import time
from typing import Any, Callable, Dict, List, Optional

import torch

from utils import comm
from engine.checkpoint import ModelCheckpointer, capture_rng_state
from utils.events import EventWriter
from utils.file_io import format_bytes, free_bytes
from engine.train_loop import HookBase

__all__ = ["IterationTimer", "LRScheduler", "PeriodicCheckpointer", "EvalHook", "BestCheckpointer", "PeriodicWriter",
           "is_eval_iteration"]

logger = logging.getLogger(__name__)


class IterationTimer(HookBase):
    """Records each iteration's wall time as the ``time`` scalar and logs the total at the end."""

    def __init__(self) -> None:
        self._step_start = 0.0
        self._train_start = 0.0

    def before_train(self) -> None:
        self._train_start = time.perf_counter()

    def before_step(self) -> None:
        self._step_start = time.perf_counter()

    def after_step(self) -> None:
        self.trainer.storage.put_scalar("time", time.perf_counter() - self._step_start)

    def after_train(self) -> None:
        iterations = self.trainer.iter + 1 - self.trainer.start_iter
        if iterations > 0:
            total = time.perf_counter() - self._train_start
            logger.info("Training ran %d iterations in %.1f s (%.4f s/it)", iterations, total, total / iterations)


class LRScheduler(HookBase):
    """Records the LR used by this iteration (``lr``) and advances the scheduler."""

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
        self.optimizer = optimizer
        self.scheduler = scheduler

    def after_step(self) -> None:
        self.trainer.storage.put_scalar("lr", self.optimizer.param_groups[0]["lr"], smoothing_hint=False)
        self.scheduler.step()


class PeriodicCheckpointer(HookBase):
    """Saves ``model_<iter>.pth`` after every ``period``-th iteration and ``model_final.pth`` after the last.

    Besides the checkpointables it stores ``iteration`` and every process's RNG states (``rng_states``, indexed by
    rank), so a resumed run continues exactly where this one was.  After each periodic save the periodic
    checkpoints beyond the ``max_to_keep`` newest are deleted (``SOLVER.CHECKPOINT_MAX_TO_KEEP``; 0 keeps all;
    ``model_final.pth`` and ``best_model_final.pth`` are never deleted).  Before training it warns when OUTPUT_DIR
    has less free space than the checkpoints the run keeps (see :meth:`check_free_space`).
    """

    def __init__(self, checkpointer: ModelCheckpointer, period: int, max_to_keep: int = 0) -> None:
        if max_to_keep < 0:
            raise ValueError(f"SOLVER.CHECKPOINT_MAX_TO_KEEP must be >= 0 (0 keeps all), got {max_to_keep}")
        self.checkpointer = checkpointer
        self.period = period
        self.max_to_keep = max_to_keep

    def before_train(self) -> None:
        self.check_free_space()

    def check_free_space(self) -> Optional[str]:
        """On the saving process: warn (and return the warning) when the free space of the checkpoint folder is
        below the estimated checkpoint size x (periodic checkpoints kept + 2: model_final.pth and
        best_model_final.pth, or the temporary file of the next save)."""
        checkpointer = self.checkpointer
        if not checkpointer.save_dir or not checkpointer.save_to_disk:
            return None
        free = free_bytes(checkpointer.save_dir)
        if free is None:
            return None
        if self.max_to_keep > 0:
            kept, kept_text = self.max_to_keep, f"SOLVER.CHECKPOINT_MAX_TO_KEEP {self.max_to_keep}"
        else:
            kept = self.trainer.max_iter // self.period if self.period > 0 else 0
            kept_text = f"{kept} periodic checkpoints (SOLVER.CHECKPOINT_MAX_TO_KEEP 0 keeps all)"
        size = checkpointer.estimate_checkpoint_bytes()
        needed = size * (kept + 2)
        if free >= needed:
            return None
        message = (f"Only {format_bytes(free)} free in OUTPUT_DIR {checkpointer.save_dir}, but this run's checkpoints "
                   f"need about {format_bytes(needed)}: {format_bytes(size)} each x ({kept_text} + 2 for "
                   "model_final.pth/best_model_final.pth and the file being written). A save that finds the disk "
                   "full stops the run (the previous checkpoint stays usable); free space or lower "
                   "SOLVER.CHECKPOINT_MAX_TO_KEEP")
        logger.warning(message)
        return message

    def after_step(self) -> None:
        iteration = self.trainer.iter
        periodic = self.period > 0 and (iteration + 1) % self.period == 0
        final = iteration + 1 >= self.trainer.max_iter
        if not (periodic or final):
            return
        self.trainer.flush_metrics()  # a NaN/inf loss since the last flush stops the run before anything is saved
        rng_states = comm.all_gather(capture_rng_state())
        extra = {"iteration": iteration, "rng_states": rng_states}
        if periodic:
            self.checkpointer.save(f"model_{iteration:07d}", **extra)
            self.checkpointer.prune(self.max_to_keep, iteration)
        if final:
            self.checkpointer.save("model_final", **extra)


def is_eval_iteration(period: int, iteration: int, max_iter: int) -> bool:
    """Evaluation runs after every ``period``-th iteration and after the last one (never when period is 0)."""
    return period > 0 and ((iteration + 1) % period == 0 or iteration + 1 == max_iter)


class EvalHook(HookBase):
    """Runs ``eval_function() -> {dataset: {metric: value}}`` after every ``period``-th and the last iteration.

    The numeric results (rank 0's, shared with every process) are stored as ``<dataset>/<metric>`` scalars;
    per-class breakdowns (metric names holding "/") stay in the evaluator's own output files.
    """

    def __init__(self, period: int, eval_function: Callable[[], Dict[str, Dict[str, Any]]]) -> None:
        self.period = period
        self.eval_function = eval_function

    def after_step(self) -> None:
        if is_eval_iteration(self.period, self.trainer.iter, self.trainer.max_iter):
            self._evaluate()

    def _evaluate(self) -> None:
        results = comm.broadcast_object(self.eval_function())
        comm.synchronize()
        scalars = {}
        for dataset, metrics in (results or {}).items():
            for metric, value in (metrics or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and "/" not in metric:
                    scalars[f"{dataset}/{metric}"] = float(value)
        self.trainer.storage.put_scalars(smoothing_hint=False, **scalars)
        logger.info("Evaluation at iteration %d: %s", self.trainer.iter,
                    "  ".join(f"{name}: {value:.4f}" for name, value in scalars.items()))


class BestCheckpointer(HookBase):
    """Saves ``best_model_final.pth`` whenever the ``<dataset>/<metric>`` scalar recorded by :class:`EvalHook` at
    this iteration beats the best so far (higher is better).  Its state (best value and iteration) is a
    checkpointable, so a resumed run keeps comparing against the best of the whole run."""

    def __init__(self, period: int, checkpointer: ModelCheckpointer, scalar_name: str,
                 metric_key: str = "TEST.BEST_METRIC", file_name: str = "best_model_final") -> None:
        self.period = period
        self.checkpointer = checkpointer
        self.scalar_name = scalar_name
        self.metric_key = metric_key
        self.file_name = file_name
        self.best_value: Optional[float] = None
        self.best_iteration: Optional[int] = None

    def state_dict(self) -> Dict[str, Any]:
        return {"best_value": self.best_value, "best_iteration": self.best_iteration}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best_value, self.best_iteration = state["best_value"], state["best_iteration"]

    def after_step(self) -> None:
        storage, iteration = self.trainer.storage, self.trainer.iter
        if not is_eval_iteration(self.period, iteration, self.trainer.max_iter):
            return
        if not storage.has(self.scalar_name) or storage.latest(self.scalar_name)[1] != iteration:
            evaluated = sorted(name for name, (_, it) in storage.latest_with_smoothing(1).items()
                               if "/" in name and it == iteration)
            raise KeyError(f"{self.metric_key}: the evaluation gave no {self.scalar_name!r}; it gave {evaluated}")
        value = storage.latest(self.scalar_name)[0]
        if math.isnan(value):
            logger.warning("%s is NaN at iteration %d: not a candidate for the best model", self.scalar_name, iteration)
            return
        if self.best_value is None or value > self.best_value:
            self.trainer.flush_metrics()  # nothing is saved after a NaN/inf loss
            logger.info("New best %s = %.4f at iteration %d (previous: %s at %s)", self.scalar_name, value,
                        iteration, self.best_value, self.best_iteration)
            self.best_value, self.best_iteration = value, iteration
            self.checkpointer.save(self.file_name, tag_last_checkpoint=False, iteration=iteration,
                                   best_metric={"name": self.scalar_name, "value": value})


class PeriodicWriter(HookBase):
    """Calls the writers every ``period`` iterations, after the last one, and closes them at the end."""

    def __init__(self, writers: List[EventWriter], period: int) -> None:
        self.writers = writers
        self.period = period

    def before_train(self) -> None:
        for writer in self.writers:
            writer.begin(self.trainer.start_iter)

    def after_step(self) -> None:
        iteration = self.trainer.iter
        if (iteration + 1) % self.period == 0 or iteration + 1 >= self.trainer.max_iter:
            for writer in self.writers:
                writer.write(self.trainer.storage)

    def after_train(self) -> None:
        stopped_early = self.trainer.iter + 1 < self.trainer.max_iter
        for writer in self.writers:
            if stopped_early:  # publish what the failed run recorded
                writer.write(self.trainer.storage)
            writer.close()
