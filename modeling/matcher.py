"""Hungarian matching of triplet queries to ground-truth relations, with the cost summed over all decoder layers."""
from typing import Dict, List, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

BRANCHES = ("subject", "object", "relation")


class HungarianTripletMatcher(nn.Module):
    """One assignment per image between the Q triplet queries and its T ground-truth relations.

    The cost of pairing query q with relation t is, summed over every decoder layer and over the subject, object
    and predicate branches: ``cost_class`` × (−probability of the target class) + ``cost_bbox`` × L1 distance of
    the normalised (cx, cy, w, h) boxes + ``cost_giou`` × (−GIoU).  The same assignment supervises every layer.
    The costs are built batched on the predictions' device and copied to the host once per batch; only
    ``scipy.optimize.linear_sum_assignment`` runs on the CPU.
    """

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
        super().__init__()
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou

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
        cost = self.cost_matrix(outputs, targets).cpu()
        if not torch.isfinite(cost).all():
            raise FloatingPointError("Matching cost contains NaN/inf: the model's predictions diverged")
        indices = []
        for image, block in enumerate(cost.split(sizes, dim=1)):
            rows, cols = linear_sum_assignment(block[image * num_queries:(image + 1) * num_queries].numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices
