"""The config-driven, task-agnostic trainer: builds model, optimizer, schedule, data, checkpointer and hooks
from ``cfg``.

Every part is built through a classmethod (``build_model``, ``build_train_loader``, ``build_test_loader``,
``build_evaluator``, ``run_inference``).  The defaults build the generic parts (``modeling.build_model(cfg)``,
``data.build`` loaders, ``evaluation.inference_on_dataset``); what depends on the task — the model's data needs
(predicate counts) and the evaluator — is the application's choice: ``train_iterative_model.SceneGraphTrainer``
overrides ``build_model`` and ``build_evaluator`` (detectron2's ``train_net.py`` pattern).  A subclass overriding
them trains anything with the same machinery (the tests use tiny stand-ins this way).
"""
import functools
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Optional, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel

from engine.checkpoint import ModelCheckpointer, restore_rng_state
from engine.hooks import BestCheckpointer, EvalHook, IterationTimer, LRScheduler, PeriodicCheckpointer
from engine.hooks import PeriodicWriter
from engine.launch import USER_ERRORS, user_error_message
from engine.solver import build_lr_scheduler, build_optimizer, clip_gradients
from engine.train_loop import HookBase, SimpleTrainer
from utils import comm
from utils.events import ConsoleMetricPrinter, EventWriter, JSONWriter, TensorboardWriter
from utils.file_io import remove_stale_temp_files
from utils.model_wrappers import unwrap_model

__all__ = ["Trainer", "create_ddp_model", "build_amp"]

logger = logging.getLogger(__name__)


