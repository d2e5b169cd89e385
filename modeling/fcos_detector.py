"""FCOS on VoVNetV2-FPN (P3-P7) over Visual Genome boxes: the starting point of the "Ours" (CenterMask) model.

The detector is the CenterMask encoder's own :class:`~modeling.centermask.fcos.FCOS` (torchvision's head with the
per-level scales, its losses and the batched post-processing) on the backbone's pyramid, under the same names as
inside the scene-graph model less the ``centermask.`` prefix (``backbone.*``, ``fcos.head.*``), so a finished
run initialises "Ours"' backbone, FPN and FCOS head by a key rename (``modeling.weight_conversion``).
"""
from typing import List, Optional, Sequence

import torch
from torch import nn

from .centermask.fcos import FCOS_LEVELS, build_fcos
from .detector_base import ImageDetector
from .meta_arch_base import clip_to_image, original_sizes


class FCOSDetector(ImageDetector):
    """Backbone (``MODEL.BACKBONE.NAME`` "VoVNetFPN", outputs ``p3``…``p7``) → FCOS with
    ``MODEL.DETR.NUM_CLASSES`` classes.

    Training returns ``loss_fcos_{cls,loc,ctr}`` (focal, GIoU and centerness losses, unweighted; the box loss is
    ``MODEL.CENTERMASK.BOX_LOSS``).  Inference keeps the FCOS detections above ``MODEL.CENTERMASK.SCORE_THRESH``
    (``SCORE_THRESH_BEFORE_CENTERNESS``, ``PRE_NMS_TOPK`` per level, class-aware NMS at ``NMS_THRESH`` on boxes
    clipped first or not by ``CLIP_BEFORE_NMS``), at most ``TEST.DETECTIONS_PER_IMAGE`` per image, rescaled to the
    original image and clipped to it.
    ``predicate_counts`` is accepted for ``build_model``'s signature and unused.
    """

    def __init__(self, cfg, backbone: nn.Module, predicate_counts: Optional[Sequence[int]] = None):
        super().__init__(cfg, backbone)
        shapes = backbone.output_shape()
        missing = [f"p{level}" for level in FCOS_LEVELS if f"p{level}" not in shapes]
        if missing:
            raise ValueError(f"FCOSDetector needs the pyramid p3..p7 (MODEL.BACKBONE.NAME 'VoVNetFPN'); the backbone "
                             f"{cfg.MODEL.BACKBONE.NAME!r} lacks {missing}")
        channels = {shapes[f"p{level}"][0] for level in FCOS_LEVELS}
        if len(channels) != 1:
            raise ValueError(f"FCOSDetector: the pyramid levels must share one channel count "
                             f"(MODEL.FPN.OUT_CHANNELS), got {sorted(channels)}")
        strides = [shapes[f"p{level}"][1] for level in FCOS_LEVELS]
        if strides != [2**level for level in FCOS_LEVELS]:
            raise ValueError(f"FCOSDetector: the pyramid p3..p7 must have strides 8..128, got {strides}")
        self.fcos = build_fcos(cfg, next(iter(channels)), self.detections_per_image)

    def forward(self, batch: List[dict]):
        targets = self.detection_targets(batch) if self.training else None
        images, _, image_sizes = self.preprocess_images(batch)
        features = self.backbone(images)
        detections, losses = self.fcos([features[f"p{level}"] for level in FCOS_LEVELS], image_sizes, targets)
        if self.training:
            return losses
        results = []
        for index, ((height, width), (resized_h, resized_w)) in enumerate(zip(original_sizes(batch), image_sizes)):
            valid = ~detections.padding_mask[index]
            scale = torch.tensor([width / resized_w, height / resized_h] * 2, device=self.device)
            boxes = clip_to_image(detections.boxes[index, valid] * scale, (height, width))
            results.append(self.top_detections(boxes, detections.scores[index, valid],
                                               detections.labels[index, valid]))
        return results
