"""DETR's set prediction loss for plain object detection: per-layer Hungarian matching, class CE, L1 and GIoU."""
from typing import Dict, List, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.nn import functional as F
from torchvision.ops import box_convert, generalized_box_iou, generalized_box_iou_loss


class HungarianBoxMatcher(nn.Module):
    """One assignment per decoder layer and image between the Q box queries and the image's G ground-truth boxes.

    The cost of pairing query q with box g is ``cost_class`` × (−probability of g's class) + ``cost_bbox`` × L1
    distance of the normalised (cx, cy, w, h) boxes + ``cost_giou`` × (−GIoU), as in DETR.  Every layer is
    matched on its own (DETR's auxiliary losses), but the costs of all layers and images are built in one batch on
    the predictions' device and copied to the host once; only ``linear_sum_assignment`` runs per (layer, image).
    """

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
        super().__init__()
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou

    @torch.no_grad()
    def cost_matrix(self, logits: torch.Tensor, boxes: torch.Tensor, targets: List[Dict[str, torch.Tensor]]
                    ) -> torch.Tensor:
        """(L, B · Q, ΣG) float32 cost between every query of the batch and every box of the batch, per layer."""
        num_layers = logits.shape[0]
        target_labels = torch.cat([t["labels"] for t in targets])
        target_boxes = torch.cat([t["boxes"] for t in targets]).float()
        prob = logits.float().softmax(-1).flatten(1, 2)  # (L, B·Q, C + 1)
        flat_boxes = boxes.float().flatten(1, 2)  # (L, B·Q, 4)
        l1 = torch.cdist(flat_boxes, target_boxes.unsqueeze(0).expand(num_layers, -1, -1), p=1)
        giou = generalized_box_iou(box_convert(flat_boxes.flatten(0, 1), "cxcywh", "xyxy"),
                                   box_convert(target_boxes, "cxcywh", "xyxy")).view(num_layers, -1, len(target_boxes))
        return -self.cost_class * prob[..., target_labels] + self.cost_bbox * l1 - self.cost_giou * giou

    @torch.no_grad()
    def forward(self, logits: torch.Tensor, boxes: torch.Tensor, targets: List[Dict[str, torch.Tensor]]
                ) -> List[List[Tuple[torch.Tensor, torch.Tensor]]]:
        """``logits`` (L, B, Q, C + 1) and ``boxes`` (L, B, Q, 4) normalised cxcywh; ``targets`` per image
        ``labels`` (G,) and ``boxes`` (G, 4) normalised cxcywh.

        Returns, per layer and image, ``(query_indices, target_indices)``: int64 CPU tensors of length min(Q, G).
        """
        num_layers, batch_size, num_queries = logits.shape[:3]
        sizes = [len(t["labels"]) for t in targets]
        empty = torch.empty(0, dtype=torch.int64)
        if sum(sizes) == 0:
            return [[(empty, empty) for _ in targets] for _ in range(num_layers)]
        cost = self.cost_matrix(logits, boxes, targets).cpu()
        if not torch.isfinite(cost).all():
            raise FloatingPointError("Matching cost contains NaN/inf: the detector's predictions diverged")
        indices = []
        for layer_cost in cost:
            layer_indices = []
            for image, block in enumerate(layer_cost.split(sizes, dim=1)):
                rows, cols = linear_sum_assignment(block[image * num_queries:(image + 1) * num_queries].numpy())
                layer_indices.append((torch.as_tensor(rows, dtype=torch.int64),
                                      torch.as_tensor(cols, dtype=torch.int64)))
            indices.append(layer_indices)
        return indices


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
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(num)
            num = num / torch.distributed.get_world_size()
        return num.clamp(min=1.0)

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
            giou = generalized_box_iou_loss(box_convert(matched_boxes, "cxcywh", "xyxy"),
                                            box_convert(target_boxes, "cxcywh", "xyxy"), reduction="sum") / num_boxes
            losses[f"loss_ce_{layer}"] = self.class_weight * ce
            losses[f"loss_l1_{layer}"] = self.l1_weight * l1
            losses[f"loss_giou_{layer}"] = self.giou_weight * giou
        return losses
