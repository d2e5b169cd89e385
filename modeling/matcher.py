"""The Hungarian matchers: triplet queries to ground-truth relations (the scene-graph model, cost summed over all
decoder layers) and box queries to ground-truth boxes (the DETR pre-training detector, one assignment per layer).

Both build their costs batched on the predictions' device and copy them to the host once per batch; only
``scipy.optimize.linear_sum_assignment`` runs on the CPU.
"""
from typing import Dict, List, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

BRANCHES = ("subject", "object", "relation")


def paired_generalized_box_iou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """1 - GIoU of corresponding xyxy boxes (``boxes1[..., i, :]`` with ``boxes2[..., i, :]``), any leading shape.

    The values of ``torchvision.ops.generalized_box_iou_loss(reduction="none")`` (same ``eps``), written with
    clamps instead of its boolean-mask indexing (a ``nonzero``, i.e. a host sync, per call forward and backward), so
    it runs on fixed shapes and compiles without graph breaks.
    """
    x1, y1, x2, y2 = boxes1.unbind(-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(-1)
    intersection = ((torch.minimum(x2, x2g) - torch.maximum(x1, x1g)).clamp(min=0)
                    * (torch.minimum(y2, y2g) - torch.maximum(y1, y1g)).clamp(min=0))
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intersection
    iou = intersection / (union + eps)
    enclosing = (torch.maximum(x2, x2g) - torch.minimum(x1, x1g)) * (torch.maximum(y2, y2g) - torch.minimum(y1, y1g))
    return 1 - (iou - (enclosing - union) / (enclosing + eps))


class HungarianMatcherBase(nn.Module):
    """The matching weights (DETR's ``cost_class``, ``cost_bbox``, ``cost_giou``) and the host side shared by both
    matchers: one device → host copy of a batch's cost matrix, then one ``linear_sum_assignment`` per image."""

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
        super().__init__()
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou

    @staticmethod
    def to_host(cost: torch.Tensor, who: str) -> torch.Tensor:
        """``cost`` on the CPU (the step's one device sync); NaN/inf is a FloatingPointError naming ``who``."""
        cost = cost.cpu()
        if not torch.isfinite(cost).all():
            raise FloatingPointError(f"Matching cost contains NaN/inf: the {who}'s predictions diverged")
        return cost

    @staticmethod
    def assign(cost: torch.Tensor, sizes: List[int], num_queries: int) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Per image, the optimal ``(query_indices, target_indices)`` (int64, length min(Q, T)) of a host cost
        matrix (B · Q, ΣT) whose columns are the images' targets in order (``sizes``)."""
        indices = []
        for image, block in enumerate(cost.split(sizes, dim=1)):
            rows, cols = linear_sum_assignment(block[image * num_queries:(image + 1) * num_queries].numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices


class HungarianTripletMatcher(HungarianMatcherBase):
    """One assignment per image between the Q triplet queries and its T ground-truth relations.

    The cost of pairing query q with relation t is, summed over every decoder layer and over the subject, object
    and predicate branches: ``cost_class`` × (−probability of the target class) + ``cost_bbox`` × L1 distance of
    the normalised (cx, cy, w, h) boxes + ``cost_giou`` × (−GIoU).  The same assignment supervises every layer.
    The costs are built batched on the predictions' device and copied to the host once per batch; only
    ``scipy.optimize.linear_sum_assignment`` runs on the CPU.
    """

    @torch.no_grad()
    def cost_matrix(self, outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]]) -> torch.Tensor:
        """(B · Q, ΣT) cost between every query of the batch and every relation of the batch, in float32."""
        num_layers, batch_size, num_queries = outputs["subject_logits"].shape[:3]
        cost = 0
        for branch in BRANCHES:
            target_labels = torch.cat([t[f"{branch}_labels"] for t in targets])
            target_boxes = torch.cat([t[f"{branch}_boxes"] for t in targets]).float()
            # Σ_layers −p(class) = −(Σ_layers p)(class): sum the probabilities first, gather once.
            prob = outputs[f"{branch}_logits"].float().softmax(-1).sum(0).flatten(0, 1)
            boxes = outputs[f"{branch}_boxes"].float().flatten(1, 2)  # (L, B·Q, 4)
            l1 = torch.cdist(boxes, target_boxes.unsqueeze(0).expand(num_layers, -1, -1), p=1).sum(0)
            giou = generalized_box_iou(box_convert(boxes.flatten(0, 1), "cxcywh", "xyxy"),
                                       box_convert(target_boxes, "cxcywh", "xyxy"))
            giou = giou.view(num_layers, batch_size * num_queries, -1).sum(0)
            cost = cost - self.cost_class * prob[:, target_labels] + self.cost_bbox * l1 - self.cost_giou * giou
        return cost

    @torch.no_grad()
    def forward(self, outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]]
                ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """``outputs``: per-layer predictions (L, B, Q, ·) as returned by the transformer; ``targets``: per image
        ``{subject,object,relation}_labels`` (T,) and ``…_boxes`` (T, 4) normalised cxcywh.

        Returns per image ``(query_indices, target_indices)``, int64 CPU tensors of equal length min(Q, T).
        """
        num_queries = outputs["subject_logits"].shape[2]
        sizes = [len(t["relation_labels"]) for t in targets]
        if sum(sizes) == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return [(empty, empty) for _ in targets]
        cost = self.to_host(self.cost_matrix(outputs, targets), "model")
        return self.assign(cost, sizes, num_queries)


class HungarianBoxMatcher(HungarianMatcherBase):
    """One assignment per decoder layer and image between the Q box queries and the image's G ground-truth boxes.

    The cost of pairing query q with box g is ``cost_class`` × (−probability of g's class) + ``cost_bbox`` × L1
    distance of the normalised (cx, cy, w, h) boxes + ``cost_giou`` × (−GIoU), as in DETR.  Every layer is
    matched on its own (DETR's auxiliary losses), but the costs of all layers and images are built in one batch on
    the predictions' device and copied to the host once; only ``linear_sum_assignment`` runs per (layer, image).
    """

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
        cost = self.to_host(self.cost_matrix(logits, boxes, targets), "detector")
        return [self.assign(layer_cost, sizes, num_queries) for layer_cost in cost]
