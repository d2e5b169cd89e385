"""Inference post-processing: from the last decoder layer's triplets to ``sgg-predictions/v1`` image entries."""
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn
from torchvision.ops import batched_nms, box_convert, box_iou


class SceneGraphPostProcessor(nn.Module):
    """Turns the Q triplet predictions of each image into entity boxes and ranked relation rows (SPEC §5).

    The Q subject and Q object boxes (score = max non-background probability) go through class-aware NMS; each box
    is mapped to the kept box of its class that it overlaps most (itself, if kept).  Triplets are ranked by
    subject × object × predicate score (predicate score = max over the real predicates), identical
    (subject box, object box, predicate) triplets are removed keeping the best, and at most
    ``relations_per_image`` rows are returned.  All work stays on the predictions' device.
    """

    def __init__(self, nms_thresh: float = 0.5, relations_per_image: int = 300):
        super().__init__()
        if not 0.0 < nms_thresh <= 1.0:
            raise ValueError(f"TEST.NMS_THRESH must be in (0, 1], got {nms_thresh}")
        if relations_per_image < 1:
            raise ValueError(f"TEST.RELATIONS_PER_IMAGE must be >= 1, got {relations_per_image}")
        self.nms_thresh = nms_thresh
        self.relations_per_image = relations_per_image

    @torch.no_grad()
    def forward(self, outputs: Dict[str, torch.Tensor], original_sizes: Sequence[Tuple[int, int]]) -> List[dict]:
        """``outputs``: predictions of one layer, ``{subject,object,relation}_logits`` (B, Q, C + 1) and
        ``…_boxes`` (B, Q, 4) normalised (cx, cy, w, h); ``original_sizes``: (height, width) per image.

        Returns per image ``boxes`` float32 (N, 4) xyxy in original-image pixels, ``labels`` int64 (N,),
        ``scores`` float32 (N,), ``rel_pairs`` int64 (R, 2) indices into ``boxes``, ``rel_scores`` float32
        (R, num_predicates).
        """
        return [
            self.single_image({k: v[i] for k, v in outputs.items()}, original_sizes[i])
            for i in range(len(original_sizes))
        ]

    def single_image(self, outputs: Dict[str, torch.Tensor], original_size: Tuple[int, int]) -> dict:
        height, width = original_size
        num_queries = outputs["subject_logits"].shape[0]
        device = outputs["subject_logits"].device

        entity_prob = torch.cat([outputs["subject_logits"], outputs["object_logits"]]).float().softmax(-1)[:, :-1]
        entity_scores, entity_labels = entity_prob.max(-1)
        x1, y1, x2, y2 = box_convert(torch.cat([outputs["subject_boxes"], outputs["object_boxes"]]).float(),
                                     "cxcywh", "xyxy").unbind(1)
        entity_boxes = torch.stack([(x1 * width).clamp(0, width), (y1 * height).clamp(0, height),
                                    (x2 * width).clamp(0, width), (y2 * height).clamp(0, height)], 1)
        relation_prob = outputs["relation_logits"].float().softmax(-1)[:, :-1]
        predicate_scores, predicate_labels = relation_prob.max(-1)

        keep = batched_nms(entity_boxes, entity_scores, entity_labels, self.nms_thresh)
        keep_boxes, keep_labels, keep_scores = entity_boxes[keep], entity_labels[keep], entity_scores[keep]
        # Each box → the same-class kept box it overlaps most; NMS guarantees one exists (itself or its suppressor).
        overlap = box_iou(entity_boxes, keep_boxes)
        overlap = overlap.masked_fill(entity_labels[:, None] != keep_labels[None, :], -1.0)
        # A kept box maps to itself even if an identical same-class kept box exists (ties broken by identity).
        overlap[keep, torch.arange(len(keep), device=device)] = 2.0
        entity_to_kept = overlap.argmax(1)
        subjects, objects = entity_to_kept[:num_queries], entity_to_kept[num_queries:]

        triplet_scores = keep_scores[subjects] * keep_scores[objects] * predicate_scores
        order = triplet_scores.argsort(descending=True, stable=True)
        num_kept, num_predicates = len(keep), relation_prob.shape[1]
        key = (subjects[order] * num_kept + objects[order]) * num_predicates + predicate_labels[order]
        unique_keys, inverse = torch.unique(key, return_inverse=True)
        first_rank = torch.full((len(unique_keys),), len(order), dtype=torch.int64, device=device)
        first_rank = first_rank.scatter_reduce(0, inverse, torch.arange(len(order), device=device), reduce="amin")
        rows = order[first_rank.sort().values][: self.relations_per_image]
        return {
            "boxes": keep_boxes,
            "labels": keep_labels,
            "scores": keep_scores,
            "rel_pairs": torch.stack([subjects[rows], objects[rows]], 1),
            "rel_scores": relation_prob[rows],
        }
