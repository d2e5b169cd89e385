"""Training targets and losses of the iterative scene-graph model (docs/MODEL.md, "Losses")."""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import box_convert, generalized_box_iou_loss

from utils import comm

from .matcher import BRANCHES, HungarianTripletMatcher

_SHORT_NAMES = {"subject": "sub", "object": "obj", "relation": "rel"}


def predicate_class_weights(predicate_counts: Optional[Sequence[int]], num_relation_classes: int, alpha: float,
                            undersample: float, no_relation_weight: float) -> torch.Tensor:
    """Predicate cross-entropy weights (num_relation_classes + 1,), the last entry for "no relation".

    w_c = max(sqrt(alpha / (f_c + 1e-5)), 1) ** undersample with f_c = count_c / total the predicate's share of
    the training relations (duplicates included), as released; rare predicates get up-weighted, frequent ones keep
    1.  The 1e-5 also keeps a predicate never seen in training finite (docs/MODEL.md, "Losses").
    ``predicate_counts=None`` gives all ones.
    """
    weights = torch.ones(num_relation_classes + 1, dtype=torch.float32)
    weights[-1] = no_relation_weight
    if predicate_counts is None:
        return weights
    counts = np.asarray(predicate_counts, dtype=np.float64).reshape(-1)
    if counts.shape[0] != num_relation_classes:
        raise ValueError(f"predicate_counts has {counts.shape[0]} entries but MODEL.DETR.NUM_RELATION_CLASSES is "
                         f"{num_relation_classes}")
    if (counts < 0).any() or counts.sum() <= 0:
        raise ValueError("predicate_counts must be non-negative with a positive total")
    frequency = counts / counts.sum()
    weights[:-1] = torch.from_numpy(np.maximum(np.sqrt(alpha / (frequency + 1e-5)), 1.0) ** undersample).float()
    return weights


def relation_box_xyxy(subject_xyxy: torch.Tensor, object_xyxy: torch.Tensor) -> torch.Tensor:
    """The predicate's box: spanned by the subject centre and the object centre; the subject box where that
    span is at most 1e-5 px wide or high (detectron2's ``nonempty(1e-5)``, as released; docs/MODEL.md)."""
    subject_centre = (subject_xyxy[:, :2] + subject_xyxy[:, 2:]) / 2
    object_centre = (object_xyxy[:, :2] + object_xyxy[:, 2:]) / 2
    span = torch.cat([torch.minimum(subject_centre, object_centre), torch.maximum(subject_centre, object_centre)], 1)
    degenerate = ((span[:, 2] - span[:, 0]) <= 1e-5) | ((span[:, 3] - span[:, 1]) <= 1e-5)
    return torch.where(degenerate[:, None], subject_xyxy, span)


def _check_instances(boxes: torch.Tensor, labels: torch.Tensor, relations: torch.Tensor, num_classes: int,
                     num_relation_classes: int) -> None:
    """Clear errors for annotations the model cannot be trained on (instead of a device-side assert later)."""
    if len(labels) != len(boxes):
        raise ValueError(f"instances: {len(boxes)} boxes but {len(labels)} labels")
    if len(labels) and not (0 <= int(labels.min()) and int(labels.max()) < num_classes):
        raise ValueError(f"instances: object label {int(labels.max())} outside [0, MODEL.DETR.NUM_CLASSES = "
                         f"{num_classes})")
    if len(relations) == 0:
        return
    if not (0 <= int(relations[:, :2].min()) and int(relations[:, :2].max()) < len(boxes)):
        raise ValueError(f"instances: relation refers to a box outside [0, {len(boxes)})")
    if not (0 <= int(relations[:, 2].min()) and int(relations[:, 2].max()) < num_relation_classes):
        raise ValueError(f"instances: predicate {int(relations[:, 2].max())} outside [0, "
                         f"MODEL.DETR.NUM_RELATION_CLASSES = {num_relation_classes})")


def relation_targets(instances: Dict[str, torch.Tensor], image_size: Tuple[int, int], device: torch.device,
                     num_classes: int, num_relation_classes: int) -> Dict[str, torch.Tensor]:
    """Per-relation targets of one image from its batch-item ``instances`` (boxes xyxy in resized-image pixels).

    Returns ``{subject,object,relation}_labels`` (R,) and ``…_boxes`` (R, 4) as (cx, cy, w, h) normalised by the
    resized (unpadded) image size ``(h, w)``, on ``device``.  They are computed and checked where ``instances``
    live (the loader's CPU tensors) and copied without blocking, so building them never waits for the accelerator.
    """
    boxes = torch.as_tensor(instances["boxes"], dtype=torch.float32).reshape(-1, 4)
    labels = torch.as_tensor(instances["labels"], dtype=torch.int64).reshape(-1)
    relations = torch.as_tensor(instances["relations"], dtype=torch.int64).reshape(-1, 3)
    _check_instances(boxes, labels, relations, num_classes, num_relation_classes)
    height, width = image_size
    scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=boxes.device)
    subject_xyxy, object_xyxy = boxes[relations[:, 0]], boxes[relations[:, 1]]
    relation_xyxy = relation_box_xyxy(subject_xyxy, object_xyxy)

    def normalise(xyxy: torch.Tensor) -> torch.Tensor:
        return box_convert(xyxy / scale, "xyxy", "cxcywh")

    targets = {
        "subject_labels": labels[relations[:, 0]],
        "object_labels": labels[relations[:, 1]],
        "relation_labels": relations[:, 2],
        "subject_boxes": normalise(subject_xyxy),
        "object_boxes": normalise(object_xyxy),
        "relation_boxes": normalise(relation_xyxy),
    }
    return {name: value.to(device, non_blocking=True) for name, value in targets.items()}


