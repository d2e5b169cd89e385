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

This file is the application layer (docs/ARCHITECTURE.md): :class:`SceneGraphTrainer` wires the task-specific
pieces into the generic ``engine.trainer.Trainer`` — the training split's predicate counts for the loss weights,
and the evaluator (scene-graph metrics, or box AP for the pre-training detectors).  The tools import it.
"""
import argparse
import logging
import sys
from typing import Any, Dict

import torch

from data.build import images_per_process
from data.catalog import get_predicate_counts, get_split
from engine.checkpoint import ModelCheckpointer, has_resumable_checkpoint, probe_checkpoint
from engine.defaults import default_argument_parser, default_setup, run_command_line, setup_cfg
from engine.launch import launch
from engine.trainer import Trainer
from evaluation import build_sgg_evaluator
from evaluation.detection_evaluator import build_detection_evaluator
from modeling import build_model

logger = logging.getLogger("train_iterative_model")

# Meta-architectures that output plain detections (boxes, labels, scores) rather than scene graphs.
DETECTOR_META_ARCHITECTURES = ("DETRDetector", "FCOSDetector")


class SceneGraphTrainer(Trainer):
    """The generic trainer with this task's wiring: the model gets the training split's predicate counts (the
    α/β predicate loss weights, from the dataset catalog's ``DATASETS.TRAIN[0]``), and evaluation is scene-graph
    recall (or box AP for the detectors)."""

    @classmethod
    def build_model(cls, cfg, training: bool = True) -> torch.nn.Module:
        """``modeling.build_model`` with the train-split predicate counts (training) or without (inference)."""
        predicate_counts = get_predicate_counts(cfg) if training else None
        return cls.log_model(build_model(cfg, predicate_counts))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_dir: str):
        """Box AP (``detection_eval.json``) for the pre-training detectors, scene-graph metrics otherwise."""
        if cfg.MODEL.META_ARCHITECTURE in DETECTOR_META_ARCHITECTURES:
            return build_detection_evaluator(cfg, dataset_name, output_dir)
        return build_sgg_evaluator(cfg, dataset_name, output_dir)



def main(args: argparse.Namespace) -> Dict[str, Any]:
    """Runs in every process: returns ``{dataset: metrics}`` of the final evaluation (empty on ranks > 0)."""
    cfg = default_setup(setup_cfg(args), args)
    if args.eval_only:
        return evaluate(cfg, resume=args.resume)
    trainer = SceneGraphTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    if not cfg.DATASETS.TEST:
        return {}
    return SceneGraphTrainer.test(cfg, trainer.checkpointer.model, cfg.DATASETS.TEST)


def evaluate(cfg, resume: bool) -> Dict[str, Any]:
    """Evaluate the last checkpoint of OUTPUT_DIR (``resume``) or ``MODEL.WEIGHTS`` on every ``DATASETS.TEST``."""
    model = SceneGraphTrainer.build_model(cfg, training=False)
    checkpointer = ModelCheckpointer(model, cfg.OUTPUT_DIR, save_to_disk=False)
    if not (resume and checkpointer.has_checkpoint()) and not cfg.MODEL.WEIGHTS:
        raise ValueError(
            f"--eval-only needs weights: no last_checkpoint in OUTPUT_DIR {cfg.OUTPUT_DIR!r} "
            f"({'--resume given' if resume else 'no --resume'}) and MODEL.WEIGHTS is empty"
        )
    checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
    return SceneGraphTrainer.test(cfg, model, cfg.DATASETS.TEST)


def check_inputs(cfg, args: argparse.Namespace) -> None:
    """What can fail without a GPU, checked once in this process before any other starts (so a mistake is one
    ``error:`` line, not one per process): every split the run reads resolves and has images, and the weights it
    starts from (``MODEL.WEIGHTS``, unless ``--resume`` finds a checkpoint) are a readable torch file."""
    names = list(cfg.DATASETS.TEST) if args.eval_only else [*cfg.DATASETS.TRAIN, *cfg.DATASETS.VAL,
                                                              *cfg.DATASETS.TEST]
    for name in dict.fromkeys(names):
        if len(get_split(cfg, name)) == 0:
            raise ValueError(f"dataset {name!r} has no images (DATASETS.TRAIN/VAL/TEST)")
    if cfg.MODEL.WEIGHTS and not (args.resume and has_resumable_checkpoint(cfg.OUTPUT_DIR)):
        probe_checkpoint(cfg.MODEL.WEIGHTS, "MODEL.WEIGHTS")


def run(argv=None) -> Any:
    """Parse ``argv``, check the config and inputs in this process (errors surface once, before any process
    starts), launch."""
    args = default_argument_parser().parse_args(argv)
    cfg = setup_cfg(args)
    images_per_process(cfg, args.num_gpus * args.num_machines)  # a batch that does not split is an error now
    check_inputs(cfg, args)
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
