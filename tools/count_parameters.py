#!/usr/bin/env python
"""Count the model's parameters for a config, without data or weights.

    python tools/count_parameters.py --config-file configs/iterative_model.yaml [KEY VALUE ...]

Prints a per-part table (all parameters and the trainable ones, i.e. ``requires_grad``: frozen backbone stages
under ``MODEL.BACKBONE.FREEZE_AT``, a frozen FCOS at ``MODEL.CENTERMASK.FCOS_LOSS_WEIGHT 0``), then
``backbone: <int>`` (parameters named ``backbone.*``), ``trainable: <int>`` and ``total: <int>``
(``model.parameters()``; buffers such as FrozenBN statistics are not parameters).  A CenterMask model also gets
its components beside the lab's published table.  The model is built on PyTorch's meta device, so even the
largest configs take no memory and no time to initialise.
"""
import argparse
import os
import sys
from collections import OrderedDict
from typing import Dict, List, Optional

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.defaults import get_cfg  # noqa: E402
from modeling import build_model  # noqa: E402

# Report rows: (row name, parameter-name predicate), the first match wins.
_DECODER_LAYERS = ("transformer.decoder.subject_layers.", "transformer.decoder.object_layers.",
                   "transformer.decoder.relation_layers.")
_PARTS = (
    ("backbone", lambda n: n.startswith("backbone.")),
    ("input_proj", lambda n: n.startswith("input_proj.")),
    ("queries", lambda n: n.split(".")[0] in ("query_embed", "object_query_embed", "relation_query_embed")),
    ("encoder", lambda n: n.startswith("transformer.encoder.")),
    ("decoder layers", lambda n: n.startswith(_DECODER_LAYERS)),
    ("conditioning", lambda n: n.startswith("transformer.decoder.")),
    ("heads", lambda n: n.startswith("transformer.")),
    ("FCOS head", lambda n: n.startswith(("centermask.fcos.", "fcos."))),
    ("SAG-Mask head", lambda n: n.startswith("centermask.mask_head.")),
    ("RoI tokens", lambda n: n.startswith("centermask.")),
)

# The lab's published parameter table (256 FPN channels, 150 classes; its CenterMask rows add the FCOS head, a COCO
# SAG-Mask head and a MaskIoU head to the VoVNet-FPN/DETR rows).
LAB_COMPONENTS = OrderedDict([
    ("FCOS head", (5_082_016, "150 classes")),
    ("SAG-Mask head", (2_643_298, "with an 80-class mask predictor, 20,560, unused")),
    ("MaskIoU head", (16_340_304, "unused: VG has no masks")),
])
LAB_TOTALS = {
    ("V-39-eSE", "DETR"): 79_102_606, ("V-57-eSE", "DETR"): 95_362_190, ("V-99-eSE", "DETR"): 123_408_270,
    ("V-39-eSE", "CenterMask"): 103_168_224, ("V-57-eSE", "CenterMask"): 119_427_808,
    ("V-99-eSE", "CenterMask"): 147_473_888,
}


def count_parameters(model: nn.Module) -> Dict[str, int]:
    """Parameters per report row (``_PARTS`` order, plus ``other`` for anything unclassified), ``total`` and
    ``trainable`` (``requires_grad``); ``trainable_parts`` maps each row to its trainable count."""
    counts = OrderedDict((name, 0) for name, _ in _PARTS)
    counts["other"] = 0
    trainable_parts = OrderedDict((name, 0) for name in counts)
    for name, parameter in model.named_parameters():
        part = next((row for row, matches in _PARTS if matches(name)), "other")
        counts[part] += parameter.numel()
        if parameter.requires_grad:
            trainable_parts[part] += parameter.numel()
    counts["total"] = sum(p.numel() for p in model.parameters())
    counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    counts["trainable_parts"] = trainable_parts
    return counts


def lab_comparison(cfg, counts: Dict[str, int]) -> List[str]:
    """Lines setting a CenterMask model's components beside the lab's published table (empty for other models)."""
    if cfg.MODEL.ENCODER.NAME != "CenterMask" or cfg.MODEL.META_ARCHITECTURE != "IterativeSceneGraphModel":
        return []
    lines = ["", f"CenterMask components ({cfg.MODEL.CENTERMASK.FUSION!r} fusion)   ours          the lab's table"]
    for part, (lab, note) in LAB_COMPONENTS.items():
        lines.append(f"  {part:<36}{counts.get(part, 0):>11,}   {lab:>11,}  ({note})")
    if counts["RoI tokens"]:
        lines.append(f"  {'RoI tokens (ours only)':<36}{counts['RoI tokens']:>11,}   {'-':>11}")
    lines.append(f"  {'DETR encoder':<36}{counts['encoder']:>11,}   {7_890_432:>11,}  (not in the lab's paste code)")
    lines.append(f"  {'input projection':<36}{counts['input_proj']:>11,}   {65_792:>11,}  (unused by the lab's paste "
                 "code)")
    lab_total = LAB_TOTALS.get((cfg.MODEL.VOVNET.CONV_BODY, "CenterMask"))
    if lab_total is not None:
        lines.append(f"  {'total':<36}{counts['total']:>11,}   {lab_total:>11,}")
    return lines


def build_on_meta(cfg) -> nn.Module:
    """``build_model(cfg)`` with every tensor on the meta device (shapes only)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        return build_model(cfg)


def main(argv: Optional[List[str]] = None) -> Dict[str, int]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="YAML config (with _BASE_ inheritance)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides as KEY VALUE pairs")
    args = parser.parse_args(argv)
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    counts = count_parameters(build_on_meta(cfg))
    parts = counts["trainable_parts"]
    width = max(len(name) for name in parts)
    print(f"{'part':<{width}}  {'parameters':>13}  {'trainable':>13}")
    for name, trainable in parts.items():
        if counts[name] == 0 and name in ("other", "FCOS head", "SAG-Mask head", "RoI tokens"):
            continue
        print(f"{name:<{width}}  {counts[name]:>13,}  {trainable:>13,}")
    for line in lab_comparison(cfg, counts):
        print(line)
    print(f"backbone: {counts['backbone']}")
    print(f"trainable: {counts['trainable']}")
    print(f"total: {counts['total']}")
    return counts


if __name__ == "__main__":
    main()
