#!/usr/bin/env python
"""Count the model's parameters for a config, without data or weights.

    python tools/count_parameters.py --config-file configs/iterative_model.yaml [KEY VALUE ...]

Prints a per-part table, then ``backbone: <int>`` (parameters named ``backbone.*``) and ``total: <int>``
(``model.parameters()``; buffers such as FrozenBN statistics are not parameters).  The model is built on
PyTorch's meta device, so even the largest configs take no memory and no time to initialise.
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
    ("centermask", lambda n: n.startswith("centermask.")),
)


def count_parameters(model: nn.Module) -> Dict[str, int]:
    """Parameters per report row (``_PARTS`` order, plus ``other`` for anything unclassified) and ``total``."""
    counts = OrderedDict((name, 0) for name, _ in _PARTS)
    counts["other"] = 0
    for name, parameter in model.named_parameters():
        part = next((row for row, matches in _PARTS if matches(name)), "other")
        counts[part] += parameter.numel()
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


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
    width = max(len(name) for name in counts)
    for name, value in counts.items():
        if name == "total" or (name == "other" and value == 0):
            continue
        print(f"{name:<{width}}  {value:>13,}")
    print(f"backbone: {counts['backbone']}")
    print(f"total: {counts['total']}")
    return counts


if __name__ == "__main__":
    main()
