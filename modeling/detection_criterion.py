"""DETR's set prediction loss for plain object detection: per-layer Hungarian matching, class CE, L1 and GIoU."""
from typing import Dict, List

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import box_convert

from utils import comm

from .matcher import HungarianBoxMatcher, paired_generalized_box_iou_loss


class SetCriterion(nn.Module):
    """DETR's detection losses of every decoder layer (the last one only without ``deep_supervision``).

    Per layer: cross-entropy over all queries, unmatched queries → the last ("no object") class weighted
    ``no_object_weight`` (weighted mean); over the matched queries, L1 and GIoU losses of the normalised boxes
    summed and divided by the number of ground-truth boxes (averaged over processes when distributed, at least 1).
    Returns ``loss_{ce,l1,giou}_{layer}`` already multiplied by their weights, so the total is their sum.
    """

    def __init__(self, num_classes: int, matcher: HungarianBoxMatcher, class_weight: float, l1_weight: float,
                 giou_weight: float, no_object_weight: float, deep_supervision: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.class_weight = class_weight
        self.l1_weight = l1_weight
        self.giou_weight = giou_weight
        self.deep_supervision = deep_supervision
        weights = torch.ones(num_classes + 1)
        weights[-1] = no_object_weight
        self.register_buffer("class_weights", weights, persistent=False)

    def _num_boxes(self, targets: List[Dict[str, torch.Tensor]], device: torch.device) -> torch.Tensor:
        num = torch.full((), float(sum(len(t["labels"]) for t in targets)), device=device)
        return comm.average_across_processes(num).clamp(min=1.0)

    def forward(self, logits: torch.Tensor, boxes: torch.Tensor, targets: List[Dict[str, torch.Tensor]]
                ) -> Dict[str, torch.Tensor]:
        """``logits`` (L, B, Q, C + 1), ``boxes`` (L, B, Q, 4) normalised cxcywh; ``targets`` as the matcher's."""
        first_layer = 0 if self.deep_supervision else logits.shape[0] - 1
        logits, boxes = logits[first_layer:].float(), boxes[first_layer:].float()
        device = logits.device
        num_boxes = self._num_boxes(targets, device)
        losses = {}
        for offset, layer_indices in enumerate(self.matcher(logits, boxes, targets)):
            layer = first_layer + offset
            batch_index = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(layer_indices)]).to(device)
            query_index = torch.cat([q for q, _ in layer_indices]).to(device)
            matched_labels = torch.cat([t["labels"][j.to(device)] for t, (_, j) in zip(targets, layer_indices)])
            target_boxes = torch.cat([t["boxes"][j.to(device)] for t, (_, j) in zip(targets, layer_indices)]).float()

            target_classes = torch.full(logits.shape[1:3], self.num_classes, dtype=torch.int64, device=device)
            target_classes[batch_index, query_index] = matched_labels
            ce = F.cross_entropy(logits[offset].flatten(0, 1), target_classes.flatten(), weight=self.class_weights)

            matched_boxes = boxes[offset, batch_index, query_index]
            l1 = (matched_boxes - target_boxes).abs().sum() / num_boxes
            giou = paired_generalized_box_iou_loss(box_convert(matched_boxes, "cxcywh", "xyxy"),
                                                   box_convert(target_boxes, "cxcywh", "xyxy")).sum() / num_boxes
            losses[f"loss_ce_{layer}"] = self.class_weight * ce
            losses[f"loss_l1_{layer}"] = self.l1_weight * l1
            losses[f"loss_giou_{layer}"] = self.giou_weight * giou
        return losses
