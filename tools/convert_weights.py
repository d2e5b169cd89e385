#!/usr/bin/env python
"""Convert a foreign weights file offline into this project's parameter names.

    python tools/convert_weights.py --input IN --output OUT [--config-file CFG] [KEY VALUE ...]

The model of the config (default: ResNet-101 IterativeSG) is built on the CPU to learn its names and shapes; IN
(the released IterativeSG/DETR-on-VG checkpoint, a single-decoder DETR checkpoint, vovnet-detectron2/centermask2
weights, the lab's CenterMask/FCOS checkpoints with ``proposal_generator.fcos_head.*`` and ``roi_heads.mask_head.*``,
torchvision ImageNet weights, or one of ours) is renamed by ``modeling.weight_conversion`` and written atomically to
OUT as ``{"model": state_dict, "conversion": {...}}``, loadable through ``MODEL.WEIGHTS``.  The conversion report
(source format, missing and unexpected keys, an FCOS ``cls_logits`` left at initialisation because its class
count differs from ``MODEL.DETR.NUM_CLASSES``, input-format notes) is printed.

IN may also be the OUTPUT_DIR of a detector pre-training run (the checkpoint its ``last_checkpoint`` names): a
``DETRDetector`` run becomes an IterativeSG initialisation (decoder into the three decoders, class and box heads
to the subject/object heads, a fresh predicate head), an ``FCOSDetector`` run the "Ours" backbone, FPN and FCOS
head (``--config-file configs/iterative_vovnet99_centermask.yaml``).
"""
import argparse
import logging
import os
import sys
from typing import List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.defaults import get_cfg  # noqa: E402
from engine.defaults import run_command_line  # noqa: E402
from utils.file_io import atomic_write  # noqa: E402
from modeling.weight_conversion import convert_to_model_state_dict, load_checkpoint_file  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="weights file to convert, or a run's OUTPUT_DIR")
    parser.add_argument("--output", required=True, help="converted file to write (.pth)")
    parser.add_argument("--config-file", default="", help="config of the target model (YAML, _BASE_ allowed)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides as KEY VALUE pairs")
    return parser.parse_args(argv)


def resolve_input(path: str) -> str:
    """``path`` itself, or for a run directory the checkpoint named by its ``last_checkpoint`` file."""
    if not os.path.isdir(path):
        return path
    marker = os.path.join(path, "last_checkpoint")
    if not os.path.isfile(marker):
        raise FileNotFoundError(f"{path} is a directory without a last_checkpoint file (not a finished run's "
                                "OUTPUT_DIR); pass the checkpoint file itself")
    with open(marker) as f:
        return os.path.join(path, f.read().strip())


def main(argv: Optional[List[str]] = None) -> int:
    """The command line; returns the exit status (2, with one line ``error: ...`` on stderr, for bad input)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    return run_command_line(convert, args)


def convert(args: argparse.Namespace) -> None:
    """Build the config's model, convert ``args.input`` into its names and write ``args.output`` atomically."""
    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()

    import modeling  # after the config: building the model is the slow part

    model = modeling.build_model(cfg)
    try:
        args.input = resolve_input(args.input)
        checkpoint = load_checkpoint_file(args.input)
        state_dict, report = convert_to_model_state_dict(checkpoint, model, input_format=cfg.INPUT.FORMAT)
    except (FileNotFoundError, ValueError, TypeError) as error:
        raise ValueError(f"{args.input}: {error}") from error
    print(report)
    output = {"model": state_dict,
              "conversion": {"input": os.path.abspath(args.input), "source_format": report.source_format,
                             "missing": report.missing, "unexpected": report.unexpected,
                             "left_at_init": report.left_at_init}}
    atomic_write(args.output, lambda f: torch.save(output, f))
    print(f"wrote {len(state_dict)} tensors to {args.output}")


if __name__ == "__main__":
    sys.exit(main())
