"""What the pre-training detectors (``DETRDetector``, ``FCOSDetector``) share: input normalisation and padding, the
detection targets of a batch and the per-image output layout."""
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from .iterative_model import IterativeSceneGraphModel


class ImageDetector(nn.Module):
    """Base of the detector meta-architectures that pre-train the scene-graph model's backbone and heads.

    Takes the same batch items as the scene-graph model (``docs/ARCHITECTURE.md``; relations are ignored).  In
    training mode a subclass returns its loss dict; in eval mode one dict per image with ``boxes`` float32 (N, 4)
    xyxy in original-image pixels, ``labels`` int64 (N,) 0-based and ``scores`` float32 (N,), best first, at most
    ``TEST.DETECTIONS_PER_IMAGE`` (the caller adds ``image_id``).  Images are normalised and padded exactly as
    the scene-graph model does it (its ``preprocess_images`` is reused), so the pre-trained weights see the same
    input after the hand-off.
    """

    preprocess_images = IterativeSceneGraphModel.preprocess_images

    def __init__(self, cfg, backbone: nn.Module):
        super().__init__()
        if len(cfg.MODEL.PIXEL_MEAN) != 3 or len(cfg.MODEL.PIXEL_STD) != 3:
            raise ValueError("MODEL.PIXEL_MEAN and MODEL.PIXEL_STD must have 3 values each")
        if cfg.TEST.DETECTIONS_PER_IMAGE < 1:
            raise ValueError(f"TEST.DETECTIONS_PER_IMAGE must be >= 1, got {cfg.TEST.DETECTIONS_PER_IMAGE}")
        self.backbone = backbone
        self.size_divisibility = getattr(backbone, "size_divisibility", 32)
        self.num_classes = cfg.MODEL.DETR.NUM_CLASSES
        self.detections_per_image = cfg.TEST.DETECTIONS_PER_IMAGE
        self.register_buffer("pixel_mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.MODEL.PIXEL_STD).view(3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

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


def clip_to_image(boxes_xyxy: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``boxes_xyxy`` (N, 4) clamped to an image of ``size`` (height, width)."""
    height, width = size
    upper = boxes_xyxy.new_tensor([width, height, width, height])
    return torch.minimum(boxes_xyxy.clamp(min=0), upper)


def original_sizes(batch: Sequence[dict]) -> List[Tuple[int, int]]:
    """The original (height, width) of every batch item."""
    return [(int(item["height"]), int(item["width"])) for item in batch]