def create_ddp_model(model: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel when there are several processes, else unchanged."""
    if comm.get_world_size() == 1:
        return model
    on_cuda = next(model.parameters()).is_cuda
    return DistributedDataParallel(
        model,
        device_ids=[comm.get_local_rank()] if on_cuda else None,
        forward_sync_buffers=False,  # buffers are synced from rank 0 once, at wrapping; not at every forward
        find_unused_parameters=find_unused_parameters,
    )


AMP_PRECISIONS = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def build_amp(cfg, device_type: Optional[str] = None):
    """``(autocast dtype or None, GradScaler or None)`` from ``SOLVER.AMP``: mixed precision runs on CUDA only
    (``device_type`` defaults to ``MODEL.DEVICE``'s type); "bfloat16" needs no scaler, "float16" gets a
    ``torch.amp.GradScaler`` as detectron2's AMPTrainer (the released recipe; docs/DIFFERENCES.md)."""
    precision = cfg.SOLVER.AMP.PRECISION
    if precision not in AMP_PRECISIONS:
        raise ValueError(f'SOLVER.AMP.PRECISION must be "bfloat16" or "float16", got {precision!r}')
    device_type = device_type or torch.device(cfg.MODEL.DEVICE).type
    if not cfg.SOLVER.AMP.ENABLED or device_type != "cuda":
        return None, None
    dtype = AMP_PRECISIONS[precision]
    return dtype, (torch.amp.GradScaler(device_type) if dtype == torch.float16 else None)


def compile_options(cfg) -> Dict[str, str]:
    """``torch.compile`` keyword arguments of ``MODEL.COMPILE_MODE`` / ``MODEL.COMPILE_BACKEND`` (empty = torch's
    defaults)."""
    return {key: value for key, value in (("mode", cfg.MODEL.COMPILE_MODE), ("backend", cfg.MODEL.COMPILE_BACKEND))
            if value}


class _UserErrorWithoutTraceback(logging.Filter):
    """The training loop logs the exception that stopped it with its traceback; a user error
    (``engine.launch.USER_ERRORS``: bad data, a full disk) is logged as its message only, as the command prints it
    (one ``error:`` line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, USER_ERRORS):
            record.msg, record.args = f"{record.getMessage()} {user_error_message(error)}", ()
            record.exc_info, record.exc_text = None, None
        return True


class Trainer(SimpleTrainer):
    """Trains ``cfg``'s model for ``SOLVER.MAX_ITER`` iterations with the released recipe.

    Usage::

        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()

    The training forward runs ``self.model``: the model, in DistributedDataParallel with several processes, in
    ``torch.compile`` with ``MODEL.COMPILE`` (a model with a ``compile_parts(**options)`` method compiles its own
    parts instead: the scene-graph model compiles the network and the loss, not the matcher between them);
    checkpoints and evaluation use the plain model (``self.checkpointer.model``).

    Args:
        cfg: the frozen config.
        find_unused_parameters: passed to DistributedDataParallel (needed only if some parameters get no
            gradient in an iteration); None takes ``MODEL.DDP_FIND_UNUSED_PARAMETERS``.
    """

    def __init__(self, cfg, find_unused_parameters: Optional[bool] = None) -> None:
        self.cfg = cfg
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        amp_dtype, grad_scaler = build_amp(cfg)
        if find_unused_parameters is None:
            find_unused_parameters = cfg.MODEL.DDP_FIND_UNUSED_PARAMETERS
        train_model = create_ddp_model(model, find_unused_parameters)
        if cfg.MODEL.COMPILE:
            compile_kwargs = compile_options(cfg)
            if hasattr(model, "compile_parts"):  # compiled piecewise around its host call (the matcher)
                model.compile_parts(**compile_kwargs)
            else:
                train_model = torch.compile(train_model, **compile_kwargs)
        super().__init__(
            train_model,
            data_loader=None,  # built in train(), once the start iteration is known
            optimizer=optimizer,
            clip_gradients=functools.partial(clip_gradients, cfg),
            amp_dtype=amp_dtype,
            grad_scaler=grad_scaler,
            amp_device=torch.device(cfg.MODEL.DEVICE).type,
            metrics_period=cfg.SOLVER.LOG_PERIOD,
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        scaler_state = {"grad_scaler": grad_scaler} if grad_scaler is not None else {}
        self.checkpointer = ModelCheckpointer(
            model, cfg.OUTPUT_DIR, save_to_disk=comm.is_main_process(), optimizer=optimizer, scheduler=self.scheduler,
            **scaler_state,
        )
        self.max_iter = cfg.SOLVER.MAX_ITER
        self._rng_states_to_restore: Optional[List[Dict[str, Any]]] = None
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume: bool = True) -> None:
        """With ``resume`` and a checkpoint in OUTPUT_DIR: restore everything (model, optimizer, scheduler, best
        metric, RNG states) and continue after its iteration (``last_checkpoint``'s file, or the newest readable
        ``model_*.pth`` when that one is corrupt: ``ModelCheckpointer.resume``).  Otherwise initialise the model from
        ``MODEL.WEIGHTS`` (if set) and start at iteration 0.  Rank 0 first deletes the temporary files a killed
        run left in OUTPUT_DIR and its evaluation folders (the checkpoint it was writing is incomplete;
        ``last_checkpoint`` never names it)."""
        if comm.is_main_process():
            cfg = self.cfg
            for dataset in {*cfg.DATASETS.VAL, *cfg.DATASETS.TEST}:
                remove_stale_temp_files(os.path.join(cfg.OUTPUT_DIR, "inference", dataset))
            remove_stale_temp_files(cfg.OUTPUT_DIR)
        checkpoint = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if self.checkpointer.resumed_from is not None:  # last_checkpoint's file, or the newest readable one
            self.start_iter = checkpoint["iteration"] + 1
            self._rng_states_to_restore = checkpoint.get("rng_states")
            logger.info("Resuming at iteration %d", self.start_iter)
        else:
            self.start_iter = 0

    def train(self) -> None:
        """Run iterations ``start_iter .. SOLVER.MAX_ITER - 1``."""
        if self.start_iter >= self.max_iter:
            logger.info("Training already finished (iteration %d of %d)", self.start_iter, self.max_iter)
            return
        self.data_loader = self.build_train_loader(self.cfg, self.start_iter)
        self._data_iter = None
        self._restore_rng_states()
        loop_logger = logging.getLogger(SimpleTrainer.__module__)
        quiet = _UserErrorWithoutTraceback()
        loop_logger.addFilter(quiet)
        try:
            super().train(self.start_iter, self.max_iter)
        finally:
            loop_logger.removeFilter(quiet)

    def run_step(self) -> None:
        try:
            super().run_step()
        except RuntimeError as error:
            if "Expected to have finished reduction in the prior iteration" not in str(error):
                raise
            raise RuntimeError(
                f"Iteration {self.iter}: some parameters of the model got no gradient, which DistributedDataParallel "
                "rejects unless told; set MODEL.DDP_FIND_UNUSED_PARAMETERS True (or make every parameter take part "
                f"in the loss). PyTorch's message: {error}"
            ) from error

    def _restore_rng_states(self) -> None:
        states, self._rng_states_to_restore = self._rng_states_to_restore, None
        if not states:
            return
        if len(states) != comm.get_world_size():
            logger.warning("The checkpoint holds RNG states of %d processes, this run has %d: not restoring them "
                           "(the run continues, but not bit-identically)", len(states), comm.get_world_size())
            return
        restore_rng_state(states[comm.get_rank()])

    def build_hooks(self) -> List[Optional[HookBase]]:
        cfg = self.cfg
        hooks: List[Optional[HookBase]] = [IterationTimer(), LRScheduler(self.optimizer, self.scheduler)]
        if cfg.TEST.EVAL_PERIOD > 0 and cfg.DATASETS.VAL:
            val_names = list(cfg.DATASETS.VAL)
            hooks.append(EvalHook(cfg.TEST.EVAL_PERIOD, lambda: self.test(cfg, unwrap_model(self.model), val_names)))
            best = BestCheckpointer(cfg.TEST.EVAL_PERIOD, self.checkpointer, f"{val_names[0]}/{cfg.TEST.BEST_METRIC}")
            self.checkpointer.add_checkpointable("best_checkpointer", best)
            hooks.append(best)
        hooks.append(PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD,
                                          max_to_keep=cfg.SOLVER.CHECKPOINT_MAX_TO_KEEP))
        if comm.is_main_process():
            hooks.append(PeriodicWriter(self.build_writers(), cfg.SOLVER.LOG_PERIOD))
        return hooks

    def build_writers(self) -> List[EventWriter]:
        """Console (with ETA), ``OUTPUT_DIR/metrics.json`` and TensorBoard events in ``OUTPUT_DIR``."""
        output_dir = self.cfg.OUTPUT_DIR
        os.makedirs(output_dir, exist_ok=True)
        return [
            ConsoleMetricPrinter(self.max_iter),
            JSONWriter(os.path.join(output_dir, "metrics.json")),
            TensorboardWriter(output_dir),
        ]

    # ----------------------------------------------------------------------------------------------------------
    # Builders of the parts.  The defaults are task-agnostic; the application overrides what depends on the task.
    # ----------------------------------------------------------------------------------------------------------
    @classmethod
    def build_model(cls, cfg, training: bool = True) -> torch.nn.Module:
        """``modeling.build_model(cfg)`` (no dataset statistics); ``training`` lets an application pass the data
        the model needs only for training (e.g. loss weights from the training split)."""
        from modeling import build_model

        return cls.log_model(build_model(cfg))

    @staticmethod
    def log_model(model: torch.nn.Module) -> torch.nn.Module:
        """Log the model's parameter counts; returns it."""
        logger.info("Model %s: %d parameters (%d trainable)", type(model).__name__,
                    sum(p.numel() for p in model.parameters()),
                    sum(p.numel() for p in model.parameters() if p.requires_grad))
        return model

    @classmethod
    def build_optimizer(cls, cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg, start_iter: int) -> Iterable:
        from data.build import build_train_loader

        return build_train_loader(cfg, start_iter=start_iter)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str) -> Iterable:
        from data.build import build_test_loader

        return build_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_dir: str):
        """The evaluator of ``dataset_name``: the application's choice (the engine knows no task)."""
        raise NotImplementedError(
            f"{cls.__name__}.build_evaluator: the application chooses the evaluator (see "
            "train_iterative_model.SceneGraphTrainer)")

    @classmethod
    def run_inference(cls, model: torch.nn.Module, data_loader: Iterable, evaluator) -> Dict[str, Any]:
        from evaluation import inference_on_dataset

        return inference_on_dataset(model, data_loader, evaluator)

    @classmethod
    def test(cls, cfg, model: torch.nn.Module, dataset_names: Sequence[str]) -> Dict[str, Dict[str, Any]]:
        """Evaluate ``model`` on each dataset; returns ``{dataset: metrics}`` (metrics empty on ranks > 0).

        Outputs of each dataset go to ``OUTPUT_DIR/inference/<dataset>``.  The model is put in eval mode for the
        duration and restored afterwards.
        """
        results: Dict[str, Dict[str, Any]] = OrderedDict()
        was_training = model.training
        model.eval()
        try:
            for name in dataset_names:
                output_dir = os.path.join(cfg.OUTPUT_DIR, "inference", name)
                if comm.is_main_process():
                    os.makedirs(output_dir, exist_ok=True)
                data_loader = cls.build_test_loader(cfg, name)
                evaluator = cls.build_evaluator(cfg, name, output_dir)
                with torch.no_grad():
                    results[name] = cls.run_inference(model, data_loader, evaluator) or {}
        finally:
            model.train(was_training)
        return results
