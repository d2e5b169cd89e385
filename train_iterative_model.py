"""Train or evaluate the Iterative Scene Graph Generation model (detectron2-style command line).

    python train_iterative_model.py --resume --num-gpus 4 --config-file configs/iterative_model.yaml \
        OUTPUT_DIR out MODEL.WEIGHTS detr_vg.pth
    python train_iterative_model.py --resume --eval-only --num-gpus 4 --config-file configs/iterative_model.yaml \
        OUTPUT_DIR out

``--num-gpus N`` starts N processes (NCCL on GPUs; gloo when ``MODEL.DEVICE cpu``); the script also runs under
``torchrun``.  Training evaluates ``DATASETS.VAL`` every ``TEST.EVAL_PERIOD`` iterations (keeping
``best_model_final.pth`` by ``TEST.BEST_METRIC``) and ``DATASETS.TEST`` at the end; ``--eval-only`` evaluates
``DATASETS.TEST`` with the last checkpoint (``--resume``) or ``MODEL.WEIGHTS``.  A user error (unknown config
key, missing dataset file, ...) prints one line ``error: ...`` to stderr and exits with status 2.
"""
import argparse
import logging
import sys
from typing import Any, Dict

from engine.checkpoint import ModelCheckpointer
from engine.defaults import default_argument_parser, default_setup, run_command_line, setup_cfg
from engine.launch import launch
from engine.trainer import Trainer

logger = logging.getLogger("train_iterative_model")


def main(args: argparse.Namespace) -> Dict[str, Any]:
    """Runs in every process: returns ``{dataset: metrics}`` of the final evaluation (empty on ranks > 0)."""
    cfg = default_setup(setup_cfg(args), args)
    if args.eval_only:
        return evaluate(cfg, resume=args.resume)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    if not cfg.DATASETS.TEST:
        return {}
    return Trainer.test(cfg, trainer.checkpointer.model, cfg.DATASETS.TEST)


def evaluate(cfg, resume: bool) -> Dict[str, Any]:
    """Evaluate the last checkpoint of OUTPUT_DIR (``resume``) or ``MODEL.WEIGHTS`` on every ``DATASETS.TEST``."""
    model = Trainer.build_model(cfg, training=False)
    checkpointer = ModelCheckpointer(model, cfg.OUTPUT_DIR, save_to_disk=False)
    if not (resume and checkpointer.has_checkpoint()) and not cfg.MODEL.WEIGHTS:
        raise ValueError(
            f"--eval-only needs weights: no last_checkpoint in OUTPUT_DIR {cfg.OUTPUT_DIR!r} "
            f"({'--resume given' if resume else 'no --resume'}) and MODEL.WEIGHTS is empty"
        )
    checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
    return Trainer.test(cfg, model, cfg.DATASETS.TEST)


def run(argv=None) -> Any:
    """Parse ``argv``, check the config in this process (errors surface once, before any process starts), launch."""
    args = default_argument_parser().parse_args(argv)
    cfg = setup_cfg(args)
    return launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
        device=cfg.MODEL.DEVICE,
    )


def command_line(argv=None) -> int:
    """The ``python train_iterative_model.py`` entry point: :func:`run`; returns the exit status."""
    return run_command_line(run, argv)


if __name__ == "__main__":
    sys.exit(command_line())
