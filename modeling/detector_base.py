"""What the pre-training detectors (``DETRDetector``, ``FCOSDetector``) share: input normalisation and padding, the
detection targets of a batch and the per-image output layout."""
from typing import Dict, List

import torch
from torch import nn

from .meta_arch_base import MetaArchitectureBase


class ImageDetector(MetaArchitectureBase):
    """Base of the detector meta-architectures that pre-train the scene-graph model's backbone and heads.

    Takes the same batch items as the scene-graph model (``docs/ARCHITECTURE.md``; relations are ignored).  In
    training mode a subclass returns its loss dict; in eval mode one dict per image with ``boxes`` float32 (N, 4)
    xyxy in original-image pixels, ``labels`` int64 (N,) 0-based and ``scores`` float32 (N,), best first, at most
    ``TEST.DETECTIONS_PER_IMAGE`` (the caller adds ``image_id``).  Images are normalised and padded by the same
    :class:`~modeling.meta_arch_base.MetaArchitectureBase` as the scene-graph model's, so the pre-trained weights
    see the same input after the hand-off.
    """

    def __init__(self, cfg, backbone: nn.Module):
        super().__init__(cfg, backbone)
        if cfg.TEST.DETECTIONS_PER_IMAGE < 1:
            raise ValueError(f"TEST.DETECTIONS_PER_IMAGE must be >= 1, got {cfg.TEST.DETECTIONS_PER_IMAGE}")
        self.num_classes = cfg.MODEL.DETR.NUM_CLASSES
        self.detections_per_image = cfg.TEST.DETECTIONS_PER_IMAGE

    def detection_targets(self, batch: List[dict]) -> List[Dict[str, torch.Tensor]]:
        """Per image ``boxes`` float32 (N, 4) xyxy in resized-image pixels and ``labels`` int64 (N,), checked on
        the host (a clear error instead of a device-side assert) and copied to the model's device."""
        targets = []
        for index, item in enumerate(batch):
            if "instances" not in item:
                raise KeyError(f"training batch item {index} has no 'instances' (boxes, labels)")
            boxes = torch.as_tensor(item["instances"]["boxes"], dtype=torch.float32).reshape(-1, 4)
            labels = torch.as_tensor(item["instances"]["labels"], dtype=torch.int64).reshape(-1)
            if len(boxes) != len(labels):
                raise ValueError(f"batch item {index}: {len(boxes)} boxes but {len(labels)} labels")
            if len(labels) and not (0 <= int(labels.min()) and int(labels.max()) < self.num_classes):
                raise ValueError(f"batch item {index}: object label outside [0, MODEL.DETR.NUM_CLASSES = "
                                 f"{self.num_classes}): {labels.tolist()}")
            targets.append({"boxes": boxes.to(self.device, non_blocking=True),
                            "labels": labels.to(self.device, non_blocking=True)})
        return targets

    def top_detections(self, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> dict:
        """The ``TEST.DETECTIONS_PER_IMAGE`` best of one image's detections, best first, in the output layout."""
        order = scores.argsort(descending=True, stable=True)[: self.detections_per_image]
        return {"boxes": boxes[order].float(), "labels": labels[order].long(), "scores": scores[order].float()}
