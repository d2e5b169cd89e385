"""Training targets and losses of the iterative scene-graph model (docs/MODEL.md, "Losses")."""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import box_convert

from utils import comm

from .matcher import BRANCHES, HungarianTripletMatcher, paired_generalized_box_iou_loss

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
    and divided by the number of matched relations, Σ min(Q, T) (averaged over processes when distributed).  The
    returned dict holds ``loss_{sub,obj,rel}_{ce,l1,giou}_{layer}``, already multiplied by their weights, so the
    total loss is their sum.  Besides the matcher's single copy of the cost matrices, nothing waits for the device.
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
        # Targets are padded to this many relations (MODEL.STATIC_SHAPES) or, when None, to the batch's largest count.
        self.max_relations: Optional[int] = None
        self._compiled_losses = None  # set by compile_losses()

    def _num_matched(self, indices: List[Tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> torch.Tensor:
        """Number of matched relations per process, sum over images of min(Q, T) (averaged over processes), at
        least 1, as a device tensor: the released normaliser of the box losses (docs/MODEL.md, "Losses")."""
        # torch.full launches a fill kernel; torch.tensor(..., device=cuda) would wait for the stream.
        num = torch.full((), float(sum(len(q) for q, _ in indices)), device=device)
        return comm.average_across_processes(num).clamp(min=1.0)

    def forward(self, outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]]
                ) -> Dict[str, torch.Tensor]:
        """``outputs``: per-layer predictions (L, B, Q, ·); ``targets``: per image, from :func:`relation_targets`.

        The step is split at its only host call: the matcher (cost matrix on the device, one copy to the host,
        ``linear_sum_assignment``), then :meth:`losses` on fixed-shape tensors (targets padded to
        :attr:`max_relations` or the batch's largest count, the assignment as a (B, Q) index), which
        ``torch.compile(fullgraph=True)`` takes whole (:meth:`compile_losses`)."""
        indices = self.matcher(outputs, targets)
        device = outputs["subject_logits"].device
        batch_size, num_queries = outputs["subject_logits"].shape[1:3]
        padded = pad_relation_targets(targets, self.max_relations)
        assignment = query_assignment(indices, batch_size, num_queries).to(device, non_blocking=True)
        num_relations = self._num_matched(indices, device)
        losses = self._compiled_losses if self._compiled_losses is not None else self.losses
        return losses(outputs, padded, assignment, num_relations)

    def compile_losses(self, **compile_kwargs) -> None:
        """Run :meth:`losses` through ``torch.compile(fullgraph=True, **compile_kwargs)`` from now on."""
        self._compiled_losses = torch.compile(self.losses, fullgraph=True, **compile_kwargs)

    def losses(self, outputs: Dict[str, torch.Tensor], padded: Dict[str, torch.Tensor], assignment: torch.Tensor,
               num_relations: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The weighted per-layer losses from ``outputs``, the targets ``padded`` by :func:`pad_relation_targets`,
        ``assignment`` (B, Q) int64 (the matched target of each query, -1 = unmatched) and the box-loss normaliser
        ``num_relations`` (a scalar tensor).  Shapes depend on (L, B, Q, R) only and nothing is read back to the
        host: no boolean indexing, no ``.item()``."""
        first_layer = 0 if self.deep_supervision else outputs["subject_logits"].shape[0] - 1
        slot = assignment.clamp(min=0)  # (B, Q): the gathered target of an unmatched query is masked out below
        matched = (assignment >= 0) & padded["valid"].gather(1, slot)
        box_weights = matched.to(torch.float32)

        losses = {}
        for branch in BRANCHES:
            short = _SHORT_NAMES[branch]
            logits = outputs[f"{branch}_logits"][first_layer:].float()
            boxes = outputs[f"{branch}_boxes"][first_layer:].float()
            num_layers, batch_size, num_queries, num_logits = logits.shape
            class_weights = self.predicate_class_weights if branch == "relation" else self.entity_class_weights

            matched_labels = padded[f"{branch}_labels"].gather(1, slot)
            target_classes = torch.where(matched, matched_labels, num_logits - 1)
            ce = F.cross_entropy(logits.reshape(-1, num_logits), target_classes.repeat(num_layers, 1).reshape(-1),
                                 reduction="none").view(num_layers, batch_size * num_queries)
            query_weights = class_weights[target_classes].reshape(1, -1)
            ce = (ce * query_weights).sum(1) / query_weights.sum()

            target_boxes = padded[f"{branch}_boxes"].float().gather(1, slot[..., None].expand(-1, -1, 4))
            target_boxes = target_boxes.unsqueeze(0).expand_as(boxes)  # (L, B, Q, 4)
            l1 = ((boxes - target_boxes).abs().sum(-1) * box_weights).sum((1, 2)) / num_relations
            giou = paired_generalized_box_iou_loss(box_convert(boxes, "cxcywh", "xyxy"),
                                                   box_convert(target_boxes, "cxcywh", "xyxy"))
            giou = (giou * box_weights).sum((1, 2)) / num_relations

            for offset in range(num_layers):
                layer = first_layer + offset
                losses[f"loss_{short}_ce_{layer}"] = self.class_weight * ce[offset]
                losses[f"loss_{short}_l1_{layer}"] = self.l1_weight * l1[offset]
                losses[f"loss_{short}_giou_{layer}"] = self.giou_weight * giou[offset]
        return losses


# Padding of a target box (cx = cy = w = h): a valid box, so the masked-out losses of padded slots stay finite.
_PAD_BOX_VALUE = 0.5


def pad_relation_targets(targets: List[Dict[str, torch.Tensor]], max_relations: Optional[int] = None
                         ) -> Dict[str, torch.Tensor]:
    """Per-image targets (:func:`relation_targets`) stacked into fixed-shape tensors on their device:
    ``{subject,object,relation}_labels`` (B, R) int64 (0 in padding), ``…_boxes`` (B, R, 4) (a centred box half the
    image in padding) and ``valid`` (B, R) bool, with R = ``max_relations`` (``MODEL.STATIC_SHAPES``) or, when None, the
    batch's largest relation count (at least 1).  Only copies: nothing waits for the device."""
    sizes = [len(t["relation_labels"]) for t in targets]
    num_slots = max(sizes + [1]) if max_relations is None else int(max_relations)
    if max(sizes + [0]) > num_slots:
        raise ValueError(f"an image has {max(sizes)} relations, more than MODEL.STATIC_SHAPES.MAX_RELATIONS = "
                         f"{num_slots}")
    reference = targets[0]["relation_labels"]
    padded = {"valid": torch.zeros(len(targets), num_slots, dtype=torch.bool, device=reference.device)}
    for branch in BRANCHES:
        labels = reference.new_zeros(len(targets), num_slots)
        boxes = torch.full((len(targets), num_slots, 4), _PAD_BOX_VALUE, device=reference.device)
        for image, (target, size) in enumerate(zip(targets, sizes)):
            if size:
                labels[image, :size] = target[f"{branch}_labels"]
                boxes[image, :size] = target[f"{branch}_boxes"]
        padded[f"{branch}_labels"], padded[f"{branch}_boxes"] = labels, boxes
    for image, size in enumerate(sizes):
        if size:
            padded["valid"][image, :size] = True
    return padded


def query_assignment(indices: List[Tuple[torch.Tensor, torch.Tensor]], batch_size: int, num_queries: int
                     ) -> torch.Tensor:
    """The matcher's per-image ``(query_indices, target_indices)`` as one host (B, Q) int64 tensor: the target
    slot matched to each query, -1 where none."""
    assignment = torch.full((batch_size, num_queries), -1, dtype=torch.int64)
    for image, (queries, slots) in enumerate(indices):
        assignment[image, queries] = slots
    return assignment
