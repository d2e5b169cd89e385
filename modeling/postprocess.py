"""Inference post-processing: from the last decoder layer's triplets to ``sgg-predictions/v1`` image entries."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torchvision.ops import batched_nms, box_convert


def pairwise_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """(N, M) IoU of xyxy boxes, 0 where two boxes do not intersect (also for empty boxes: never NaN), as
    detectron2's ``pairwise_iou`` that the released post-processing uses."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    width_height = (torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
                    - torch.max(boxes1[:, None, :2], boxes2[None, :, :2])).clamp(min=0)
    inter = width_height.prod(2)
    return torch.where(inter > 0, inter / (area1[:, None] + area2[None, :] - inter), torch.zeros_like(inter))


class SceneGraphPostProcessor(nn.Module):
    """Turns the Q triplet predictions of each image into entity boxes and ranked relation rows, as the released
    code does (docs/MODEL.md, "Inference").

    The Q subject and Q object boxes (normalised, *not* clipped; score = max non-background probability, label =
    its argmax) go through class-aware NMS; each box is mapped to the same-class kept box it overlaps most (IoU on
    the same unclipped boxes, first kept box on ties).  Triplet rows are ranked by the query's own
    predicate × subject × object scores (stable on ties); a row is dropped when an earlier row has the same
    (kept subject, kept object, predicate); at most ``relations_per_image`` rows are returned.  Only then are the
    kept boxes scaled to the input size, rescaled to the original image and clipped.  All work stays on the
    predictions' device.
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
    def forward(self, outputs: Dict[str, torch.Tensor], original_sizes: Sequence[Tuple[int, int]],
                input_sizes: Optional[Sequence[Tuple[int, int]]] = None) -> List[dict]:
        """``outputs``: predictions of one layer, ``{subject,object,relation}_logits`` (B, Q, C + 1) and
        ``…_boxes`` (B, Q, 4) normalised (cx, cy, w, h); ``original_sizes``: (height, width) per image;
        ``input_sizes``: the resized (unpadded) size the model saw, for the released two-step scaling (normalised →
        input pixels → original pixels); None scales straight to the original size.

        Returns per image ``boxes`` float32 (N, 4) xyxy in original-image pixels, ``labels`` int64 (N,),
        ``scores`` float32 (N,), ``rel_pairs`` int64 (R, 2) indices into ``boxes``, ``rel_scores`` float32
        (R, num_predicates) and ``rel_ranking_scores`` float32 (R,), non-increasing: the score the rows are
        ranked by (``sgg-predictions/v2``).
        """
        if input_sizes is None:
            input_sizes = original_sizes
        return [
            self.single_image({k: v[i] for k, v in outputs.items()}, original_sizes[i], input_sizes[i])
            for i in range(len(original_sizes))
        ]

    def single_image(self, outputs: Dict[str, torch.Tensor], original_size: Tuple[int, int],
                     input_size: Optional[Tuple[int, int]] = None) -> dict:
        num_queries = outputs["subject_logits"].shape[0]
        device = outputs["subject_logits"].device

        entity_prob = torch.cat([outputs["subject_logits"], outputs["object_logits"]]).float().softmax(-1)[:, :-1]
        entity_scores, entity_labels = entity_prob.max(-1)
        entity_boxes = box_convert(torch.cat([outputs["subject_boxes"], outputs["object_boxes"]]).float(),
                                   "cxcywh", "xyxy")  # normalised, unclipped
        relation_prob = outputs["relation_logits"].float().softmax(-1)[:, :-1]
        predicate_scores, predicate_labels = relation_prob.max(-1)

        keep = batched_nms(entity_boxes, entity_scores, entity_labels, self.nms_thresh)
        keep_boxes, keep_labels, keep_scores = entity_boxes[keep], entity_labels[keep], entity_scores[keep]
        # Each box → the same-class kept box it overlaps most (a class always has a kept box: its best one).
        overlap = pairwise_iou(entity_boxes, keep_boxes)
        overlap = overlap.masked_fill(entity_labels[:, None] != keep_labels[None, :], -1.0)
        entity_to_kept = overlap.argmax(1)
        subjects, objects = entity_to_kept[:num_queries], entity_to_kept[num_queries:]

        # The query's own scores, in the released order of multiplication.
        triplet_scores = predicate_scores * entity_scores[:num_queries] * entity_scores[num_queries:]
        order = triplet_scores.argsort(descending=True, stable=True)
        num_kept, num_predicates = len(keep), relation_prob.shape[1]
        key = (subjects[order] * num_kept + objects[order]) * num_predicates + predicate_labels[order]
        unique_keys, inverse = torch.unique(key, return_inverse=True)
        first_rank = torch.full((len(unique_keys),), len(order), dtype=torch.int64, device=device)
        first_rank = first_rank.scatter_reduce(0, inverse, torch.arange(len(order), device=device), reduce="amin")
        rows = order[first_rank.sort().values][: self.relations_per_image]
        return {
            "boxes": _to_original_pixels(keep_boxes, original_size, input_size or original_size),
            "labels": keep_labels,
            "scores": keep_scores,
            "rel_pairs": torch.stack([subjects[rows], objects[rows]], 1),
            "rel_scores": relation_prob[rows],
            "rel_ranking_scores": triplet_scores[rows],
        }


def _to_original_pixels(boxes: torch.Tensor, original_size: Tuple[int, int], input_size: Tuple[int, int]
                        ) -> torch.Tensor:
    """Normalised xyxy → input pixels → original pixels, then clipped to the original image (detectron2's
    ``Boxes.scale`` and ``detector_postprocess``, in the released order)."""
    (height, width), (input_height, input_width) = original_size, input_size
    boxes = boxes * boxes.new_tensor([input_width, input_height, input_width, input_height])
    boxes = boxes * boxes.new_tensor([width / input_width, height / input_height] * 2)
    upper = boxes.new_tensor([width, height, width, height])
    return torch.minimum(boxes.clamp(min=0), upper)
