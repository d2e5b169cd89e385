"""Command line and process set-up shared by the training tools (detectron2's ``engine.defaults``).

* :func:`default_argument_parser`: ``--config-file --resume --eval-only --num-gpus --num-machines --machine-rank
  --dist-url`` and trailing ``KEY VALUE`` config overrides;
* :func:`setup_cfg`: defaults + config file + overrides, frozen (no side effects: safe before ``launch``);
* :func:`default_setup`: per-process set-up (output dir, logging, seed, determinism, ``config.yaml``);
* :func:`run_command_line`: the top level of every command: a user error is one line ``error: …`` and exit 2.
"""
import argparse
import json
import logging
import os
import random
import sys
from typing import Any, Callable, Optional

import numpy as np
import torch

from configs.defaults import CfgNode, get_cfg
from utils import comm
from utils.file_io import atomic_write_text
from engine.launch import USER_ERRORS, user_error_message
from utils.logger import setup_logger

__all__ = ["default_argument_parser", "setup_cfg", "default_setup", "seed_all_rng", "run_command_line", "USER_ERRORS"]

logger = logging.getLogger(__name__)

# USER_ERRORS (defined in engine.launch, which reports them from spawned processes too): errors the user fixes by
# changing the command, the config or the input files (the project raises them with a message naming the file or
# config key), or by freeing disk space; any other exception is a bug and keeps its traceback.


def default_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        epilog=epilog
        or (
            "Examples:\n"
            "  Train on 4 GPUs:\n"
            "    %(prog)s --num-gpus 4 --config-file configs/iterative_model.yaml OUTPUT_DIR out\n"
            "  Resume and evaluate the last checkpoint:\n"
            "    %(prog)s --resume --eval-only --config-file configs/iterative_model.yaml OUTPUT_DIR out\n"
            "  Two CPU processes (gloo):\n"
            "    %(prog)s --num-gpus 2 --config-file cfg.yaml MODEL.DEVICE cpu\n"
            "  Two machines (run on each, with its --machine-rank):\n"
            "    %(prog)s --num-machines 2 --machine-rank 0 --num-gpus 4 --dist-url tcp://host0:29500 ...\n"
            "  Under torchrun (the process group comes from RANK/WORLD_SIZE/LOCAL_RANK):\n"
            "    torchrun --nproc-per-node 4 %(prog)s --config-file cfg.yaml\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to a YAML config file")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint in OUTPUT_DIR if there is one (else start from MODEL.WEIGHTS)",
    )
    parser.add_argument("--eval-only", action="store_true", help="only evaluate the weights on DATASETS.TEST")
    parser.add_argument("--num-gpus", type=int, default=1, help="processes per machine (GPUs; CPU processes if "
                        "MODEL.DEVICE is cpu)")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="the rank of this machine (unique per machine)")
    parser.add_argument(
        "--dist-url",
        default="auto",
        help='rendezvous URL of the process group, e.g. tcp://<host of machine 0>:<port>; "auto" picks a free '
        "local port (single machine)",
    )
    parser.add_argument(
        "opts",
        help="config overrides: KEY VALUE pairs at the end of the command, e.g. SOLVER.IMS_PER_BATCH 12",
        default=None,
        nargs=argparse.REMAINDER,
    )
    return parser


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    """Defaults, merged with ``--config-file`` and the trailing overrides, frozen."""
    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts or [])
    cfg.freeze()
    return cfg


def default_setup(cfg: CfgNode, args: Optional[argparse.Namespace] = None) -> CfgNode:
    """Prepare this process to run ``cfg``; returns the config to use (with a drawn ``SEED`` if it was < 0).

    Creates OUTPUT_DIR, sets up logging (console + ``log.txt`` on rank 0), logs the environment, arguments and
    config, writes the merged config to ``OUTPUT_DIR/config.yaml`` (atomically, rank 0), seeds Python, numpy and
    torch (seed + rank) and applies ``DETERMINISTIC``.
    """
    rank = comm.get_rank()
    output_dir = cfg.OUTPUT_DIR
    if not output_dir:
        raise ValueError("OUTPUT_DIR must not be empty")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as error:  # a path through a file, a read-only or full file system, no permission
        raise type(error)(error.errno, f"OUTPUT_DIR {output_dir!r} cannot be created: {error.strerror}") from None
    setup_logger(output_dir, rank)
    logger.info("Rank %d of %d processes (local rank %d); Python %s; torch %s; CUDA available: %s",
                rank, comm.get_world_size(), comm.get_local_rank(), sys.version.split()[0], torch.__version__,
                torch.cuda.is_available())
    if args is not None:
        logger.info("Command line arguments: %s", args)

    cfg = _resolve_seed(cfg)
    logger.info("Running with full config:\n%s", cfg.dump())
    if comm.is_main_process():
        path = os.path.join(output_dir, "config.yaml")
        atomic_write_text(path, cfg.dump())
        atomic_write_text(os.path.join(output_dir, "run_info.json"), json.dumps(run_info(cfg), indent=2))
        logger.info("Full config saved to %s", path)

    seed_all_rng(cfg.SEED + rank)
    _apply_determinism(cfg)
    return cfg


def run_info(cfg: CfgNode) -> dict:
    """What ran this job (device name, process count, versions), saved as ``OUTPUT_DIR/run_info.json`` for the
    results tables."""
    on_gpu = cfg.MODEL.DEVICE.startswith("cuda") and torch.cuda.is_available()
    return {
        "device": cfg.MODEL.DEVICE,
        "device_name": torch.cuda.get_device_name(0) if on_gpu else "CPU",
        "world_size": comm.get_world_size(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }


def seed_all_rng(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _resolve_seed(cfg: CfgNode) -> CfgNode:
    """A config whose SEED is >= 0: a negative SEED is replaced by one drawn on rank 0, shared by every rank."""
    if cfg.SEED >= 0:
        return cfg
    seed = comm.broadcast_object(int.from_bytes(os.urandom(4), "little") % 2 ** 31)
    logger.info("SEED %d < 0: using the randomly drawn seed %d (pass SEED %d to reproduce this run)",
                cfg.SEED, seed, seed)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SEED = seed
    cfg.freeze()
    return cfg


def _apply_determinism(cfg: CfgNode) -> None:
    if not cfg.DETERMINISTIC:
        return
    if cfg.MODEL.DEVICE.startswith("cuda"):
        # cuBLAS needs this workspace setting for reproducible matmuls; ops without a deterministic CUDA kernel
        # warn instead of failing, so DETERMINISTIC is best effort on GPUs.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(True)
    logger.info("DETERMINISTIC: torch.use_deterministic_algorithms enabled")


def run_command_line(function: Callable[..., Any], *args: Any) -> int:
    """Call ``function(*args)`` as a command's top level: returns 0, or, on one of :data:`USER_ERRORS`, prints
    ``error: <message>`` to stderr (no traceback) and returns 2 (the exit status argparse uses for bad usage)."""
    try:
        function(*args)
    except USER_ERRORS as error:
        print(f"error: {user_error_message(error)}", file=sys.stderr, flush=True)
        return 2
    return 0