class SceneGraphCriterion(nn.Module):
    """Per-layer losses of the three branches under one Hungarian assignment.

    For each branch and layer: class cross-entropy over all queries (unmatched queries → the last, "no object" /
    "no relation" class; DETR's weighted mean), and over the matched queries L1 and GIoU losses of the boxes summed
    and divided by the number of matched relations, Σ min(Q, T) (averaged over processes when distributed).  The returned
    dict holds ``loss_{sub,obj,rel}_{ce,l1,giou}_{layer}``, already multiplied by their weights, so the total
    loss is their sum.  Besides the matcher's single copy of the cost matrices, nothing waits for the device.
    """

    def __init__(self, num_classes: int, num_relation_classes: int, matcher: HungarianTripletMatcher,
                 class_weight: float, l1_weight: float, giou_weight: float, no_object_weight: float,
                 predicate_weights: torch.Tensor, deep_supervision: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.num_relation_classes = num_relation_classes
        self.matcher = matcher
        self.class_weight = class_weight
        self.l1_weight = l1_weight
        self.giou_weight = giou_weight
        self.deep_supervision = deep_supervision
        entity_weights = torch.ones(num_classes + 1)
        entity_weights[-1] = no_object_weight
        if predicate_weights.shape != (num_relation_classes + 1,):
            raise ValueError(f"predicate_weights must have shape ({num_relation_classes + 1},), "
                             f"got {tuple(predicate_weights.shape)}")
        self.register_buffer("entity_class_weights", entity_weights, persistent=False)
        self.register_buffer("predicate_class_weights", predicate_weights.clone().float(), persistent=False)

    def _num_matched(self, indices: List[Tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> torch.Tensor:
        """Number of matched relations per process, sum over images of min(Q, T) (averaged over processes), at
        least 1, as a device tensor: the released normaliser of the box losses (docs/MODEL.md, "Losses")."""
        # torch.full launches a fill kernel; torch.tensor(..., device=cuda) would wait for the stream.
        num = torch.full((), float(sum(len(q) for q, _ in indices)), device=device)
        return comm.average_across_processes(num).clamp(min=1.0)

    def forward(self, outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]]
                ) -> Dict[str, torch.Tensor]:
        """``outputs``: per-layer predictions (L, B, Q, ·); ``targets``: per image, from :func:`relation_targets`."""
        indices = self.matcher(outputs, targets)
        device = outputs["subject_logits"].device
        batch_index = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(indices)]).to(device,
                                                                                              non_blocking=True)
        query_index = torch.cat([q for q, _ in indices]).to(device, non_blocking=True)
        target_index = [t.to(device, non_blocking=True) for _, t in indices]
        num_relations = self._num_matched(indices, device)
        first_layer = 0 if self.deep_supervision else outputs["subject_logits"].shape[0] - 1

        losses = {}
        for branch in BRANCHES:
            short = _SHORT_NAMES[branch]
            logits = outputs[f"{branch}_logits"][first_layer:].float()
            boxes = outputs[f"{branch}_boxes"][first_layer:].float()
            num_layers, batch_size, num_queries, num_logits = logits.shape
            class_weights = self.predicate_class_weights if branch == "relation" else self.entity_class_weights

            matched_labels = torch.cat([t[f"{branch}_labels"][j] for t, j in zip(targets, target_index)])
            target_classes = torch.full((batch_size, num_queries), num_logits - 1, dtype=torch.int64, device=device)
            target_classes[batch_index, query_index] = matched_labels
            ce = F.cross_entropy(logits.reshape(-1, num_logits), target_classes.repeat(num_layers, 1).reshape(-1),
                                 reduction="none").view(num_layers, batch_size * num_queries)
            query_weights = class_weights[target_classes].reshape(1, -1)
            ce = (ce * query_weights).sum(1) / query_weights.sum()

            matched_boxes = boxes[:, batch_index, query_index]  # (L, M, 4)
            target_boxes = torch.cat([t[f"{branch}_boxes"][j] for t, j in zip(targets, target_index)]).float()
            target_boxes = target_boxes.unsqueeze(0).expand_as(matched_boxes)
            l1 = (matched_boxes - target_boxes).abs().sum((1, 2)) / num_relations
            giou = generalized_box_iou_loss(box_convert(matched_boxes, "cxcywh", "xyxy"),
                                            box_convert(target_boxes, "cxcywh", "xyxy"), reduction="none")
            giou = giou.sum(1) / num_relations

            for offset in range(num_layers):
                layer = first_layer + offset
                losses[f"loss_{short}_ce_{layer}"] = self.class_weight * ce[offset]
                losses[f"loss_{short}_l1_{layer}"] = self.l1_weight * l1[offset]
                losses[f"loss_{short}_giou_{layer}"] = self.giou_weight * giou[offset]
        return losses
