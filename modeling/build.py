"""``build_model(cfg)``: the network named by ``MODEL.META_ARCHITECTURE`` on ``MODEL.DEVICE``."""
from typing import Optional, Sequence

import torch
from torch import nn

from .backbone import build_backbone
from .detr_detector import DETRDetector
from .fcos_detector import FCOSDetector
from .iterative_model import IterativeSceneGraphModel

# The scene-graph model and the two detectors that pre-train its starting points on Visual Genome boxes.
META_ARCHITECTURES = {
    "IterativeSceneGraphModel": IterativeSceneGraphModel,
    "DETRDetector": DETRDetector,
    "FCOSDetector": FCOSDetector,
}


def build_model(cfg, predicate_counts: Optional[Sequence[int]] = None) -> nn.Module:
    """Build the model of ``cfg`` and move it to ``cfg.MODEL.DEVICE``.

    ``predicate_counts`` (train-split relation counts per predicate, ``data.visual_genome.get_predicate_counts``)
    sets the predicate loss weights when ``MODEL.DETR.REWEIGHT_RELATIONS``; ``None`` = all ones (inference).
    """
    name = cfg.MODEL.META_ARCHITECTURE
    if name not in META_ARCHITECTURES:
        raise ValueError(f"MODEL.META_ARCHITECTURE {name!r} is unknown; choose from {sorted(META_ARCHITECTURES)}")
    model = META_ARCHITECTURES[name](cfg, build_backbone(cfg), predicate_counts=predicate_counts)
    if cfg.MODEL.CHANNELS_LAST:  # convolution weights (and so their outputs) in NHWC: faster oneDNN/cuDNN kernels
        model = model.to(memory_format=torch.channels_last)
    return model.to(cfg.MODEL.DEVICE)
